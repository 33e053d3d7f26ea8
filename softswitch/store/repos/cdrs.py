"""Call detail records: one row per leg, durable when the write returns (SPEC section 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, select, true
from sqlalchemy.engine import Row

from softswitch.store.db import Database, seconds, us
from softswitch.store.models import Cdr, LegKind
from softswitch.store.repos.common import to_seconds
from softswitch.store.tables import cdrs

#: A CDR's fields in the order flat views (the CSV export) show them: the id first.
CDR_CSV_COLUMNS = (
    "id",
    "call_uuid",
    "leg",
    "account_id",
    "from_number",
    "to_number",
    "setup_at",
    "ring_at",
    "answer_at",
    "end_at",
    "cause_code",
    "cause_text",
    "billed_seconds",
    "cost",
    "node_id",
)


def iso_utc(when: float | None) -> str:
    """``2024-05-01T12:00:00.123456Z`` for epoch seconds; '' for ``None``."""
    if when is None:
        return ""
    return datetime.fromtimestamp(when, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _cdr(row: Row[Any]) -> Cdr:
    return Cdr(
        call_uuid=row.call_uuid,
        leg=LegKind(row.leg),
        account_id=row.account_id,
        from_number=row.from_number,
        to_number=row.to_number,
        setup_at=to_seconds(row.setup_us),
        ring_at=seconds(row.ring_us),
        answer_at=seconds(row.answer_us),
        end_at=seconds(row.end_us),
        cause_code=row.cause_code,
        cause_text=row.cause_text,
        billed_seconds=row.billed_seconds,
        cost=row.cost,
        node_id=row.node_id,
        id=row.id,
    )


@dataclass(frozen=True, slots=True)
class CdrFilter:
    """Which CDRs to list or export (all given conditions must hold; times are setup times)."""

    account_id: int | None = None
    call_uuid: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self) -> Any:
        conditions = []
        if self.account_id is not None:
            conditions.append(cdrs.c.account_id == self.account_id)
        if self.call_uuid is not None:
            conditions.append(cdrs.c.call_uuid == self.call_uuid)
        if self.since is not None:
            conditions.append(cdrs.c.setup_us >= us(self.since))
        if self.until is not None:
            conditions.append(cdrs.c.setup_us < us(self.until))
        return and_(true(), *conditions)


# Built once: executed with bound parameters, the compiled statement comes from the cache.
# One INSERT per record: a batch is one transaction (one commit) already, and a multi-row
# INSERT ... RETURNING does not say which id went to which row on SQLite.
_INSERT = insert(cdrs).returning(cdrs.c.id)
_SPENT = select(func.coalesce(func.sum(cdrs.c.cost), 0)).where(
    cdrs.c.account_id == bindparam("account_id"), cdrs.c.setup_us >= bindparam("since_us")
)


class CdrRepo:
    """Call detail records, one per leg; a write is on disk when it returns (SPEC section 7)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, cdr: Cdr) -> Cdr:
        """Store ``cdr`` durably; returns it with its ``id``."""
        return (await self.write_many([cdr]))[0]

    async def write_many(self, records: Sequence[Cdr]) -> list[Cdr]:
        """Write several CDRs in one transaction (group commit); durable when it returns."""
        if not records:
            return []
        async with self.db.write() as conn:
            written = []
            for cdr in records:
                result = await conn.execute(
                    _INSERT,
                    {
                        "call_uuid": cdr.call_uuid,
                        "leg": cdr.leg.value,
                        "account_id": cdr.account_id,
                        "from_number": cdr.from_number,
                        "to_number": cdr.to_number,
                        "setup_us": us(cdr.setup_at),
                        "ring_us": None if cdr.ring_at is None else us(cdr.ring_at),
                        "answer_us": None if cdr.answer_at is None else us(cdr.answer_at),
                        "end_us": None if cdr.end_at is None else us(cdr.end_at),
                        "cause_code": cdr.cause_code,
                        "cause_text": cdr.cause_text,
                        "billed_seconds": cdr.billed_seconds,
                        "cost": cdr.cost,
                        "node_id": cdr.node_id,
                    },
                )
                written.append(replace(cdr, id=int(result.scalar_one())))
        return written

    async def spent_since(self, account_id: int, since: float) -> int:
        """What ``account_id``'s calls set up since ``since`` cost (the daily spend cap)."""
        async with self.db.read() as conn:
            total = await conn.scalar(_SPENT, {"account_id": account_id, "since_us": us(since)})
        return int(total or 0)

    async def list(self, where: CdrFilter | None = None, *, limit: int = 1000) -> tuple[Cdr, ...]:
        """CDRs matching ``where`` in setup order (oldest first), at most ``limit``."""
        where = where or CdrFilter()
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(cdrs).where(where.where()).order_by(cdrs.c.setup_us, cdrs.c.id).limit(limit)
            )
            return tuple(_cdr(r) for r in rows)

    async def stream(self, where: CdrFilter | None = None) -> AsyncIterator[Cdr]:
        """Every CDR matching ``where`` in setup order, fetched as consumed (for exports).

        The read transaction stays open until the iteration ends; consume it promptly.
        """
        where = where or CdrFilter()
        async with self.db.read() as conn:
            result = await conn.stream(
                select(cdrs).where(where.where()).order_by(cdrs.c.setup_us, cdrs.c.id)
            )
            async for row in result:
                yield _cdr(row)
