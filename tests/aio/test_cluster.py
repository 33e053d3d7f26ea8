"""Several nodes on one store (issue 12), in-process: each writes itself down in ``nodes``
(start, heartbeat, clean stop), ``/api/status`` shows the cluster, ``/metrics`` says which node
it is, and a callback a dead node had claimed (but not yet written down as a live call) is
taken over as soon as that node's heartbeat is stale, not after its 300 s lease."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from softswitch.store import NodeInfo, Store
from softswitch.store.models import CallbackState, LegKind, Location
from tests.aio.test_ops import AUTH, get_json, metrics_text, ops_node
from tests.aio.test_service import CUSTOMER, TRIGGER, reply, start_node


async def test_nodes_write_themselves_down_and_status_shows_the_cluster(tmp_path: Path) -> None:
    first, _, transport1, db_url = await ops_node(tmp_path, (42000, 42499))
    second, _, transport2, _ = await start_node(tmp_path, (42500, 42999), provision_account=False)
    stopped_second = False
    try:
        assert first.service is not None and second.service is not None
        first_id, second_id = first.service.node_id, second.service.node_id
        status, body = await get_json(first, "/api/status", headers=AUTH)
        assert status == 200
        nodes = {n["id"]: n for n in body["cluster"]}
        assert set(nodes) == {first_id, second_id}
        assert nodes[first_id]["this"] and not nodes[second_id]["this"]
        assert {n["state"] for n in nodes.values()} == {"up"}
        port = first.config.listen[0][1]
        assert nodes[first_id]["address"] == f"udp:127.0.0.1:{port} tcp:127.0.0.1:{port}"
        assert abs(nodes[first_id]["heartbeat_at"] - body["server_time"]) < 10
        # /metrics names the node, so its series join its CDRs and log lines.
        text = await metrics_text(first)
        assert f'softswitch_node_info{{node_id="{first_id}",' in text

        await second.shutdown()
        stopped_second = True
        status, body = await get_json(first, "/api/status", headers=AUTH)
        states = {n["id"]: n["state"] for n in body["cluster"]}
        assert states == {first_id: "up", second_id: "stopped"}
    finally:
        if not stopped_second:
            await second.shutdown()
        await first.shutdown()
        transport1.close()
        transport2.close()
    store = await Store.open(db_url)
    try:
        assert {n.id: n.stopped_at is not None for n in await store.nodes.list()} == {
            first_id: True,
            second_id: True,
        }
    finally:
        await store.close()


async def test_a_dead_nodes_claimed_callback_is_placed_without_waiting_for_the_lease(
    tmp_path: Path,
) -> None:
    # What a node killed between queueing a trigger's callback (already claimed, 300 s lease)
    # and writing its live call down leaves behind: the row, and its heartbeat, 30 s old.
    db_url = f"sqlite:///{tmp_path / 'node.sqlite3'}"
    store = await Store.open(db_url)
    dead = "host:4242:dead"
    try:
        account = await store.accounts.add("Alice", triggers=[TRIGGER], location=Location(CUSTOMER))
        then = time.time() - 30
        await store.nodes.beat(NodeInfo(dead, "udp:127.0.0.1:5999", "old", then, then), then)
        row, _ = await store.callbacks.enqueue(
            account.id, TRIGGER, then, now=then, claim_for=(dead, 300), call_uuid="c" * 32
        )
    finally:
        await store.close()
    started = time.monotonic()
    server, carrier, transport, _ = await start_node(
        tmp_path, (43000, 43999), provision_account=False, callback_attempts=1
    )
    try:
        invite = await carrier.next_request("INVITE", timeout=10.0)
        taken_after = time.monotonic() - started
        assert invite.uri.user == "+" + CUSTOMER
        transport.sendto(reply(invite, 486), ("127.0.0.1", server.config.listen[0][1]))
        await carrier.next_request("ACK")
        for _ in range(100):
            if server.node.calls is not None and server.node.calls.idle:
                break
            await asyncio.sleep(0.02)
        assert server.service is not None
        survivor = server.service.node_id
    finally:
        await server.shutdown()
        transport.close()
    assert taken_after < 5, taken_after  # the claim pass after start-up, not the lease
    store = await Store.open(db_url)
    try:
        [callback] = await store.callbacks.list()
        assert callback.id == row.id and callback.attempts == 2
        assert callback.state is CallbackState.FAILED  # busy, and one attempt was allowed
        [cdr] = await store.cdrs.list()
        assert (cdr.leg, cdr.call_uuid, cdr.node_id) == (LegKind.CALLBACK, "c" * 32, survivor)
    finally:
        await store.close()
