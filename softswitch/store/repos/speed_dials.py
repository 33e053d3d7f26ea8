"""Speed dials: up to 115 per account (SPEC section 2); ``0`` + code at the dial prompt."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from softswitch.store.db import Database
from softswitch.store.models import SpeedDial
from softswitch.store.repos.accounts import lock_account
from softswitch.store.repos.common import (
    SPEED_DIAL_CODE,
    Conflict,
    InvalidInput,
    e164_number,
    log,
)
from softswitch.store.tables import MAX_SPEED_DIALS, speed_dials


class TooManySpeedDials(Conflict):
    """Storing the dials would give the account more than ``MAX_SPEED_DIALS`` codes.

    ``index`` is the position, in the sequence given to ``set_many``, of the first dial that
    did not fit (so an importer can name its line).
    """

    def __init__(self, account_id: int, index: int) -> None:
        super().__init__(f"account {account_id} already has {MAX_SPEED_DIALS} speed dials")
        self.account_id = account_id
        self.index = index


def speed_dial_code(code: str) -> str:
    """A valid speed-dial code: ``0`` then 1-3 digits, not ``00`` (customer service)."""
    if not SPEED_DIAL_CODE.fullmatch(code):
        raise InvalidInput(
            f"speed-dial code {code!r}: 2 to 4 digits starting with 0, not 00 (e.g. 03, 087)"
        )
    return code


def speed_dial(account_id: int, code: str, number: str, label: str = "") -> SpeedDial:
    """A checked speed-dial record: a valid code and an E.164 number (``e164_number``)."""
    return SpeedDial(account_id, speed_dial_code(code), e164_number(number), label)


class SpeedDialRepo:
    """Up to 115 speed dials per account (SPEC section 2): ``0`` + code dials a number."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def set(self, account_id: int, code: str, number: str, label: str = "") -> SpeedDial:
        """Store or replace a speed dial (``TooManySpeedDials``, a ``Conflict``, beyond 115)."""
        dial = speed_dial(account_id, code, number, label)
        async with self.db.write() as conn:
            await lock_account(conn, account_id)
            await self._upsert(conn, account_id, [dial])
        return dial

    async def set_many(self, account_id: int, dials: Sequence[SpeedDial]) -> int:
        """Store or replace several speed dials of one account, all or nothing.

        Each dial is checked as by :meth:`set` (its ``account_id`` is taken to be
        ``account_id``); a code given twice is ``InvalidInput``. Returns how many were stored.
        Beyond 115 codes nothing is stored and ``TooManySpeedDials.index`` names the first
        dial that did not fit.
        """
        checked: list[SpeedDial] = []
        seen: set[str] = set()
        for dial in dials:
            one = speed_dial(account_id, dial.code, dial.number, dial.label)
            if one.code in seen:
                raise InvalidInput(f"speed-dial code {one.code} given twice")
            seen.add(one.code)
            checked.append(one)
        if not checked:
            return 0
        async with self.db.write() as conn:
            await lock_account(conn, account_id)
            await self._upsert(conn, account_id, checked)
        log.info("account %d: %d speed dials stored", account_id, len(checked))
        return len(checked)

    @staticmethod
    async def _upsert(conn: AsyncConnection, account_id: int, dials: Sequence[SpeedDial]) -> None:
        existing = set(
            (
                await conn.execute(
                    select(speed_dials.c.code).where(speed_dials.c.account_id == account_id)
                )
            ).scalars()
        )
        for index, dial in enumerate(dials):
            if dial.code in existing:
                await conn.execute(
                    update(speed_dials)
                    .where(speed_dials.c.account_id == account_id, speed_dials.c.code == dial.code)
                    .values(number=dial.number, label=dial.label)
                )
                continue
            if len(existing) >= MAX_SPEED_DIALS:
                raise TooManySpeedDials(account_id, index)
            await conn.execute(
                insert(speed_dials).values(
                    account_id=account_id, code=dial.code, number=dial.number, label=dial.label
                )
            )
            existing.add(dial.code)

    async def delete(self, account_id: int, code: str) -> bool:
        """Remove a speed dial; ``False`` if there was none."""
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(speed_dials).where(
                    speed_dials.c.account_id == account_id, speed_dials.c.code == code
                )
            )
            return bool(result.rowcount)

    async def get(self, account_id: int, code: str) -> SpeedDial | None:
        """The speed dial for ``code`` (what ``0`` + code dials), or ``None``."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(speed_dials).where(
                        speed_dials.c.account_id == account_id, speed_dials.c.code == code
                    )
                )
            ).first()
        return SpeedDial(row.account_id, row.code, row.number, row.label) if row else None

    async def list(self, account_id: int) -> tuple[SpeedDial, ...]:
        """The account's speed dials by code."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(speed_dials)
                .where(speed_dials.c.account_id == account_id)
                .order_by(speed_dials.c.code)
            )
            return tuple(SpeedDial(r.account_id, r.code, r.number, r.label) for r in rows)
