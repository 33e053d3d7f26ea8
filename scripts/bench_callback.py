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

``--whole``: whole callback calls instead, at rising rates. Every callback is answered by the
customer's phone, which dials the destination and talks; the destination answers and talks; the
customer hangs up. The trunk is one SIPp UAS (interop/scenarios/uas_trunk_whole_call.xml) that
plays both parties by Request-URI: the customer answers at once, plays a second of silence,
``441234567890*`` as RFC 2833 events (100 ms each, 100 ms apart) and ``--talk`` seconds of
voice, then sends BYE; the destination answers, plays its voice and takes the BYE the node
passes on. The node is pinned to CPU 0 and the SIPp processes to CPU 1, as in
bench_triggers.py. A rate passes when every trigger became a whole call: 0 failed calls in
either SIPp, every customer call in the store has its trigger leg, an answered callback and an
answered destination leg, and none is missing. Reported per rate: whole calls, failures, the
node's CPU per whole call (from the first trigger until the last call has ended, all threads)
and its CPU%, and the triggers' INVITE -> ring (SIPp's -trace_rtt). The ladder climbs to the
first failure, then bisects.

    .venv/bin/python scripts/bench_callback.py --whole                   # 10, 20 ... 200/s
    .venv/bin/python scripts/bench_callback.py --whole --rates 20 --duration 30
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interop.callback_setup import Capture, UdpPacket, cdrs, provision, switch_config
from interop.peers import (
    LOOPBACK,
    SCENARIOS,
    Node,
    Sipp,
    find_program,
    find_softswitch,
    free_port,
    injected_scenario,
    numbers_file,
    parse_stat_csv,
    percentile,
    proc_tree_cpu_seconds,
)
from media import g711
from softswitch.store.models import LegKind

TARGET_P99_MS = 50.0
RTP_PORTS = (20000, 29999)


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

    injected_scenario("invite_cancel.xml", workdir / "trigger_inf.xml")
    numbers_file(workdir / "triggers.csv", (trigger_number(i) for i in range(calls)))

    uas_port = free_port()
    uas = Sipp(
        "uas_decline.xml",  # the callback legs' far end: 100, then 603 Decline
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


# --- whole calls ----------------------------------------------------------------------------

WHOLE_RATES = (10, 20, 40, 80, 120, 160, 200)
DESTINATION = "441234567890"
DIAL = DESTINATION + "*"
RTP_FRAME = 160  # samples in 20 ms at 8 kHz
TELEPHONE_EVENT = 101
#: RFC 4733 event codes of the keys dialled.
EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11}
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


def _tone(hz: float, frames: int) -> bytes:
    t = np.arange(frames * RTP_FRAME) / 8000.0
    pcm = (8000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return g711.ulaw_encode(pcm)


def write_party_pcap(path: Path, *, digits: str = "", lead_s: float = 1.0, talk_s: float = 2.0,
                     hz: float = 440.0) -> float:  # fmt: skip
    """One party's RTP in an Ethernet pcap for SIPp's ``play_pcap_audio``: ``lead_s`` of PCMU
    silence, ``digits`` as RFC 2833 events (100 ms each, 100 ms of silence after each), then
    ``talk_s`` of a PCMU tone; 20 ms packets, one timestamp clock. Returns its length in s."""
    packets: list[bytes] = []  # RTP packets, one per 20 ms slot (event ends: several a slot)
    slots: list[int] = []
    seq = 0
    ts = 0
    slot = 0
    silence = b"\xff" * RTP_FRAME

    def rtp(pt: int, payload: bytes, marker: bool, stamp: int) -> None:
        nonlocal seq
        header = struct.pack("!BBHII", 0x80, pt | (0x80 if marker else 0), seq & 0xFFFF,
                             stamp & 0xFFFFFFFF, 0x5EED0002)  # fmt: skip
        packets.append(header + payload)
        slots.append(slot)
        seq += 1

    def audio(payloads: list[bytes]) -> None:
        nonlocal ts, slot
        for payload in payloads:
            rtp(0, payload, seq == 0, ts)
            ts += RTP_FRAME
            slot += 1

    audio([silence] * round(lead_s * 50))
    for key in digits:
        event = EVENTS[key]
        start = ts
        for i in range(1, 6):  # 100 ms of the key, the duration growing
            rtp(TELEPHONE_EVENT, struct.pack("!BBH", event, 10, i * RTP_FRAME), i == 1, start)
            ts += RTP_FRAME
            slot += 1
        for _ in range(3):  # the end, sent three times (RFC 4733 section 2.5.1.4)
            rtp(TELEPHONE_EVENT, struct.pack("!BBH", event, 0x80 | 10, 5 * RTP_FRAME), False,
                start)  # fmt: skip
        audio([silence] * 5)
    voice = _tone(hz, round(talk_s * 50))
    audio([voice[i : i + RTP_FRAME] for i in range(0, len(voice), RTP_FRAME)])
    records = [_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for n, (packet, at) in enumerate(zip(packets, slots, strict=True)):
        udp = struct.pack("!HHHH", 6000, 7000, 8 + len(packet), 0)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(packet), n & 0xFFFF, 0, 64, 17, 0,
                         bytes(4), bytes(4))  # fmt: skip
        ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
        frame = bytes(12) + b"\x08\x00" + ip + udp + packet
        usec = at * 20_000
        records.append(_PCAP_RECORD.pack(usec // 1_000_000, usec % 1_000_000, len(frame),
                                         len(frame)))  # fmt: skip
        records.append(frame)
    path.write_bytes(b"".join(records))
    return slot * 0.02


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@dataclass
class WholeStep:
    rate: int
    calls: int
    whole: int
    trigger_failed: int
    trunk_failed: int
    incomplete: int
    cpu_ms_per_call: float
    cpu_percent: float
    ring_p50: float
    ring_p99: float
    seconds: float
    note: str = ""

    @property
    def passed(self) -> bool:
        return (
            self.trigger_failed == 0
            and self.trunk_failed == 0
            and self.incomplete == 0
            and self.whole == self.calls
            and not self.note
        )


@dataclass
class WholeConfig:
    duration: float
    talk: float
    node_cpu: int
    sipp_cpu: int
    workdir: Path
    store: Path
    accounts: int
    sipp: str
    softswitch: str


def whole_calls(db_url: str) -> tuple[int, int]:
    """(whole calls, customer calls that are not whole) in the store: a whole call has its
    trigger leg, an answered callback and an answered destination leg."""
    legs: dict[str, Counter[LegKind]] = {}
    for cdr in cdrs(db_url):
        answered = cdr.leg is LegKind.TRIGGER or cdr.answer_at is not None
        if answered:
            legs.setdefault(cdr.call_uuid, Counter())[cdr.leg] += 1
    whole = sum(
        1
        for c in legs.values()
        if c[LegKind.TRIGGER] and c[LegKind.CALLBACK] and c[LegKind.DESTINATION]
    )
    return whole, len(legs) - whole


def run_whole(rate: int, cfg: WholeConfig) -> WholeStep:
    step_dir = cfg.workdir / f"whole_{rate}"
    step_dir.mkdir(parents=True, exist_ok=True)
    calls = max(1, int(rate * cfg.duration))
    db = step_dir / "switch.sqlite3"
    shutil.copyfile(cfg.store, db)
    db_url = f"sqlite:///{db}"
    customer_s = write_party_pcap(step_dir / "customer.pcap", digits=DIAL, talk_s=cfg.talk)
    write_party_pcap(step_dir / "destination.pcap", lead_s=0.0, talk_s=customer_s + 5, hz=1000)
    scenario = (SCENARIOS / "uas_trunk_whole_call.xml").read_text(encoding="latin-1")
    (step_dir / "trunk.xml").write_text(
        scenario.replace("CUSTOMER_MS", str(int(customer_s * 1000) + 500)), encoding="latin-1"
    )
    injected_scenario("invite_cancel.xml", step_dir / "trigger_inf.xml")
    numbers_file(step_dir / "triggers.csv", (trigger_number(i) for i in range(cfg.accounts)))
    uas_port = free_port()
    trunk = Sipp(
        str(step_dir / "trunk.xml"),
        workdir=step_dir,
        local_port=uas_port,
        calls=0,
        binary=cfg.sipp,
        cpu=cfg.sipp_cpu,
        trace_messages=False,
        timeout_s=24 * 3600,
        extra=("-mp", str(free_port()), "-buff_size", "4194304"),
    ).start()
    node_port = free_port()
    config = switch_config(
        node_port,
        f"{LOOPBACK}:{uas_port}",
        db_url,
        rtp_ports=RTP_PORTS,
        log_level="INFO",
        ip_auth=True,
        outbound_per_minute=0,  # the node's speed, not the fraud cap's
    )
    node = Node(
        cfg.softswitch,
        step_dir,
        node_port,
        config,
        cpu=cfg.node_cpu,
    )
    note = ""
    try:
        node.start()
        if not node.wait_for_log("callback service ready", 30):
            raise RuntimeError(f"the node did not load its accounts:\n{node.log()[-2000:]}")
        assert node.proc is not None
        pid = node.proc.pid
        trigger = Sipp(
            str(step_dir / "trigger_inf.xml"),
            workdir=step_dir,
            local_port=free_port(),
            remote=node.address,
            calls=calls,
            rate=rate,
            binary=cfg.sipp,
            cpu=cfg.sipp_cpu,
            trace_messages=False,
            timeout_s=cfg.duration * 2 + 30,
            extra=("-inf", str(step_dir / "triggers.csv"), "-recv_timeout", "5000"),
        )
        cpu0 = proc_tree_cpu_seconds(pid)
        t0 = time.monotonic()
        result = trigger.run()
        # The last calls still talk: wait until the trunk has seen them all end (2 per call).
        stats_file = step_dir / f"{trunk.name}_stats.csv"
        deadline = time.monotonic() + customer_s + 30
        done = 0
        while time.monotonic() < deadline:
            stats = parse_stat_csv(stats_file)
            done = int(stats.get("SuccessfulCall(C)", "0") or 0) + int(
                stats.get("FailedCall(C)", "0") or 0
            )
            if done >= 2 * calls:
                break
            time.sleep(0.5)
        wall = time.monotonic() - t0
        cpu = proc_tree_cpu_seconds(pid) - cpu0
        if done < 2 * calls:
            note = f"{2 * calls - done} trunk calls still open"
    finally:
        code = node.stop(timeout=30)
        trunk.kill()
    if code != 0:
        note = note or f"node exited {code}"
    stats = parse_stat_csv(step_dir / f"{trunk.name}_stats.csv")
    whole, incomplete = whole_calls(db_url)
    samples = sorted(result.rtt.get("ring", []))
    return WholeStep(
        rate=rate,
        calls=calls,
        whole=whole,
        trigger_failed=result.stat("FailedCall") + (1 if result.returncode else 0),
        trunk_failed=int(stats.get("FailedCall(C)", "0") or 0),
        incomplete=incomplete + max(0, calls - whole - incomplete),
        cpu_ms_per_call=1000 * cpu / calls,
        cpu_percent=100 * cpu / wall,
        ring_p50=percentile(samples, 50),
        ring_p99=percentile(samples, 99),
        seconds=wall,
        note=note,
    )


WHOLE_HEADER = (
    f"{'rate/s':>7}{'calls':>7}{'whole':>7}{'failed':>8}{'incomplete':>11}"
    f"{'ms CPU/call':>12}{'CPU%':>6}{'ring p50/p99':>13}{'s':>6}  result"
)


def whole_row(s: WholeStep) -> str:
    verdict = "ok" if s.passed else "FAIL" + (f" ({s.note})" if s.note else "")
    return (
        f"{s.rate:>7}{s.calls:>7}{s.whole:>7}{s.trigger_failed + s.trunk_failed:>8}"
        f"{s.incomplete:>11}{s.cpu_ms_per_call:>12.2f}{s.cpu_percent:>6.0f}"
        f"{s.ring_p50:>6.0f}/{s.ring_p99:<6.0f}{s.seconds:>6.0f}  {verdict}"
    )


def main_whole(args: argparse.Namespace) -> int:
    rates = tuple(int(r) for r in args.rates.split(",")) if args.rates else WHOLE_RATES
    duration = args.duration
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_whole_"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Accounts are reused round-robin; each whole call lasts a few seconds, so an account
    # comes round again only after its last call has ended.
    accounts = min(max(rates) * int(duration), max(max(rates) * 20, 200))
    store = workdir / "accounts.sqlite3"
    started = time.monotonic()
    provision(
        f"sqlite:///{store}", [(trigger_number(i), location_number(i)) for i in range(accounts)]
    )
    cfg = WholeConfig(
        duration, args.talk, args.node_cpu, args.sipp_cpu, workdir, store, accounts,
        find_program("sipp"), find_softswitch(),
    )  # fmt: skip
    print(
        f"whole callback calls (trigger, callback answered, {DIAL} dialled as RFC 2833, "
        f"destination answered and bridged, {args.talk:g} s of talk, customer hangs up), "
        f"{duration:g} s of triggers per rate; node on CPU {args.node_cpu}, SIPp on CPU "
        f"{args.sipp_cpu}; {accounts} accounts provisioned in {time.monotonic() - started:.0f} s"
    )
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: load average {load:.2f} before the run: the machine is not idle")
    print(WHOLE_HEADER, flush=True)
    best: WholeStep | None = None
    failed_at: int | None = None
    try:
        for rate in rates:
            step = run_whole(rate, cfg)
            print(whole_row(step), flush=True)
            if not step.passed:
                failed_at = rate
                break
            best = step
        if failed_at is not None:
            low, high = (best.rate if best else 0), failed_at
            for _ in range(args.bisect):
                mid = (low + high) // 2
                if high - low <= max(2, low // 10) or mid <= 0:
                    break
                step = run_whole(mid, cfg)
                print(whole_row(step), flush=True)
                if step.passed:
                    best, low = step, mid
                else:
                    high = mid
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"logs kept in {workdir}")
    print()
    if best is None:
        print(f"SUMMARY whole calls: failed already at {rates[0]}/s.")
        return 1
    print(
        f"SUMMARY whole calls: {best.rate} whole callback calls/s with 0 failures on one core "
        f"({best.cpu_ms_per_call:.1f} ms CPU per whole call, {best.cpu_percent:.0f}% CPU; "
        f"trigger, callback, RFC 2833 dialling, destination, {args.talk:g} s bridged)."
    )
    print(f"(load average at the end: {os.getloadavg()[0]:.2f})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="trigger calls per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of triggers")
    parser.add_argument("--quick", action="store_true", help="100/s for 5 s")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait at the end")
    parser.add_argument("--workdir", type=Path, help="keep logs and captures here")
    parser.add_argument("--whole", action="store_true", help="whole calls at rising rates")
    parser.add_argument("--rates", help="--whole: comma-separated whole calls/s")
    parser.add_argument("--talk", type=float, default=2.0, help="--whole: seconds of talk")
    parser.add_argument("--bisect", type=int, default=2, help="--whole: bisection steps")
    parser.add_argument("--node-cpu", type=int, default=0, help="--whole: the node's CPU")
    parser.add_argument("--sipp-cpu", type=int, default=1, help="--whole: SIPp's CPU")
    args = parser.parse_args()
    if args.whole:
        return main_whole(args)
    rate, duration = (100.0, 5.0) if args.quick else (args.rate, args.duration)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return 0 if report(run(rate, duration, args.workdir, args.settle)) else 1
    with tempfile.TemporaryDirectory(prefix="bench_callback_") as tmp:
        return 0 if report(run(rate, duration, Path(tmp), args.settle)) else 1


if __name__ == "__main__":
    sys.exit(main())
