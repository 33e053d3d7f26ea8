"""Fixtures: a fake clock, and a fresh ``Store`` on SQLite and on a real PostgreSQL server.

The PostgreSQL server is started once per session from the Debian binaries (initdb as the
``postgres`` user when running as root, since initdb refuses root), on a free loopback port with
its socket in a temporary directory, and stopped at the end. Without the binaries the PostgreSQL
cases are skipped, except under ``CI`` where they fail.
"""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from softswitch.store import Store
from softswitch.store.tables import metadata

T0 = 1_700_000_000.0


class FakeClock:
    """Wall-clock stand-in: tests move ``now`` by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _version_key(path: str) -> int:
    part = path.split("/")[4]
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def createdb(self, name: str) -> str:
        where = ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        subprocess.run(
            [str(self.bindir / "createdb"), *where, name],
            check=True,
            capture_output=True,
        )
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = _pg_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not installed"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    # Not under pytest's tmp dir: that one is private to root and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="softswitch-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    data, sock = base / "data", base / "sock"
    port = _free_port()
    try:
        subprocess.run([*as_postgres, "mkdir", str(sock)], check=True)
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        subprocess.run(
            [*as_postgres, *initdb, "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
        )
        options = (
            f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c synchronous_commit=off"
        )
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log")]
        subprocess.run(
            [*as_postgres, *pg_ctl, "-o", options, "-w", "start"],
            check=True,
            capture_output=True,
        )
        yield PgServer(bindir, port)
    finally:
        subprocess.run(
            [*as_postgres, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
            capture_output=True,
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_url(pg_server: PgServer) -> str:
    """A database migrated once per session; each test empties it."""
    url = pg_server.createdb("softswitch_test")

    async def migrate() -> None:
        store = await Store.open(url)
        await store.close()

    asyncio.run(migrate())
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.sqlite3"
    return str(request.getfixturevalue("pg_url"))


async def _empty(store: Store) -> None:
    if store.db.dialect != "postgresql":
        return
    names = ", ".join(t.name for t in metadata.sorted_tables)
    async with store.db.write() as conn:
        await conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")


@pytest.fixture
async def store(db_url: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await Store.open(db_url, clock=clock)
    await _empty(opened)
    yield opened
    await opened.close()


@pytest.fixture
async def other_node(db_url: str, clock: FakeClock, store: Store) -> AsyncIterator[Store]:
    """A second, independent connection pool on the same database: another node."""
    opened = await Store.open(db_url, clock=clock, migrate=False)
    yield opened
    await opened.close()
