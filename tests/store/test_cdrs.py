"""CdrRepo: durable writes, filters, listing and streaming records (the CSV is the CLI's)."""

from __future__ import annotations

from softswitch.store import Cdr, CdrFilter, LegKind, Store

from .conftest import T0


def _cdr(uuid: str, leg: LegKind, account: int | None, setup: float, **kw: object) -> Cdr:
    return Cdr(uuid, leg, account, "815012345678", "12125550100", setup, **kw)  # type: ignore[arg-type]


async def test_cdr_write_list(store: Store, other_node: Store) -> None:
    acct = await store.accounts.add("Alice")
    stamp = T0 + 0.123456
    written = await store.cdrs.write(
        _cdr(
            "c1",
            LegKind.DESTINATION,
            acct.id,
            stamp,
            ring_at=stamp + 1,
            answer_at=stamp + 5.000001,
            end_at=stamp + 65,
            cause_code=200,
            cause_text="normal clearing",
            billed_seconds=60,
            cost=30,
            node_id="node-a",
        )
    )
    assert written.id is not None
    await store.cdrs.write(_cdr("c1", LegKind.CALLBACK, acct.id, T0 - 5, cause_code=200))
    await store.cdrs.write(_cdr("c2", LegKind.TRIGGER, None, T0 + 100, cause_code=487))
    # Visible at once from another connection pool (another node).
    everything = await other_node.cdrs.list()
    assert [(c.call_uuid, c.leg) for c in everything] == [
        ("c1", LegKind.CALLBACK),
        ("c1", LegKind.DESTINATION),
        ("c2", LegKind.TRIGGER),
    ]
    assert everything[1] == written  # microseconds survive the round trip
    assert [c.leg for c in await store.cdrs.list(CdrFilter(call_uuid="c1"))] == [
        LegKind.CALLBACK,
        LegKind.DESTINATION,
    ]
    assert len(await store.cdrs.list(CdrFilter(account_id=acct.id))) == 2
    assert [c.call_uuid for c in await store.cdrs.list(CdrFilter(since=T0, until=T0 + 100))] == [
        "c1"
    ]
    assert len(await store.cdrs.list(limit=1)) == 1

    streamed = [c async for c in store.cdrs.stream(CdrFilter(call_uuid="c1"))]
    assert streamed == list(await store.cdrs.list(CdrFilter(call_uuid="c1")))
    assert [c async for c in store.cdrs.stream()] == list(everything)
    assert [c async for c in store.cdrs.stream(CdrFilter(call_uuid="none"))] == []
    assert await store.cdrs.write_many([]) == []


async def test_spent_since_sums_one_accounts_costs_in_the_window(store: Store) -> None:
    alice = await store.accounts.add("Alice")
    bob = await store.accounts.add("Bob")
    assert await store.cdrs.spent_since(alice.id, T0) == 0  # nothing yet: 0, not None
    await store.cdrs.write_many(
        [
            _cdr("old", LegKind.DESTINATION, alice.id, T0 - 10, cost=1000),
            _cdr("a1", LegKind.DESTINATION, alice.id, T0, cost=30),
            _cdr("a2", LegKind.OPERATOR, alice.id, T0 + 50, cost=12),
            _cdr("b1", LegKind.DESTINATION, bob.id, T0 + 5, cost=7),
        ]
    )
    assert await store.cdrs.spent_since(alice.id, T0) == 42
    assert await store.cdrs.spent_since(bob.id, T0) == 7
