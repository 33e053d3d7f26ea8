"""``softswitch status`` shows the nodes sharing the store (issue 12)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from softswitch.cli.ops import cluster_table
from tests.aio.test_ops import TOKEN, ops_node, url
from tests.aio.test_service import start_node
from tests.cli.test_ops_cli import run_cli


async def test_status_lists_every_node_on_the_store(tmp_path: Path) -> None:
    first, _, transport1, _ = await ops_node(tmp_path, (44000, 44499))
    second, _, transport2, _ = await start_node(tmp_path, (44500, 44999), provision_account=False)
    try:
        assert first.service is not None and second.service is not None
        admin = url(first, "admin", "")
        result = await asyncio.to_thread(run_cli, "status", "--url", admin, "--token", TOKEN)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        start = lines.index("cluster   2 nodes: 2 up")
        header, *rows = lines[start + 1 : start + 4]
        assert header.split() == ["NODE", "STATE", "STARTED", "(UTC)", "HEARTBEAT", "CALLS", "SIP"]
        by_id = {row.split()[0]: row for row in rows}
        assert set(by_id) == {first.service.node_id, second.service.node_id}
        mine = by_id[first.service.node_id]
        assert mine.split()[1:3] == ["*", "up"] and mine.rstrip().endswith(
            f"tcp:127.0.0.1:{first.config.listen[0][1]}"
        )
        assert by_id[second.service.node_id].split()[1] == "up"
    finally:
        await second.shutdown()
        await first.shutdown()
        transport1.close()
        transport2.close()


def test_cluster_table_counts_states_and_ages() -> None:
    now = 1_800_000_000.0
    text = cluster_table(
        [
            {
                "id": "sw1:10:aa",
                "this": True,
                "address": "udp:10.0.0.1:5060",
                "started_at": now - 3600,
                "heartbeat_at": now - 2,
                "state": "up",
                "live_calls": 3,
            },
            {
                "id": "sw2:11:bb",
                "this": False,
                "address": "",
                "started_at": now - 7200,
                "heartbeat_at": now - 45,
                "state": "dead",
                "live_calls": 1,
            },
        ],
        now,
    )
    lines = text.splitlines()
    assert lines[0] == "cluster   2 nodes: 1 up, 1 dead"
    assert lines[2].split() == [
        "sw1:10:aa",
        "*",
        "up",
        "2027-01-15",
        "07:00:00",
        "2",
        "s",
        "ago",
        "3",
        "udp:10.0.0.1:5060",
    ]
    assert lines[3].split()[1:2] == ["dead"] and "45 s ago" in lines[3]
    assert lines[3].split()[-1] == "-"
