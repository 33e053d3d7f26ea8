#!/usr/bin/env python3
"""Long SIP fuzz run against a real ``softswitch serve`` (issue 11), then an RSS check.

The node is a subprocess with a SQLite store, one provisioned account (so a trigger INVITE's
SDP is read for early media and a CANCELled trigger places a callback), its trunk a local UDP
socket that never answers (callbacks retransmit until Timer B), and its admin API on, so the
run can ask what it holds. The client is :class:`interop.hostile.Prober` from the trunk's own
address (127.0.0.1, exempt from the per-source limiter: every case reaches the parser).

1. Every mutation group of :mod:`interop.hostile` once over UDP and once over TCP: each case
   must get the RFC's answer or a silent drop (as ``tests/aio/test_hostile_sip.py``).
2. Seeded random cases (two or three mutations plus byte noise, :func:`random_cases`) in
   batches, alternating UDP and TCP, seed ``--seed`` + batch number, until ``--minutes`` have
   passed: each must get some RFC answer or nothing (never a 500 or anything else).
   After every case a valid OPTIONS from another socket must be answered.
3. The node is left alone until ``/api/status`` says it holds no transaction or dialog, then
   ``--settle`` seconds more (60), and its RSS is read again.

RSS (VmRSS of the node's process): at start, *warm* (after the groups and the first
``--warm-up`` seconds of random cases, when the parser's bounded caches are full), at the end
of the fuzzing, and after the settle. Growth is settle / warm - 1. One line per minute while
fuzzing; a JSON summary is the last line of stdout. Exit status 1 when a case got a wrong
answer, the node stopped answering, logged an ERROR or a traceback, exited non-zero, or its
RSS grew by more than ``--max-rss-growth`` (5 %).

    .venv/bin/python scripts/fuzz_sip.py --minutes 5
    .venv/bin/python scripts/fuzz_sip.py --minutes 60 --seed 1000 --workdir /tmp/fuzz
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interop.callback_setup import provision, rtp_range, switch_config
from interop.hostile import Outcome, Prober, cases, random_cases
from interop.peers import Node, admin_status, find_softswitch, free_port

ADMIN_TOKEN = "fuzz-admin-token-0123456789"
BATCH = 200
_LOG_ERROR = re.compile(r"^\S+ (?:ERROR|CRITICAL) |^Traceback ", re.MULTILINE)


@dataclass
class Tally:
    """What the run saw."""

    cases: int = 0
    random_cases: int = 0
    random_seconds: float = 0.0
    wrong: list[str] = field(default_factory=list)
    dead: int = 0
    answers: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        self.cases += 1
        self.answers[str(outcome.answer)] += 1
        if not outcome.alive:
            self.dead += 1
        if not outcome.ok:
            self.wrong.append(outcome.describe())


class Rig:
    """The node, its silent trunk socket, and its admin API."""

    def __init__(self, workdir: Path, log_level: str) -> None:
        db_url = f"sqlite:///{workdir / 'store.sqlite3'}"
        provision(db_url)
        self.carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.carrier.bind(("127.0.0.1", 0))
        port, self.admin = free_port(), free_port()
        config = switch_config(
            port,
            f"127.0.0.1:{self.carrier.getsockname()[1]}",
            db_url,
            ip_auth=True,
            log_level=log_level,
            rtp_ports=rtp_range(400),
        )
        config += f'\n[admin]\nlisten = "127.0.0.1:{self.admin}"\ntoken = "{ADMIN_TOKEN}"\n'
        self.node = Node(find_softswitch(), workdir, port, config).start()

    def rss_mb(self) -> float:
        return self.node.rss_bytes() / 1e6

    def held(self) -> dict[str, int]:
        sip: dict[str, int] = admin_status(self.admin, ADMIN_TOKEN)["sip"]
        return sip

    def drain_carrier(self) -> None:
        self.carrier.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                self.carrier.recv(65536)

    def errors(self) -> list[str]:
        return [m.group(0) for m in _LOG_ERROR.finditer(self.node.log())]

    def close(self) -> int:
        self.carrier.close()
        return self.node.stop()


def wait_idle(rig: Rig, timeout: float) -> float:
    """Seconds until the node holds no transaction or dialog (``timeout`` if it still does:
    then the summary's ``held_after`` says what, and the run fails)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        rig.drain_carrier()
        held = rig.held()
        if held["server_transactions"] == 0 and held["dialogs"] == 0:
            return time.monotonic() - started
        time.sleep(1.0)
    print(f"the node still holds {rig.held()} after {timeout:.0f} s", flush=True)
    return timeout


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="random fuzzing time")
    parser.add_argument("--seed", type=int, default=1, help="the first batch's seed")
    parser.add_argument("--warm-up", type=float, default=60.0, help="seconds before warm RSS")
    parser.add_argument("--settle", type=float, default=60.0, help="seconds idle before RSS")
    parser.add_argument("--max-rss-growth", type=float, default=0.05, help="fraction of warm")
    parser.add_argument("--log-level", default="INFO", help="the node's log level")
    parser.add_argument("--workdir", type=Path, help="keep the node's log and store here")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        rig = Rig(workdir, args.log_level)
        code: int | None = None
        try:
            summary = fuzz(rig, args)
        finally:
            code = rig.close()
        summary["exit_code"] = code
        summary["log_errors"] = len(rig.errors())
        ok = (
            not summary["wrong"]
            and not summary["dead"]
            and not summary["log_errors"]
            and code == 0
            and summary["rss_growth"] <= args.max_rss_growth
            and not any(summary["held_after"].values())
        )
        summary["ok"] = ok
        for line in rig.errors()[:5]:
            print(f"node log: {line}")
        print(json.dumps(summary))
        return 0 if ok else 1
    return 1


def fuzz(rig: Rig, args: argparse.Namespace) -> dict[str, Any]:
    node = ("127.0.0.1", rig.node.port)
    tally = Tally()
    rss_start = rig.rss_mb()
    started = time.monotonic()
    for transport in ("UDP", "TCP"):
        with Prober(node, transport) as prober:
            for case in cases(prober.peer, prefix=f"{transport}g"):
                tally.add(prober.run(case))
    groups = tally.cases
    print(
        f"groups: {groups} cases in {time.monotonic() - started:.0f} s, "
        f"{len(tally.wrong)} wrong, RSS {rss_start:.1f} -> {rig.rss_mb():.1f} MB",
        flush=True,
    )
    probers = {t: Prober(node, t) for t in ("UDP", "TCP")}
    rss_warm: float | None = None
    fuzz_start = time.monotonic()
    deadline = fuzz_start + args.minutes * 60
    next_report = fuzz_start + 60
    batch = 0
    try:
        while time.monotonic() < deadline:
            transport = "UDP" if batch % 2 == 0 else "TCP"
            prober = probers[transport]
            seed = args.seed + batch
            for case in random_cases(prober.peer, seed, BATCH, prefix=f"{transport}r"):
                tally.add(prober.run(case))
                tally.random_cases += 1
            batch += 1
            rig.drain_carrier()
            now = time.monotonic()
            if rss_warm is None and now - fuzz_start >= args.warm_up:
                rss_warm = rig.rss_mb()
                print(f"warm RSS {rss_warm:.1f} MB", flush=True)
            if now >= next_report:
                next_report += 60
                held = rig.held()
                print(
                    f"{(now - fuzz_start) / 60:4.1f} min: {tally.random_cases} random cases "
                    f"({tally.random_cases / (now - fuzz_start):.0f}/s), {len(tally.wrong)} "
                    f"wrong, RSS {rig.rss_mb():.1f} MB, transactions "
                    f"{held['server_transactions']}, dialogs {held['dialogs']}",
                    flush=True,
                )
    finally:
        for prober in probers.values():
            prober.close()
    tally.random_seconds = time.monotonic() - fuzz_start
    rss_end = rig.rss_mb()
    if rss_warm is None:
        rss_warm = rss_end
    idle = wait_idle(rig, 300.0)
    time.sleep(args.settle)
    rss_after = rig.rss_mb()
    held = rig.held()
    for line in tally.wrong[:20]:
        print(f"WRONG {line}")
    print(
        f"{tally.cases} cases ({groups} from the groups, {tally.random_cases} random in "
        f"{tally.random_seconds:.0f} s: {tally.random_cases / tally.random_seconds:.0f}/s, seeds "
        f"{args.seed}..{args.seed + batch - 1}), {len(tally.wrong)} wrong, node unresponsive "
        f"after {tally.dead}; RSS start {rss_start:.1f} MB, warm {rss_warm:.1f}, end of fuzzing "
        f"{rss_end:.1f}, {args.settle:.0f} s after idle ({idle:.0f} s) {rss_after:.1f} MB "
        f"({100 * (rss_after / rss_warm - 1):+.1f} % of warm); holds {held}",
        flush=True,
    )
    return {
        "cases": tally.cases,
        "group_cases": groups,
        "random_cases": tally.random_cases,
        "random_cases_per_s": round(tally.random_cases / tally.random_seconds, 1),
        "seeds": [args.seed, args.seed + batch - 1],
        "wrong": len(tally.wrong),
        "dead": tally.dead,
        "answers": dict(tally.answers.most_common()),
        "rss_start_mb": round(rss_start, 1),
        "rss_warm_mb": round(rss_warm, 1),
        "rss_end_mb": round(rss_end, 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_growth": round(rss_after / rss_warm - 1, 4),
        "idle_after_s": round(idle, 1),
        "held_after": held,
    }


if __name__ == "__main__":
    sys.exit(main())
