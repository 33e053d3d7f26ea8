"""NodeRepo: a node's row at start, its heartbeats, a clean stop, pruning, and its state."""

from __future__ import annotations

from softswitch.store import NodeInfo, Store

from .conftest import T0


def node(node_id: str, started_at: float = T0) -> NodeInfo:
    return NodeInfo(
        id=node_id,
        address="udp:127.0.0.1:5070 tcp:127.0.0.1:5070",
        version="1.2.3",
        started_at=started_at,
        heartbeat_at=started_at,
    )


async def test_beat_creates_then_refreshes_and_stop_marks_it(store: Store) -> None:
    await store.nodes.beat(node("host:1:aa"), T0)
    await store.nodes.beat(node("host:2:bb", T0 + 1), T0 + 1)
    await store.nodes.beat(node("host:1:aa"), T0 + 5)
    rows = {n.id: n for n in await store.nodes.list()}
    assert [n.id for n in await store.nodes.list()] == ["host:2:bb", "host:1:aa"]  # newest first
    first = rows["host:1:aa"]
    assert (first.started_at, first.heartbeat_at, first.stopped_at) == (T0, T0 + 5, None)
    assert first.address.startswith("udp:127.0.0.1:5070") and first.version == "1.2.3"
    await store.nodes.stop("host:1:aa", T0 + 7)
    stopped = {n.id: n for n in await store.nodes.list()}["host:1:aa"]
    assert stopped.stopped_at == T0 + 7 and stopped.heartbeat_at == T0 + 7


async def test_state_up_dead_stopped_and_pruning(store: Store) -> None:
    await store.nodes.beat(node("up"), T0 + 95)
    await store.nodes.beat(node("dead"), T0 + 50)
    await store.nodes.beat(node("gone"), T0)
    await store.nodes.beat(node("stopped"), T0 + 90)
    await store.nodes.stop("stopped", T0 + 90)
    states = {n.id: n.state(T0 + 100, 20) for n in await store.nodes.list()}
    assert states == {"up": "up", "dead": "dead", "gone": "dead", "stopped": "stopped"}
    assert await store.nodes.prune(T0 + 10) == 1
    assert {n.id for n in await store.nodes.list()} == {"up", "dead", "stopped"}
    # A node pruned while cut off from the store writes itself down again at its next beat.
    await store.nodes.beat(node("gone"), T0 + 101)
    assert "gone" in {n.id for n in await store.nodes.list()}
