"""SIGHUP and SIGTERM on a real ``softswitch serve``: the reload applies what it can and names
what needs a restart; a broken file changes nothing; SIGTERM drains and exits 0."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from interop.peers import Node, free_port

pytestmark = pytest.mark.interop


def test_sighup_reloads_and_sigterm_drains(tmp_path: Path, softswitch_bin: str) -> None:
    port = free_port()
    base = f'[database]\nurl = "sqlite:///{tmp_path / "node.sqlite3"}"\n'
    config = base + "[service]\ndrain_timeout = 30\n"
    node = Node(softswitch_bin, tmp_path, port, config).start()
    config_file = tmp_path / f"node_{port}.toml"
    try:
        assert node.proc is not None
        config_file.write_text(
            base + '[service]\ndrain_timeout = 30\nblocked_prefixes = ["1900"]\n'
            "[limits]\nper_source = 3\n[sip]\nt1 = 1.0\n"
        )
        node.proc.send_signal(signal.SIGHUP)
        assert node.wait_for_log("reloaded: blocked_prefixes, limits", timeout=5), node.log()
        assert node.wait_for_log("not applied until a restart: t1", timeout=1), node.log()
        config_file.write_text(base + "[service]\ndrain_timout = 1\n")
        node.proc.send_signal(signal.SIGHUP)
        assert node.wait_for_log("reload refused, nothing changed", timeout=5), node.log()
        assert "drain_timout: unknown key (did you mean 'drain_timeout'?" in node.log()
    finally:
        code = node.stop()
    assert code == 0, node.log()[-2000:]
    log = node.log()
    assert "draining: 0 live calls go on" in log and "drained: no live call left" in log
