"""Live calls: what a node says about its customer calls while they last (issue 11).

A node writes each live call's description every few seconds (:meth:`LiveCallRepo.heartbeat`,
many rows in one transaction) and removes it once the call's CDRs are durable
(:meth:`LiveCallRepo.forget`). A call whose description has not been refreshed for a while
belongs to a node that died: :meth:`LiveCallRepo.take_stale` hands such calls, each to exactly
one recovering node (the rows are marked, ``SKIP LOCKED`` on PostgreSQL, the writer lock on
SQLite), which writes their CDRs as interrupted, settles their credit and callback, and
forgets them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, delete, or_, select, update
from sqlalchemy.engine import Row

from softswitch.store.db import Database, us
from softswitch.store.models import LiveCall
from softswitch.store.repos.common import by_dialect, to_seconds
from softswitch.store.tables import live_calls


def _live(row: Row[Any]) -> LiveCall:
    return LiveCall(
        call_uuid=row.call_uuid,
        node_id=row.node_id,
        account_id=row.account_id,
        callback_id=row.callback_id,
        trigger=row.trigger_number,
        started_at=to_seconds(row.started_us),
        alive_at=to_seconds(row.alive_us),
        answered=bool(row.answered),
        legs=row.legs,
        reservation=row.reservation,
    )


def _upsert(dialect: Any) -> Any:
    """Insert a description, or replace the one written before unless a survivor is
    recovering the call: one statement (it was a SELECT, then an UPDATE or INSERT each)."""
    stmt = dialect.insert(live_calls)
    keep = ("call_uuid", "recovering_by")
    return stmt.on_conflict_do_update(
        index_elements=[live_calls.c.call_uuid],
        set_={c.name: stmt.excluded[c.name] for c in live_calls.c if c.name not in keep},
        where=live_calls.c.recovering_by.is_(None),
    )


# Built once: executed with bound parameters, their compiled form comes from the cache.
_UPSERT = by_dialect(_upsert)
_FORGET = delete(live_calls).where(live_calls.c.call_uuid.in_(bindparam("ids", expanding=True)))


class LiveCallRepo:
    """The descriptions of live calls; see the module docstring."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def heartbeat(self, calls: Sequence[LiveCall]) -> None:
        """Write (insert or replace) the description of each call, in one transaction."""
        if not calls:
            return
        rows = [
            {
                "call_uuid": call.call_uuid,
                "node_id": call.node_id,
                "account_id": call.account_id,
                "callback_id": call.callback_id,
                "trigger_number": call.trigger,
                "started_us": us(call.started_at),
                "alive_us": us(call.alive_at),
                "answered": call.answered,
                "legs": call.legs,
                "reservation": call.reservation,
            }
            for call in calls
        ]
        async with self.db.write() as conn:
            await conn.execute(_UPSERT[self.db.dialect], rows)

    async def forget(self, call_uuids: Sequence[str]) -> None:
        """The calls are over and recorded: their descriptions go."""
        if not call_uuids:
            return
        async with self.db.write() as conn:
            await conn.execute(_FORGET, {"ids": list(call_uuids)})

    async def take_stale(
        self, node_id: str, alive_before: float, *, limit: int = 100
    ) -> tuple[LiveCall, ...]:
        """Claim for ``node_id`` the calls not refreshed since ``alive_before`` (their node is
        gone), or already claimed by ``node_id`` (a recovery it did not finish)."""
        stale = or_(
            and_(live_calls.c.alive_us < us(alive_before), live_calls.c.recovering_by.is_(None)),
            live_calls.c.recovering_by == node_id,
        )
        async with self.db.write() as conn:
            chosen = (
                (
                    await conn.execute(
                        select(live_calls.c.call_uuid)
                        .where(stale, live_calls.c.node_id != node_id)
                        .order_by(live_calls.c.alive_us)
                        .limit(limit)
                        .with_for_update(skip_locked=True)
                    )
                )
                .scalars()
                .all()
            )
            if not chosen:
                return ()
            await conn.execute(
                update(live_calls)
                .where(live_calls.c.call_uuid.in_(chosen))
                .values(recovering_by=node_id)
            )
            rows = (
                await conn.execute(select(live_calls).where(live_calls.c.call_uuid.in_(chosen)))
            ).all()
        return tuple(_live(r) for r in rows)

    async def list(self) -> tuple[LiveCall, ...]:
        """Every described call (oldest first)."""
        async with self.db.read() as conn:
            rows = (await conn.execute(select(live_calls).order_by(live_calls.c.started_us))).all()
        return tuple(_live(r) for r in rows)
