"""LiveCallRepo: heartbeats, forgetting, and each stale call recovered by exactly one node."""

from __future__ import annotations

import asyncio

from softswitch.store import LiveCall, Store

from .conftest import T0


def live(call_uuid: str, account_id: int, alive_at: float, node: str = "node-a") -> LiveCall:
    return LiveCall(
        call_uuid=call_uuid,
        node_id=node,
        account_id=account_id,
        callback_id=None,
        trigger="815012345678",
        started_at=T0,
        alive_at=alive_at,
        answered=False,
        legs='[{"leg": "callback"}]',
        reservation=None,
    )


async def test_heartbeat_writes_and_refreshes_then_forget(store: Store) -> None:
    acct = await store.accounts.add("Alice")
    await store.live_calls.heartbeat([live("c1", acct.id, T0), live("c2", acct.id, T0)])
    await store.live_calls.heartbeat([live("c1", acct.id, T0 + 5)])
    rows = {c.call_uuid: c for c in await store.live_calls.list()}
    assert set(rows) == {"c1", "c2"}
    assert rows["c1"].alive_at == T0 + 5 and rows["c2"].alive_at == T0
    assert rows["c1"].legs == '[{"leg": "callback"}]'
    await store.live_calls.forget(["c2"])
    assert [c.call_uuid for c in await store.live_calls.list()] == ["c1"]


async def test_stale_calls_of_a_dead_node_go_to_one_survivor(
    store: Store, other_node: Store
) -> None:
    acct = await store.accounts.add("Alice")
    await store.live_calls.heartbeat(
        [live("dead-1", acct.id, T0), live("dead-2", acct.id, T0), live("fresh", acct.id, T0 + 60)]
    )
    # Two survivors look at once: every stale call is taken by exactly one of them.
    a, b = await asyncio.gather(
        store.live_calls.take_stale("node-b", T0 + 30),
        other_node.live_calls.take_stale("node-c", T0 + 30),
    )
    taken = sorted(c.call_uuid for c in (*a, *b))
    assert taken == ["dead-1", "dead-2"]
    # A survivor that did not finish gets its own claims back; the other sees none.
    again = await store.live_calls.take_stale("node-b", T0 + 30)
    assert {c.call_uuid for c in again} == {c.call_uuid for c in a}
    # A heartbeat from the "dead" node no longer revives a call being recovered.
    await store.live_calls.heartbeat([live("dead-1", acct.id, T0 + 90)])
    rows = {c.call_uuid: c for c in await store.live_calls.list()}
    assert rows["dead-1"].alive_at == T0


async def test_a_node_never_recovers_its_own_calls(store: Store) -> None:
    acct = await store.accounts.add("Alice")
    await store.live_calls.heartbeat([live("mine", acct.id, T0, node="node-b")])
    assert await store.live_calls.take_stale("node-b", T0 + 300) == ()


async def test_one_heartbeat_inserts_refreshes_and_spares_a_call_being_recovered(
    store: Store, other_node: Store
) -> None:
    acct = await store.accounts.add("Alice")
    await store.live_calls.heartbeat([live("old", acct.id, T0), live("dead", acct.id, T0 - 100)])
    (taken,) = await other_node.live_calls.take_stale("node-b", T0 - 50)
    assert taken.call_uuid == "dead"
    # One batch: a call written before, a new one, and one a survivor is recovering.
    await store.live_calls.heartbeat(
        [live("old", acct.id, T0 + 5), live("new", acct.id, T0 + 5), live("dead", acct.id, T0 + 5)]
    )
    rows = {c.call_uuid: c for c in await store.live_calls.list()}
    assert {u: c.alive_at for u, c in rows.items()} == {
        "old": T0 + 5,
        "new": T0 + 5,
        "dead": T0 - 100,
    }
    assert rows["new"] == live("new", acct.id, T0 + 5)
