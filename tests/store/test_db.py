"""Database handle: URLs, SQLite pragmas, migrations matching the tables, CDR durability."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from softswitch.store import Database, DatabaseUrlError, Store
from softswitch.store.db import async_url
from softswitch.store.tables import metadata


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


def _diff(conn: Connection) -> list[object]:
    return list(compare_metadata(MigrationContext.configure(conn), metadata))


async def test_migration_creates_exactly_the_tables(db_url: str) -> None:
    store = await Store.open(db_url)
    try:
        await store.db.migrate()  # a second run is a no-op
        assert await store.db.revision() == "0001"
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
