"""CallbackQueue: absorbing duplicates, claims by two nodes, leases, retries, transitions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from softswitch import fsm
from softswitch.store import (
    CallbackState,
    Cdr,
    IllegalTransition,
    LegKind,
    LiveCall,
    NodeInfo,
    NotFound,
    Store,
)
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


def _node(node_id: str) -> NodeInfo:
    return NodeInfo(node_id, "udp:127.0.0.1:5070", "test", T0, T0)


async def test_a_dead_nodes_claims_are_taken_over_before_the_lease(
    store: Store, other_node: Store
) -> None:
    """Issue 12: a node that dies right after claiming (or queueing already claimed) a
    callback, before writing its live call down, no longer leaves the customer waiting for
    the 300 s lease: once its heartbeat is stale, the next claim elsewhere takes the row."""
    await store.nodes.beat(_node("node-a"), T0)
    await store.nodes.beat(_node("node-b"), T0)
    alice = await store.accounts.add("Alice")
    bob = await store.accounts.add("Bob")
    carol = await store.accounts.add("Carol")
    orphan, _ = await store.callbacks.enqueue(
        alice.id, "8150", T0, now=T0, claim_for=("node-a", 300), call_uuid="call-alice"
    )
    # Bob's call was written down by node-a: its recovery settles that row, not the claim.
    tracked, _ = await store.callbacks.enqueue(
        bob.id, "8151", T0, now=T0, claim_for=("node-a", 300), call_uuid="call-bob"
    )
    await store.live_calls.heartbeat(
        [
            LiveCall(
                call_uuid="call-bob",
                node_id="node-a",
                account_id=bob.id,
                callback_id=tracked.id,
                trigger="8151",
                started_at=T0,
                alive_at=T0,
                answered=False,
                legs="[]",
                reservation=None,
            )
        ]
    )
    # Carol had answered (her callback CDR is durable) when node-a died before settling.
    answered, _ = await store.callbacks.enqueue(
        carol.id, "8152", T0, now=T0, claim_for=("node-a", 300), call_uuid="call-carol"
    )
    await store.cdrs.write(
        Cdr("call-carol", LegKind.CALLBACK, carol.id, "", "8190", T0, answer_at=T0 + 2)
    )
    # node-a is alive (its heartbeat is fresh): nothing is taken.
    assert await other_node.callbacks.claim_due("node-b", T0 + 5, 300, dead_before=T0 - 20) == ()
    # Without the heartbeat rule only the lease counts (the behaviour before issue 12).
    assert await other_node.callbacks.claim_due("node-b", T0 + 25, 300) == ()
    # node-a has been silent for 20 s: node-b takes the orphan, completes Carol's, leaves Bob's.
    await other_node.nodes.beat(_node("node-b"), T0 + 25)
    (taken,) = await other_node.callbacks.claim_due("node-b", T0 + 25, 300, dead_before=T0 + 5)
    assert taken.id == orphan.id and taken.claimed_by == "node-b" and taken.attempts == 2
    assert taken.call_uuid == "call-alice"
    rows = {c.id: c for c in await store.callbacks.list()}
    assert rows[answered.id].state is CallbackState.DONE
    assert rows[tracked.id].state is CallbackState.CLAIMED
    assert rows[tracked.id].claimed_by == "node-a"
    # A node never takes its own claims as a dead node's; a clean stop counts as gone.
    await store.nodes.stop("node-a", T0 + 26)
    assert await store.callbacks.claim_due("node-a", T0 + 26, 300, dead_before=T0 + 25) == ()
    await store.live_calls.forget(["call-bob"])
    (late,) = await other_node.callbacks.claim_due("node-b", T0 + 26, 300, dead_before=T0 + 6)
    assert late.id == tracked.id


async def test_enqueue_many_queues_claimed_and_absorbs_open_ones(store: Store) -> None:
    alice = await store.accounts.add("Alice")
    bob = await store.accounts.add("Bob")
    carol = await store.accounts.add("Carol")
    waiting, _ = await store.callbacks.enqueue(carol.id, "8150", T0 + 60, now=T0)
    results = await store.callbacks.enqueue_many(
        [
            (alice.id, "8151", "call-1"),
            (bob.id, "8152"),
            (alice.id, "8151", "call-3"),
            (carol.id, "8153", "call-4"),
        ],
        now=T0,
        claim_for=("node-a", 30.0),
    )
    assert [created for _, created in results] == [True, True, False, False]
    first, second, again, carols = (cb for cb, _ in results)
    assert (first.account_id, first.trigger, first.call_uuid) == (alice.id, "8151", "call-1")
    assert first.state is CallbackState.CLAIMED and first.claimed_by == "node-a"
    assert first.claimed_until == T0 + 30 and first.attempts == 1 and first.due_at == T0
    assert (second.account_id, second.call_uuid, second.state) == (bob.id, "", first.state)
    assert again == first  # the second trigger in the batch is absorbed
    assert carols == waiting  # so is one for an account with a callback already open
    assert [cb.id for cb in await store.callbacks.list()] == [waiting.id, first.id, second.id]
