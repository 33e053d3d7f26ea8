"""The systemd unit in contrib/systemd/ passes ``systemd-analyze verify`` (Debian's systemd):
every key known, every command executable once the path points at the installed node, and
the stop timeout longer than the example's drain timeout."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from interop.conftest import missing_peer
from softswitch.config import load_config

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "contrib" / "systemd" / "softswitch.service"


def test_the_systemd_unit_verifies(tmp_path: Path, softswitch_bin: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing_peer("systemd-analyze is missing (Debian package systemd)")
        return
    text = UNIT.read_text()
    assert "DynamicUser=yes" in text and "StateDirectory=softswitch" in text
    unit = tmp_path / "softswitch.service"
    unit.write_text(text.replace("/opt/softswitch/bin/softswitch", softswitch_bin))
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Unknown" not in done.stderr, done.stderr
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    drain = load_config(ROOT / "softswitch.example.toml", env={}).drain_timeout
    assert stop > drain
