"""Rates: the price of calls per destination prefix; a number is rated by its longest prefix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from softswitch.store.db import Database
from softswitch.store.models import Rate
from softswitch.store.repos.common import InvalidInput, log, number_digits
from softswitch.store.tables import rates

MAX_PREFIX_DIGITS = 16


def _rate(row: Row[Any]) -> Rate:
    return Rate(
        row.prefix,
        row.description,
        row.price_per_minute,
        row.increment_s,
        row.minimum_s,
        bool(row.blocked),
    )


class RateRepo:
    """Prices per destination prefix; a number is rated by its longest matching prefix."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set(self, rate: Rate) -> Rate:
        """Store or replace the rate for ``rate.prefix``."""
        checked = self._check(rate)
        async with self.db.write() as conn:
            await self._upsert(conn, [checked])
        return checked

    async def set_many(self, items: Sequence[Rate], *, replace_all: bool = False) -> int:
        """Store or replace several rates, all or nothing; returns how many were stored.

        Each rate is checked as by :meth:`set`; a prefix given twice is ``InvalidInput``.
        ``replace_all`` also deletes every rate whose prefix is not among ``items`` (all of
        them when ``items`` is empty), in the same transaction.
        """
        checked = [self._check(rate) for rate in items]
        prefixes = [rate.prefix for rate in checked]
        if len(set(prefixes)) != len(prefixes):
            twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
            raise InvalidInput(f"prefix {twice[0]} given twice")
        async with self.db.write() as conn:
            if replace_all:
                await conn.execute(delete(rates).where(rates.c.prefix.not_in(prefixes)))
            await self._upsert(conn, checked)
        log.info("%d rates stored%s", len(checked), " (replacing all)" if replace_all else "")
        return len(checked)

    @staticmethod
    def _check(rate: Rate) -> Rate:
        if not rate.prefix.isascii() or not rate.prefix.isdigit():
            raise InvalidInput(f"prefix {rate.prefix!r}: digits only")
        if len(rate.prefix) > MAX_PREFIX_DIGITS:
            raise InvalidInput(f"prefix {rate.prefix!r}: at most {MAX_PREFIX_DIGITS} digits")
        if rate.price_per_minute < 0 or rate.minimum_s < 0 or rate.increment_s < 1:
            raise InvalidInput(f"prefix {rate.prefix}: price and times must be positive")
        return rate

    @staticmethod
    async def _upsert(conn: AsyncConnection, items: Sequence[Rate]) -> None:
        existing = set((await conn.execute(select(rates.c.prefix))).scalars())
        for rate in items:
            values = {
                "description": rate.description,
                "price_per_minute": rate.price_per_minute,
                "increment_s": rate.increment_s,
                "minimum_s": rate.minimum_s,
                "blocked": rate.blocked,
            }
            if rate.prefix in existing:
                await conn.execute(
                    update(rates).where(rates.c.prefix == rate.prefix).values(**values)
                )
            else:
                await conn.execute(insert(rates).values(prefix=rate.prefix, **values))

    async def delete(self, prefix: str) -> bool:
        """Remove the rate for ``prefix``; ``False`` if there was none."""
        async with self.db.write() as conn:
            result = await conn.execute(delete(rates).where(rates.c.prefix == prefix))
            return bool(result.rowcount)

    async def list(self) -> tuple[Rate, ...]:
        """Every rate, by prefix."""
        async with self.db.read() as conn:
            rows = await conn.execute(select(rates).order_by(rates.c.prefix))
            return tuple(_rate(r) for r in rows)

    async def lookup(self, number: str) -> Rate | None:
        """The rate for an E.164 number: the longest prefix that matches, or ``None``.

        One indexed query on both databases: ``prefix IN (every prefix of the number)``.
        """
        try:
            digits = number_digits(number)
        except InvalidInput:
            return None
        candidates = [digits[:i] for i in range(1, min(len(digits), MAX_PREFIX_DIGITS) + 1)]
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(rates)
                    .where(rates.c.prefix.in_(candidates))
                    .order_by(func.length(rates.c.prefix).desc())
                    .limit(1)
                )
            ).first()
        return _rate(row) if row else None
