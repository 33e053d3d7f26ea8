"""``softswitch status``, ``calls`` (once, and refreshing in a terminal) and ``calls hangup``
against the admin API of a real node (in-process, loopback sockets, SQLite)."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner, Result

from softswitch.cli.app import app
from tests.aio.test_ops import TOKEN, ops_node, url
from tests.aio.test_service import reply, ring_and_hang_up


def run_cli(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"SOFTSWITCH_ADMIN_TOKEN": ""})


async def test_status_calls_and_hangup(tmp_path: Path) -> None:
    server, carrier, transport, _ = await ops_node(tmp_path, (41000, 41999))
    admin = url(server, "admin", "")
    node = ("127.0.0.1", server.config.listen[0][1])
    try:
        result = await asyncio.to_thread(run_cli, "status", "--url", admin, "--token", TOKEN)
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[2] == "trunk     127.0.0.1:{} (IP-authenticated)".format(
            transport.get_extra_info("sockname")[1]
        )
        assert "calls     0 live, 0 legs" in lines
        [media] = [line for line in lines if line.startswith("media ")]
        assert media.endswith(", 0 legs, 0 restarts") and "workers (pid: legs " in media
        assert "triggers  1 numbers" in lines

        await ring_and_hang_up(server, transport)
        invite = await carrier.next_request("INVITE")
        transport.sendto(reply(invite, 180), node)
        await asyncio.sleep(0.1)
        result = await asyncio.to_thread(run_cli, "calls", "--url", admin, "--token", TOKEN)
        assert result.exit_code == 0, result.output
        header, row = result.output.splitlines()
        assert header.split() == ["ID", "ACCOUNT", "TRIGGER", "STATE", "TIME", "KEYS", "LEGS"]
        assert row.split()[1:5] == ["1", "Alice", "815012345678", "calling_back"]
        assert row.endswith("callback:ringing")
        sid = row.split()[0]

        # Live, in a terminal: redrawn every interval until interrupted.
        screens = await asyncio.to_thread(watch_calls, admin, 3.0)
        assert screens.count("\x1b[H\x1b[2J") >= 2 and sid in screens

        result = await asyncio.to_thread(
            run_cli, "calls", "--url", admin, "--token", TOKEN, "hangup", sid
        )
        assert (result.exit_code, result.output) == (0, f"hung up {sid}\n")
        assert (await carrier.next_request("CANCEL")).call_id == invite.call_id
        result = await asyncio.to_thread(
            run_cli, "calls", "--url", admin, "--token", TOKEN, "hangup", sid
        )
        assert result.exit_code == 1 and f"404 no live call {sid}" in result.output

        result = await asyncio.to_thread(run_cli, "status", "--url", admin, "--token", "wrong")
        assert result.exit_code == 1 and "401 unauthorized" in result.output
    finally:
        await server.shutdown()
        transport.close()


def watch_calls(admin: str, seconds: float) -> str:
    """Run ``softswitch calls`` on a pseudo-terminal for ``seconds``, then Ctrl-C; its screen."""
    master, slave = pty.openpty()
    env = {**os.environ, "SOFTSWITCH_ADMIN_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [sys.executable, "-m", "softswitch", "calls", "--url", admin, "--interval", "0.5"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    out = b""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                out += os.read(master, 65536)
        proc.send_signal(2)
        proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return out.decode(errors="replace")


def test_no_token_is_an_error_that_says_where_to_put_one(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[admin]\nlisten = "127.0.0.1:1"\n')
    result = run_cli("status", "--config", str(config))
    assert result.exit_code == 2 and "no admin token" in result.output
    config.write_text('[admin]\nlisten = "127.0.0.1:1"\ntoken = "0123456789abcdef0123"\n')
    result = run_cli("status", "--config", str(config))
    assert result.exit_code == 1
    assert "cannot reach the admin API at http://127.0.0.1:1" in result.output
