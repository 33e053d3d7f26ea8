"""``softswitch demo``: a whole callback call (or a location change) on loopback, step by step.

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

That is the default scenario, ``call``. ``--scenario location`` shows a location change by
phone (SPEC section 4, :mod:`softswitch.demo.location`): the account has a security code; the
customer rings the trigger number and stays on the line, presses ``#`` in the switch's early
media, is answered into the Location menu, types the code, a second number of the emulated
carrier (the hotel room's phone), ``*``, ``*`` (no extension), ``1`` (confirm) and ``1`` (call
me back now); the switch hangs up and calls back at the room phone, which hears the dial
prompt and ends the call with ``**``. The checks then also read the store: the saved location,
its history (via the phone) and the trigger CDR, which says how the trigger was answered.
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from softswitch.demo.carrier import EmulatedCarrier
    from softswitch.store.models import Cdr

Check = tuple[str, bool, str]

TRIGGER = "815012345678"
#: The scenarios ``softswitch demo --scenario`` runs, and what each shows.
SCENARIOS = {
    "call": "a whole callback call",
    "location": "a location change by phone, then the callback at the new place",
}


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
#: The location scenario: the account's security code and the hotel room's phone.
SECURITY_CODE = "4711"
ROOM_NUMBER = "81355501234"


def _provision(db_url: str, security_code: str | None = None) -> None:
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
                security_code=security_code,
            )
            await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
        finally:
            await store.close()

    asyncio.run(go())


def _cdrs(db_url: str) -> list[Cdr]:
    from softswitch.store import Store

    async def go() -> list[Cdr]:
        store = await Store.open(db_url)
        try:
            return list(await store.cdrs.list())
        finally:
            await store.close()

    return asyncio.run(go())


def _cdr_row(cdr: Cdr) -> str:
    answered = "-" if cdr.answer_at is None else f"{cdr.answer_at - cdr.setup_at:5.1f} s"
    talk = (
        "-"
        if cdr.answer_at is None or cdr.end_at is None
        else f"{cdr.end_at - cdr.answer_at:5.1f} s"
    )
    return (
        f"  {cdr.leg.value:<12} to {cdr.to_number:<15} answer after {answered:>7}  "
        f"talk {talk:>7}  billed {cdr.billed_seconds:>3} s  cost {cdr.cost:<3} {cdr.cause_text}"
    )


def _location_store_checks(db_url: str, cdrs: list[Cdr]) -> list[Check]:
    """What the store says after a location change: the location, its history, the CDRs."""
    from softswitch.store import Store
    from softswitch.store.models import LegKind, LocationChange

    async def go() -> tuple[str, LocationChange | None]:
        store = await Store.open(db_url)
        try:
            account = await store.accounts.by_trigger(TRIGGER)
            if account is None:
                return "no account", None
            where = "none" if account.location is None else account.location.number
            if account.location is not None and account.location.extension:
                where += f" extension {account.location.extension}"
            history = await store.accounts.location_history(account.id, limit=1)
            return where, history[0] if history else None
        finally:
            await store.close()

    where, change = asyncio.run(go())
    previous = "-" if change is None or change.previous is None else change.previous.number
    triggers = [c for c in cdrs if c.leg is LegKind.TRIGGER]
    callbacks = [c for c in cdrs if c.leg is LegKind.CALLBACK and c.to_number == ROOM_NUMBER]
    trigger_cause = triggers[0].cause_text if triggers else "no trigger CDR"
    return [
        (
            "the new location is saved in the store",
            where == ROOM_NUMBER,
            where,
        ),
        (
            "the change is in the account's history, made by phone",
            change is not None and change.via == "phone" and previous == DEMO_CUSTOMER,
            "none" if change is None else f"{previous} -> {where} via {change.via}",
        ),
        (
            "the trigger CDR says how the trigger call was answered",
            len(triggers) == 1
            and trigger_cause.startswith("answered (# in the early media) into the location menu")
            and triggers[0].cost == 0,
            trigger_cause,
        ),
        (
            "a callback CDR for the room phone, answered",
            len(callbacks) == 1 and callbacks[0].answer_at is not None,
            callbacks[0].cause_text if callbacks else "none",
        ),
    ]


def run_demo(*, keep: bool = False, scenario: str = "call") -> int:
    """Run the demo's ``scenario`` (see :data:`SCENARIOS`); return the process exit status."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    location = scenario == "location"
    tmp = Path(tempfile.mkdtemp(prefix="softswitch-demo-"))
    db_url = f"sqlite:///{tmp / 'demo.sqlite3'}"
    print(f"softswitch demo --scenario {scenario}: {SCENARIOS[scenario]}, on 127.0.0.1\n")
    _provision(db_url, SECURITY_CODE if location else None)
    print(
        f"  account  'Demo Customer', trigger {TRIGGER}, calls back {DEMO_CUSTOMER}, credit 10000"
        + (f", security code {SECURITY_CODE}" if location else "")
    )
    print("  rate     +44 at 20 per minute, 30 s minimum, 6 s steps")
    ok, node_lines, carrier_timeline, checks, start = asyncio.run(_run(tmp, db_url, scenario))
    cdrs = _cdrs(db_url)
    if location:
        checks += _location_store_checks(db_url, cdrs)
    ok = ok and all(passed for _, passed, _ in checks) and len(cdrs) >= 2
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
    for cdr in cdrs:
        print(_cdr_row(cdr))
    print(
        f"\n{'demo passed' if ok else 'demo FAILED'}"
        + (f"; files in {tmp}" if keep or not ok else "")
    )
    if ok and not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


async def _run(
    tmp: Path, db_url: str, scenario: str
) -> tuple[bool, list[tuple[float, str]], list[tuple[float, str]], list[Check], float]:
    from softswitch.demo.carrier import CarrierConfig, EmulatedCarrier

    start = time.time()
    node: subprocess.Popen[str] | None = None
    node_log: _LogTail | None = None
    checks: list[Check] = []
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
        if scenario == "location":
            phones = f"customer phone {DEMO_CUSTOMER}, hotel room phone +{ROOM_NUMBER}"
        else:
            phones = f"customer phone {DEMO_CUSTOMER}, destination phone +{DEMO_DESTINATION}"
        print(f"  carrier  emulated, 127.0.0.1:{carrier.address.port}; {phones}\n")
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
            run = _location_scenario if scenario == "location" else _call_scenario
            passed, checks = await run(carrier, node_log)
            ok &= passed
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


async def _call_scenario(carrier: EmulatedCarrier, node_log: _LogTail) -> tuple[bool, list[Check]]:
    """The default scenario: one ring, the callback, the destination, talk, ``**``."""
    from softswitch.demo.carrier import call_checks

    result = await carrier.trigger(TRIGGER, DEMO_CUSTOMER)
    rang = next((str(s) for _, s in result.statuses if s in (180, 183)), "no 180/183")
    _say(
        f"the customer rang the trigger number and hung up after one ring: {rang}, "
        "CANCEL -> 200 + 487, never answered",
        result.ok,
    )
    if not result.ok:
        return False, []
    over = await carrier.wait_call_over(60)
    _say("callback, dial prompt, digits, destination, talk, ** : the call ran to its end", over)
    checks = [(c.name, c.ok, c.detail) for c in call_checks(carrier)]
    finished = await asyncio.to_thread(node_log.wait_for, r"finished", 10)
    return over and finished is not None and all(c[1] for c in checks), checks


async def _location_scenario(
    carrier: EmulatedCarrier, node_log: _LogTail
) -> tuple[bool, list[Check]]:
    """``#`` in the trigger's early media, the Location menu, the callback at the new place."""
    from softswitch.demo.location import (
        LocationScript,
        RoomPhone,
        location_checks,
        run_location_change,
    )

    room = RoomPhone(carrier, ROOM_NUMBER)
    carrier.add_phone(room)
    script = LocationScript(security_code=SECURITY_CODE, new_number=ROOM_NUMBER)
    caller = await run_location_change(carrier, TRIGGER, script, room)
    changed = caller.ended_by == "node" and caller.error is None
    _say(
        f"the customer rang the trigger number, pressed # in the early media and moved the "
        f"callback to +{ROOM_NUMBER} in the Location menu; the switch hung up",
        changed,
    )
    over = room.ended.is_set()
    _say("callback to the room phone, dial prompt, ** : the call ran to its end", over)
    checks = [(c.name, c.ok, c.detail) for c in location_checks(carrier, caller, room)]
    finished = await asyncio.to_thread(node_log.wait_for, r"finished \(customer_release\)", 10)
    return changed and over and finished is not None and all(c[1] for c in checks), checks
