"""The ``Store``: the database and every repository on it, as a node or the admin CLI opens it."""

from __future__ import annotations

import time
from collections.abc import Callable

from softswitch.store.db import Database, DatabaseUnavailable
from softswitch.store.repos.accounts import AccountRepo
from softswitch.store.repos.callbacks import CallbackQueue
from softswitch.store.repos.cdrs import CdrRepo
from softswitch.store.repos.credit import CreditRepo
from softswitch.store.repos.live_calls import LiveCallRepo
from softswitch.store.repos.nodes import NodeRepo
from softswitch.store.repos.rates import RateRepo
from softswitch.store.repos.speed_dials import SpeedDialRepo


class Store:
    """The database and every repository on it: what a node or the admin CLI opens."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.accounts = AccountRepo(db)
        self.speed_dials = SpeedDialRepo(db)
        self.rates = RateRepo(db)
        self.credit = CreditRepo(db)
        self.cdrs = CdrRepo(db)
        self.callbacks = CallbackQueue(db)
        self.live_calls = LiveCallRepo(db)
        self.nodes = NodeRepo(db)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        migrate: bool = True,
        create: bool = True,
    ) -> Store:
        """Connect to ``url`` and (by default) bring the schema up to date.

        ``create=False`` opens only a store that exists: a missing SQLite file, or a database
        without the softswitch schema, is ``DatabaseUnavailable`` and nothing is created (an
        existing store at an older revision is still migrated). A database that cannot be
        reached is ``DatabaseUnavailable`` either way.
        """
        db = Database(url, clock=clock, create=create)
        try:
            if not create and await db.revision() is None:
                raise DatabaseUnavailable(
                    f"{db.where} has no softswitch schema (softswitch db upgrade creates it)"
                )
            if migrate:
                await db.migrate()
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
