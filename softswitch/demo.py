"""``softswitch demo``: a real node and a SIPp carrier on loopback, shown step by step.

What it proves at this stage: the node starts through the same code path as ``softswitch
serve``, registers to the carrier with digest authentication (SIPp challenges and verifies the
response), rings a trigger call without answering it, answers the CANCEL with 200 and 487,
schedules the callback, and unregisters when stopped. The timeline printed at the end is read
from SIPp's own message traces (the carrier's view of the wire), merged with the node's log.
Exit status 0 only if every step really happened.
"""

from __future__ import annotations

import calendar
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent.parent / "interop" / "scenarios"
TRIGGER = "815012345678"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port on 127.0.0.1")


class _LogTail:
    """Collects a child's stderr lines in a thread, so waiting for a line never blocks."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(proc,), daemon=True)
        self._thread.start()

    def _run(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            with self._cond:
                self.lines.append((time.time(), line.rstrip("\n")))
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float) -> str | None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for _, line in self.lines:
                    if regex.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)


def _say(step: str, ok: bool | None = None) -> None:
    mark = {True: "ok  ", False: "FAIL", None: "..  "}[ok]
    print(f"  [{mark}] {step}", flush=True)


def _sipp(args: list[str], logdir: Path, name: str) -> list[str]:
    return [
        "sipp",
        *args,
        "-i",
        "127.0.0.1",
        "-nostdin",
        "-trace_msg",
        "-trace_err",
        "-message_file",
        str(logdir / f"{name}_messages.log"),
        "-error_file",
        str(logdir / f"{name}_errors.log"),
    ]


_TRACE_HEAD = re.compile(
    r"^-+ (\d{4}-\d\d-\d\d\s+\d\d:\d\d:\d\d(?:[.:]\d+)?)\s*\n(UDP|TCP) message (sent|received)",
    re.M,
)


def _parse_trace(path: Path, who: str) -> list[tuple[float, str]]:
    """(unix time, 'carrier -> node  INVITE sip:...') from a SIPp -trace_msg file."""
    if not path.exists():
        return []
    text = path.read_text(errors="replace")
    events = []
    for match in _TRACE_HEAD.finditer(text):
        stamp = (
            match.group(1).replace(":", ".", 3) if match.group(1).count(":") > 2 else match.group(1)
        )
        try:
            when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        except ValueError:
            continue
        rest = text[match.end() :]
        body = rest.split("\n\n", 1)[1] if "\n\n" in rest[:200] else rest
        first = next((ln.strip() for ln in body.splitlines() if ln.strip()), "?")
        arrow = f"{who} -> node " if match.group(3) == "sent" else f"node -> {who}"
        events.append((when, f"{arrow}  {first}"))
    return events


def _log_time(line: str) -> float | None:
    """The node's own UTC timestamp at the start of a log line."""
    try:
        stamp = datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f")
    except ValueError:
        return None
    return calendar.timegm(stamp.timetuple()) + stamp.microsecond / 1e6


def run_demo(*, keep: bool = False) -> int:
    """Run the demo; return the process exit status."""
    if shutil.which("sipp") is None:
        print(
            "softswitch demo needs SIPp (Debian package sip-tester): run `make demo`, which "
            "installs it.",
            file=sys.stderr,
        )
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="softswitch-demo-"))
    node_port, carrier_port, caller_port = free_port(), free_port(), free_port()
    config = tmp / "node.toml"
    config.write_text(
        f'[sip]\nlisten = "127.0.0.1:{node_port}"\n\n'
        f'[database]\nurl = "sqlite:///{tmp / "demo.sqlite3"}"\n\n'
        f'[trunk]\nregistrar = "sip:carrier.test"\nproxy = "127.0.0.1:{carrier_port}"\n'
        f'username = "alice"\npassword = "secret"\nrealm = "carrier.test"\nexpires = 600\n'
        f"keepalive_interval = 0\n\n"
        f'[[trigger]]\nnumber = "{TRIGGER}"\n'
    )
    print("softswitch demo: a node, a SIPp carrier and a trigger call, all on 127.0.0.1\n")
    print(f"  node     udp+tcp 127.0.0.1:{node_port}   (softswitch serve --config {config})")
    print(
        f"  carrier  SIPp registrar on 127.0.0.1:{carrier_port}, trigger caller on "
        f"127.0.0.1:{caller_port}"
    )
    print(f"  trigger  number {TRIGGER}, trunk credentials alice/secret, MD5 digest\n")

    ok = True
    procs: list[subprocess.Popen[str]] = []
    start = time.time()
    node: subprocess.Popen[str] | None = None
    try:
        registrar = subprocess.Popen(
            _sipp(
                [
                    "-sf",
                    str(SCENARIOS / "demo_registrar.xml"),
                    "-p",
                    str(carrier_port),
                    "-m",
                    "1",
                    "-timeout",
                    "30",
                ],
                tmp,
                "carrier_registrar",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp,
        )
        procs.append(registrar)
        time.sleep(0.3)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        node = subprocess.Popen(
            [sys.executable, "-m", "softswitch.cli", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp,
        )
        procs.append(node)
        node_log = _LogTail(node)
        listening = node_log.wait_for(r"listening on", 10)
        _say("node started (softswitch serve)", listening is not None)
        ok &= listening is not None
        registered = node_log.wait_for(r"registered", 10) if ok else None
        _say(
            "node registered to the carrier with digest auth (401, then 200)",
            registered is not None,
        )
        ok &= registered is not None

        if ok:
            caller = subprocess.run(
                _sipp(
                    [
                        f"127.0.0.1:{node_port}",
                        "-sf",
                        str(SCENARIOS / "invite_cancel.xml"),
                        "-s",
                        TRIGGER,
                        "-p",
                        str(caller_port),
                        "-m",
                        "1",
                        "-timeout",
                        "15",
                    ],
                    tmp,
                    "carrier_caller",
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                cwd=tmp,
                timeout=30,
            )
            rang = caller.returncode == 0
            _say(
                "trigger call rang (100, 180), was CANCELled: 200 + 487, ACK; never answered", rang
            )
            ok &= rang
            scheduled = node_log.wait_for(r"callback scheduled", 5)
            _say("node scheduled the callback", scheduled is not None)
            ok &= scheduled is not None

        node.send_signal(signal.SIGTERM)
        code = node.wait(timeout=15)
        unregistered = registrar.wait(timeout=10) == 0
        _say(
            "node unregistered (Expires: 0) and stopped on SIGTERM with status 0",
            code == 0 and unregistered,
        )
        ok &= code == 0 and unregistered
    except (subprocess.TimeoutExpired, OSError) as exc:
        _say(f"demo failed: {exc}", False)
        ok = False
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)

    events = _parse_trace(tmp / "carrier_registrar_messages.log", "carrier")
    events += _parse_trace(tmp / "carrier_caller_messages.log", "caller ")
    if node is not None:
        for when, line in node_log.lines:
            if " INFO " in line or " WARNING" in line or " ERROR" in line:
                events.append((_log_time(line) or when, "node:  " + line.split(": ", 1)[-1]))
    events.sort()
    print("\nTimeline (ms since start; SIP messages as the SIPp peers saw them):")
    for when, what in events:
        print(f"  {1000 * (when - start):8.1f}  {what}")
    print(
        f"\n{'demo passed' if ok else 'demo FAILED'}; logs in {tmp}"
        if keep or not ok
        else f"\n{'demo passed' if ok else 'demo FAILED'}"
    )
    if ok and not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1
