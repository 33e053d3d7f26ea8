"""``softswitch demo``: a whole callback call on loopback, shown step by step.

A real node (``softswitch serve`` in a subprocess: the same code path, real UDP sockets, a
temporary SQLite store with a demo account and a rate) and, in this process, an emulated
carrier (:mod:`softswitch.demo.carrier`) with the customer's phone and the destination's phone,
built from the project's own SIP stack and media engine. The node registers to the carrier with
digest authentication; the customer rings the trigger number and hangs up after one ring; the
node calls the customer back, plays the dial prompt; the customer dials the destination with
RFC 4733 digits; the node dials it through the carrier, the destination answers, both sides
speak (a 1 kHz tone one way, 440 Hz the other, each checked at the far end); ``**`` ends the
call. Then the timeline (the carrier's view of the wire merged with the node's log) and the
CDRs from the store. Exit status 0 only if every check held: audio is measured, not assumed.
"""

from __future__ import annotations

import asyncio
import calendar
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


def _log_time(line: str) -> float | None:
    """The node's own UTC timestamp at the start of a log line."""
    try:
        stamp = datetime.strptime(line[:26], "%Y-%m-%dT%H:%M:%S.%f")
    except ValueError:
        return None
    return calendar.timegm(stamp.timetuple()) + stamp.microsecond / 1e6


DEMO_CUSTOMER = "819012345678"
DEMO_DESTINATION = "441234567890"


def _provision(db_url: str) -> None:
    from softswitch.store import Store
    from softswitch.store.models import AccountKind, Language, Location, Rate

    async def go() -> None:
        store = await Store.open(db_url)
        try:
            await store.accounts.add(
                "Demo Customer",
                kind=AccountKind.TRAVELER,
                language=Language.EN,
                triggers=[TRIGGER],
                location=Location(DEMO_CUSTOMER),
                credit_limit=10_000,
            )
            await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
        finally:
            await store.close()

    asyncio.run(go())


def _cdr_rows(db_url: str) -> list[str]:
    from softswitch.store import Store

    async def go() -> list[str]:
        store = await Store.open(db_url)
        try:
            rows = []
            for cdr in await store.cdrs.list():
                answered = (
                    "-" if cdr.answer_at is None else f"{cdr.answer_at - cdr.setup_at:5.1f} s"
                )
                talk = (
                    "-"
                    if cdr.answer_at is None or cdr.end_at is None
                    else f"{cdr.end_at - cdr.answer_at:5.1f} s"
                )
                rows.append(
                    f"  {cdr.leg.value:<12} to {cdr.to_number:<15} answer after {answered:>7}  "
                    f"talk {talk:>7}  {cdr.cause_text:<18} billed {cdr.billed_seconds:>3} s  "
                    f"cost {cdr.cost}"
                )
            return rows
        finally:
            await store.close()

    return asyncio.run(go())


def run_demo(*, keep: bool = False) -> int:
    """Run the demo; return the process exit status."""
    tmp = Path(tempfile.mkdtemp(prefix="softswitch-demo-"))
    db_url = f"sqlite:///{tmp / 'demo.sqlite3'}"
    print("softswitch demo: a whole callback call on 127.0.0.1\n")
    _provision(db_url)
    print(
        f"  account  'Demo Customer', trigger {TRIGGER}, calls back {DEMO_CUSTOMER}, credit 10000"
    )
    print("  rate     +44 at 20 per minute, 30 s minimum, 6 s steps")
    ok, node_lines, carrier_timeline, checks, start = asyncio.run(_run(tmp, db_url))
    print("\nChecks:")
    for name, passed, detail in checks:
        _say(f"{name}: {detail}", passed)
    events = list(carrier_timeline)
    for when, line in node_lines:
        if " INFO " in line or " WARNING" in line or " ERROR" in line:
            events.append((_log_time(line) or when, "node:  " + line.split(": ", 1)[-1]))
    events.sort()
    print("\nTimeline (seconds since start; the carrier's view of the wire and the node's log):")
    for when, what in events:
        print(f"  {when - start:7.3f}  {what[:150]}")
    print("\nCDRs (one per leg, from the node's store):")
    rows = _cdr_rows(db_url)
    for row in rows:
        print(row)
    ok = ok and len(rows) >= 2
    print(
        f"\n{'demo passed' if ok else 'demo FAILED'}"
        + (f"; files in {tmp}" if keep or not ok else "")
    )
    if ok and not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


async def _run(
    tmp: Path, db_url: str
) -> tuple[
    bool, list[tuple[float, str]], list[tuple[float, str]], list[tuple[str, bool, str]], float
]:
    from softswitch.demo.carrier import CarrierConfig, EmulatedCarrier, call_checks

    start = time.time()
    node: subprocess.Popen[str] | None = None
    node_log: _LogTail | None = None
    checks: list[tuple[str, bool, str]] = []
    ok = True
    carrier = EmulatedCarrier(
        CarrierConfig(
            username="alice",
            password="secret",
            customer_number=DEMO_CUSTOMER,
            destination_number=DEMO_DESTINATION,
        )
    )
    await carrier.start()
    try:
        node_port = free_port()
        config = tmp / "node.toml"
        config.write_text(
            f'[sip]\nlisten = "127.0.0.1:{node_port}"\n\n'
            f'[database]\nurl = "{db_url}"\n\n'
            f'[trunk]\nregistrar = "sip:carrier.test"\n'
            f'proxy = "{carrier.address.host}:{carrier.address.port}"\n'
            f'username = "alice"\npassword = "secret"\nrealm = "carrier.test"\n'
            f'expires = 600\nkeepalive_interval = 0\ncaller_id = "81300000000"\n'
            f'international_prefix = "+"\n\n'
            f'[media]\nhost = "127.0.0.1"\nrtp_ports = [31000, 31999]\n'
        )
        print(f"  node     softswitch serve --config {config} (udp+tcp 127.0.0.1:{node_port})")
        print(
            f"  carrier  emulated, 127.0.0.1:{carrier.address.port}; customer phone "
            f"{DEMO_CUSTOMER}, destination phone +{DEMO_DESTINATION}\n"
        )
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        node = subprocess.Popen(
            [sys.executable, "-m", "softswitch", "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp,
        )
        node_log = _LogTail(node)
        listening = await asyncio.to_thread(node_log.wait_for, r"listening on", 20)
        _say("node started (softswitch serve)", listening is not None)
        ok &= listening is not None
        registered = ok and await carrier.wait_registered(10)
        _say("node registered to the carrier with digest auth (401, then 200)", registered)
        ok &= registered
        if ok:
            result = await carrier.trigger(TRIGGER, DEMO_CUSTOMER)
            _say(
                "the customer rang the trigger number and hung up after one ring: 180, "
                "CANCEL -> 200 + 487, never answered",
                result.ok,
            )
            ok &= result.ok
        if ok:
            over = await carrier.wait_call_over(60)
            _say(
                "callback, dial prompt, digits, destination, talk, ** : the call ran to its end",
                over,
            )
            ok &= over
            checks = [(c.name, c.ok, c.detail) for c in call_checks(carrier)]
            ok &= all(c[1] for c in checks)
            finished = await asyncio.to_thread(node_log.wait_for, r"finished", 10)
            ok &= finished is not None
        node.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(node.wait, 15)
        unregistered = await carrier.wait_unregistered(5)
        _say("node unregistered and stopped on SIGTERM with status 0", code == 0 and unregistered)
        ok &= code == 0 and unregistered
    except (subprocess.TimeoutExpired, OSError) as exc:
        _say(f"demo failed: {exc}", False)
        ok = False
    finally:
        if node is not None and node.poll() is None:
            node.kill()
            node.wait(timeout=5)
        await carrier.stop()
    lines = node_log.lines if node_log is not None else []
    return ok, lines, list(carrier.timeline), checks, start
