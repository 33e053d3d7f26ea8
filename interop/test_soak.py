"""The CI-sized soak: ``scripts/soak.py --minutes 2`` against real peers, at a fixed rate.

The script runs the whole callback call (SIPp trigger, Kamailio carrier, SIPp customer dialling
by RFC 4733 events, SIPp destination, a real ``softswitch serve``) and prints a JSON summary as
its last line; this test asserts on it: every call completed (0 failed, SIPp's failures included),
the CDRs agree, the node exited 0 on SIGTERM, and RSS grew at most 5 % after warm-up. Warm-up
is the first minute: growth is the RSS at the end of minute 2 against the RSS at the end of
minute 1, both under the same steady load (every account has been used by then: accounts come
round every 40 s).

The rate is fixed (``SOAK_RATE``, calls/s, well under half the capacity the script's probe
measures on the 2-vCPU development machine, so the node keeps up under coverage too) rather
than probed, so CI's time is known: about 2.5 minutes in all. The 1-hour run at half the
probed capacity is recorded in the README.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from interop.conftest import missing_peer
from interop.peers import REPO

pytestmark = pytest.mark.interop

SOAK_RATE = 2.0
MINUTES = 2
MAX_RSS_GROWTH_PCT = 5.0


def test_soak_two_minutes(
    tmp_path: Path, sipp_bin: str, kamailio_bin: str, softswitch_bin: str
) -> None:
    if os.geteuid() != 0:
        missing_peer("SIPp play_pcap_audio needs a raw socket (root)")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "soak.py"),
            "--minutes",
            str(MINUTES),
            "--rate",
            str(SOAK_RATE),
            "--max-rss-growth",
            str(MAX_RSS_GROWTH_PCT),
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=MINUTES * 60 + 240,
        check=False,
        env={**os.environ, "SOFTSWITCH_BIN": softswitch_bin},
    )
    output = done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), output[-4000:]
    report = json.loads(lines[-1])
    assert report["attempted"] >= SOAK_RATE * MINUTES * 60 * 0.95, output[-4000:]
    assert report["failed"] == 0 and report["sipp_failed"] == 0, output[-4000:]
    assert report["completed"] == report["attempted"], output[-4000:]
    assert report["cdr"]["complete"] == report["cdr"]["calls"] == report["attempted"], report
    assert report["node_exit"] == 0, output[-4000:]
    assert report["rss_growth_pct"] is not None
    assert report["rss_growth_pct"] <= MAX_RSS_GROWTH_PCT, output[-4000:]
    assert report["ok"] and done.returncode == 0, output[-4000:]
