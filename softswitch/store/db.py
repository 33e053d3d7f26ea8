"""The database handle: one async SQLAlchemy engine for SQLite or PostgreSQL, and migrations.

URLs as a sysadmin writes them are accepted and given their async driver:

* ``sqlite:///var/softswitch.sqlite3`` (relative) or ``sqlite:////abs/path`` -> aiosqlite. Each
  connection sets WAL journalling (readers never block the writer), ``synchronous=FULL`` (a
  committed CDR is on disk when the write returns, even across a power cut), foreign keys on,
  and a busy timeout so concurrent writers wait instead of failing.
* ``postgresql://user:pw@host:port/db`` (or ``postgres://``) -> asyncpg.

Transactions come in two kinds. ``read()`` is a plain transaction. ``write()`` is a transaction
that will write: on SQLite it starts with ``BEGIN IMMEDIATE``, taking the single writer lock up
front, so a read-then-write inside it (claiming callbacks, counting speed dials) cannot interleave
with another writer; on PostgreSQL it is an ordinary READ COMMITTED transaction and the
repositories use row locks (``FOR UPDATE``, ``SKIP LOCKED``) and conditional updates instead.

``migrate()`` runs Alembic to ``head`` in-process; on PostgreSQL an advisory lock makes nodes
that start together migrate one after the other.

A database that cannot be reached or opened raises ``DatabaseUnavailable`` with one line that
says where (the SQLite file, or PostgreSQL's host, port, database and user: never the
password) and why. ``Database(url, create=False)`` never creates anything: a missing SQLite
file or directory is ``DatabaseUnavailable`` (read-only tools use it); by default the file
and its directory are created on first use.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import AdaptedConnection, Connection, make_url
from sqlalchemy.engine.url import URL
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState

log = logging.getLogger("softswitch.store")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_MS = 10_000
# Any constant will do: it names "the softswitch schema migration" among advisory locks.
_PG_MIGRATE_LOCK = 0x50F75A17
_WRITE = "softswitch_write"


class DatabaseUrlError(ValueError):
    """The database URL is not one the store can use."""


class DatabaseUnavailable(OSError):
    """The database cannot be reached or opened: the message says where and why, in one line.

    An ``OSError``, so callers that treat I/O failures alike (the node's start-up) keep doing
    so. The message never contains the password of the URL.
    """


_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, for messages and logs."""
    return _PASSWORD.sub(r"\1***@", url)


def async_url(url: str) -> URL:
    """The SQLAlchemy URL with the async driver for ``url`` (``sqlite:`` or ``postgresql:``)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        raise DatabaseUrlError(f"not a database URL: {redact(url)!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise DatabaseUrlError("SQLite needs a file: sqlite:///PATH")
        return parsed.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return parsed.set(drivername="postgresql+asyncpg")
    raise DatabaseUrlError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")


def us(seconds: float) -> int:
    """Epoch seconds -> integer microseconds, as the tables keep time."""
    return round(seconds * 1_000_000)


def seconds(micro: int | None) -> float | None:
    """Integer microseconds -> epoch seconds (``None`` stays ``None``)."""
    return None if micro is None else micro / 1_000_000


class Database:
    """An async engine plus the transaction helpers the repositories use.

    ``clock`` gives wall-clock epoch seconds for the created/updated stamps of rows; logic that
    depends on time (leases, lockouts, expiry) takes ``now`` from the caller instead.
    ``create=False``: a SQLite file that does not exist is ``DatabaseUnavailable`` (nothing is
    created); by default the file and its directory are created.
    """

    def __init__(
        self, url: str, *, clock: Callable[[], float] = time.time, create: bool = True
    ) -> None:
        self.url = async_url(url)
        self.clock = clock
        self.create = create
        self.dialect = self.url.get_backend_name()
        if self.dialect == "postgres":
            self.dialect = "postgresql"
        if self.dialect == "sqlite" and not create and not Path(self.url.database or "").is_file():
            raise DatabaseUnavailable(
                f"SQLite database {self.url.database} does not exist "
                "(commands that write create it, e.g. softswitch db upgrade)"
            )
        self.engine: AsyncEngine = self._create_engine()
        self._writer = self.engine.execution_options(**{_WRITE: True})
        # SQLite has one writer at a time; a second one waits in SQLite's busy handler, which
        # sleeps in steps of up to 100 ms (measured: second-long tails with three concurrent
        # writers at 50 callbacks/s). Writers of this process queue here instead, in order;
        # other processes (the CLI) still get the busy timeout.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.dialect == "sqlite" else None

    @property
    def where(self) -> str:
        """Where the database is, for people: the SQLite file, or PostgreSQL's address."""
        if self.dialect == "sqlite":
            return f"SQLite database {self.url.database}"
        host = self.url.host or "localhost"
        address = f"[{host}]" if ":" in host else host
        who = f", user {self.url.username}" if self.url.username else ""
        return (
            f"PostgreSQL at {address}:{self.url.port or 5432} (database {self.url.database}{who})"
        )

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        """The one-line ``DatabaseUnavailable`` for a failure to connect to or open the database."""
        if isinstance(exc, DatabaseUnavailable):
            return exc
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused (is the server running and listening there?)"
        elif isinstance(exc, socket.gaierror):
            reason = f"cannot resolve host name {self.url.host!r}"
        elif isinstance(exc, TimeoutError):
            reason = "timed out"
        elif isinstance(exc, DBAPIError):
            reason = str(exc.orig)
        elif isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
        else:
            reason = str(exc)
        reason = (reason.strip().splitlines() or [type(exc).__name__])[0]
        if self.url.password:
            reason = reason.replace(self.url.password, "***")
        return DatabaseUnavailable(f"cannot connect to {self.where}: {reason}")

    def _create_engine(self) -> AsyncEngine:
        if self.dialect == "sqlite":
            path = Path(self.url.database or "")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnavailable(
                    f"cannot create the directory of {self.where}: {exc.strerror or exc}"
                ) from None
            engine = create_async_engine(
                self.url,
                connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                pool_reset_on_return=None,  # see _install_sqlite_hooks
            )
            _install_sqlite_hooks(engine)
            return engine
        return create_async_engine(self.url, pool_pre_ping=True)

    @asynccontextmanager
    async def _begin(
        self, engine: AsyncEngine, lock: asyncio.Lock | None
    ) -> AsyncIterator[AsyncConnection]:
        # engine.begin() is connect() then begin(); only a failure to connect is "unavailable"
        # (a busy SQLite writer lock, say, is not). One generator and plain try blocks (not
        # an AsyncExitStack, nor read()/write() wrapping this): it runs for every transaction.
        if lock is not None:
            await lock.acquire()
        try:
            conn = engine.connect()
            try:
                await conn.start()
            except (OSError, DBAPIError) as exc:
                raise self.unavailable(exc) from exc
            try:
                async with conn.begin():
                    yield conn
            finally:
                await conn.close()
        finally:
            if lock is not None:
                lock.release()

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction for reading; committed (harmlessly) on exit."""
        return self._begin(self.engine, None)

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction that writes; committed on normal exit, rolled back on an exception."""
        return self._begin(self._writer, self._write_lock)

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent)."""
        async with self.write() as conn:
            if self.dialect == "postgresql":
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATE_LOCK}
                )
            await conn.run_sync(_upgrade_head)

    async def revision(self) -> str | None:
        """The schema revision the database is at (``None`` before the first migration)."""
        async with self.read() as conn:
            return await conn.run_sync(_current_revision)

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _install_sqlite_hooks(engine: AsyncEngine) -> None:
    # pysqlite's own implicit BEGIN is turned off so that we choose BEGIN or BEGIN IMMEDIATE.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        statement = (
            "BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE, False) else "BEGIN"
        )
        # Straight to aiosqlite: one trip to its thread. Through SQLAlchemy
        # (``exec_driver_sql``) it was three (cursor, execute, close) and a statement's
        # bookkeeping, for every transaction. Errors are wrapped as SQLAlchemy would.
        adapted: AdaptedConnection = conn.connection.dbapi_connection  # type: ignore[assignment]
        try:
            adapted.run_async(lambda driver: driver.execute(statement))
        except conn.dialect.loaded_dbapi.Error as exc:
            raise DBAPIError.instance(
                statement, None, exc, conn.dialect.loaded_dbapi.Error, dialect=conn.dialect
            ) from exc

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_conn: AdaptedConnection, _record: Any, state: PoolResetState) -> None:
        # The engine's own reset (``pool_reset_on_return=None``): a connection comes back
        # to the pool after its transaction was committed or rolled back, and SQLAlchemy
        # would still send a ROLLBACK, a trip to aiosqlite's thread that SQLite answers with
        # nothing to do. Only a connection still in a transaction (a failed COMMIT) is
        # rolled back here.
        if state.asyncio_safe and dbapi_conn.driver_connection.in_transaction:
            dbapi_conn.rollback()  # type: ignore[attr-defined]


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade_head(connection: Connection) -> None:
    from alembic import command

    command.upgrade(_alembic_config(connection), "head")


def _current_revision(connection: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
