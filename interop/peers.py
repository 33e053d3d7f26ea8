"""Drive real peers for the interop suite and the benchmarks: the node and SIPp.

Every peer runs as a foreground subprocess on 127.0.0.1 with its logs in a work directory (the
test's ``tmp_path``). SIPp writes its statistics (``-trace_stat``), unexpected messages
(``-trace_err``), every message with a timestamp (``-trace_msg``) and response times
(``-trace_rtt``) there; :class:`SippResult` parses them so tests can assert on what crossed the
wire and when. The node (``softswitch serve``) logs to stderr, which goes to a file that tests
search (``"listening"``, ``"callback scheduled"``).

Digest helpers (RFC 7616 section 3.4.1, RFC 8760 for SIP) recompute an Authorization header from
the trace, because SIPp 3.6.1 can verify MD5 only.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
LOOPBACK = "127.0.0.1"
TRIGGER_NUMBER = "815012345678"


class PeerMissing(Exception):
    """A peer program is not installed (the caller decides between skip and fail)."""


def find_program(name: str) -> str:
    """Path of an installed program, or raise :class:`PeerMissing`."""
    path = shutil.which(name)
    if path is None:
        raise PeerMissing(f"{name} is not installed")
    return path


def find_softswitch() -> str:
    """The node's command: ``$SOFTSWITCH_BIN``, else the project venv's, else ``$PATH``'s."""
    override = os.environ.get("SOFTSWITCH_BIN")
    if override:
        return override
    venv = REPO / ".venv" / "bin" / "softswitch"
    if venv.exists():
        return str(venv)
    return find_program("softswitch")


def free_port(host: str = LOOPBACK, *, span: int = 1) -> int:
    """A port that is free for both UDP and TCP on ``host`` right now (and, with ``span``,
    the ``span - 1`` ports after it too: baresip puts SIP over TLS on its port + 1).

    The node listens on both transports with one port number, so a port is only taken when
    both binds succeed. Another process can still grab it before we use it; tests accept that.
    """
    for _ in range(50):
        with contextlib.ExitStack() as held:
            udp = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            try:
                for p in range(port, port + span):
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        if p == port and kind == socket.SOCK_DGRAM:
                            continue
                        sock = held.enter_context(socket.socket(socket.AF_INET, kind))
                        sock.bind((host, p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free UDP+TCP port found")


# --- SIPp's logs ---------------------------------------------------------------------------

_TRACE_SEP = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n"
    r"(\w+) message (sent|received) (?:\(\d+ bytes\):|\[\d+\] bytes :)\n\n",
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """One SIP message from SIPp's ``-trace_msg`` log, seen from SIPp's side."""

    time: float
    direction: str
    transport: str
    text: str

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0]

    @property
    def method(self) -> str | None:
        """The request method, or None for a response."""
        if self.first_line.startswith("SIP/2.0 "):
            return None
        return self.first_line.split(" ", 1)[0]

    @property
    def status(self) -> int | None:
        """The status code, or None for a request."""
        if not self.first_line.startswith("SIP/2.0 "):
            return None
        return int(self.first_line.split(" ", 2)[1])

    def headers(self, name: str) -> list[str]:
        """Values of every header called ``name`` (case-insensitive, no compact forms)."""
        head = self.text.replace("\r\n", "\n").split("\n\n", 1)[0]
        out = []
        for line in head.split("\n")[1:]:
            key, sep, value = line.partition(":")
            if sep and key.strip().lower() == name.lower():
                out.append(value.strip())
        return out

    def header(self, name: str) -> str | None:
        """The first value of header ``name``, or None."""
        values = self.headers(name)
        return values[0] if values else None

    @property
    def cseq_method(self) -> str | None:
        cseq = self.header("CSeq")
        return cseq.split()[-1] if cseq else None


def parse_message_log(path: Path) -> list[TracedMessage]:
    """Parse a SIPp ``-trace_msg`` file into messages in log order."""
    if not path.exists():
        return []
    data = path.read_text(encoding="latin-1")
    marks = list(_TRACE_SEP.finditer(data))
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(data)
        stamp = time.mktime(time.strptime(m.group(1).split(".")[0], "%Y-%m-%d %H:%M:%S"))
        stamp += float("0." + m.group(1).split(".")[1])
        out.append(
            TracedMessage(
                time=stamp,
                direction=m.group(3),
                transport=m.group(2),
                text=data[m.end() : end].rstrip("\n") + "\n",
            )
        )
    return out


def injected_scenario(scenario: str, target: Path) -> Path:
    """Write to ``target`` a copy of ``scenario`` (a file in interop/scenarios) that dials,
    call after call, field 0 of SIPp's injection file (``-inf``, see :func:`numbers_file`)
    instead of the one ``-s`` number."""
    text = (SCENARIOS / scenario).read_text(encoding="latin-1")
    target.write_text(text.replace("[service]", "[field0]"), encoding="latin-1")
    return target


def numbers_file(path: Path, numbers: Iterable[str]) -> Path:
    """A SIPp injection file: one number a call, in order (SEQUENTIAL, from the top again
    when SIPp runs out)."""
    path.write_text("SEQUENTIAL\n" + "".join(f"{number};\n" for number in numbers))
    return path


def parse_stat_csv(path: Path) -> dict[str, str]:
    """The last row of a SIPp ``-trace_stat`` file, as column -> value (empty if absent)."""
    if not path.exists():
        return {}
    with path.open(newline="", encoding="latin-1") as f:
        rows = list(csv.reader(f, delimiter=";"))
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def parse_rtt_csv(path: Path) -> dict[str, list[tuple[float, float]]]:
    """(ms since SIPp started, response time ms) from a ``-trace_rtt`` file, per rtd name.

    The first value is when the response arrived; SIPp counts both in whole milliseconds.
    """
    out: dict[str, list[tuple[float, float]]] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="latin-1").splitlines()[1:]:
        parts = line.strip().split(";")
        if len(parts) >= 3 and parts[1]:
            out.setdefault(parts[2], []).append((float(parts[0]), float(parts[1])))
    return out


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) by the nearest-rank method; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True, slots=True)
class SippResult:
    """What a finished SIPp run left behind."""

    returncode: int
    workdir: Path
    name: str
    messages: list[TracedMessage]
    stats: dict[str, str]
    rtt_samples: dict[str, list[tuple[float, float]]]
    errors: str
    screen: str

    @property
    def rtt(self) -> dict[str, list[float]]:
        """Response times in ms per rtd name (``-trace_rtt``)."""
        return {name: [ms for _, ms in samples] for name, samples in self.rtt_samples.items()}

    def stat(self, column: str) -> int:
        """An integer column of the final statistics row, cumulative ``(C)`` variant."""
        value = self.stats.get(f"{column}(C)", self.stats.get(column, "0"))
        return int(float(value or 0))

    def received(
        self, *, method: str | None = None, status: int | None = None
    ) -> list[TracedMessage]:
        """Messages SIPp received, filtered by request method or response status."""
        return [
            m
            for m in self.messages
            if m.direction == "received"
            and (method is None or m.method == method)
            and (status is None or m.status == status)
        ]

    def describe(self) -> str:
        """A short diagnosis for assertion messages."""
        return (
            f"sipp {self.name} exited {self.returncode}; "
            f"successful={self.stat('SuccessfulCall')} failed={self.stat('FailedCall')}\n"
            f"errors log:\n{self.errors[-3000:]}\nscreen tail:\n{self.screen[-1500:]}"
        )


@dataclass
class Sipp:
    """One SIPp process running a scenario from ``interop/scenarios`` in the foreground.

    ``remote`` set means UAC mode (SIPp sends to it); None means UAS mode (SIPp waits on
    ``local_port``). ``wait()`` returns a :class:`SippResult`; exit code 0 means every call
    followed the scenario.
    """

    scenario: str
    workdir: Path
    local_port: int
    remote: str | None = None
    calls: int = 1
    rate: float | None = None
    service: str | None = None
    transport: str = "u1"
    no_retrans: bool = False
    timeout_s: float = 15.0
    extra: Sequence[str] = ()
    binary: str = "sipp"
    name: str = ""
    cpu: int | None = None
    trace_messages: bool | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{Path(self.scenario).stem}_{self.local_port}"

    def _path(self, suffix: str) -> Path:
        return self.workdir / f"{self.name}{suffix}"

    def command(self) -> list[str]:
        scenario = Path(self.scenario)
        if not scenario.is_absolute():
            scenario = SCENARIOS / scenario
        cmd = [self.binary]
        if self.remote:
            cmd.append(self.remote)
        cmd += ["-sf", str(scenario), "-t", self.transport, "-i", LOOPBACK]
        cmd += ["-p", str(self.local_port), "-nostdin"]
        if self.calls > 0:  # 0: no call limit (a UAS stopped by kill())
            cmd += ["-m", str(self.calls)]
        # The control socket defaults to 8888 and would collide between parallel runs.
        cmd += ["-cp", str(free_port())]
        cmd += ["-trace_err", "-error_file", str(self._path("_errors.log"))]
        cmd += ["-trace_stat", "-stf", str(self._path("_stats.csv")), "-fd", "1"]
        cmd += ["-trace_rtt", "-rtt_freq", "1"]
        cmd += ["-trace_screen", "-screen_file", str(self._path("_screen.log"))]
        trace = self.trace_messages if self.trace_messages is not None else self.calls <= 1000
        if trace:
            cmd += ["-trace_msg", "-message_file", str(self._path("_messages.log"))]
        if self.rate is not None:
            cmd += ["-r", f"{self.rate:g}"]
        if self.service is not None:
            cmd += ["-s", self.service]
        if self.no_retrans:
            cmd.append("-nr")
        # SIPp's own global timeout makes a stuck run fail instead of hang.
        cmd += ["-timeout", f"{max(1, int(self.timeout_s))}s", "-timeout_error"]
        cmd += list(self.extra)
        return cmd

    def start(self) -> Sipp:
        """Start SIPp; returns self. UAS scenarios are ready after a short settle time."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self.command(), self.workdir, self._path("_stdout.log"), cpu=self.cpu)
        if self.remote is None:
            _wait_udp_bound(self.local_port, self.proc, 3.0)
        return self

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to exit (killing it after ``timeout``) and collect its logs."""
        assert self.proc is not None, "start() first"
        try:
            rc = self.proc.wait(timeout=timeout if timeout is not None else self.timeout_s + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        # The runtime directory shifts SIPp's -rtt file name; find it by pattern.
        rtt_files = sorted(self.workdir.glob(f"{Path(self.scenario).stem}_{self.proc.pid}_rtt.csv"))
        return SippResult(
            returncode=rc,
            workdir=self.workdir,
            name=self.name,
            messages=parse_message_log(self._path("_messages.log")),
            stats=parse_stat_csv(self._path("_stats.csv")),
            rtt_samples=parse_rtt_csv(rtt_files[0]) if rtt_files else {},
            errors=_read(self._path("_errors.log")),
            screen=_read(self._path("_screen.log")) or _read(self._path("_stdout.log")),
        )

    def run(self) -> SippResult:
        """Start and wait."""
        return self.start().wait()

    def kill(self) -> None:
        """Stop SIPp if it is still running (test teardown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


def _wait_udp_bound(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait until something is bound to UDP ``port`` (SIPp UAS ready) or the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                return
        time.sleep(0.02)


def spawn(
    cmd: Sequence[str],
    workdir: Path,
    log_path: Path,
    *,
    cpu: int | None = None,
    new_session: bool = False,
) -> subprocess.Popen[bytes]:
    """Start a peer: ``cmd`` in ``workdir``, no stdin, stdout and stderr into ``log_path``;
    pinned to ``cpu`` if given; in a session (and process group) of its own if
    ``new_session``, so that its children can be killed with it."""
    preexec = None
    if cpu is not None:
        pinned = cpu

        def preexec() -> None:
            os.sched_setaffinity(0, {pinned})

    with log_path.open("wb") as log:
        return subprocess.Popen(
            cmd,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
            start_new_session=new_session,
        )


def terminate(proc: subprocess.Popen[bytes], timeout: float, kill: Callable[[], None]) -> int:
    """SIGTERM ``proc`` if it runs, wait up to ``timeout`` seconds, then ``kill()`` it (the
    driver's own way: the process, or its group); its exit code (-9: it had to be killed)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill()
    return int(proc.returncode)


# --- the node --------------------------------------------------------------------------------


def node_config(
    port: int,
    *,
    triggers: Iterable[str] = (TRIGGER_NUMBER,),
    registrar_port: int | None = None,
    username: str = "alice",
    password: str = "secret",
    realm: str | None = "carrier.test",
    expires: int = 60,
    test_numbers: Iterable[tuple[str, float]] = (),
) -> str:
    """The TOML text of a test configuration for ``softswitch serve --config``.

    ``test_numbers``: (number, hangup_after) pairs the node answers itself (test lines).
    """
    lines = ["[sip]", f'listen = "{LOOPBACK}:{port}"', ""]
    if registrar_port is not None:
        lines += [
            "[trunk]",
            f'registrar = "sip:{LOOPBACK}:{registrar_port}"',
            f'proxy = "{LOOPBACK}:{registrar_port}"',
            f'username = "{username}"',
            f'password = "{password}"',
        ]
        if realm is not None:
            lines.append(f'realm = "{realm}"')
        lines += [f"expires = {expires}", ""]
    for number in triggers:
        lines += ["[[trigger]]", f'number = "{number}"', ""]
    for number, hangup_after in test_numbers:
        lines += ["[[test_number]]", f'number = "{number}"', f"hangup_after = {hangup_after}", ""]
    return "\n".join(lines)


@dataclass
class Node:
    """A ``softswitch serve`` process listening on ``127.0.0.1:port``."""

    binary: str
    workdir: Path
    port: int
    config_text: str
    cpu: int | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"node_{self.port}.log"

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, ready_timeout: float = 15.0) -> Node:
        """Start the node and wait for its "listening" line; raise if it does not come."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / f"node_{self.port}.toml"
        config.write_text(self.config_text)
        cmd = [self.binary, "serve", "--config", str(config), "--sip-listen", self.address]
        self.proc = spawn(cmd, self.workdir, self.log_path, cpu=self.cpu)
        if not self.wait_for_log("listening", ready_timeout):
            self.kill()
            raise RuntimeError(f"node did not report 'listening':\n{self.log()[-3000:]}")
        return self

    def log(self) -> str:
        """Everything the node wrote so far."""
        return _read(self.log_path)

    def count(self, text: str) -> int:
        """How many log lines contain ``text``."""
        return sum(1 for line in self.log().splitlines() if text in line)

    def wait_for_log(self, text: str, timeout: float, count: int = 1) -> bool:
        """Wait until ``count`` log lines contain ``text``; False on timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(text) >= count:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return self.count(text) >= count
            time.sleep(0.02)
        return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait, and return the exit code (killed: -9 after ``timeout``)."""
        assert self.proc is not None
        return terminate(self.proc, timeout, self.kill)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the node so far, its live media workers' included."""
        assert self.proc is not None
        return proc_tree_cpu_seconds(self.proc.pid)

    def rss_bytes(self) -> int:
        """Resident set size of the node and of its media workers (/proc/<pid>/status):
        with ``[media] workers`` the engine's memory is in the workers, not the node."""
        assert self.proc is not None
        pid = self.proc.pid
        total = proc_rss_bytes(pid)
        for child in child_pids(pid):
            with contextlib.suppress(OSError):  # a worker that just ended
                total += proc_rss_bytes(child)
        return total


def proc_tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and of its live child processes (a node's media workers,
    ``[media] workers``: the media engine runs there, not in the node's own process)."""
    total = proc_cpu_seconds(pid)
    for child in child_pids(pid):
        with contextlib.suppress(OSError, ValueError, IndexError):
            total += proc_cpu_seconds(child)
    return total


def admin_status(port: int, token: str) -> dict[str, Any]:
    """``GET /api/status`` of a node's admin API on loopback with the bearer ``token``; the
    environment's proxy settings are ignored (loopback only)."""
    request = urllib.request.Request(
        f"http://{LOOPBACK}:{port}/api/status", headers={"Authorization": f"Bearer {token}"}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as answer:
        status: dict[str, Any] = json.load(answer)
    return status


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` (field 4 of /proc/<pid>/stat is the parent)."""
    children: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == pid:
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                children.append(int(entry.name))
    return children


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat[stat.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


# --- raw SIP over UDP, for messages SIPp will not send -------------------------------------


class UdpClient:
    """A UDP socket on 127.0.0.1 for hand-made SIP requests (its port goes into Via)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.port = int(self.sock.getsockname()[1])

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, port: int, data: bytes) -> None:
        self.sock.sendto(data, (LOOPBACK, port))

    def recv(self, wait: float = 1.0) -> bytes | None:
        """One datagram, or None after ``wait`` seconds."""
        self.sock.settimeout(wait)
        try:
            return self.sock.recv(65535)
        except TimeoutError:
            return None

    def recv_all(self, wait: float) -> list[bytes]:
        """Every datagram that arrives within ``wait`` seconds."""
        out = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            got = self.recv(left)
            if got is None:
                break
            out.append(got)
        return out

    def request(
        self,
        method: str,
        node_port: int,
        *,
        ruri: str | None = None,
        branch: str = "z9hG4bK-interop-1",
        call_id: str = "interop-1@127.0.0.1",
        cseq: str | None = None,
        version: str = "SIP/2.0",
        extra: Sequence[str] = (),
        omit: Sequence[str] = (),
        body: bytes = b"",
        content_length: str | None = None,
        to: str | None = None,
    ) -> bytes:
        """A request from this socket to the node, with the usual headers; ``omit`` drops some."""
        target = ruri or f"sip:{TRIGGER_NUMBER}@{LOOPBACK}:{node_port}"
        headers = [
            ("Via", f"SIP/2.0/UDP {LOOPBACK}:{self.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:interop@{LOOPBACK}:{self.port}>;tag=interop-tag"),
            ("To", to or f"<{target}>"),
            ("Call-ID", call_id),
            ("CSeq", cseq or f"1 {method}"),
            ("Contact", f"<sip:interop@{LOOPBACK}:{self.port}>"),
        ]
        lines = [f"{method} {target} {version}"]
        lines += [f"{k}: {v}" for k, v in headers if k not in omit]
        lines += list(extra)
        lines.append(f"Content-Length: {content_length or len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def status_of(message: bytes) -> int | None:
    """The status code of a SIP response, or None if ``message`` is not one."""
    m = re.match(rb"SIP/2\.0 (\d{3}) ", message)
    return int(m.group(1)) if m else None


def header_of(message: bytes, name: str) -> str | None:
    """The first value of header ``name`` in raw ``message`` (case-insensitive)."""
    head = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return None


# --- digest authentication (RFC 7616 section 3.4.1; SIP: RFC 3261 22.4, RFC 8760) ---------

_HASHLIB_NAMES = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}


def _h(algorithm: str, text: str) -> str:
    name = _HASHLIB_NAMES.get(algorithm.upper().removesuffix("-SESS"))
    if name is None:
        raise ValueError(f"unknown digest algorithm {algorithm}")
    return hashlib.new(name, text.encode()).hexdigest()


def digest_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value of a digest Authorization header (qop absent or "auth")."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")


_AUTH_PARAM = re.compile(r'\s*([\w-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)\s*,?')


def parse_digest(value: str) -> dict[str, str]:
    """The parameters of a ``Digest ...`` challenge or credentials (names lower-cased)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest header: {value!r}")
    out = {}
    for m in _AUTH_PARAM.finditer(rest):
        v = m.group(2)
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        out[m.group(1).lower()] = v
    return out


def check_authorization(
    authorization: str,
    challenge: str,
    *,
    method: str,
    username: str,
    password: str,
) -> list[str]:
    """Problems with ``authorization`` as the answer to ``challenge``; empty means correct.

    Checks what SIPp's verifyauth does not: that realm, nonce, opaque and algorithm echo the
    challenge and that qop is one the challenge offered, then recomputes the response.
    """
    creds = parse_digest(authorization)
    chal = parse_digest(challenge)
    problems = []
    algorithm = chal.get("algorithm", "MD5")
    if creds.get("algorithm", "MD5").upper() != algorithm.upper():
        problems.append(f"algorithm {creds.get('algorithm')!r}, challenge said {algorithm!r}")
    for name in ("realm", "nonce", "opaque"):
        if name in chal and creds.get(name) != chal[name]:
            problems.append(f"{name} {creds.get(name)!r} != challenge {chal[name]!r}")
    if creds.get("username") != username:
        problems.append(f"username {creds.get('username')!r}")
    offered = [q.strip() for q in chal.get("qop", "").split(",") if q.strip()]
    qop = creds.get("qop")
    if offered and qop not in offered:
        problems.append(f"qop {qop!r} not in challenge's {offered}")
    if qop and not (creds.get("cnonce") and re.fullmatch(r"[0-9a-fA-F]{8}", creds.get("nc", ""))):
        problems.append("qop without cnonce or 8-hex-digit nc (RFC 7616 section 3.4)")
    if problems:
        return problems
    expected = digest_response(
        algorithm=algorithm,
        username=username,
        realm=chal.get("realm", ""),
        password=password,
        method=method,
        uri=creds.get("uri", ""),
        nonce=chal.get("nonce", ""),
        qop=qop,
        nc=creds.get("nc"),
        cnonce=creds.get("cnonce"),
    )
    if creds.get("response", "").lower() != expected:
        problems.append(f"response {creds.get('response')!r} != expected {expected!r}")
    return problems
