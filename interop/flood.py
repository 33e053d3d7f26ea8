"""Floods against a real node while the trunk's calls go on (issue 11).

:class:`FloodRig` runs a ``softswitch serve`` subprocess (SQLite store, one provisioned
account, its trunk at 127.0.0.1 by IP, a silent socket that takes the callbacks) whose only
exempt source is the trunk's address (``[sip] exempt_from = ["127.0.0.1/32"]``), so a flood
from 127.0.0.2 meets the per-source limiter, the ban table and ``invite_from`` as a stranger's
would. Its pieces:

- :meth:`FloodRig.trunk_calls`: SIPp (``invite_cancel.xml``) places trigger calls from the
  trunk's address at a steady rate (INVITE, 180/183, CANCEL, 487, ACK), each from its own
  caller number; completed calls and the INVITE -> 180/183 times (SIPp's rtd "ring", whole
  milliseconds) are what the trunk got, the node's CPU (its process and its media workers)
  what it cost.
- :meth:`FloodRig.flood`: ``scripts/flood.c`` (compiled on first use with the system C
  compiler) sends OPTIONS and INVITEs, each a new transaction, or RTP packets from one address
  at a given rate.
- :class:`Ringer`: one trigger call from the trunk that rings with early media (the node's
  183 with SDP and its ringback), optionally sending RTP from the address its SDP offered so
  the node latches it: the RTP port an RTP flood is aimed at.

Used by ``scripts/bench_flood.py`` (the figures) and ``interop/test_flood.py`` (CI-sized).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from interop.callback_setup import CUSTOMER, TRIGGER, provision, rtp_range, switch_config
from interop.hostile import Peer, base
from interop.peers import REPO, Node, Sipp, free_port, percentile, proc_tree_cpu_seconds

FLOOD_SOURCE = "127.0.0.2"
ADMIN_TOKEN = "flood-admin-token-0123456789"
#: Trigger numbers of their own for :class:`Ringer` calls: the trunk calls' account has a
#: callback pending (to the silent trunk) most of the time, and its triggers are absorbed
#: without early media.
RINGER_TRIGGERS = tuple(f"8150123400{n:02d}" for n in range(10))
FLOOD_C = REPO / "scripts" / "flood.c"


def build_flooder(workdir: Path) -> Path:
    """Compile scripts/flood.c into ``workdir`` (again only when the source changed)."""
    out = workdir / "flood"
    if not out.exists() or out.stat().st_mtime < FLOOD_C.stat().st_mtime:
        workdir.mkdir(parents=True, exist_ok=True)
        cc = os.environ.get("CC", "cc")
        subprocess.run([cc, "-O2", "-Wall", "-o", str(out), str(FLOOD_C)], check=True)
    return out


@dataclass
class Phase:
    """Trunk calls placed over one window, and what they cost the node."""

    name: str
    attempted: int
    completed: int
    failed: int
    ring_ms: list[float]
    seconds: float
    node_cpu: float  # fraction of one core, the node and its media workers
    flood: dict[str, float] = field(default_factory=dict)

    def p(self, q: float) -> float:
        return percentile(self.ring_ms, q)

    def describe(self) -> str:
        text = (
            f"{self.name}: trunk calls {self.completed}/{self.attempted} completed "
            f"({self.failed} failed), INVITE->180 p50 {self.p(50):.0f} ms, p99 {self.p(99):.0f} "
            f"ms, max {max(self.ring_ms, default=float('nan')):.0f} ms; node CPU "
            f"{100 * self.node_cpu:.0f} % of a core"
        )
        if self.flood:
            f = self.flood
            text += (
                f"; flood {f['sent'] / f['seconds']:.0f}/s from {FLOOD_SOURCE} ({f['sent']:.0f} "
                f"sent, {f['received']:.0f} answered, flooder CPU {f['cpu_seconds']:.1f} s)"
            )
        return text


class FloodRig:
    """The node and its silent trunk; see the module docstring."""

    def __init__(
        self,
        workdir: Path,
        softswitch_bin: str,
        *,
        log_level: str = "INFO",
        rate_per_source: int | None = None,
        sipp_bin: str = "sipp",
    ) -> None:
        self.workdir = workdir
        self.sipp_bin = sipp_bin
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = f"sqlite:///{workdir / 'store.sqlite3'}"
        provision(self.db_url, [(TRIGGER, CUSTOMER)] + [(t, CUSTOMER) for t in RINGER_TRIGGERS])
        self.carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.carrier.bind(("127.0.0.1", 0))
        self.carrier.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        port, self.admin = free_port(), free_port()
        sip = '[sip]\nexempt_from = ["127.0.0.1/32"]\n'
        if rate_per_source is not None:
            sip += f"rate_per_source = {rate_per_source}\n"
        config = switch_config(
            port,
            f"127.0.0.1:{self.carrier.getsockname()[1]}",
            self.db_url,
            ip_auth=True,
            log_level=log_level,
            rtp_ports=rtp_range(400),
            outbound_per_minute=0,
        ).replace("[sip]\n", sip, 1)
        config += f'\n[admin]\nlisten = "127.0.0.1:{self.admin}"\ntoken = "{ADMIN_TOKEN}"\n'
        self.node = Node(softswitch_bin, workdir, port, config).start()
        self.flooder = build_flooder(workdir)
        self._sipp_port = free_port()

    @property
    def pid(self) -> int:
        assert self.node.proc is not None
        return self.node.proc.pid

    def close(self) -> int:
        self.carrier.close()
        return self.node.stop()

    def metrics(self) -> dict[str, float]:
        """The node's ``/metrics`` as sample -> value."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.admin}/metrics",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            text = answer.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[name] = float(value)
        return out

    def security_events(self) -> dict[str, float]:
        pattern = re.compile(r'softswitch_security_events_total\{kind="(\w+)"\}')
        return {m.group(1): v for k, v in self.metrics().items() if (m := pattern.fullmatch(k))}

    def flood(
        self, rate: float, seconds: float, *, mode: str = "sip", port: int | None = None
    ) -> subprocess.Popen[bytes]:
        """Start the flooder at the node's SIP port (or ``port``); read it with
        :func:`flood_result`."""
        dst = f"127.0.0.1:{port or self.node.port}"
        cmd = [str(self.flooder), "--src", FLOOD_SOURCE, "--dst", dst, "--rate", f"{rate:g}"]
        cmd += ["--seconds", f"{seconds:g}", "--mode", mode, "--number", TRIGGER]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def trunk_calls(
        self,
        name: str,
        rate: float,
        seconds: float,
        *,
        flood: tuple[float, str] | None = None,
    ) -> Phase:
        """Trigger calls from the trunk at ``rate`` for ``seconds`` (with a SIP flood of
        ``flood`` = (rate, mode) running from a second before the first call to the last)."""
        calls = max(1, round(rate * seconds))
        flooder = None
        if flood is not None:
            flooder = self.flood(flood[0], seconds + 3, mode=flood[1])
            time.sleep(1.0)
        cpu0, t0 = proc_tree_cpu_seconds(self.pid), time.monotonic()
        sipp = Sipp(
            "invite_cancel.xml",
            self.workdir,
            self._sipp_port,
            remote=self.node.address,
            calls=calls,
            rate=rate,
            service=TRIGGER,
            timeout_s=seconds + 30,
            name=f"trunk_{name}",
            trace_messages=False,
            binary=self.sipp_bin,
        )
        result = sipp.run()
        cpu1, t1 = proc_tree_cpu_seconds(self.pid), time.monotonic()
        flood_stats: dict[str, float] = {}
        if flooder is not None:
            flood_stats = flood_result(flooder)
        return Phase(
            name,
            calls,
            result.stat("SuccessfulCall"),
            result.stat("FailedCall"),
            result.rtt.get("ring", []),
            t1 - t0,
            (cpu1 - cpu0) / (t1 - t0),
            flood_stats,
        )


def flood_result(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> dict[str, float]:
    """The flooder's JSON line (it ends by itself after its ``--seconds``)."""
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"flood exited {proc.returncode}: {err.decode()[-500:]}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


class Ringer:
    """One trigger call from the trunk's address that rings with early media (the node's RTP
    port is :attr:`rtp_port`); with ``send_rtp``, 50 packets/s of PCMU from the address its
    SDP offered, so the node latches it. :meth:`hang_up` CANCELs it."""

    def __init__(
        self, node: Node, token: str, *, number: str = RINGER_TRIGGERS[0], send_rtp: bool = True
    ) -> None:
        assert len(number) == len(TRIGGER)  # swapped into the rendered requests
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.node = ("127.0.0.1", node.port)
        self.peer = Peer("127.0.0.1", self.sip.getsockname()[1], *self.node)
        self.template = base("invite", self.peer, token)
        port = self.rtp.getsockname()[1]
        assert 10000 <= port <= 65535  # as many digits as the template's 40000: same length
        self.number = number.encode()
        self.invite = self._number(self.template.render()).replace(
            b"m=audio 40000 ", f"m=audio {port} ".encode()
        )
        self.rtp_port = 0
        self._ringing = b""
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None
        self.sip.sendto(self.invite, self.node)
        self.sip.settimeout(5.0)
        while not self.rtp_port:
            data = self.sip.recv(65536)
            if data.startswith(b"SIP/2.0 183"):
                self._ringing = data
                found = re.search(rb"m=audio (\d+) ", data)
                assert found, data
                self.rtp_port = int(found.group(1))
            elif data.startswith(b"SIP/2.0 180"):
                raise AssertionError("the trigger rang without early media")
        if send_rtp:
            self._sender = threading.Thread(target=self._send_rtp, daemon=True)
            self._sender.start()

    def _number(self, data: bytes) -> bytes:
        return data.replace(TRIGGER.encode(), self.number)

    def _send_rtp(self) -> None:
        seq = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            packet = bytes([0x80, 0]) + seq.to_bytes(2, "big") + (seq * 160).to_bytes(4, "big")
            packet += b"\x12\x34\x56\x78" + b"\xff" * 160
            with contextlib.suppress(OSError):
                self.rtp.sendto(packet, ("127.0.0.1", self.rtp_port))
            seq = (seq + 1) & 0xFFFF
            next_at += 0.02
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def received_rtp(self) -> int:
        """RTP packets the node sent us (its ringback) so far, drained."""
        count = 0
        self.rtp.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.rtp.recv(2048)
                count += 1
        self.rtp.setblocking(True)
        return count

    def hang_up(self) -> None:
        self._stop.set()
        if self._sender is not None:
            self._sender.join()
        cancel = self.template.with_method("CANCEL").drop("Content-Type").drop("Contact")
        cancel = cancel.drop("Accept").drop("Expires")
        self.sip.sendto(self._number(replace(cancel, body=b"").render()), self.node)
        deadline = time.monotonic() + 5
        with contextlib.suppress(TimeoutError):
            while time.monotonic() < deadline:
                data = self.sip.recv(65536)
                if data.startswith(b"SIP/2.0 487"):
                    ack = self.template.with_method("ACK")
                    to = re.search(rb"\r\nTo: ([^\r]*)", data)
                    if to:
                        ack = ack.set("To", to.group(1).decode())
                    self.sip.sendto(self._number(replace(ack, body=b"").render()), self.node)
                    break
        self.sip.close()
        self.rtp.close()
