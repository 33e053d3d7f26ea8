"""Database handle: URLs, SQLite pragmas, migrations matching the tables, CDR durability."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from softswitch.store import (
    Database,
    DatabaseUnavailable,
    DatabaseUrlError,
    Location,
    Rate,
    Store,
)
from softswitch.store.db import async_url, redact
from softswitch.store.tables import metadata
from tests.store.conftest import PgServer

#: The newest migration: what a fresh or upgraded store is at.
HEAD = "0005"


def test_urls_get_their_async_driver() -> None:
    assert async_url("sqlite:///var/x.sqlite3").drivername == "sqlite+aiosqlite"
    assert async_url("postgresql://u:p@127.0.0.1:5432/db").drivername == "postgresql+asyncpg"
    assert async_url("postgres://u@127.0.0.1/db").drivername == "postgresql+asyncpg"
    for bad in ("mysql://u@h/db", "sqlite://", "sqlite:///:memory:", "not a url"):
        with pytest.raises(DatabaseUrlError):
            async_url(bad)


async def test_sqlite_file_is_wal_full_sync_with_foreign_keys(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/sub/dir/s.sqlite3")
    try:
        async with db.read() as conn:
            journal = (await conn.execute(text("PRAGMA journal_mode"))).scalar()
            sync = (await conn.execute(text("PRAGMA synchronous"))).scalar()
            fks = (await conn.execute(text("PRAGMA foreign_keys"))).scalar()
            busy = (await conn.execute(text("PRAGMA busy_timeout"))).scalar()
    finally:
        await db.close()
    assert (journal, sync, fks) == ("wal", 2, 1)  # synchronous 2 = FULL
    assert busy == 10_000
    assert (tmp_path / "sub" / "dir" / "s.sqlite3").exists()


async def test_sqlite_connection_back_in_the_pool_mid_transaction_is_rolled_back(
    tmp_path: Path,
) -> None:
    # The pool sends no ROLLBACK after a finished transaction (a trip to aiosqlite's thread
    # for nothing); one still open (a COMMIT that failed) must not keep the writer lock.
    store = await Store.open(f"sqlite:///{tmp_path}/s.sqlite3")
    try:
        async with store.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            await driver.execute("BEGIN IMMEDIATE")
            await driver.execute("UPDATE alembic_version SET version_num = 'lost'")
            assert driver.in_transaction
        assert not driver.in_transaction
        added = await asyncio.wait_for(store.accounts.add("Alice"), 5)  # the lock is free
        assert await store.accounts.get(added.id) == added
        assert await store.db.revision() == HEAD  # the update was rolled back
    finally:
        await store.close()


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migration_creates_exactly_the_tables(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        await store.db.migrate()  # a second run is a no-op
        assert await store.db.revision() == HEAD
        async with store.db.read() as conn:
            assert await conn.run_sync(_diff) == []
    finally:
        await store.close()


def test_cdr_is_on_disk_when_write_returns(tmp_path: Path) -> None:
    # The writer process is killed (SIGKILL) the instant write() returns: the CDR must be there.
    path = tmp_path / "cdr.sqlite3"
    child = textwrap.dedent(
        f"""
        import asyncio, os, signal
        from softswitch.store import Cdr, LegKind, Store

        async def main():
            store = await Store.open("sqlite:///{path}")
            await store.cdrs.write(Cdr("call-1", LegKind.CALLBACK, None, "", "8131", 1.5))
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT call_uuid, leg, setup_us FROM cdrs").fetchall()
    assert rows == [("call-1", "callback", 1_500_000)]


async def test_create_false_never_creates_a_sqlite_file(tmp_path: Path) -> None:
    for path in (tmp_path / "no" / "such" / "dir" / "s.db", tmp_path / "s.db"):
        with pytest.raises(DatabaseUnavailable, match=f"{path} does not exist"):
            Database(f"sqlite:///{path}", create=False)
        with pytest.raises(DatabaseUnavailable, match="does not exist"):
            await Store.open(f"sqlite:///{path}", create=False)
    assert list(tmp_path.iterdir()) == []
    # An existing store opens (and is migrated) as before.
    url = f"sqlite:///{tmp_path}/s.db"
    await (await Store.open(url)).close()
    async with await Store.open(url, create=False) as store:
        assert await store.db.revision() is not None


async def test_create_false_needs_the_schema(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if db_url.startswith("sqlite"):
        (tmp_path / "blank.db").touch()
        blank = f"sqlite:///{tmp_path}/blank.db"
    else:
        blank = request.getfixturevalue("pg_server").createdb("softswitch_blank")
    with pytest.raises(DatabaseUnavailable, match=r"no softswitch schema .*db upgrade"):
        await Store.open(blank, create=False)
    async with Database(blank, create=False) as db:
        assert await db.revision() is None  # nothing was migrated


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_postgresql_is_one_line_naming_host_and_port() -> None:
    port = _closed_port()
    with pytest.raises(DatabaseUnavailable) as info:
        await Store.open(f"postgresql://bob:hunter2@127.0.0.1:{port}/switch")
    message = str(info.value)
    assert message == (
        f"cannot connect to PostgreSQL at 127.0.0.1:{port} (database switch, user bob): "
        "connection refused (is the server running and listening there?)"
    )
    assert isinstance(info.value, OSError)  # callers that catch I/O failures still do


async def test_postgresql_refusals_are_one_line_without_the_password(
    pg_server: PgServer,
) -> None:
    missing = pg_server.url("no_such_database").replace("postgres@", "postgres:s3cret@")
    with pytest.raises(DatabaseUnavailable) as info:
        await Store.open(missing)
    message = str(info.value)
    assert f"PostgreSQL at 127.0.0.1:{pg_server.port} (database no_such_database" in message
    assert "does not exist" in message and "s3cret" not in message and "\n" not in message


def test_redact_hides_only_the_password() -> None:
    assert redact("postgresql://bob:hunter2@db.example:5432/x") == (
        "postgresql://bob:***@db.example:5432/x"
    )
    assert redact("postgresql://bob@db.example/x") == "postgresql://bob@db.example/x"
    assert redact("sqlite:///var/x.db") == "sqlite:///var/x.db"
    with pytest.raises(DatabaseUrlError) as info:
        async_url("postgresql://bob:hunter2@db:notaport/x")
    assert "hunter2" not in str(info.value)


def _upgrade_to(revision: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        from alembic import command

        from softswitch.store.db import _alembic_config

        command.upgrade(_alembic_config(connection), revision)

    return run


async def test_migration_0002_keeps_prices_and_constraints(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/old.sqlite3"
    else:
        url = request.getfixturevalue("pg_server").createdb("softswitch_0001")
    async with Database(url) as db:
        async with db.write() as conn:
            await conn.run_sync(_upgrade_to("0001"))
            await conn.execute(
                text(
                    "INSERT INTO rates (prefix, description, price_per_minute, increment_s,"
                    " minimum_s, blocked) VALUES ('44', 'UK', 20, 6, 30, false),"
                    " ('1', 'USA', 0, 60, 60, true)"
                )
            )
        assert await db.revision() == "0001"
    async with await Store.open(url) as store:
        assert await store.db.revision() == HEAD
        assert await store.rates.list() == (
            Rate("1", "USA", 0, 60, 60, True),
            Rate("44", "UK", 20, 6, 30, False),
        )
        async with store.db.read() as conn:
            assert await conn.run_sync(_diff) == []
        for values in ("('33', '', 1, 0, 30)", "('34', '', -1, 6, 30)", "('44', '', 1, 6, 30)"):
            with pytest.raises(IntegrityError):
                async with store.db.write() as conn:
                    await conn.execute(
                        text(
                            "INSERT INTO rates (prefix, description, price_micros_per_minute,"
                            f" increment_s, minimum_s) VALUES {values}"
                        )
                    )


def _downgrade_to(revision: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        from alembic import command

        from softswitch.store.db import _alembic_config

        command.downgrade(_alembic_config(connection), revision)

    return run


async def test_migration_0002_downgrade_rounds_prices_up(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/new.sqlite3"
    else:
        url = request.getfixturevalue("pg_server").createdb("softswitch_0002_down")
    async with await Store.open(url) as store:
        await store.rates.set_many([Rate("44", "UK", Decimal("2.35")), Rate("1", "USA", 20)])
        async with store.db.write() as conn:
            await conn.run_sync(_downgrade_to("0001"))
        async with store.db.read() as conn:
            rows = (await conn.execute(text("SELECT prefix, price_per_minute FROM rates"))).all()
        assert sorted(tuple(r) for r in rows) == [("1", 20), ("44", 3)]
        await store.db.migrate()
        assert [r.price_per_minute for r in await store.rates.list()] == [20, 3]


async def test_migration_0003_adds_the_location_history(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if db_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/old.sqlite3"
    else:
        url = request.getfixturevalue("pg_server").createdb("softswitch_0002")
    async with Database(url) as db:
        async with db.write() as conn:
            await conn.run_sync(_upgrade_to("0002"))
            await conn.execute(
                text(
                    "INSERT INTO accounts (id, name, location_number, created_us, updated_us)"
                    " VALUES (7, 'Alice', '81312345678', 1, 1)"
                )
            )
        async with db.read() as conn:
            assert "location_history" not in await conn.run_sync(_table_names)
    async with await Store.open(url) as store:
        assert await store.db.revision() == HEAD
        async with store.db.read() as conn:
            assert await conn.run_sync(_diff) == []
        assert await store.accounts.location_history(7) == ()
        await store.accounts.set_location(7, Location("6561234567"), via="phone")
        [change] = await store.accounts.location_history(7)
        assert (change.previous, change.location) == (
            Location("81312345678"),
            Location("6561234567"),
        )
        # Its rows go with their account (the foreign key cascades on both databases).
        async with store.db.write() as conn:
            await conn.execute(text("DELETE FROM accounts WHERE id = 7"))
            left = (await conn.execute(text("SELECT count(*) FROM location_history"))).scalar()
        assert left == 0

        await store.accounts.add("Bob", location=Location("81312345678"))
        async with store.db.write() as conn:
            await conn.run_sync(_downgrade_to("0002"))
        async with store.db.read() as conn:
            assert "location_history" not in await conn.run_sync(_table_names)
        assert (await store.accounts.list())[0].location == Location("81312345678")
        await store.db.migrate()
        assert await store.db.revision() == HEAD


def _table_names(conn: Connection) -> list[str]:
    return inspect(conn).get_table_names()
