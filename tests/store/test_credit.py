"""CreditRepo: atomic reservations, commits, releases, expiry, racing calls on two nodes."""

from __future__ import annotations

import asyncio

import pytest

from softswitch.store import InvalidInput, NotFound, Store

from .conftest import T0


async def test_reserve_commit_release(store: Store) -> None:
    acct = await store.accounts.add("Alice", credit_limit=1000)
    credit = store.credit
    assert await credit.reserve(acct.id, 300, "call-1", now=T0)
    assert await credit.reserve(acct.id, 200, "call-1", now=T0 + 60)  # the call extends its hold
    assert await credit.reserve(acct.id, 400, "call-2", now=T0)
    assert not await credit.reserve(acct.id, 101, "call-3", now=T0)
    held = await store.accounts.get(acct.id)
    assert (held.credit_reserved, held.available_credit) == (900, 100)
    assert [(r.call_uuid, r.amount) for r in await credit.reservations(acct.id)] == [
        ("call-1", 500),
        ("call-2", 400),
    ]
    await credit.commit("call-1", 420)
    await credit.release("call-2")
    after = await store.accounts.get(acct.id)
    assert (after.credit_used, after.credit_reserved, after.available_credit) == (420, 0, 580)
    with pytest.raises(NotFound):
        await credit.commit("call-1", 1)
    with pytest.raises(NotFound):
        await credit.release("nope")
    with pytest.raises(NotFound):
        await credit.reserve(999, 1, "x", now=T0)
    with pytest.raises(InvalidInput):
        await credit.reserve(acct.id, -1, "x", now=T0)

    other = await store.accounts.add("Bob", credit_limit=1000)
    assert await credit.reserve(acct.id, 10, "call-4", now=T0)
    with pytest.raises(InvalidInput):
        await credit.reserve(other.id, 10, "call-4", now=T0)
    assert (await store.accounts.get(other.id)).credit_reserved == 0  # rolled back

    await store.accounts.suspend(acct.id)
    assert not await credit.reserve(acct.id, 1, "call-5", now=T0)


async def test_expired_reservations_are_released(store: Store) -> None:
    acct = await store.accounts.add("Alice", credit_limit=100)
    assert await store.credit.reserve(acct.id, 60, "dead-node-call", now=T0, ttl_s=600)
    assert await store.credit.release_expired(T0 + 599) == 0
    assert await store.credit.release_expired(T0 + 600) == 1
    assert (await store.accounts.get(acct.id)).available_credit == 100


async def test_racing_calls_cannot_spend_the_same_credit(store: Store, other_node: Store) -> None:
    acct = await store.accounts.add("Alice", credit_limit=100)
    assert await store.credit.reserve(acct.id, 70, "first", now=T0)
    # Two calls on two nodes race for the last 30.
    results = await asyncio.gather(
        store.credit.reserve(acct.id, 30, "a", now=T0),
        other_node.credit.reserve(acct.id, 30, "b", now=T0),
    )
    assert sorted(results) == [False, True]
    # Many at once: exactly as many as the credit allows win.
    await store.accounts.update(acct.id, credit_limit=100 + 50)
    many = await asyncio.gather(
        *(
            (store if i % 2 else other_node).credit.reserve(acct.id, 10, f"m{i}", now=T0)
            for i in range(12)
        )
    )
    assert many.count(True) == 5
    final = await store.accounts.get(acct.id)
    assert final.credit_reserved == 150 and final.available_credit == 0
