"""Statements per request on the call path: each one is a round trip to the database (on
SQLite, trips to aiosqlite's thread), and they were most of a whole call's CPU. These pin
the counts, so a change that adds one says so here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from softswitch.store import Cdr, LegKind, LiveCall, Location, Rate, Store

from .conftest import T0


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements ``store`` sends inside the block (BEGIN and COMMIT aside)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    engine = store.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


def live(call_uuid: str, account_id: int, callback_id: int) -> LiveCall:
    return LiveCall(call_uuid, "node-a", account_id, callback_id, "8150", T0, T0, False, "[]", None)


async def test_a_whole_call_costs_one_statement_per_step(store: Store) -> None:
    acct = await store.accounts.add("Alice", location=Location("81312345678"), credit_limit=10**6)
    other = await store.accounts.add("Bob")
    await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
    with statements(store) as sent:
        [(cb, created)] = await store.callbacks.enqueue_many(
            [(acct.id, "8150", "call-1")], now=T0, claim_for=("node-a", 30.0)
        )
    assert created and len(sent) == 1  # the insert answers "already open" itself
    with statements(store) as sent:
        await store.live_calls.heartbeat(
            [live("call-1", acct.id, cb.id), live("call-2", other.id, cb.id)]
        )
        await store.live_calls.heartbeat([live("call-1", acct.id, cb.id)])
    assert len(sent) == 2  # insert or refresh, any number of calls: one statement
    with statements(store) as sent:
        await store.accounts.get(acct.id)
    assert len(sent) == 1  # the account and its trigger numbers together
    with statements(store) as sent:
        assert await store.rates.lookup("441234567890") is not None
        assert await store.credit.reserve(acct.id, 100, "call-1-1", now=T0)
        assert await store.credit.reserve(acct.id, 100, "call-1-1", now=T0)
    assert len(sent) == 1 + 2 + 2  # hold on the account, then add to the call's reservation
    records = [
        Cdr("call-1", leg, acct.id, "8150", "441234567890", T0, cost=10)
        for leg in (LegKind.CALLBACK, LegKind.DESTINATION)
    ]
    with statements(store) as sent:
        await store.cdrs.write_many(records)
        await store.credit.commit("call-1-1", 10)
        assert await store.callbacks.settle_many([(cb.id, "complete", None)], node_id="node-a")
        await store.live_calls.forget(["call-1", "call-2"])
    assert len(sent) == 2 + 2 + 1 + 1
    assert (await store.accounts.get(acct.id)).credit_used == 10
