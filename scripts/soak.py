#!/usr/bin/env python3
"""Soak test: the whole callback call from SIPp at a steady rate, for minutes or hours.

The rig, on 127.0.0.1 with free ports (the interop suite's drivers, :mod:`interop.peers`,
:mod:`interop.kamailio`, :mod:`interop.callback_setup`)::

    SIPp trigger caller --INVITE, 180, CANCEL--> node (`softswitch serve`, a real subprocess)
    node --callback INVITE--> Kamailio (the carrier: digest REGISTER, 407 on every INVITE)
         --> SIPp customer UAS (uas_customer_digits.xml): answers, dials, talks, hangs up
    node --destination INVITE--> Kamailio --> SIPp destination UAS (uas_destination_audio.xml):
         answers, talks, takes the BYE the node passes on from the customer

Each call: a trigger (INVITE, 180, CANCEL, 487, ACK) straight to the node, as the carrier
delivers it; the callback to the account's location, answered at once; silence while the dial
prompt starts, then the destination number and ``*`` (80 ms on, 80 ms off), which barge into
the prompt, as RFC 4733 events (``--dtmf rfc2833``, the default) or in-band tones (``--dtmf
inband``); the destination dialled through the carrier, answered, bridged; both sides send
audio for ``--talk`` seconds, then the customer hangs up. Every
account has its own trigger number and the same location (the customer's number, which
Kamailio routes to the customer UAS). Accounts are reused round-robin, each about every
:data:`REUSE_S` seconds, so the working set (accounts, parsed-URI caches) is all touched within
the first minute and a "warm" node has seen everything it will see.

A call is *completed* when the destination UAS has taken its BYE (it was answered, bridged,
and released by the customer's hang-up); *failed* counts SIPp's failed calls on any of the
three SIPp processes (an unexpected message, a timeout); at the end every trigger that did not
complete is a failed call, and the CDRs in the store are checked: every customer call has its
trigger, one answered callback and an answered destination leg.

Every minute, and once more after the last calls have drained, one row: calls attempted
(triggers sent), completed and failed in that minute, live calls, the node's RSS with its media
workers' (``/proc/PID/status`` VmRSS), open file descriptors (``/proc/PID/fd``), asyncio tasks (the
node's ``softswitch_asyncio_tasks`` gauge on ``/metrics``), the store's size (the SQLite file
with its WAL, or ``pg_database_size``), the node's CPU, ERROR lines in its log and the load
average. Then one JSON line with the summary (the last line of stdout).

Warm-up: the first sixth of the run, at least a minute (``--warm-up``; 10 minutes of an hour:
the node's bounded parse caches fill at about one entry per call and, at half capacity on
this machine, are full after about ten minutes, measured 2026-12-05). RSS growth is (RSS at the end of the last minute -
RSS at the end of the warm-up) / RSS at the end of the warm-up, both taken under the same
steady load (the drained row is printed but not used); the summary also gives the growth over
the second half of the run, which tells bounded caches that are still filling after the warm-up
(growth that stops) from a leak (growth that goes on). Exit status 1 when any call failed, the
CDRs disagree, the node exited non-zero, or RSS growth exceeds ``--max-rss-growth`` (5 %).

The rate: ``--rate`` calls/s, or ``--capacity-fraction`` (0.5) of a capacity, either given
(``--capacity``) or measured first by a short probe on a separate rig (rates from
``--probe-start`` up by x1.5, ``--probe-step`` seconds each; a step passes when every call
completed, none failed and the node used at most 90 % of a core; the capacity is the last
rate that passed).

    .venv/bin/python scripts/soak.py --minutes 60                # probe, then half of it, 1 h
    .venv/bin/python scripts/soak.py --minutes 2 --rate 2        # the CI size
    .venv/bin/python scripts/soak.py --minutes 10 --capacity 12  # half of a known capacity
    .venv/bin/python scripts/soak.py --probe-only                # the capacity alone

Needs root (SIPp's play_pcap_audio sends through a raw socket), SIPp and Kamailio.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interop.callback_setup import (
    CUSTOMER,
    DESTINATION,
    Capture,
    provision,
    rtp_range,
    switch_config,
    tone,
    write_rtp_pcap,
)
from interop.kamailio import Kamailio
from interop.peers import (
    REPO,
    SCENARIOS,
    Node,
    Sipp,
    find_program,
    find_softswitch,
    free_port,
    injected_scenario,
    numbers_file,
    parse_stat_csv,
)
from media import g711
from media.player import FRAME
from media.rfc4733 import DtmfEventSender, EventPacket
from media.rtp import build_packet
from media.tones import dtmf_tone
from softswitch.config import LimitsConfig
from softswitch.store import Store
from softswitch.store.models import Cdr, LegKind

MAX_RSS_GROWTH = 0.05
#: Each account is triggered again about this often: well after its last call ended (a call
#: lasts ``CallPlan.call_s``), and often enough that the first minute touches every account.
REUSE_S = 40.0
ON_MS = OFF_MS = 80
DTMF_DBM0 = -6.0
VOICE_HZ = 440.0  # the customer's "voice": no DTMF, fax or modem frequency
TELEPHONE_EVENT = 101  # the payload type uas_customer_digits.xml offers for RFC 4733
SSRC = 0x50AC0001
DIGITS = DESTINATION + "*"
#: Seconds from the customer's last digit to the bridge (dial, 407, answer) with room to spare.
SETUP_S = 1.5
ADMIN_TOKEN = "soak-admin-token-0123456789"
#: A whole call must end within its length plus this, or SIPp counts it failed.
RECV_TIMEOUT_S = 60
RECV_TIMEOUT_MS = str(RECV_TIMEOUT_S * 1000)
_LOG_ERROR = re.compile(rb"^\S+ (?:ERROR|CRITICAL) |^Traceback ", re.MULTILINE)
_LOG_WARNING = re.compile(rb"^\S+ WARNING ", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class CallPlan:
    """How each call goes, seen from the customer's phone."""

    lead_in: float = 1.5  # silence after the answer: the dial prompt has started
    talk: float = 5.0  # bridged, both sides sending audio
    dtmf: str = "rfc2833"  # how the digits are sent: "rfc2833" (RFC 4733 events) or "inband"

    @property
    def digits_s(self) -> float:
        return len(DIGITS) * (ON_MS + OFF_MS) / 1000

    @property
    def customer_ms(self) -> int:
        """The customer's time on the line after the ACK (SIPp's ``-d``)."""
        return round((self.lead_in + self.digits_s + SETUP_S + self.talk) * 1000)

    @property
    def call_s(self) -> float:
        """About how long one call lasts, trigger to hang-up."""
        return self.customer_ms / 1000 + 0.5


def trigger_number(i: int) -> str:
    return f"8151{i:08d}"


def customer_stream(plan: CallPlan) -> list[tuple[float, bytes]]:
    """The customer's RTP (PCMU, telephone-event 101) as (seconds from the answer, packet):
    silence, the digits as in-band tones (``plan.dtmf == "inband"``) or as RFC 4733 events
    (``"rfc2833"``: instead of audio while a key is down, the end packet three times), then
    a steady voice tone until half a second before the customer's BYE."""
    gap = np.zeros(OFF_MS * 8, dtype=np.int16)
    parts = [np.zeros(int(plan.lead_in * 8000), dtype=np.int16)]
    for digit in DIGITS:
        parts += [dtmf_tone(digit, ON_MS, DTMF_DBM0), gap]
    rest = plan.customer_ms / 1000 - plan.lead_in - plan.digits_s - 0.5
    parts.append(tone(VOICE_HZ, max(rest, 0.1), -20.0))
    pcm = np.concatenate(parts)
    frames = [g711.ulaw_encode(pcm[i : i + FRAME]) for i in range(0, len(pcm) - FRAME + 1, FRAME)]
    events: dict[int, list[EventPacket]] = {}  # frame index -> event packets sent then
    if plan.dtmf == "rfc2833":
        sender = DtmfEventSender(TELEPHONE_EVENT, interval_ms=20)
        first = round(plan.lead_in * 8000) // FRAME
        per_digit = (ON_MS + OFF_MS) * 8 // FRAME
        for k, digit in enumerate(DIGITS):
            start = first + k * per_digit
            for packet in sender.start(digit, start * FRAME, ON_MS):
                events.setdefault(start + packet.send_offset_ms // 20, []).append(packet)
    out: list[tuple[float, bytes]] = []
    seq = 0
    busy_until = -1  # frames replaced by events (the key is down, or its end is being sent)
    for i, frame in enumerate(frames):
        for ev in events.get(i, []):
            rtp = build_packet(TELEPHONE_EVENT, ev.marker, seq, ev.timestamp, SSRC, ev.payload)
            out.append((i * 0.02, rtp))
            seq += 1
            busy_until = i
        if i > busy_until:
            out.append((i * 0.02, build_packet(0, i == 0, seq, i * FRAME, SSRC, frame)))
            seq += 1
    return out


def write_pcap(path: Path, packets: list[tuple[float, bytes]]) -> Path:
    """``packets`` (seconds, RTP datagram) as an Ethernet/IPv4/UDP pcap for SIPp's
    ``play_pcap_audio`` (which rewrites the addresses and ports and keeps the RTP)."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for n, (t, rtp) in enumerate(packets):
        udp = struct.pack("!HHHH", 6000, 7000, 8 + len(rtp), 0)
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 28 + len(rtp), n & 0xFFFF, 0, 64, 17, 0, bytes(4), bytes(4)
        )
        words = sum(struct.unpack("!10H", ip))
        while words > 0xFFFF:
            words = (words & 0xFFFF) + (words >> 16)
        ip = ip[:10] + struct.pack("!H", ~words & 0xFFFF) + ip[12:]
        frame = bytes(12) + b"\x08\x00" + ip + udp + rtp
        usec = round(t * 1e6)
        out.append(
            struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        )
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


# --- what the node and SIPp say ------------------------------------------------------------------


def sipp_counts(sipp: Sipp | None) -> dict[str, int]:
    """The cumulative counters of a running or finished SIPp (its ``-trace_stat`` file)."""
    if sipp is None:
        return {}
    stats = parse_stat_csv(sipp.workdir / f"{sipp.name}_stats.csv")
    out = {}
    for key in ("OutgoingCall", "IncomingCall", "SuccessfulCall", "FailedCall"):
        try:
            out[key] = int(float(stats.get(f"{key}(C)", "0") or 0))
        except ValueError:
            out[key] = 0
    return out


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def store_bytes(db_url: str) -> int | None:
    """The store's size: the SQLite file with its WAL and shared memory, or the PostgreSQL
    database's ``pg_database_size``; None when it cannot be read."""
    if db_url.startswith("sqlite"):
        path = Path(db_url.split(":///", 1)[1])
        return sum(
            p.stat().st_size for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()
        )
    if db_url.startswith("postgresql"):
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError
        from sqlalchemy.ext.asyncio import create_async_engine

        url = re.sub(r"^postgresql(\+\w+)?://", "postgresql+asyncpg://", db_url)

        async def size() -> int:
            engine = create_async_engine(url)
            try:
                async with engine.connect() as conn:
                    query = text("SELECT pg_database_size(current_database())")
                    return int((await conn.execute(query)).scalar_one())
            finally:
                await engine.dispose()

        try:
            return asyncio.run(size())
        except (OSError, SQLAlchemyError):
            return None
    return None


def scrape(address: str) -> dict[str, float]:
    """The node's ``/metrics`` as sample -> value (labels included in the sample's name)."""
    request = urllib.request.Request(
        f"http://{address}/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                continue
    return out


@dataclass
class LogScan:
    """ERROR and WARNING lines the node logged since the last look (read incrementally)."""

    path: Path
    offset: int = 0
    errors: int = 0
    warnings: int = 0
    first_errors: list[str] = field(default_factory=list)

    def scan(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next look
        data = data[:end]
        self.offset += end
        found = _LOG_ERROR.findall(data)
        self.errors += len(found)
        self.warnings += len(_LOG_WARNING.findall(data))
        if found and len(self.first_errors) < 5:
            for line in data.splitlines():
                if _LOG_ERROR.match(line) and len(self.first_errors) < 5:
                    self.first_errors.append(line.decode(errors="replace")[:300])


@dataclass(frozen=True, slots=True)
class Sample:
    """Cumulative counts and the node's state at one moment."""

    at: float
    attempted: int
    completed: int
    failed: int
    callbacks: int
    destinations: int
    rss: int
    fds: int
    tasks: int | None
    live: int | None
    store: int | None
    cpu: float
    errors: int
    load: float
    late_ticks: int
    skipped_ticks: int


@dataclass(frozen=True, slots=True)
class Row:
    """One line of the table: what changed between two samples, and the state at the end."""

    label: str
    attempted: int
    completed: int
    failed: int
    live: int | None
    rss_mb: float
    fds: int
    tasks: int | None
    store_mb: float | None
    cpu_pct: float
    errors: int
    load: float
    late_ticks: int
    skipped_ticks: int

    @classmethod
    def between(cls, label: str, a: Sample, b: Sample) -> Row:
        wall = max(b.at - a.at, 1e-9)
        return cls(
            label=label,
            attempted=b.attempted - a.attempted,
            completed=b.completed - a.completed,
            failed=b.failed - a.failed,
            live=b.live,
            rss_mb=b.rss / 2**20,
            fds=b.fds,
            tasks=b.tasks,
            store_mb=None if b.store is None else b.store / 2**20,
            cpu_pct=100 * (b.cpu - a.cpu) / wall,
            errors=b.errors - a.errors,
            load=b.load,
            late_ticks=b.late_ticks - a.late_ticks,
            skipped_ticks=b.skipped_ticks - a.skipped_ticks,
        )


HEADER = (
    f"{'min':>4} {'attempted':>9} {'completed':>9} {'failed':>6} {'live':>5} {'RSS MB':>7} "
    f"{'fds':>5} {'tasks':>6} {'store MB':>8} {'cpu %':>6} {'errors':>6} {'late':>5} "
    f"{'skip':>5} {'load':>5}"
)


def _opt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_row(r: Row) -> str:
    return (
        f"{r.label:>4} {r.attempted:9d} {r.completed:9d} {r.failed:6d} {_opt(r.live, 'd'):>5} "
        f"{r.rss_mb:7.1f} {r.fds:5d} {_opt(r.tasks, 'd'):>6} {_opt(r.store_mb, '.2f'):>8} "
        f"{r.cpu_pct:6.1f} {r.errors:6d} {r.late_ticks:5d} {r.skipped_ticks:5d} {r.load:5.2f}"
    )


# --- the rig -------------------------------------------------------------------------------------


@dataclass
class Rig:
    """Carrier, customer, destination and node, running; triggers are started per run."""

    workdir: Path
    db_url: str
    pool: int
    plan: CallPlan
    sipp_bin: str
    carrier: Kamailio
    customer: Sipp
    destination: Sipp
    node: Node
    admin: str
    logscan: LogScan
    capture: Capture | None = None
    next_account: int = 0
    trigger_runs: list[Sipp] = field(default_factory=list)

    @property
    def pid(self) -> int:
        assert self.node.proc is not None
        return self.node.proc.pid

    def triggers(self, rate: float, calls: int, timeout_s: float) -> Sipp:
        """Start SIPp ringing ``calls`` trigger numbers at ``rate``/s, round-robin from where
        the last run stopped."""
        name = f"triggers_{self.next_account}_{time.monotonic_ns()}"
        order = [(self.next_account + i) % self.pool for i in range(self.pool)]
        inf = numbers_file(self.workdir / f"{name}.csv", (trigger_number(i) for i in order))
        self.next_account = (self.next_account + calls) % self.pool
        run = Sipp(
            str(self.workdir / "trigger_inf.xml"),
            workdir=self.workdir,
            local_port=free_port(),
            remote=self.node.address,
            calls=calls,
            rate=rate,
            binary=self.sipp_bin,
            trace_messages=False,
            timeout_s=timeout_s,
            name=name,
            extra=("-inf", str(inf), "-recv_timeout", RECV_TIMEOUT_MS),
        )
        self.trigger_runs.append(run)
        return run.start()

    def sample(self, trigger: Sipp | None) -> Sample:
        t, c, d = sipp_counts(trigger), sipp_counts(self.customer), sipp_counts(self.destination)
        metrics = scrape(self.admin)
        self.logscan.scan()
        tasks = metrics.get("softswitch_asyncio_tasks")
        live = metrics.get("softswitch_active_calls")
        return Sample(
            at=time.monotonic(),
            attempted=t.get("OutgoingCall", 0),
            completed=d.get("SuccessfulCall", 0),
            failed=sum(x.get("FailedCall", 0) for x in (t, c, d)),
            callbacks=c.get("IncomingCall", 0),
            destinations=d.get("IncomingCall", 0),
            rss=self.node.rss_bytes(),
            fds=fd_count(self.pid),
            tasks=None if tasks is None else int(tasks),
            live=None if live is None else int(live),
            store=store_bytes(self.db_url),
            cpu=self.node.cpu_seconds(),
            errors=self.logscan.errors,
            load=os.getloadavg()[0],
            late_ticks=int(metrics.get("softswitch_media_late_ticks_total", 0)),
            skipped_ticks=int(metrics.get("softswitch_media_skipped_ticks_total", 0)),
        )

    def dead(self) -> str | None:
        """Which peer has exited, if one has."""
        for name, proc in (
            ("node", self.node.proc),
            ("kamailio", self.carrier.proc),
            ("customer SIPp", self.customer.proc),
            ("destination SIPp", self.destination.proc),
        ):
            if proc is None or proc.poll() is not None:
                return name
        return None

    def drain(self, trigger: Sipp, base: Sample, timeout: float) -> Sample:
        """Wait until every call ``trigger`` made has completed or failed (or ``timeout``);
        ``base`` was sampled before it started (the UASs' counts go on across runs)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.sample(trigger)
            done = s.completed - base.completed + s.failed - base.failed
            if done >= s.attempted or time.monotonic() > deadline:
                return s
            if self.dead():
                return s
            time.sleep(1.0)

    def stop(self) -> int:
        """Stop everything; the node's exit code (SIGTERM must give 0)."""
        for run in self.trigger_runs:
            run.kill()
        code = self.node.stop(timeout=30) if self.node.proc is not None else 0
        if self.capture is not None:
            self.capture.stop()
            self.capture = None
        self.customer.kill()
        self.destination.kill()
        self.carrier.stop()
        return code


def media_ports() -> int:
    """An even port whose next three are free on UDP too (SIPp's media ports)."""
    for _ in range(100):
        base = random.randrange(30000, 60000, 2)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + 4):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise RuntimeError("no four free UDP ports in a row")


def _kamailio_bin() -> str:
    if Path("/usr/sbin/kamailio").exists() and not shutil.which("kamailio"):
        return "/usr/sbin/kamailio"
    return find_program("kamailio")


def node_extra_config(admin_port: int) -> str:
    """The admin listener (for /metrics) and limits a soak must not run into."""
    limits = ["per_trigger = 100000"]  # every account is triggered about every REUSE_S
    if "outbound_per_minute" in {f.name for f in dataclasses.fields(LimitsConfig)}:
        limits.append("outbound_per_minute = 0")  # the runaway-loop cap would cut the load
    return (
        f'\n[admin]\nlisten = "127.0.0.1:{admin_port}"\ntoken = "{ADMIN_TOKEN}"\n'
        "\n[limits]\n" + "\n".join(limits) + "\n"
    )


def start_rig(
    workdir: Path,
    pool: int,
    plan: CallPlan,
    *,
    db_url: str | None,
    log_level: str,
    capture: bool = False,
) -> Rig:
    """Provision ``pool`` accounts and start the carrier, both UASs and the node (registered);
    ``capture``: dumpcap the node's SIP port and RTP ports into ``workdir/soak.pcap``."""
    workdir.mkdir(parents=True, exist_ok=True)
    sipp_bin = find_program("sipp")
    kamailio_bin = _kamailio_bin()
    softswitch_bin = find_softswitch()
    db_url = db_url or f"sqlite:///{workdir / 'switch.sqlite3'}"
    started = time.monotonic()
    provision(db_url, [(trigger_number(i), CUSTOMER) for i in range(pool)])
    print(f"  provisioned {pool} accounts in {time.monotonic() - started:.1f} s", flush=True)

    write_pcap(workdir / "customer_audio.pcap", customer_stream(plan))
    write_rtp_pcap(workdir / "destination_audio.pcap", tone(1800.0, plan.talk, -20.0))
    customer_xml = str(shutil.copy(SCENARIOS / "uas_customer_digits.xml", workdir))
    destination_xml = str(shutil.copy(SCENARIOS / "uas_destination_audio.xml", workdir))
    injected_scenario("invite_cancel.xml", workdir / "trigger_inf.xml")

    def uas(scenario: str, *extra: str) -> Sipp:
        # SIPp binds [media_port] to [media_port]+3 (audio and video, RTP and RTCP): a port
        # taken meanwhile by another process ends it at once, so try again elsewhere.
        for _ in range(5):
            run = Sipp(
                scenario,
                workdir=workdir,
                local_port=free_port(),
                calls=0,
                binary=sipp_bin,
                trace_messages=False,
                timeout_s=7 * 24 * 3600,
                extra=("-mp", str(media_ports()), "-recv_timeout", RECV_TIMEOUT_MS, *extra),
            ).start()
            time.sleep(0.5)
            if run.proc is not None and run.proc.poll() is None:
                return run
        raise RuntimeError(f"SIPp {scenario} would not start: see {workdir}")

    customer = uas(customer_xml, "-d", str(plan.customer_ms))
    destination = uas(destination_xml)
    carrier = Kamailio(
        kamailio_bin,
        workdir,
        customer_number=CUSTOMER,
        customer_target=f"127.0.0.1:{customer.local_port}",
        pstn_target=f"127.0.0.1:{destination.local_port}",
    ).start()
    port, admin_port = free_port(), free_port()
    low, high = rtp_ports = rtp_range(2000)
    config = switch_config(
        port, carrier.address, db_url, rtp_ports=rtp_ports, log_level=log_level
    ) + node_extra_config(admin_port)
    node = Node(softswitch_bin, workdir, port, config)
    rig = Rig(
        workdir=workdir,
        db_url=db_url,
        pool=pool,
        plan=plan,
        sipp_bin=sipp_bin,
        carrier=carrier,
        customer=customer,
        destination=destination,
        node=node,
        admin=f"127.0.0.1:{admin_port}",
        logscan=LogScan(node.log_path),
    )
    try:
        node.start()
        for line in ("registered to", "callback service ready"):
            if not node.wait_for_log(line, 20):
                raise RuntimeError(f"node never logged {line!r}:\n{node.log()[-3000:]}")
        if capture:
            bpf = f"udp and (port {port} or portrange {low}-{high})"
            rig.capture = Capture(workdir, bpf, name="soak").start()
    except BaseException:
        rig.stop()
        raise
    return rig


def pool_size(rate: float) -> int:
    return max(50, math.ceil(rate * REUSE_S))


# --- the CDRs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CdrCheck:
    calls: int  # customer calls (call_uuid) in the store
    complete: int  # trigger + one answered callback + an answered destination leg
    callback_attempts: int
    incomplete_examples: list[str]

    @property
    def ok(self) -> bool:
        return self.complete == self.calls and self.callback_attempts == self.calls


def check_cdrs(db_url: str) -> CdrCheck:
    async def read() -> list[Cdr]:
        store = await Store.open(db_url)
        try:
            return [c async for c in store.cdrs.stream()]
        finally:
            await store.close()

    calls: dict[str, list[Cdr]] = {}
    for cdr in asyncio.run(read()):
        calls.setdefault(cdr.call_uuid, []).append(cdr)
    complete = attempts = 0
    bad: list[str] = []
    for uuid, legs in calls.items():
        kinds = Counter(c.leg for c in legs)
        attempts += kinds[LegKind.CALLBACK]
        answered = {c.leg for c in legs if c.answer_at is not None}
        if (
            kinds[LegKind.TRIGGER] == 1
            and kinds[LegKind.CALLBACK] == 1
            and {LegKind.CALLBACK, LegKind.DESTINATION} <= answered
        ):
            complete += 1
        elif len(bad) < 5:
            bad.append(
                f"{uuid}: "
                + ", ".join(f"{c.leg.value} {c.cause_code} {c.cause_text!r}" for c in legs)
            )
    return CdrCheck(len(calls), complete, attempts, bad)


# --- the probe and the soak ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeStep:
    rate: float
    attempted: int
    completed: int
    failed: int
    node_cpu_pct: float
    passed: bool


def probe_capacity(
    workdir: Path,
    plan: CallPlan,
    *,
    start: float,
    factor: float,
    step_s: float,
    max_rate: float,
    max_cpu_pct: float,
    log_level: str,
) -> tuple[float, list[ProbeStep]]:
    """The highest rate (calls/s) of a geometric ladder at which every call completed, none
    failed and the node stayed under ``max_cpu_pct`` of a core (on its own rig)."""
    print(f"capacity probe: from {start:g}/s by x{factor:g}, {step_s:g} s per step", flush=True)
    rig = start_rig(workdir, pool_size(max_rate), plan, db_url=None, log_level=log_level)
    steps: list[ProbeStep] = []
    best = 0.0
    rate = start
    try:
        while rate <= max_rate * 1.0001:
            calls = max(1, round(rate * step_s))
            first = rig.sample(None)
            trigger = rig.triggers(rate, calls, timeout_s=step_s + plan.call_s + 120)
            # The node's CPU from the moment the call count is steady to the last trigger.
            time.sleep(min(plan.call_s, step_s / 2))
            steady = rig.sample(trigger)
            trigger.wait(timeout=step_s + 120)
            sent = rig.sample(trigger)
            end = rig.drain(trigger, first, plan.call_s + 30)
            cpu = 100 * (sent.cpu - steady.cpu) / max(sent.at - steady.at, 1e-9)
            completed, failed = end.completed - first.completed, end.failed - first.failed
            passed = (
                failed == 0 and completed == end.attempted and cpu <= max_cpu_pct and not rig.dead()
            )
            steps.append(ProbeStep(rate, end.attempted, completed, failed, cpu, passed))
            print(
                f"  {rate:6.2f}/s: {end.attempted} calls, {completed} completed, {failed} failed, "
                f"node cpu {cpu:.0f} %: {'pass' if passed else 'FAIL'}",
                flush=True,
            )
            if not passed:
                break
            best = rate
            rate = round(rate * factor, 2)
    finally:
        rig.stop()
    return best, steps


@dataclass
class SoakResult:
    rate: float
    minutes: int
    rows: list[Row]
    end: Row
    attempted: int
    completed: int
    sipp_failed: int
    callbacks: int
    destinations: int
    rss: list[int]  # at the end of each minute
    warm_up: int  # minutes
    node_exit: int
    cdr: CdrCheck | None
    first_errors: list[str]
    errors: int
    warnings: int
    aborted: str | None

    @property
    def failed(self) -> int:
        """Every call that did not complete (SIPp's failures among them)."""
        return max(self.attempted - self.completed, self.sipp_failed)

    @property
    def rss_warm(self) -> int:
        """RSS at the end of the warm-up (0: the run was shorter)."""
        return self.rss[self.warm_up - 1] if len(self.rss) >= self.warm_up else 0

    @property
    def rss_growth(self) -> float | None:
        """From the end of the warm-up to the end of the last minute (None: no minute after
        the warm-up)."""
        if len(self.rss) <= self.warm_up or not self.rss_warm:
            return None
        return (self.rss[-1] - self.rss_warm) / self.rss_warm

    @property
    def rss_growth_second_half(self) -> float | None:
        """From the middle minute to the end: bounded caches filling up after the warm-up
        show in ``rss_growth`` but not here; a leak shows in both."""
        if len(self.rss) < 4:
            return None
        middle = self.rss[len(self.rss) // 2 - 1]
        return (self.rss[-1] - middle) / middle


def soak(
    rig: Rig, rate: float, minutes: int, warm_up: int, out: Callable[[str], None]
) -> SoakResult:
    """Trigger at ``rate`` for ``minutes``; a row each minute and one after the drain."""
    calls = max(1, round(rate * minutes * 60))
    first = rig.sample(None)
    trigger = rig.triggers(rate, calls, timeout_s=minutes * 60 + RECV_TIMEOUT_S + 120)
    t0 = time.monotonic()
    out(HEADER)
    rows: list[Row] = []
    rss: list[int] = []
    prev = first
    aborted = None
    for minute in range(1, minutes + 1):
        while (left := t0 + 60 * minute - time.monotonic()) > 0 and not aborted:
            time.sleep(min(left, 1.0))
            dead = rig.dead()
            if dead:
                aborted = f"{dead} exited during minute {minute}"
        if aborted:
            break
        s = rig.sample(trigger)
        rows.append(Row.between(str(minute), prev, s))
        rss.append(s.rss)
        out(format_row(rows[-1]))
        prev = s
    if aborted:
        trigger.kill()
        end_sample = rig.sample(trigger)
    else:
        trigger.wait(timeout=RECV_TIMEOUT_S + 120)
        end_sample = rig.drain(trigger, first, rig.plan.call_s + RECV_TIMEOUT_S)
    end = Row.between("end", prev, end_sample)
    out(format_row(end))
    code = rig.stop()
    cdr = check_cdrs(rig.db_url) if rig.db_url.startswith(("sqlite", "postgresql")) else None
    return SoakResult(
        rate=rate,
        minutes=minutes,
        rows=rows,
        end=end,
        attempted=end_sample.attempted,
        completed=end_sample.completed,
        sipp_failed=end_sample.failed,
        callbacks=end_sample.callbacks,
        destinations=end_sample.destinations,
        rss=rss,
        warm_up=warm_up,
        node_exit=code,
        cdr=cdr,
        first_errors=rig.logscan.first_errors,
        errors=rig.logscan.errors,
        warnings=rig.logscan.warnings,
        aborted=aborted,
    )


def git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def _signed(pct: object) -> str:
    return f"{pct:+.2f} %" if isinstance(pct, float) else "n/a"


def _pct(share: float | None) -> float | None:
    return None if share is None else round(100 * share, 2)


def summary(
    r: SoakResult, max_growth: float, capacity: float | None, probe: list[ProbeStep]
) -> dict[str, object]:
    growth = r.rss_growth
    ok = (
        r.aborted is None
        and r.failed == 0
        and r.node_exit == 0
        and (r.cdr is None or r.cdr.ok)
        and (growth is None or growth <= max_growth)
    )
    return {
        "ok": ok,
        "date": dt.date.today().isoformat(),
        "commit": git_state(),
        "rate": r.rate,
        "capacity": capacity,
        "probe": [dataclasses.asdict(p) for p in probe],
        "minutes": r.minutes,
        "attempted": r.attempted,
        "completed": r.completed,
        "failed": r.failed,
        "sipp_failed": r.sipp_failed,
        "callbacks": r.callbacks,
        "destinations": r.destinations,
        "warm_up_minutes": r.warm_up,
        "rss_warm_mb": round(r.rss_warm / 2**20, 1),
        "rss_last_mb": round(r.rss[-1] / 2**20, 1) if r.rss else None,
        "rss_max_mb": round(max(r.rss, default=0) / 2**20, 1),
        "rss_growth_pct": _pct(growth),
        "rss_growth_second_half_pct": _pct(r.rss_growth_second_half),
        "max_rss_growth_pct": 100 * max_growth,
        "fds": [row.fds for row in r.rows],
        "tasks": [row.tasks for row in r.rows],
        "store_mb": [None if row.store_mb is None else round(row.store_mb, 2) for row in r.rows],
        "rss_mb": [round(row.rss_mb, 1) for row in r.rows],
        "cpu_pct": [round(row.cpu_pct, 1) for row in r.rows],
        "load": [round(row.load, 2) for row in r.rows],
        "drained": dataclasses.asdict(r.end),
        "cdr": None if r.cdr is None else dataclasses.asdict(r.cdr),
        "node_exit": r.node_exit,
        "node_errors": r.errors,
        "node_warnings": r.warnings,
        "first_errors": r.first_errors,
        "aborted": r.aborted,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=int, default=10, help="length of the soak (minutes)")
    rate = parser.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="calls per second (no probe)")
    rate.add_argument("--capacity", type=float, help="a measured capacity, calls/s (no probe)")
    parser.add_argument(
        "--capacity-fraction", type=float, default=0.5, help="share of the capacity (0.5)"
    )
    parser.add_argument("--probe-only", action="store_true", help="measure the capacity, stop")
    parser.add_argument("--probe-start", type=float, default=2.0, help="first probe rate")
    parser.add_argument("--probe-factor", type=float, default=1.5, help="probe ladder factor")
    parser.add_argument("--probe-step", type=float, default=30.0, help="seconds per probe rate")
    parser.add_argument("--probe-max", type=float, default=40.0, help="highest probe rate")
    parser.add_argument("--probe-max-cpu", type=float, default=90.0, help="node cpu %% limit")
    parser.add_argument("--talk", type=float, default=5.0, help="seconds bridged per call")
    parser.add_argument(
        "--dtmf", choices=("rfc2833", "inband"), default="rfc2833", help="how digits are sent"
    )
    parser.add_argument(
        "--max-rss-growth", type=float, default=100 * MAX_RSS_GROWTH, help="percent (5)"
    )
    parser.add_argument(
        "--warm-up",
        type=int,
        help="minutes before the RSS reference (default: a sixth of the run, at least 1)",
    )
    parser.add_argument("--db", help="store URL (default: a SQLite file in the work directory)")
    parser.add_argument("--log-level", default="INFO", help="the node's log level")
    parser.add_argument("--workdir", type=Path, help="keep logs, captures and the store here")
    parser.add_argument("--json", type=Path, help="also write the summary to this file")
    parser.add_argument(
        "--capture", action="store_true", help="dumpcap the node's SIP and RTP (diagnosis)"
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C: every peer the soak started is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("soak: needs root (SIPp's play_pcap_audio uses a raw socket)", file=sys.stderr)
        return 2
    if args.warm_up is None:
        args.warm_up = max(1, args.minutes // 6)
    if args.minutes < 1 or args.warm_up < 1:
        parser.error("--minutes and --warm-up: at least 1")
    plan = CallPlan(talk=args.talk, dtmf=args.dtmf)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args, plan, args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix="soak_") as tmp:
        return run(args, plan, Path(tmp))


def run(args: argparse.Namespace, plan: CallPlan, workdir: Path) -> int:
    print(
        f"soak {dt.datetime.now().isoformat(timespec='seconds')}, commit {git_state()}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, call ~{plan.call_s:.1f} s "
        f"(talk {plan.talk:g} s), work directory {workdir}",
        flush=True,
    )
    capacity: float | None = args.capacity
    probe: list[ProbeStep] = []
    if args.rate is None and capacity is None:
        capacity, probe = probe_capacity(
            workdir / "probe",
            plan,
            start=args.probe_start,
            factor=args.probe_factor,
            step_s=args.probe_step,
            max_rate=args.probe_max,
            max_cpu_pct=args.probe_max_cpu,
            log_level=args.log_level,
        )
        print(f"capacity: {capacity:g} calls/s", flush=True)
        if capacity <= 0:
            print("soak: not even the first probe rate passed", file=sys.stderr)
            return 1
    if args.probe_only:
        return 0
    rate = args.rate if args.rate is not None else round(capacity * args.capacity_fraction, 2)
    print(
        f"soak at {rate:g} calls/s for {args.minutes} min "
        f"(~{rate * plan.call_s:.0f} calls at once)",
        flush=True,
    )
    rig = start_rig(
        workdir / "soak",
        pool_size(rate),
        plan,
        db_url=args.db,
        log_level=args.log_level,
        capture=args.capture,
    )
    try:
        result = soak(rig, rate, args.minutes, args.warm_up, lambda line: print(line, flush=True))
    finally:
        rig.stop()
    report = summary(result, args.max_rss_growth / 100, capacity, probe)
    growth, late = report["rss_growth_pct"], report["rss_growth_second_half_pct"]
    cdr = result.cdr
    print(
        f"{result.attempted} calls, {result.completed} completed, {result.failed} failed "
        f"(SIPp {result.sipp_failed}); RSS {report['rss_warm_mb']} MB after the warm-up "
        f"({args.warm_up} min), {report['rss_last_mb']} MB at the end: {_signed(growth)} "
        f"(limit {args.max_rss_growth:g} %), second half {_signed(late)}; CDRs: "
        + ("n/a" if cdr is None else f"{cdr.complete}/{cdr.calls} calls complete")
        + f"; node exit {result.node_exit}: {'PASS' if report['ok'] else 'FAIL'}",
        flush=True,
    )
    if cdr is not None and cdr.incomplete_examples:
        print("incomplete calls:\n  " + "\n  ".join(cdr.incomplete_examples), flush=True)
    if result.first_errors:
        print("node errors:\n  " + "\n  ".join(result.first_errors), flush=True)
    text = json.dumps(report, separators=(",", ":"))
    if args.json:
        args.json.write_text(text + "\n")
    print(text, flush=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
