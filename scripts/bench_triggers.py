#!/usr/bin/env python3
"""Benchmark: trigger calls per second that one ``softswitch serve`` node handles.

SIPp (interop/scenarios/invite_cancel.xml) sends trigger calls (INVITE, 180 or 183, CANCEL,
200, 487, ACK) at rising rates, each for ``--duration`` seconds, to a fresh node pinned to CPU 0
while SIPp runs on CPU 1. A rate passes when every call follows the scenario (SIPp exit 0, no
failed call), SIPp actually reached 90 % of the rate, and INVITE->ring p99 is within
``--max-p99`` (50 ms by default: a trigger that rings late is as bad as one that fails). The
ladder stops at the first failure and then bisects between the last pass and that failure.

Two kinds of trigger number (``--kinds``):

* ``static``: a ``[[trigger]]`` number with no account. The node rings it with 180 and nothing
  follows (signalling only).
* ``account``: the trigger numbers of ``--accounts`` provisioned accounts (SQLite store, cycled
  through by SIPp). As the carrier sees it: the node answers the INVITE's SDP with 183 and plays
  its own ringback (an RTP socket per trigger, SPEC section 4), and when the caller hangs up it
  calls the account back through the trunk (IP-authenticated) where a SIPp UAS, on SIPp's CPU,
  declines every callback with 603 (not retried). So each trigger call costs the node its early
  media, its CDR, the callback's queue row and one declined outbound INVITE. The figure for
  accounts is this one; "ring" is INVITE->183 there.

In the same run the load generator's own ceiling is measured the same way, with a SIPp UAS
(uas_trigger.xml) in the node's place: a node figure close to it means SIPp was the limit.

Reported per rate: calls, failures, retransmissions, INVITE->180/183 and CANCEL->487 response
times (p50/p99, SIPp's -trace_rtt, whole milliseconds), CPU% of the process under test and its
CPU time per call (from /proc/<pid>/stat, all its threads), its RSS, and for accounts the
callbacks the UAS declined. Ends with one line per kind for the README.

    .venv/bin/python scripts/bench_triggers.py                   # 30 s per rate (long)
    .venv/bin/python scripts/bench_triggers.py --quick           # about a few minutes
    .venv/bin/python scripts/bench_triggers.py --kinds static --rates 2500 --bisect 0
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interop.callback_setup import provision, switch_config
from interop.peers import (
    LOOPBACK,
    TRIGGER_NUMBER,
    Node,
    Sipp,
    find_program,
    find_softswitch,
    free_port,
    injected_scenario,
    node_config,
    numbers_file,
    parse_stat_csv,
    percentile,
    proc_cpu_seconds,
    proc_rss_bytes,
)

DEFAULT_RATES = (250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10000)
BUFF_SIZE = "4194304"  # below ~2,000 calls/s the kernel's default is enough; above it drops
MAX_P99_MS = 50.0
KINDS = ("static", "account")
RTP_PORTS = (20000, 29999)


def account_trigger(i: int) -> str:
    return f"8150{i:08d}"


def account_location(i: int) -> str:
    return f"8190{i:08d}"


@dataclass
class Step:
    """The outcome of one rate."""

    target: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    achieved: float
    ring_p50: float
    ring_p99: float
    cancel_p50: float
    cancel_p99: float
    cpu_percent: float
    cpu_ms_per_call: float
    rss_mb: float
    returncode: int
    note: str = ""
    max_p99: float = MAX_P99_MS
    callbacks: int | None = None

    @property
    def passed(self) -> bool:
        return (
            self.returncode == 0
            and self.failed == 0
            and self.successful == self.calls
            and self.achieved >= 0.9 * self.target
            and self.ring_p99 <= self.max_p99
        )


@dataclass
class Config:
    duration: float
    rates: tuple[int, ...]
    bisect: int
    sut_cpu: int
    sipp_cpu: int
    workdir: Path
    sipp: str
    softswitch: str | None
    max_p99: float = MAX_P99_MS
    accounts: int = 5000
    #: The provisioned store for the account kind, copied afresh for every step.
    store: Path | None = None


class UnderTest:
    """The process answering the trigger calls: the node, or a SIPp UAS for the ceiling."""

    def __init__(self, kind: str, cfg: Config, step_dir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.node: Node | None = None
        self.uas: Sipp | None = None
        #: The account kind's trunk: a SIPp UAS declining every callback.
        self.trunk: Sipp | None = None
        if kind == "static":
            assert cfg.softswitch is not None
            text = node_config(self.port) + '\n[log]\nlevel = "INFO"\n'
            self.node = Node(cfg.softswitch, step_dir, self.port, text, cpu=cfg.sut_cpu)
        elif kind == "account":
            assert cfg.softswitch is not None and cfg.store is not None
            db = step_dir / "switch.sqlite3"
            shutil.copyfile(cfg.store, db)
            trunk_port = free_port()
            self.trunk = Sipp(
                "uas_decline.xml",  # the callback legs' far end: 100, then 603 Decline
                workdir=step_dir,
                local_port=trunk_port,
                calls=0,
                binary=cfg.sipp,
                cpu=cfg.sipp_cpu,
                trace_messages=False,
                timeout_s=24 * 3600,
                extra=("-buff_size", BUFF_SIZE),
            )
            text = switch_config(
                self.port,
                f"{LOOPBACK}:{trunk_port}",
                f"sqlite:///{db}",
                rtp_ports=RTP_PORTS,
                log_level="INFO",
                ip_auth=True,
                outbound_per_minute=0,  # the node's speed, not the fraud cap's
            )
            self.node = Node(cfg.softswitch, step_dir, self.port, text, cpu=cfg.sut_cpu)
        else:
            self.uas = Sipp(
                "uas_trigger.xml",
                workdir=step_dir,
                local_port=self.port,
                calls=0,  # no -m limit; stopped at the end of the step
                binary=cfg.sipp,
                cpu=cfg.sut_cpu,
                trace_messages=False,
                timeout_s=24 * 3600,
                extra=("-buff_size", BUFF_SIZE),
            )

    def start(self) -> int:
        """Start and return the pid."""
        if self.trunk is not None:
            self.trunk.start()
        if self.node is not None:
            self.node.start()
            if self.kind == "account" and not self.node.wait_for_log("callback service ready", 30):
                raise RuntimeError(
                    f"the node did not load its accounts:\n{self.node.log()[-2000:]}"
                )
            assert self.node.proc is not None
            return self.node.proc.pid
        assert self.uas is not None
        self.uas.start()
        assert self.uas.proc is not None
        return self.uas.proc.pid

    def stop(self) -> str:
        """Stop; a note if it did not end cleanly."""
        if self.node is not None:
            code = self.node.stop()
            if self.trunk is not None:
                self.trunk.kill()
            return "" if code == 0 else f"node exited {code}"
        assert self.uas is not None
        self.uas.kill()
        return ""

    def callbacks(self) -> int | None:
        """Callbacks the trunk's UAS saw through (account kind), from its statistics."""
        if self.trunk is None:
            return None
        stats = parse_stat_csv(self.trunk.workdir / f"{self.trunk.name}_stats.csv")
        return int(stats.get("SuccessfulCall(C)", "0") or 0)


def run_step(kind: str, rate: int, cfg: Config) -> Step:
    """Drive ``rate`` trigger calls/s for the configured duration at a fresh peer."""
    step_dir = cfg.workdir / f"{kind}_{rate}"
    step_dir.mkdir(parents=True, exist_ok=True)
    sut = UnderTest(kind, cfg, step_dir)
    calls = max(1, int(rate * cfg.duration))
    pid = sut.start()
    scenario = "invite_cancel.xml"
    service: str | None = TRIGGER_NUMBER
    inject: tuple[str, ...] = ()
    if kind == "account":
        # One account after the other (SIPp starts again at the top of the file).
        scenario = str(injected_scenario("invite_cancel.xml", step_dir / "trigger_inf.xml"))
        numbers = numbers_file(
            step_dir / "triggers.csv", (account_trigger(i) for i in range(cfg.accounts))
        )
        service, inject = None, ("-inf", str(numbers))
    uac = Sipp(
        scenario,
        workdir=step_dir,
        local_port=free_port(),
        remote=f"{LOOPBACK}:{sut.port}",
        service=service,
        calls=calls,
        rate=rate,
        binary=cfg.sipp,
        cpu=cfg.sipp_cpu,
        trace_messages=False,
        timeout_s=cfg.duration * 2 + 20,
        extra=(
            "-buff_size",
            BUFF_SIZE,
            # A trigger not answered within 2 s is a failure, not a slow success.
            "-recv_timeout",
            "2000",
            "-l",
            str(max(200, rate * 2)),
            *inject,
        ),
    )
    cpu0 = proc_cpu_seconds(pid)
    t0 = time.monotonic()
    result = uac.run()
    wall = time.monotonic() - t0
    cpu = proc_cpu_seconds(pid) - cpu0
    rss = proc_rss_bytes(pid)
    if kind == "account":
        time.sleep(1.0)  # the last callbacks on their way
    note = sut.stop()
    ring = result.rtt.get("ring", [])
    cancel = result.rtt.get("cancel", [])
    # The rate SIPp really reached: INVITE send times (180 arrival minus response time) of the
    # calls that rang, first to last. A generator or peer that falls behind shows up here.
    starts = sorted(at - ms for at, ms in result.rtt_samples.get("ring", []))
    span = (starts[-1] - starts[0]) / 1000 if len(starts) > 1 else 0.0
    achieved = (len(starts) - 1) / span if span > 0 else float(len(starts))
    return Step(
        target=rate,
        calls=calls,
        successful=result.stat("SuccessfulCall"),
        failed=result.stat("FailedCall"),
        retransmissions=result.stat("Retransmissions"),
        achieved=achieved,
        ring_p50=percentile(ring, 50),
        ring_p99=percentile(ring, 99),
        cancel_p50=percentile(cancel, 50),
        cancel_p99=percentile(cancel, 99),
        cpu_percent=100 * cpu / wall,
        cpu_ms_per_call=1000 * cpu / calls,
        rss_mb=rss / 2**20,
        returncode=result.returncode,
        note=note,
        max_p99=cfg.max_p99,
        callbacks=sut.callbacks(),
    )


def search(kind: str, cfg: Config, report: Callable[[Step], None]) -> Step | None:
    """Climb the ladder to the first failing rate, then bisect; the best passing step."""
    best: Step | None = None
    failed_at: int | None = None
    for rate in cfg.rates:
        step = run_step(kind, rate, cfg)
        report(step)
        if not step.passed:
            failed_at = rate
            break
        best = step
    if failed_at is None:
        return best
    low = best.target if best else 0
    high = failed_at
    for _ in range(cfg.bisect):
        mid = (low + high) // 2
        if high - low <= max(25, low // 20) or mid <= 0:
            break
        step = run_step(kind, mid, cfg)
        report(step)
        if step.passed:
            best, low = step, mid
        else:
            high = mid
    return best


HEADER = (
    f"{'who':<9}{'rate/s':>7}{'reached':>9}{'calls':>8}{'failed':>7}{'retr':>6}"
    f"{'ring p50/p99':>14}{'487 p50/p99':>13}{'CPU%':>6}{'ms CPU/call':>12}{'RSS MB':>8}"
    f"{'callbacks':>10}  result"
)


def fmt_ms(a: float, b: float) -> str:
    if math.isnan(a):
        return "-"
    return f"{a:.0f}/{b:.0f} ms"


def row(kind: str, s: Step) -> str:
    verdict = "ok" if s.passed else "FAIL"
    if s.note:
        verdict += f" ({s.note})"
    if not s.passed and s.ring_p99 > s.max_p99 and s.failed == 0:
        verdict += f" (p99 > {s.max_p99:g} ms)"
    callbacks = "-" if s.callbacks is None else str(s.callbacks)
    return (
        f"{kind:<9}{s.target:>7}{s.achieved:>9.0f}{s.calls:>8}{s.failed:>7}{s.retransmissions:>6}"
        f"{fmt_ms(s.ring_p50, s.ring_p99):>14}{fmt_ms(s.cancel_p50, s.cancel_p99):>13}"
        f"{s.cpu_percent:>6.0f}{s.cpu_ms_per_call:>12.3f}{s.rss_mb:>8.1f}{callbacks:>10}  {verdict}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="seconds per rate (default 30)")
    p.add_argument("--quick", action="store_true", help="a few minutes: 4 s per rate")
    p.add_argument("--rates", help="comma-separated ladder of calls/s (default %(default)s)")
    p.add_argument("--bisect", type=int, default=3, help="bisection steps after the ladder")
    p.add_argument(
        "--max-p99",
        type=float,
        default=MAX_P99_MS,
        help="a rate passes only with INVITE->ring p99 <= this many ms (default %(default)g; "
        "inf: failures only)",
    )
    p.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="trigger numbers to measure: static, account or both (default %(default)s)",
    )
    p.add_argument(
        "--accounts",
        type=int,
        default=5000,
        help="accounts provisioned for the account kind, cycled through (default %(default)s)",
    )
    p.add_argument("--node-cpu", type=int, default=0, help="CPU for the node / SIPp UAS")
    p.add_argument("--sipp-cpu", type=int, default=1, help="CPU for the SIPp load generator")
    p.add_argument("--ceiling-only", action="store_true", help="measure SIPp against SIPp only")
    p.add_argument("--node-only", action="store_true", help="skip the SIPp ceiling")
    p.add_argument("--keep", action="store_true", help="keep the logs (the directory is printed)")
    return p.parse_args(argv)


def summary(kind: str, best: Step | None, cfg: Config) -> str:
    """The README line for one kind."""
    top = cfg.rates[-1]
    if kind == "sipp-uas":
        if best is None:
            return "SIPp-against-SIPp ceiling: below the first rate"
        at_least = "at least " if best.target == top else ""
        return (
            f"load generator ceiling (SIPp against SIPp, same run) {at_least}{best.target} "
            f"calls/s (INVITE->180 p99 {best.ring_p99:.0f} ms, "
            f"{best.cpu_ms_per_call:.2f} ms CPU per call in the SIPp UAS)"
        )
    what = (
        "static trigger calls (180)"
        if kind == "static"
        else "account trigger calls (183 + ringback + declined callback)"
    )
    if best is None:
        return f"softswitch: {what} failed already at {cfg.rates[0]}/s"
    capped = " (the top of the ladder)" if best.target == top else ""
    return (
        f"softswitch handled {best.target} {what}/s{capped} with 0 failures and "
        f"p99 <= {cfg.max_p99:g} ms on one core (INVITE->ring p50/p99 "
        f"{fmt_ms(best.ring_p50, best.ring_p99)}, {best.cpu_ms_per_call:.2f} ms CPU per call, "
        f"{best.cpu_percent:.0f}% CPU, {best.rss_mb:.0f} MB RSS)"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    duration = args.duration
    rates: tuple[int, ...] = DEFAULT_RATES
    bisect = args.bisect
    if args.quick:
        duration = min(duration, 4.0)
        rates = (500, 1000, 2000, 4000, 8000)
        bisect = min(bisect, 1)
    if args.rates:
        rates = tuple(int(r) for r in args.rates.split(","))
    node_kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in node_kinds if k not in KINDS]
    if unknown:
        print(f"unknown kind {unknown[0]!r} (have {', '.join(KINDS)})", file=sys.stderr)
        return 2
    cpus = os.sched_getaffinity(0)
    for cpu in (args.node_cpu, args.sipp_cpu):
        if cpu not in cpus:
            print(f"CPU {cpu} is not available (have {sorted(cpus)})", file=sys.stderr)
            return 2
    sipp = find_program("sipp")
    softswitch = None if args.ceiling_only else find_softswitch()
    workdir = Path(tempfile.mkdtemp(prefix="bench_triggers_"))
    cfg = Config(
        duration,
        rates,
        bisect,
        args.node_cpu,
        args.sipp_cpu,
        workdir,
        sipp,
        softswitch,
        args.max_p99,
        args.accounts,
    )
    kinds = [] if args.ceiling_only else node_kinds
    if not args.node_only:
        kinds.append("sipp-uas")
    print(
        f"trigger calls (INVITE/ring/CANCEL/487/ACK), {duration:g} s per rate; peer on CPU "
        f"{args.node_cpu}, SIPp on CPU {args.sipp_cpu}; {os.cpu_count()} CPUs; a rate passes "
        f"with 0 failed and INVITE->ring p99 <= {cfg.max_p99:g} ms"
    )
    # Other work on the two pinned CPUs lowers every figure and makes the p99 noisy: say so.
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: load average {load:.2f} before the run: the machine is not idle")
    best: dict[str, Step | None] = {}
    try:
        if "account" in kinds:
            cfg.store = workdir / "accounts.sqlite3"
            started = time.monotonic()
            provision(
                f"sqlite:///{cfg.store}",
                [(account_trigger(i), account_location(i)) for i in range(cfg.accounts)],
            )
            print(f"({cfg.accounts} accounts provisioned in {time.monotonic() - started:.0f} s)")
        print(HEADER, flush=True)
        for kind in kinds:

            def report(step: Step, kind: str = kind) -> None:
                print(row(kind, step), flush=True)

            best[kind] = search(kind, cfg, report)
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    for kind, step in best.items():
        print(f"SUMMARY {kind}: {summary(kind, step, cfg)}.")
    print(f"(load average at the end: {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
