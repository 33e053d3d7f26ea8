#!/usr/bin/env python3
"""Benchmark: trigger calls per second that one ``softswitch serve`` node handles.

SIPp (interop/scenarios/invite_cancel.xml) sends trigger calls (INVITE, 180, CANCEL, 200, 487,
ACK) at rising rates, each for ``--duration`` seconds, to a fresh node pinned to CPU 0 while SIPp
runs on CPU 1. A rate passes when every call follows the scenario (SIPp exit 0, no failed call)
and SIPp actually reached 90 % of the rate. The ladder stops at the first failure and then
bisects between the last pass and that failure.

In the same run the load generator's own ceiling is measured the same way, with a SIPp UAS
(uas_trigger.xml) in the node's place: a node figure close to it means SIPp was the limit.

Reported per rate: calls, failures, retransmissions, INVITE->180 and CANCEL->487 response times
(p50/p99, SIPp's -trace_rtt, whole milliseconds), CPU% of the process under test and its CPU
time per call (from /proc/<pid>/stat), and its RSS. Ends with one line for the README.

    .venv/bin/python scripts/bench_triggers.py            # 30 s per rate (several minutes)
    .venv/bin/python scripts/bench_triggers.py --quick    # about a minute
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

from interop.peers import (
    LOOPBACK,
    TRIGGER_NUMBER,
    Node,
    Sipp,
    find_program,
    find_softswitch,
    free_port,
    node_config,
    percentile,
    proc_cpu_seconds,
    proc_rss_bytes,
)

DEFAULT_RATES = (250, 500, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10000)
BUFF_SIZE = "4194304"  # below ~2,000 calls/s the kernel's default is enough; above it drops


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
    max_p99: float | None = None

    @property
    def passed(self) -> bool:
        return (
            self.returncode == 0
            and self.failed == 0
            and self.successful == self.calls
            and self.achieved >= 0.9 * self.target
            and (self.max_p99 is None or self.ring_p99 <= self.max_p99)
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
    max_p99: float | None = None


class UnderTest:
    """The process answering the trigger calls: the node, or a SIPp UAS for the ceiling."""

    def __init__(self, kind: str, cfg: Config, step_dir: Path) -> None:
        self.kind = kind
        self.port = free_port()
        self.node: Node | None = None
        self.uas: Sipp | None = None
        if kind == "node":
            assert cfg.softswitch is not None
            text = node_config(self.port) + '\n[log]\nlevel = "INFO"\n'
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
        if self.node is not None:
            self.node.start()
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
            return "" if code == 0 else f"node exited {code}"
        assert self.uas is not None
        self.uas.kill()
        return ""


def run_step(kind: str, rate: int, cfg: Config) -> Step:
    """Drive ``rate`` trigger calls/s for the configured duration at a fresh peer."""
    step_dir = cfg.workdir / f"{kind}_{rate}"
    step_dir.mkdir(parents=True, exist_ok=True)
    sut = UnderTest(kind, cfg, step_dir)
    calls = max(1, int(rate * cfg.duration))
    pid = sut.start()
    uac = Sipp(
        "invite_cancel.xml",
        workdir=step_dir,
        local_port=free_port(),
        remote=f"{LOOPBACK}:{sut.port}",
        service=TRIGGER_NUMBER,
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
        ),
    )
    cpu0 = proc_cpu_seconds(pid)
    t0 = time.monotonic()
    result = uac.run()
    wall = time.monotonic() - t0
    cpu = proc_cpu_seconds(pid) - cpu0
    rss = proc_rss_bytes(pid)
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
    f"{'who':<8}{'rate/s':>8}{'reached':>9}{'calls':>8}{'failed':>7}{'retr':>6}"
    f"{'180 p50/p99':>13}{'487 p50/p99':>13}{'CPU%':>7}{'ms CPU/call':>12}{'RSS MB':>8}  result"
)


def fmt_ms(a: float, b: float) -> str:
    if math.isnan(a):
        return "-"
    return f"{a:.0f}/{b:.0f} ms"


def row(kind: str, s: Step) -> str:
    verdict = "ok" if s.passed else "FAIL"
    if s.note:
        verdict += f" ({s.note})"
    return (
        f"{kind:<8}{s.target:>8}{s.achieved:>9.0f}{s.calls:>8}{s.failed:>7}{s.retransmissions:>6}"
        f"{fmt_ms(s.ring_p50, s.ring_p99):>13}{fmt_ms(s.cancel_p50, s.cancel_p99):>13}"
        f"{s.cpu_percent:>7.0f}{s.cpu_ms_per_call:>12.3f}{s.rss_mb:>8.1f}  {verdict}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=30.0, help="seconds per rate (default 30)")
    p.add_argument("--quick", action="store_true", help="about one minute: 4 s per rate")
    p.add_argument("--rates", help="comma-separated ladder of calls/s (default %(default)s)")
    p.add_argument("--bisect", type=int, default=3, help="bisection steps after the ladder")
    p.add_argument(
        "--max-p99",
        type=float,
        help="also require INVITE->180 p99 <= this many ms (default: failures only)",
    )
    p.add_argument("--node-cpu", type=int, default=0, help="CPU for the node / SIPp UAS")
    p.add_argument("--sipp-cpu", type=int, default=1, help="CPU for the SIPp load generator")
    p.add_argument("--ceiling-only", action="store_true", help="measure SIPp against SIPp only")
    p.add_argument("--node-only", action="store_true", help="skip the SIPp ceiling")
    p.add_argument("--keep", action="store_true", help="keep the logs (the directory is printed)")
    return p.parse_args(argv)


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
    )
    print(
        f"trigger calls (INVITE/180/CANCEL/487/ACK), {duration:g} s per rate; peer on CPU "
        f"{args.node_cpu}, SIPp on CPU {args.sipp_cpu}; {os.cpu_count()} CPUs"
    )
    # Other work on the two pinned CPUs lowers every figure and makes the p99 noisy: say so.
    load = os.getloadavg()[0]
    if load > 0.5:
        print(f"WARNING: load average {load:.2f} before the run: the machine is not idle")
    if args.max_p99 is not None:
        print(f"a rate passes only with INVITE->180 p99 <= {args.max_p99:g} ms")
    print(HEADER, flush=True)
    best: dict[str, Step | None] = {}
    kinds = [
        k for k, skip in (("node", args.ceiling_only), ("sipp-uas", args.node_only)) if not skip
    ]
    try:
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
    node, ceiling = best.get("node"), best.get("sipp-uas")
    top = cfg.rates[-1]
    parts = []
    if "node" in best:
        if node is None:
            parts.append(f"softswitch: failed already at {cfg.rates[0]} trigger calls/s")
        else:
            capped = " (the top of the ladder)" if node.target == top else ""
            bound = f" and p99 <= {cfg.max_p99:g} ms" if cfg.max_p99 is not None else ""
            parts.append(
                f"softswitch handled {node.target} trigger calls/s{capped} with 0 failures{bound} on one "
                f"core (INVITE->180 p50/p99 {fmt_ms(node.ring_p50, node.ring_p99)}, "
                f"{node.cpu_ms_per_call:.2f} ms CPU per call, {node.cpu_percent:.0f}% CPU, "
                f"{node.rss_mb:.0f} MB RSS)"
            )
    if "sipp-uas" in best:
        if ceiling is None:
            parts.append("SIPp-against-SIPp ceiling: below the first rate")
        else:
            at_least = "at least " if ceiling.target == top else ""
            parts.append(
                f"load generator ceiling (SIPp against SIPp, same run) {at_least}"
                f"{ceiling.target} calls/s"
            )
    print("SUMMARY: " + "; ".join(parts) + ".")
    print(f"(load average at the end: {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
