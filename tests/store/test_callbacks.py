"""CallbackQueue: absorbing duplicates, claims by two nodes, leases, retries, transitions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from softswitch import fsm
from softswitch.store import CallbackState, IllegalTransition, NotFound, Store
from softswitch.store.repos.callbacks import CALLBACK_TRANSITIONS, TABLE

from .conftest import T0


async def test_second_trigger_is_absorbed(store: Store, other_node: Store) -> None:
    acct = await store.accounts.add("Alice", triggers=["815012345678"])
    first, created = await store.callbacks.enqueue(acct.id, "815012345678", T0, now=T0)
    assert created and first.state is CallbackState.PENDING and first.attempts == 0
    again, created = await other_node.callbacks.enqueue(acct.id, "815012345678", T0 + 5, now=T0)
    assert not created and again == first
    assert await store.callbacks.open_for(acct.id) == first
    # Two nodes taking triggers for one account at the same moment still queue one callback.
    bob = await store.accounts.add("Bob")
    results = await asyncio.gather(
        *(
            (store if i % 2 else other_node).callbacks.enqueue(bob.id, "8150", T0, now=T0)
            for i in range(6)
        )
    )
    assert [created for _, created in results].count(True) == 1
    assert len({cb.id for cb, _ in results}) == 1


async def test_claim_retry_complete(store: Store) -> None:
    acct = await store.accounts.add("Alice")
    queue = store.callbacks
    cb, _ = await queue.enqueue(acct.id, "8150", T0 + 2, now=T0)
    assert await queue.claim_due("node-a", T0 + 1, lease_s=30) == ()  # not due yet
    (claimed,) = await queue.claim_due("node-a", T0 + 2, lease_s=30)
    assert claimed.state is CallbackState.CLAIMED and claimed.claimed_by == "node-a"
    assert claimed.claimed_until == T0 + 32 and claimed.attempts == 1
    assert await queue.claim_due("node-a", T0 + 3, lease_s=30) == ()  # held

    assert await queue.reschedule(cb.id, T0 + 60, "busy (486)", node_id="node-a")
    pending = await queue.get(cb.id)
    assert pending.state is CallbackState.PENDING and pending.last_error == "busy (486)"
    assert pending.claimed_by is None and pending.due_at == T0 + 60
    (second,) = await queue.claim_due("node-a", T0 + 60, lease_s=30)
    assert second.attempts == 2
    assert await queue.complete(cb.id, node_id="node-a")
    assert (await queue.get(cb.id)).state is CallbackState.DONE
    assert await queue.open_for(acct.id) is None
    with pytest.raises(IllegalTransition):
        await queue.complete(cb.id)
    with pytest.raises(NotFound):
        await queue.complete(999)

    # Once done, a new trigger queues a new callback; failing it closes it too.
    nxt, created = await queue.enqueue(acct.id, "8150", T0 + 100, now=T0 + 100)
    assert created and nxt.id != cb.id
    with pytest.raises(IllegalTransition):
        await queue.fail(nxt.id, "not claimed yet")
    await queue.claim_due("node-a", T0 + 100, lease_s=30)
    assert await queue.fail(nxt.id, "3 attempts: no answer")
    assert [c.state for c in await queue.list()] == [CallbackState.DONE, CallbackState.FAILED]
    assert len(await queue.list(state=CallbackState.FAILED)) == 1


async def test_two_nodes_never_claim_the_same_callback(store: Store, other_node: Store) -> None:
    ids = []
    for i in range(20):
        acct = await store.accounts.add(f"customer {i}")
        cb, _ = await store.callbacks.enqueue(acct.id, "8150", T0 + i * 0.001, now=T0)
        ids.append(cb.id)

    async def drain(node: Store, name: str) -> list[int]:
        got: list[int] = []
        while batch := await node.callbacks.claim_due(name, T0 + 1, lease_s=30, limit=3):
            got.extend(cb.id for cb in batch)
            await asyncio.sleep(0)
        return got

    a, b = await asyncio.gather(drain(store, "node-a"), drain(other_node, "node-b"))
    assert sorted(a + b) == sorted(ids)  # every callback claimed exactly once
    assert not set(a) & set(b)
    owners = {cb.id: cb.claimed_by for cb in await store.callbacks.list()}
    assert all(owners[i] == "node-a" for i in a) and all(owners[i] == "node-b" for i in b)


async def test_expired_lease_is_reclaimed_by_another_node(store: Store, other_node: Store) -> None:
    acct = await store.accounts.add("Alice")
    cb, _ = await store.callbacks.enqueue(acct.id, "8150", T0, now=T0)
    (mine,) = await store.callbacks.claim_due("node-a", T0, lease_s=30)
    assert await other_node.callbacks.claim_due("node-b", T0 + 30, lease_s=30) == ()
    # node-a died: its lease runs out and node-b takes over.
    (taken,) = await other_node.callbacks.claim_due("node-b", T0 + 30.5, lease_s=30)
    assert taken.id == mine.id and taken.claimed_by == "node-b" and taken.attempts == 2
    # node-a comes back late: its word no longer counts.
    assert not await store.callbacks.complete(cb.id, node_id="node-a")
    assert not await store.callbacks.reschedule(cb.id, T0 + 90, "late", node_id="node-a")
    assert await other_node.callbacks.complete(cb.id, node_id="node-b")
    assert not await store.callbacks.complete(cb.id, node_id="node-a")


async def _callback_in(store: Store, state: CallbackState, name: str) -> int:
    """A new callback of a new account, moved to ``state`` through the queue's own API."""
    acct = await store.accounts.add(name)
    queue = store.callbacks
    cb, _ = await queue.enqueue(acct.id, "8150", T0, now=T0)
    if state is CallbackState.PENDING:
        return cb.id
    claimed = await queue.claim_due("node-a", T0, lease_s=30, limit=100)
    assert cb.id in {c.id for c in claimed}
    if state is CallbackState.DONE:
        assert await queue.complete(cb.id)
    elif state is CallbackState.FAILED:
        assert await queue.fail(cb.id, "given up")
    return cb.id


async def test_every_move_follows_the_table(store: Store) -> None:
    """complete, fail, reschedule: applied where the table has an entry, refused elsewhere."""
    queue = store.callbacks

    async def complete(i: int) -> bool:
        return await queue.complete(i)

    async def fail(i: int) -> bool:
        return await queue.fail(i, "x")

    async def reschedule(i: int) -> bool:
        return await queue.reschedule(i, T0 + 60, "x")

    moves: dict[str, Callable[[int], Awaitable[bool]]] = {
        "complete": complete,
        "fail": fail,
        "reschedule": reschedule,
    }
    n = 0
    for state in CallbackState:
        for event, move in moves.items():
            n += 1
            cb_id = await _callback_in(store, state, f"customer {n}")
            if TABLE.accepts(state, event):
                assert await move(cb_id)
                target = TABLE.fire(state, event).target
                assert (await store.callbacks.get(cb_id)).state is target
                assert CALLBACK_TRANSITIONS[event][1] is target
            else:
                with pytest.raises(IllegalTransition) as info:
                    await move(cb_id)
                assert isinstance(info.value, fsm.TransitionError)
                assert info.value.state is state and info.value.input == event
                assert (await store.callbacks.get(cb_id)).state is state
    # claim_due takes exactly the states the table lets "claim" start from (leases run out).
    claimable = set()
    for state in CallbackState:
        n += 1
        cb_id = await _callback_in(store, state, f"customer {n}")
        got = await store.callbacks.claim_due("node-b", T0 + 3600, lease_s=30, limit=100)
        if cb_id in {c.id for c in got}:
            claimable.add(state)
    assert claimable == TABLE.sources("claim")


def test_callback_table() -> None:
    assert TABLE.reachable() == TABLE.states() == frozenset(CallbackState)
    assert issubclass(TABLE.error, IllegalTransition)
    assert {
        "claim": (frozenset({CallbackState.PENDING, CallbackState.CLAIMED}), CallbackState.CLAIMED),
        "reschedule": (frozenset({CallbackState.CLAIMED}), CallbackState.PENDING),
        "complete": (frozenset({CallbackState.CLAIMED}), CallbackState.DONE),
        "fail": (frozenset({CallbackState.CLAIMED}), CallbackState.FAILED),
    } == CALLBACK_TRANSITIONS
    text = TABLE.mermaid()
    for state in CallbackState:
        assert state.name in text
