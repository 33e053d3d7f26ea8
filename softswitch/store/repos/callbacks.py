"""The callback queue: callbacks owed to customers, shared by every node through the database.

``CallbackQueue.claim_due`` selects due rows ``FOR UPDATE SKIP LOCKED`` (ignored by SQLite,
where the writer lock already excludes other claimers) and marks them claimed with a lease. A
node that dies stops renewing nothing; the next ``claim_due`` on any node takes its callbacks
over as soon as the ``nodes`` table shows it dead (no heartbeat for a while), or at the latest
when the lease runs out; a callback whose live call the dead node had written down is left to
the survivor that recovers that call (``live_calls``). A partial unique index allows one open (pending or claimed)
callback per account, so a second trigger is absorbed even across nodes.

The callback life cycle is a small state machine owned here, a :class:`softswitch.fsm.Table` on
``CallbackState`` (``TABLE``). The database does the moves, so the table is used the other way
round: ``CALLBACK_TRANSITIONS`` (event -> states it applies in, state it leads to) is read off it
and the queries put it in their WHERE clauses; a move the table does not allow for the row's
state raises ``IllegalTransition`` (a :class:`CallbackTransitionError`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from softswitch import fsm
from softswitch.store.db import Database, seconds, us
from softswitch.store.models import CallbackState, LegKind, PendingCallback
from softswitch.store.repos.common import (
    IllegalTransition,
    NotFound,
    StoreError,
    by_dialect,
    log,
    to_seconds,
)
from softswitch.store.tables import OPEN_CALLBACK, callbacks, cdrs, live_calls, nodes

OPEN_STATES = (CallbackState.PENDING.value, CallbackState.CLAIMED.value)


class CallbackTransitionError(IllegalTransition, fsm.TransitionError):
    """A callback was asked to make a move its state does not allow."""


_C = CallbackState
#: A callback's life. It is queued PENDING, or already CLAIMED by the node that took the
#: trigger (``enqueue(claim_for=...)``); a node claims it with a lease, then completes, fails
#: or reschedules it. Claiming is ``claim_due``'s own query (due rows, expired leases).
TABLE: fsm.Table[CallbackState, str, None] = fsm.Table(
    "callback queue",
    {
        (_C.PENDING, "claim"): (None, _C.CLAIMED),
        # The lease ran out (the node died): another node takes the callback over.
        (_C.CLAIMED, "claim"): (None, _C.CLAIMED),
        (_C.CLAIMED, "reschedule"): (None, _C.PENDING),
        (_C.CLAIMED, "complete"): (None, _C.DONE),
        (_C.CLAIMED, "fail"): (None, _C.FAILED),
    },
    initial={_C.PENDING, _C.CLAIMED},
    final={_C.DONE, _C.FAILED},
    error=CallbackTransitionError,
)


def _by_event(
    table: fsm.Table[CallbackState, str, None],
) -> dict[str, tuple[frozenset[CallbackState], CallbackState]]:
    out: dict[str, tuple[frozenset[CallbackState], CallbackState]] = {}
    for (state, event), entry in table:
        sources, target = out.get(event, (frozenset(), entry.target))
        if entry.target is not target:
            # One UPDATE per event sets one state: an event must lead to the same one from all.
            raise ValueError(f"callback {event}: leads to {target.name} and {entry.target.name}")
        out[event] = (sources | {state}, target)
    return out


#: event -> (states it may start from, state it leads to), read off :data:`TABLE`.
CALLBACK_TRANSITIONS = _by_event(TABLE)


def _insert_if_none_open(dialect: Any) -> Any:
    """Queue a callback unless the account has an open one (the partial unique index
    ``uq_callbacks_open_account`` says so): one statement that returns the new row, or none.
    It was a SELECT for the open callback, then the INSERT."""
    return (
        dialect.insert(callbacks)
        .on_conflict_do_nothing(
            index_elements=[callbacks.c.account_id],
            index_where=OPEN_CALLBACK,
        )
        .returning(*callbacks.c)
    )


# Built once and executed with bound parameters, so the compiled forms come from the cache.
_INSERT_IF_NONE_OPEN = by_dialect(_insert_if_none_open)
_OPEN_FOR = select(callbacks).where(
    callbacks.c.account_id == bindparam("account_id"), callbacks.c.state.in_(OPEN_STATES)
)
_SETTLE = {
    (event, with_error): update(callbacks)
    .where(
        callbacks.c.id == bindparam("callback_id"),
        callbacks.c.state.in_([state.value for state in sources]),
        callbacks.c.claimed_by == bindparam("node_id"),
    )
    .values(
        state=target.value,
        claimed_by=None,
        claimed_until_us=None,
        **({"last_error": bindparam("error")} if with_error else {}),
    )
    for event, (sources, target) in CALLBACK_TRANSITIONS.items()
    for with_error in (False, True)
}


def _callback(row: Row[Any]) -> PendingCallback:
    return PendingCallback(
        id=row.id,
        account_id=row.account_id,
        trigger=row.trigger_number,
        requested_at=to_seconds(row.requested_us),
        due_at=to_seconds(row.due_us),
        attempts=row.attempts,
        state=CallbackState(row.state),
        claimed_by=row.claimed_by,
        claimed_until=seconds(row.claimed_until_us),
        last_error=row.last_error,
        call_uuid=row.call_uuid or "",
    )


class CallbackQueue:
    """Callbacks owed to customers, shared by every node through the database.

    A node ``claim_due``s callbacks with a lease, places them, then ``complete``s, ``fail``s or
    ``reschedule``s each (retries, SPEC section 1.4). Claiming counts an attempt. If the node
    dies, the lease runs out and another node's ``claim_due`` takes the callback over.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    async def enqueue(
        self,
        account_id: int,
        trigger: str,
        due_at: float,
        *,
        now: float,
        claim_for: tuple[str, float] | None = None,
        call_uuid: str = "",
    ) -> tuple[PendingCallback, bool]:
        """Queue a callback; while one is open for the account, return that one instead.

        ``call_uuid`` is the customer call it belongs to (its CDRs share it, whichever node
        places the attempts).

        Returns ``(callback, created)``: ``created`` is ``False`` when the trigger was absorbed.
        ``claim_for=(node_id, lease_s)`` queues it already claimed by that node (one write
        instead of two on the path from trigger to callback; the lease still lets another
        node take it over if this one dies).
        """
        values: dict[str, Any] = {
            "account_id": account_id,
            "trigger_number": trigger,
            "requested_us": us(now),
            "due_us": us(due_at),
            "state": CallbackState.PENDING.value,
            "call_uuid": call_uuid or None,
        }
        if claim_for is not None:
            node_id, lease_s = claim_for
            values.update(
                state=CallbackState.CLAIMED.value,
                claimed_by=node_id,
                claimed_until_us=us(now + lease_s),
                attempts=1,
            )
        try:
            async with self.db.write() as conn:
                return await self._queue(conn, values)
        except IntegrityError:
            # The insert itself absorbs an open callback, even one another node queues at
            # the same moment (ON CONFLICT on the partial index); this is any other refusal.
            async with self.db.read() as conn:
                existing = await self._open_for(conn, account_id)
            if existing is None:
                raise
            return existing, False

    async def enqueue_many(
        self,
        items: Sequence[tuple[int, str] | tuple[int, str, str]],
        *,
        now: float,
        claim_for: tuple[str, float] | None = None,
    ) -> list[tuple[PendingCallback, bool]]:
        """:meth:`enqueue` for many ``(account_id, trigger[, call_uuid])`` at once, in one
        transaction.

        A busy node gets many triggers per millisecond; one commit for all of them keeps the
        store from being the bottleneck (each commit costs milliseconds). Due at ``now``.
        """
        values: dict[str, Any] = {"requested_us": us(now), "due_us": us(now)}
        if claim_for is not None:
            node_id, lease_s = claim_for
            values.update(
                state=CallbackState.CLAIMED.value,
                claimed_by=node_id,
                claimed_until_us=us(now + lease_s),
                attempts=1,
            )
        else:
            values["state"] = CallbackState.PENDING.value
        try:
            async with self.db.write() as conn:
                out: list[tuple[PendingCallback, bool]] = []
                for item in items:
                    params = {
                        "account_id": item[0],
                        "trigger_number": item[1],
                        "call_uuid": (item[2] if len(item) > 2 else "") or None,
                        **values,
                    }
                    out.append(await self._queue(conn, params))
                return out
        except IntegrityError:
            # One of them was refused (not for an open callback: those are absorbed, see
            # ``_queue``): take them one by one, each in its own transaction.
            return [
                await self.enqueue(
                    item[0],
                    item[1],
                    now,
                    now=now,
                    claim_for=claim_for,
                    call_uuid=item[2] if len(item) > 2 else "",
                )
                for item in items
            ]

    async def _queue(
        self, conn: AsyncConnection, params: dict[str, Any]
    ) -> tuple[PendingCallback, bool]:
        """Insert the callback row ``params`` describes, or return the account's open one."""
        account_id = params["account_id"]
        for _ in range(3):
            row = (await conn.execute(_INSERT_IF_NONE_OPEN[self.db.dialect], params)).first()
            if row is not None:
                return _callback(row), True
            existing = await self._open_for(conn, account_id)
            if existing is not None:
                return existing, False
            # PostgreSQL: the open one that stopped the insert was closed since; try again.
        raise StoreError(f"account {account_id}: callback neither queued nor found open")

    @staticmethod
    async def _open_for(conn: AsyncConnection, account_id: int) -> PendingCallback | None:
        row = (await conn.execute(_OPEN_FOR, {"account_id": account_id})).first()
        return _callback(row) if row else None

    async def open_for(self, account_id: int) -> PendingCallback | None:
        """The account's pending or claimed callback, if any."""
        async with self.db.read() as conn:
            return await self._open_for(conn, account_id)

    async def get(self, callback_id: int) -> PendingCallback:
        """One callback by id (``NotFound`` if none)."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(callbacks).where(callbacks.c.id == callback_id))
            ).first()
        if row is None:
            raise NotFound(f"no callback {callback_id}")
        return _callback(row)

    async def list(self, *, state: CallbackState | None = None) -> tuple[PendingCallback, ...]:
        """Callbacks (in one state, or all) by id."""
        query = select(callbacks).order_by(callbacks.c.id)
        if state is not None:
            query = query.where(callbacks.c.state == state.value)
        async with self.db.read() as conn:
            return tuple(_callback(r) for r in await conn.execute(query))

    async def claim_due(
        self,
        node_id: str,
        now: float,
        lease_s: float,
        limit: int = 10,
        *,
        dead_before: float | None = None,
    ) -> tuple[PendingCallback, ...]:
        """Claim up to ``limit`` callbacks due by ``now`` for ``lease_s`` seconds.

        Also takes over callbacks whose lease expired, and, with ``dead_before``, those claimed
        by a node that has died (no heartbeat in ``nodes`` since ``dead_before``, or stopped)
        whose account has no live call written down: a live call's row is settled by the
        survivor that recovers the call (``live_calls``), so only a callback its dead node had
        claimed and not yet started (or finished and not yet settled) is taken here, seconds
        after the death rather than after the lease. A callback taken over whose customer call
        already has an answered callback leg (its CDR) is completed instead of called again:
        once answered, never again.

        No callback is ever held by two nodes: rows are locked ``SKIP LOCKED`` on PostgreSQL
        and the writer lock is held on SQLite between choosing and marking them.
        """
        now_us = us(now)
        taken_over = [callbacks.c.claimed_until_us < now_us]
        if dead_before is not None:
            dead = select(nodes.c.id).where(
                or_(nodes.c.heartbeat_us < us(dead_before), nodes.c.stopped_us.is_not(None)),
                nodes.c.id != node_id,
            )
            live = select(live_calls.c.call_uuid).where(
                live_calls.c.account_id == callbacks.c.account_id
            )
            taken_over.append(and_(callbacks.c.claimed_by.in_(dead), ~live.exists()))
        due = or_(
            and_(callbacks.c.state == CallbackState.PENDING.value, callbacks.c.due_us <= now_us),
            and_(callbacks.c.state == CallbackState.CLAIMED.value, or_(*taken_over)),
        )
        async with self.db.write() as conn:
            chosen = (
                await conn.execute(
                    select(
                        callbacks.c.id,
                        callbacks.c.state,
                        callbacks.c.claimed_by,
                        callbacks.c.claimed_until_us,
                        callbacks.c.call_uuid,
                    )
                    .where(due)
                    .order_by(callbacks.c.due_us, callbacks.c.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not chosen:
                return ()
            answered = await self._answered(conn, chosen)
            if answered:
                await conn.execute(
                    update(callbacks)
                    .where(callbacks.c.id.in_([c.id for c in chosen if c.id in answered]))
                    .values(
                        state=CallbackState.DONE.value,
                        claimed_by=None,
                        claimed_until_us=None,
                        last_error="answered before its node stopped",
                    )
                )
            claim = [c.id for c in chosen if c.id not in answered]
            rows = (
                (
                    await conn.execute(
                        update(callbacks)
                        .where(callbacks.c.id.in_(claim))
                        .values(
                            state=CallbackState.CLAIMED.value,
                            claimed_by=node_id,
                            claimed_until_us=now_us + us(lease_s),
                            attempts=callbacks.c.attempts + 1,
                        )
                        .returning(*callbacks.c)
                    )
                ).all()
                if claim
                else []
            )
        for c in chosen:
            if c.id in answered:
                log.warning(
                    "callback %d: %s stopped after its customer answered: claimed -> done",
                    c.id,
                    c.claimed_by,
                )
            elif c.state != CallbackState.CLAIMED.value:
                log.info("callback %d: pending -> claimed by %s", c.id, node_id)
            elif c.claimed_until_us < now_us:
                log.warning(
                    "callback %d: lease of %s expired, claimed -> claimed by %s",
                    c.id,
                    c.claimed_by,
                    node_id,
                )
            else:
                log.warning(
                    "callback %d: %s stopped answering, claimed -> claimed by %s",
                    c.id,
                    c.claimed_by,
                    node_id,
                )
        return tuple(sorted((_callback(r) for r in rows), key=lambda p: (p.due_at, p.id)))

    @staticmethod
    async def _answered(conn: AsyncConnection, chosen: Sequence[Any]) -> set[int]:
        """Of the claimed rows being taken over, those whose customer call has an answered
        callback leg (a CDR with an answer time, under the row's ``call_uuid``)."""
        by_call = {
            c.call_uuid: c.id
            for c in chosen
            if c.state == CallbackState.CLAIMED.value and c.call_uuid
        }
        if not by_call:
            return set()
        found = await conn.execute(
            select(cdrs.c.call_uuid)
            .where(
                cdrs.c.call_uuid.in_(list(by_call)),
                cdrs.c.leg == LegKind.CALLBACK.value,
                cdrs.c.answer_us.is_not(None),
            )
            .distinct()
        )
        return {by_call[u] for u in found.scalars()}

    async def renew(self, node_id: str, callback_ids: Sequence[int], until: float) -> int:
        """Extend ``node_id``'s lease on its claimed callbacks to ``until``; how many it kept.

        A node renews the callbacks of its live calls well inside the lease, so a call that
        lasts longer than the lease is never taken over (and the customer never called back a
        second time) while the node is alive; only a node that stops renewing loses them.
        """
        if not callback_ids:
            return 0
        async with self.db.write() as conn:
            result = await conn.execute(
                update(callbacks)
                .where(
                    callbacks.c.id.in_(list(callback_ids)),
                    callbacks.c.state == CallbackState.CLAIMED.value,
                    callbacks.c.claimed_by == node_id,
                )
                .values(claimed_until_us=us(until))
            )
        kept = int(result.rowcount)
        if kept != len(callback_ids):
            log.warning(
                "lease renewal by %s: kept %d of %d callbacks (others were taken over)",
                node_id,
                kept,
                len(callback_ids),
            )
        return kept

    async def reschedule(
        self, callback_id: int, due_at: float, error: str, *, node_id: str | None = None
    ) -> bool:
        """Put a claimed callback back in the queue for another attempt at ``due_at``."""
        return await self._move(
            callback_id, "reschedule", node_id, due_us=us(due_at), last_error=error
        )

    async def complete(self, callback_id: int, *, node_id: str | None = None) -> bool:
        """The callback was placed (answered): it leaves the queue."""
        return await self._move(callback_id, "complete", node_id)

    async def fail(self, callback_id: int, error: str, *, node_id: str | None = None) -> bool:
        """Give up on the callback (attempts exhausted, account suspended ...)."""
        return await self._move(callback_id, "fail", node_id, last_error=error)

    async def settle_many(
        self, items: Sequence[tuple[int, str, str | None]], *, node_id: str
    ) -> builtins.list[bool]:
        """``complete`` / ``fail`` several callbacks of ``node_id`` in one transaction.

        ``items`` are ``(callback_id, "complete" | "fail", error)``. Each result is False when
        the move did not apply (the claim was lost, or the state allows no such move); those
        are logged, not raised, so one stale callback cannot fail the others' commit.
        """
        out: list[bool] = []
        async with self.db.write() as conn:
            for callback_id, event, error in items:
                _, target = CALLBACK_TRANSITIONS[event]
                params: dict[str, Any] = {"callback_id": callback_id, "node_id": node_id}
                if error is not None:
                    params["error"] = error
                result = await conn.execute(_SETTLE[event, error is not None], params)
                moved = bool(result.rowcount)
                if moved:
                    log.info("callback %d: claimed -> %s (%s)", callback_id, target.value, event)
                else:
                    log.warning(
                        "callback %d: %s by %s did not apply (claim lost?)",
                        callback_id,
                        event,
                        node_id,
                    )
                out.append(moved)
        return out

    async def _move(self, callback_id: int, event: str, node_id: str | None, **values: Any) -> bool:
        """Apply ``event``; ``False`` if ``node_id`` lost its claim (lease taken over)."""
        sources, target = CALLBACK_TRANSITIONS[event]
        conditions = [
            callbacks.c.id == callback_id,
            callbacks.c.state.in_([s.value for s in sources]),
        ]
        if node_id is not None:
            conditions.append(callbacks.c.claimed_by == node_id)
        async with self.db.write() as conn:
            result = await conn.execute(
                update(callbacks)
                .where(*conditions)
                .values(state=target.value, claimed_by=None, claimed_until_us=None, **values)
            )
            if result.rowcount:
                old = ", ".join(sorted(s.value for s in sources))
                log.info("callback %d: %s -> %s (%s)", callback_id, old, target.value, event)
                return True
            row = (
                await conn.execute(
                    select(callbacks.c.state, callbacks.c.claimed_by).where(
                        callbacks.c.id == callback_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"no callback {callback_id}")
        if node_id is not None and row.claimed_by != node_id:
            log.warning("callback %d: %s by %s refused, claim lost", callback_id, event, node_id)
            return False
        raise CallbackTransitionError(
            f"callback {callback_id}: cannot {event} from {row.state}",
            state=CallbackState(row.state),
            input=event,
        )
