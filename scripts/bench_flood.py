#!/usr/bin/env python3
"""Floods against a real node (issue 11): do the trunk's calls still get served, and what does
an RTP flood cost?

The rig is :class:`interop.flood.FloodRig`: ``softswitch serve`` with its trunk at 127.0.0.1
(the only exempt source), SIPp placing trigger calls from the trunk's address, and
``scripts/flood.c`` flooding from 127.0.0.2 (compiled here with the system C compiler).

SIP, in one run on one node:

1. baseline: ``--rate`` trunk trigger calls a second for ``--seconds`` (INVITE, 180/183,
   CANCEL, 487, ACK), no flood;
2. flood: the same while 127.0.0.2 sends ``--flood-rate`` (10,000) requests a second, OPTIONS
   and INVITEs alternately, each a new transaction, from a second before the first call to
   after the last.

For each: trunk calls completed of attempted, INVITE -> 180/183 p50/p99/max (SIPp's rtd, whole
milliseconds), the node's CPU (its process and media workers); for the flood, what the
flooder sent and got back, and the node's security events (``rate_limited``, ``banned``).
With ``--unlimited`` a second node with the per-source limiter off (``rate_per_source = 0``)
takes the same flood: the cost of parsing and answering every request (invite_from's 403, the
OPTIONS' 200) instead of dropping a banned source's datagrams.

RTP: one trigger call ringing with early media (the node sends its ringback), ``--rtp-seconds``
each: (a) the caller sends RTP at 50 packets/s from its offered address (latched), no flood;
(b) the same with ``--rtp-rate`` (50,000) packets/s from 127.0.0.2 at the node's RTP port;
(c) the flood at a leg whose peer sends nothing (no source to latch: the leg learns for 3 s,
then is fixed to the offered address). Node CPU in each, the ringback packets the caller got
(the call kept its media), and ``softswitch_rtp_foreign_dropped_total``.

    .venv/bin/python scripts/bench_flood.py
    .venv/bin/python scripts/bench_flood.py --rate 50 --seconds 30 --unlimited

Needs SIPp. Prints the figures and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interop.flood import (
    RINGER_TRIGGERS,
    FloodRig,
    Phase,
    Ringer,
    flood_result,
)
from interop.peers import find_softswitch, proc_tree_cpu_seconds


def phase_json(p: Phase) -> dict[str, object]:
    return {
        "attempted": p.attempted,
        "completed": p.completed,
        "failed": p.failed,
        "ring_p50_ms": p.p(50),
        "ring_p99_ms": p.p(99),
        "ring_max_ms": max(p.ring_ms, default=None),
        "node_cpu": round(p.node_cpu, 3),
        "flood": p.flood,
    }


def sip_floods(rig: FloodRig, args: argparse.Namespace) -> dict[str, object]:
    baseline = rig.trunk_calls("baseline", args.rate, args.seconds)
    print(baseline.describe(), flush=True)
    before = rig.security_events()
    flooded = rig.trunk_calls("flood", args.rate, args.seconds, flood=(args.flood_rate, "sip"))
    events = {k: v - before.get(k, 0) for k, v in rig.security_events().items()}
    print(flooded.describe(), flush=True)
    print(f"security events during the flood: {events}", flush=True)
    return {"baseline": phase_json(baseline), "flood": phase_json(flooded), "events": events}


def rtp_window(
    rig: FloodRig, number: int, name: str, args: argparse.Namespace, **how: bool
) -> dict[str, float]:
    """One ringing trigger for ``args.rtp_seconds``; ``flood``: the RTP flood at its port."""
    flood = how.get("flood", False)
    token = "rtp" + "".join(c for c in name if c.isalnum()) + "x"
    ringer = Ringer(
        rig.node, token, number=RINGER_TRIGGERS[number], send_rtp=how.get("send_rtp", True)
    )
    try:
        flooder = None
        if flood:
            flooder = rig.flood(
                args.rtp_rate, args.rtp_seconds + 1, mode="rtp", port=ringer.rtp_port
            )
        time.sleep(0.5)
        before = rig.metrics().get("softswitch_rtp_foreign_dropped_total", float("nan"))
        ringer.received_rtp()
        cpu0, t0 = proc_tree_cpu_seconds(rig.pid), time.monotonic()
        time.sleep(args.rtp_seconds)
        cpu1, t1 = proc_tree_cpu_seconds(rig.pid), time.monotonic()
        ringback = ringer.received_rtp() / (t1 - t0)
        sent = flood_result(flooder) if flooder is not None else {}
        time.sleep(1.5)  # the media workers report their counters every second
        after = rig.metrics().get("softswitch_rtp_foreign_dropped_total", float("nan"))
    finally:
        ringer.hang_up()
    out = {
        "node_cpu": round((cpu1 - cpu0) / (t1 - t0), 3),
        "ringback_pps": round(ringback, 1),
        "foreign_dropped": after - before,
        "flood_pps": round(sent["sent"] / sent["seconds"]) if sent else 0,
    }
    print(
        f"RTP {name}: node CPU {100 * out['node_cpu']:.1f} % of a core, ringback to the caller "
        f"{out['ringback_pps']:.0f} packets/s, flood {out['flood_pps']} packets/s, "
        f"foreign packets the engine dropped {out['foreign_dropped']:.0f}",
        flush=True,
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="trunk calls per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds of trunk calls")
    parser.add_argument("--flood-rate", type=float, default=10_000, help="SIP requests/s")
    parser.add_argument("--rtp-rate", type=float, default=50_000, help="RTP flood packets/s")
    parser.add_argument("--rtp-seconds", type=float, default=8.0, help="seconds per RTP window")
    parser.add_argument("--unlimited", action="store_true", help="also flood with no limiter")
    parser.add_argument("--no-rtp", action="store_true", help="skip the RTP flood")
    parser.add_argument("--workdir", type=Path, help="keep logs here")
    args = parser.parse_args()
    summary: dict[str, object] = {
        "rate": args.rate,
        "seconds": args.seconds,
        "flood_rate": args.flood_rate,
    }
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        binary = find_softswitch()
        rig = FloodRig(workdir / "limited", binary)
        try:
            summary["sip"] = sip_floods(rig, args)
            if not args.no_rtp:
                summary["rtp"] = {
                    "latched_no_flood": rtp_window(rig, 0, "latched, no flood", args),
                    "latched_flood": rtp_window(rig, 1, "latched, flood", args, flood=True),
                    "silent_peer_flood": rtp_window(
                        rig, 2, "peer silent, flood", args, flood=True, send_rtp=False
                    ),
                }
        finally:
            summary["exit_code"] = rig.close()
        if args.unlimited:
            print("the same flood at a node with no per-source limiter (rate_per_source = 0):")
            bare = FloodRig(workdir / "unlimited", binary, rate_per_source=0)
            try:
                phase = bare.trunk_calls(
                    "flood, no limiter", args.rate, args.seconds, flood=(args.flood_rate, "sip")
                )
                print(phase.describe(), flush=True)
                summary["unlimited"] = phase_json(phase)
            finally:
                bare.close()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
