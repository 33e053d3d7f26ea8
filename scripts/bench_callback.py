#!/usr/bin/env python3
"""Benchmark: how fast a trigger turns into a callback, CANCEL in to callback INVITE out.

SIPp rings trigger numbers at a steady ``--rate`` for ``--duration`` seconds straight at a
``softswitch serve`` node (INVITE, 180, CANCEL, 200, 487, ACK; interop/scenarios/
invite_cancel.xml with the number taken from an injection file), each call to a different
account (a second trigger for the same account would be absorbed). The node's trunk is
IP-authenticated and points at a SIPp UAS that answers every callback INVITE with 100 and
603 Decline: "rejected" is not retried, so each session ends at once and the measurement is
the trigger -> callback path alone (no media, no prompt, no retries).

Method: ``dumpcap`` captures the node's SIP port on lo; the latency of an account is the time
from the first CANCEL for its trigger number arriving at the node to the first INVITE for its
location leaving it (both kernel timestamps of the same capture). Where the time goes is read
from the node's log: "session ...: calling back account ..." is logged after the callback was
queued, claimed and its account read, just before the callback leg is originated, so
CANCEL -> log line is the store's part (lookup, durable enqueue, claim, account read) and
log line -> INVITE is the leg's part (RTP port, SDP, INVITE). Failed trigger calls are SIPp's
count; "never left" counts CANCELs with no callback INVITE by the end.

    .venv/bin/python scripts/bench_callback.py                 # 200/s for 10 s
    .venv/bin/python scripts/bench_callback.py --quick         # 100/s for 5 s
    .venv/bin/python scripts/bench_callback.py --rate 50 --duration 30

Target: p99 <= 50 ms with 0 failed. Needs root (or dumpcap's capture rights) and SIPp.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interop.callback_setup import Capture, UdpPacket, provision, switch_config
from interop.peers import (
    SCENARIOS,
    Node,
    Sipp,
    find_program,
    find_softswitch,
    free_port,
    percentile,
)

TARGET_P99_MS = 50.0
RTP_PORTS = (20000, 29999)

#: The callback legs' far end: 100, then 603 Decline (not retried), absorb the ACK.
DECLINE_UAS = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="callback legs declined (100, 603, ACK)">
  <recv request="INVITE"/>
  <send>
    <![CDATA[

      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[

      SIP/2.0 603 Decline
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
</scenario>
"""


def trigger_number(i: int) -> str:
    return f"8150{i:08d}"


def location_number(i: int) -> str:
    return f"8190{i:08d}"


_RURI_USER = re.compile(rb"^(?:CANCEL|INVITE) sip:(\d+)@")
_SESSION_LOG = re.compile(
    r"^(\S+) INFO +softswitch\.calls: session \w+: calling back account \d+ \(\S+\) at (\d+)"
)


@dataclass
class Result:
    rate: float
    duration: float
    calls: int
    sipp_failed: int
    sipp_rc: int
    cancels: dict[str, float]
    invites: dict[str, float]
    logged: dict[str, float]
    provision_s: float

    def latencies_ms(self) -> list[float]:
        return [
            (self.invites[loc] - t) * 1000 for loc, t in self.cancels.items() if loc in self.invites
        ]

    def store_part_ms(self) -> list[float]:
        return [(self.logged[k] - t) * 1000 for k, t in self.cancels.items() if k in self.logged]

    def leg_part_ms(self) -> list[float]:
        return [
            (self.invites[k] - t) * 1000
            for k, t in self.logged.items()
            if k in self.invites and k in self.cancels
        ]

    @property
    def never_left(self) -> int:
        return sum(1 for loc in self.cancels if loc not in self.invites)


def first_times(
    packets: list[UdpPacket], method: bytes, port: int, *, inbound: bool
) -> dict[str, float]:
    """Number (Request-URI user) -> time of the first ``method`` request to/from ``port``."""
    out: dict[str, float] = {}
    for p in packets:
        if (p.dst[1] if inbound else p.src[1]) != port or not p.payload.startswith(method):
            continue
        m = _RURI_USER.match(p.payload)
        if m:
            out.setdefault(m.group(1).decode(), p.time)
    return out


def session_log_times(log: str) -> dict[str, float]:
    """Location number -> wall time of the node's "calling back" line for it."""
    out: dict[str, float] = {}
    for line in log.splitlines():
        m = _SESSION_LOG.match(line)
        if m:
            stamp = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC)
            out.setdefault(m.group(2), stamp.timestamp())
    return out


def run(rate: float, duration: float, workdir: Path, settle: float) -> Result:
    sipp_bin = find_program("sipp")
    calls = max(1, int(rate * duration))
    db_url = f"sqlite:///{workdir / 'switch.sqlite3'}"
    started = time.monotonic()
    provision(db_url, [(trigger_number(i), location_number(i)) for i in range(calls)])
    provision_s = time.monotonic() - started

    (workdir / "decline_uas.xml").write_text(DECLINE_UAS, encoding="latin-1")
    trigger_xml = (SCENARIOS / "invite_cancel.xml").read_text(encoding="latin-1")
    (workdir / "trigger_inf.xml").write_text(
        trigger_xml.replace("[service]", "[field0]"), encoding="latin-1"
    )
    (workdir / "triggers.csv").write_text(
        "SEQUENTIAL\n" + "".join(f"{trigger_number(i)};\n" for i in range(calls))
    )

    uas_port = free_port()
    uas = Sipp(
        str(workdir / "decline_uas.xml"),
        workdir=workdir,
        local_port=uas_port,
        calls=0,
        binary=sipp_bin,
        trace_messages=False,
        timeout_s=24 * 3600,
    ).start()
    node_port = free_port()
    node = Node(
        find_softswitch(),
        workdir,
        node_port,
        switch_config(
            node_port,
            f"127.0.0.1:{uas_port}",
            db_url,
            rtp_ports=RTP_PORTS,
            log_level="INFO",
            ip_auth=True,
            outbound_per_minute=0,  # the node's speed, not the fraud cap's
        ),
    )
    capture = Capture(workdir, f"udp port {node_port}", name="sip")
    try:
        node.start()
        # The node reads its trigger numbers from the store at start; let it settle.
        node.wait_for_log("callback service ready", 15)
        capture.start()
        trigger = Sipp(
            str(workdir / "trigger_inf.xml"),
            workdir=workdir,
            local_port=free_port(),
            remote=node.address,
            calls=calls,
            rate=rate,
            binary=sipp_bin,
            trace_messages=False,
            timeout_s=duration + 60,
            extra=("-inf", str(workdir / "triggers.csv")),
        )
        result = trigger.run()
        time.sleep(settle)  # callbacks still on their way
    finally:
        packets = capture.stop()
        node.stop()
        uas.kill()
    return Result(
        rate=rate,
        duration=duration,
        calls=calls,
        sipp_failed=result.stat("FailedCall"),
        sipp_rc=result.returncode,
        cancels={
            location_number(int(k[4:])): t
            for k, t in first_times(packets, b"CANCEL ", node_port, inbound=True).items()
        },
        invites=first_times(packets, b"INVITE ", node_port, inbound=False),
        logged=session_log_times(node.log()),
        provision_s=provision_s,
    )


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    return (
        f"p50 {percentile(values, 50):7.1f}  p90 {percentile(values, 90):7.1f}  "
        f"p99 {percentile(values, 99):7.1f}  max {max(values):7.1f}"
    )


def report(r: Result) -> bool:
    lat = r.latencies_ms()
    p99 = percentile(lat, 99)
    ok = r.sipp_failed == 0 and r.sipp_rc == 0 and r.never_left == 0 and p99 <= TARGET_P99_MS
    print(f"callback latency, {r.rate:g} triggers/s for {r.duration:g} s ({r.calls} accounts)")
    print("method: dumpcap on lo, node's SIP port; CANCEL in -> first callback INVITE out")
    print(f"  provisioning {r.calls} accounts took {r.provision_s:.1f} s")
    print(f"  trigger calls        {r.calls:6d}   failed (SIPp) {r.sipp_failed}  rc {r.sipp_rc}")
    print(f"  CANCELs captured     {len(r.cancels):6d}")
    print(f"  callbacks sent       {len(r.invites):6d}   never left {r.never_left}")
    print(f"  CANCEL -> INVITE ms  {fmt(lat)}")
    print(f"   store part (ms)     {fmt(r.store_part_ms())}   (CANCEL -> 'calling back' log)")
    print(f"   leg part (ms)       {fmt(r.leg_part_ms())}   ('calling back' log -> INVITE)")
    verdict = "meets" if ok else "MISSES"
    print(f"  target p99 <= {TARGET_P99_MS:g} ms, 0 failed: {verdict}")
    print()
    print(
        f"README: callback latency at {r.rate:g} triggers/s: p50 {percentile(lat, 50):.1f} ms, "
        f"p99 {p99:.1f} ms CANCEL in -> callback INVITE out (packet capture), "
        f"{r.sipp_failed} failed triggers, {r.never_left} callbacks never left."
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="trigger calls per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of triggers")
    parser.add_argument("--quick", action="store_true", help="100/s for 5 s")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait at the end")
    parser.add_argument("--workdir", type=Path, help="keep logs and captures here")
    args = parser.parse_args()
    rate, duration = (100.0, 5.0) if args.quick else (args.rate, args.duration)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return 0 if report(run(rate, duration, args.workdir, args.settle)) else 1
    with tempfile.TemporaryDirectory(prefix="bench_callback_") as tmp:
        return 0 if report(run(rate, duration, Path(tmp), args.settle)) else 1


if __name__ == "__main__":
    sys.exit(main())
