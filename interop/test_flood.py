"""Floods from one address against a real node (issue 11), CI-sized; the figures come from
``scripts/bench_flood.py``.

SIP: 10,000 requests a second from 127.0.0.2 (OPTIONS and INVITEs, each a new transaction)
while SIPp places trigger calls from the trunk's address: every trunk call is served (INVITE,
180/183, CANCEL, 487, ACK) with its INVITE -> 180 under half a second at p99, the flooding
source is banned by the per-source limiter and gets almost nothing back.

RTP: 20,000 packets a second from 127.0.0.2 at the RTP port of a trigger ringing with early
media, whose caller sends no RTP (the leg learns its source for 3 s, then is fixed to the
offered address): the caller's ringback goes on, and the packets the media engine read from
the stranger (at most one per millisecond per socket) are dropped and counted in
``softswitch_rtp_foreign_dropped_total``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from interop.flood import FloodRig, Ringer, flood_result

pytestmark = pytest.mark.interop

FLOOD_RATE = 10_000
TRUNK_RATE = 10.0
SECONDS = 4.0


def test_trunk_calls_are_served_during_a_flood_from_one_address(
    tmp_path: Path, softswitch_bin: str, sipp_bin: str
) -> None:
    rig = FloodRig(tmp_path, softswitch_bin, sipp_bin=sipp_bin)
    try:
        phase = rig.trunk_calls("flood", TRUNK_RATE, SECONDS, flood=(FLOOD_RATE, "sip"))
        events = rig.security_events()
    finally:
        assert rig.close() == 0, rig.node.log()[-3000:]
    print("\n" + phase.describe())
    flood = phase.flood
    assert flood["sent"] >= FLOOD_RATE * (SECONDS + 3) * 0.9, flood  # the flooder kept up
    assert phase.completed == phase.attempted and phase.failed == 0
    assert len(phase.ring_ms) == phase.attempted
    assert phase.p(99) < 500, phase.ring_ms
    assert events.get("rate_limited", 0) >= 1, events
    # Banned within its first second: it was answered a few hundred times at most.
    assert flood["received"] <= 1_000, flood


def test_an_rtp_flood_at_a_ringing_call_is_dropped_and_counted(
    tmp_path: Path, softswitch_bin: str
) -> None:
    rig = FloodRig(tmp_path, softswitch_bin)
    try:
        ringer = Ringer(rig.node, "rtpflood1x", send_rtp=False)
        try:
            flooder = rig.flood(20_000, 2.0, mode="rtp", port=ringer.rtp_port)
            ringer.received_rtp()
            time.sleep(2.0)
            ringback = ringer.received_rtp()
            sent = flood_result(flooder)
            time.sleep(1.5)  # the media workers report their counters every second
            dropped = rig.metrics()["softswitch_rtp_foreign_dropped_total"]
        finally:
            ringer.hang_up()
    finally:
        assert rig.close() == 0, rig.node.log()[-3000:]
    print(f"\nflood {sent}, ringback {ringback} packets in 2 s, foreign dropped {dropped:.0f}")
    assert sent["sent"] >= 30_000, sent
    assert ringback >= 80  # about 100 in 2 s: the ringback was not disturbed
    # The engine read the stranger's packets, dropped and counted them: the shell reads at most
    # one datagram per socket per millisecond, so about 1,000 a second; the kernel drops the
    # rest when the socket's buffer is full, unseen and at no cost to the node.
    assert 1_000 <= dropped <= sent["sent"]
