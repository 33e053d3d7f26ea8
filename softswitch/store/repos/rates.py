"""Rates: the price of calls per destination prefix; a number is rated by its longest prefix.

Prices are minor units per minute with up to 6 decimal places (2.35 cents a minute). The table
keeps them as integer millionths of a minor unit (``PRICE_SCALE``), so they are exact on SQLite
and PostgreSQL alike; records carry them as ``Decimal``, which ``softswitch.service.rating``
computes with exactly (each call's cost is rounded up to a whole minor unit there).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from softswitch.store.db import Database
from softswitch.store.models import Rate
from softswitch.store.repos.common import InvalidInput, log, number_digits
from softswitch.store.tables import PRICE_SCALE, rates

MAX_PREFIX_DIGITS = 16
PRICE_DECIMALS = 6  # PRICE_SCALE = 10 ** PRICE_DECIMALS
_MAX_MICROS = 2**63 - 1  # BIGINT
_PRICE_TEXT = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")


def price_micros(price: int | Decimal) -> int:
    """``price`` (minor units per minute) in millionths, or ``InvalidInput`` saying why."""
    if isinstance(price, bool) or not isinstance(price, int | Decimal):
        raise InvalidInput(f"price {price!r}: not a price (an int or a Decimal)")
    value = Decimal(price)
    if not value.is_finite():
        raise InvalidInput(f"price {price}: not a price")
    if value < 0:
        raise InvalidInput(f"price {price}: must not be negative")
    micros = value * PRICE_SCALE
    if micros != micros.to_integral_value():
        raise InvalidInput(f"price {price}: at most {PRICE_DECIMALS} decimal places")
    if micros > _MAX_MICROS:
        raise InvalidInput(f"price {price}: too large")
    return int(micros)


def price_from_micros(micros: int) -> Decimal:
    """The ``Decimal`` price for millionths of a minor unit (``Decimal("2.35")``, ``"20"``)."""
    return Decimal(micros) / PRICE_SCALE


def parse_price(text: str) -> Decimal:
    """A price as people write it (``20``, ``2.35``, ``0.125``), checked, or ``InvalidInput``."""
    cleaned = text.strip()
    if not cleaned.isascii() or not _PRICE_TEXT.fullmatch(cleaned):
        raise InvalidInput(
            f"price {text!r}: expected minor units per minute such as 20 or 2.35 "
            f"(at most {PRICE_DECIMALS} decimal places)"
        )
    try:
        value = Decimal(cleaned)
    except InvalidOperation:  # the pattern admits only plain decimals; kept for safety
        raise InvalidInput(f"price {text!r}: not a price") from None
    return price_from_micros(price_micros(value))


def _rate(row: Row[Any]) -> Rate:
    return Rate(
        row.prefix,
        row.description,
        price_from_micros(row.price_micros_per_minute),
        row.increment_s,
        row.minimum_s,
        bool(row.blocked),
    )


# Built once (the call path's look-up): with bound parameters, compiled once and cached.
_LOOKUP = (
    select(rates)
    .where(rates.c.prefix.in_(bindparam("prefixes", expanding=True)))
    .order_by(func.length(rates.c.prefix).desc())
    .limit(1)
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
        """``rate`` with its price as the ``Decimal`` the store will give back."""
        if not rate.prefix.isascii() or not rate.prefix.isdigit():
            raise InvalidInput(f"prefix {rate.prefix!r}: digits only")
        if len(rate.prefix) > MAX_PREFIX_DIGITS:
            raise InvalidInput(f"prefix {rate.prefix!r}: at most {MAX_PREFIX_DIGITS} digits")
        try:
            micros = price_micros(rate.price_per_minute)
        except InvalidInput as exc:
            raise InvalidInput(f"prefix {rate.prefix}: {exc}") from None
        if rate.minimum_s < 0 or rate.increment_s < 1:
            raise InvalidInput(f"prefix {rate.prefix}: price and times must be positive")
        return replace(rate, price_per_minute=price_from_micros(micros))

    @staticmethod
    async def _upsert(conn: AsyncConnection, items: Sequence[Rate]) -> None:
        existing = set((await conn.execute(select(rates.c.prefix))).scalars())
        for rate in items:
            values = {
                "description": rate.description,
                "price_micros_per_minute": price_micros(rate.price_per_minute),
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
            row = (await conn.execute(_LOOKUP, {"prefixes": candidates})).first()
        return _rate(row) if row else None
