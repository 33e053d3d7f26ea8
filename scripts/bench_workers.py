#!/usr/bin/env python3
"""Media worker scaling: bridged G.711 calls with DSP on, carried by 1, 2 ... media workers.

The node's own pool (softswitch/aio/mediapool.py: ``python -m media.worker`` processes, calls
assigned to the least loaded worker, commands batched over the control socket) is driven as
``softswitch serve`` drives it: every call's two legs opened with ``OpenMedia`` (same call
key, so one worker), in-band DTMF and fax detection on every leg (what ``open`` always turns
on), ``SetRemote`` and ``BridgeMedia`` per call. The load is scripts/bench_media.py's: the C
generator scripts/rtpload.c (evenly spread send phases, speech payload, one in-band key from
every A phone every 2 s, kernel receive timestamps), the same criterion (at most 0.1 % of the
measured packets lost or later than 20 ms) and the same quiet gate on a shared machine. For each
worker count the largest N is found by a ladder (x step until the first failure, a failing
point run up to --retries more times) and a bisection to --resolution calls.

Placement: with one worker, the worker is pinned to CPU 0 and the generator to CPU 1 (as
bench_media.py pins a relay and the generator; --no-pin leaves them to the scheduler as
for more workers, the same placement for every count). With W >= 2 workers the workers and the
generator are left to the scheduler (BENCH_WORKERS_PIN=1 pins worker k to CPU k mod cores;
on the shared 2-core machine that did worse: a worker pinned beside another session's process
loses half its core to it): on a machine with fewer than W + 1 cores the generator competes
with the workers for CPU time, which the output says; the scaling factor measured there
understates what W workers do on W free cores. The process that
runs the pool (the node's part: assignment, control messages) does nothing per packet; its CPU
is printed too.

Printed per worker count: max calls, packets per second, CPU of the workers (% of one core
summed, and us per packet in and out), p50/p99 one-way latency, late/skipped ticks, and the
scaling factor against one worker from the same run. The generator's own ceiling is checked
alone (phones sending to each other) at the largest N of the run, and the engine in one
process (bench_media.py's "dsp" relay, no pool) at one worker's N: the pool's overhead.

Usage: bench_workers.py [--workers 1,2] [--seconds 5] [--start 100] [--step 50]
                        [--resolution 10] [--max-calls 1200] [--retries 2] [--quick]
Internal: bench_workers.py --serve W --calls N
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bench_media as bm  # noqa: E402  (the generator, the quiet gate, the criterion)


def _ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


# -- the pool (run in a child process) ---------------------------------------------------------


async def _serve(workers: int, calls: int) -> None:
    from media import engine as me
    from softswitch.aio.mediapool import WorkerPool
    from softswitch.node import commands as cmd

    loop = asyncio.get_running_loop()
    digits = 0

    def on_event(event: me.Event) -> None:
        nonlocal digits
        if isinstance(event, me.DigitReceived):
            digits += 1

    pool = WorkerPool(
        workers,
        host="127.0.0.1",
        port_range=(20000, 59999),
        on_event=on_event,
        recordings=Path("/tmp"),
        log_level="WARNING",
    )
    pool.start()
    while not all(w.channel is not None for w in pool.workers):
        await asyncio.sleep(0.02)
    if workers == 1 and not os.environ.get("BENCH_WORKERS_NO_PIN"):
        os.sched_setaffinity(pool.workers[0].pid, {bm.SERVER_CPU})
    elif os.environ.get("BENCH_WORKERS_PIN"):
        cpus = sorted(os.sched_getaffinity(0))
        for w in pool.workers:
            os.sched_setaffinity(w.pid, {cpus[w.index % len(cpus)]})
    opens = []
    for i in range(calls):
        for side in "ab":
            opens.append(pool.open(cmd.OpenMedia(f"{side}{i}", False, call=f"c{i}")))
    ports = await asyncio.gather(*opens)
    pairs = [(ports[2 * i], ports[2 * i + 1]) for i in range(calls)]
    pids = [w.pid for w in pool.workers]
    print(json.dumps({"ports": pairs, "pids": pids}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    phones = json.loads(await reader.readline())["phones"]
    for i, (pa, pb) in enumerate(phones):
        pool.apply(cmd.SetRemote(f"a{i}", "127.0.0.1", pa, "PCMU", None))
        pool.apply(cmd.SetRemote(f"b{i}", "127.0.0.1", pb, "PCMU", None))
        pool.apply(cmd.BridgeMedia(f"a{i}", f"b{i}"))
    # A fence: each worker carries its commands out in order, so once a leg opened after
    # them has its answer, every bridge is in place.
    await asyncio.gather(
        *(
            pool.open(cmd.OpenMedia(f"fence{w.index}", False, call=f"fence{w.index}"))
            for w in pool.workers
        )
    )
    gc.collect()
    gc.freeze()
    me_ticks0 = _ticks(os.getpid())
    print(json.dumps({"ready": True}), flush=True)
    await reader.readline()  # "exit": the generator is done
    await asyncio.sleep(1.2)  # the workers' next statistics report
    stats = pool.stats()
    result = {
        "digits": digits,
        "late_ticks": stats.late_ticks,
        "skipped_ticks": stats.skipped_ticks,
        "node_ticks": _ticks(os.getpid()) - me_ticks0,
        "per_worker_legs": [len(w.legs) for w in pool.workers],
        "frames": pool.frames_sent + pool.frames_received,
    }
    await pool.stop()
    print(json.dumps(result), flush=True)


# -- the driver --------------------------------------------------------------------------------


def run_once(workers: int, calls: int, args: argparse.Namespace) -> dict[str, Any]:
    """One measurement of ``workers`` workers at ``calls`` bridged calls."""
    args.quiet_ok = bm.wait_quiet(args)
    server = bm._popen(
        [*bm.NICE, bm.PY, str(Path(__file__).resolve()),
         "--serve", str(workers), "--calls", str(calls)]
    )  # fmt: skip
    gen: subprocess.Popen[str] | None = None
    try:
        hello = bm._readjson(server, "pool")
        pids = ",".join(str(p) for p in hello["pids"])
        pin = bm.PIN_GEN if workers == 1 and not args.no_pin else bm.NICE
        gen_cmd = [
            *pin, str(args.generator), "--calls", str(calls),
            "--duration", str(args.seconds), "--warmup", str(args.warmup),
            "--digit-every", str(bm.DIGIT_EVERY), "--late-ms", str(bm.LATE_MS), "--pid", pids,
        ]  # fmt: skip
        if args.payload_file is not None:
            gen_cmd += ["--payload", str(args.payload_file)]
        gen = bm._popen(gen_cmd)
        phones = bm._readjson(gen, "generator")["ports"]
        bm._send(server, json.dumps({"phones": phones}))
        bm._readjson(server, "pool")
        bm._send(gen, json.dumps({"targets": hello["ports"]}))
        stats = bm._readjson(gen, "generator")
        gen.wait(10)
        bm._send(server, "exit")
        stats.update(bm._readjson(server, "pool"))
        server.wait(15)
    finally:
        for proc in (gen, server):
            if proc is not None and proc.poll() is None:
                proc.kill()
    stats["workers"] = workers
    stats["calls"] = calls
    stats["quiet"] = args.quiet_ok
    bm.judge(stats)
    return stats


def _progress(r: dict[str, Any], note: str = "") -> None:
    print(
        f"  {r['workers']} worker(s) {r['calls']:5d} calls: "
        f"{'ok  ' if r['ok'] else 'FAIL'} bad {100 * r['bad_ratio']:.3f} %, "
        f"p99 {r['p99_ms']:.1f} ms, workers' CPU {100 * r['relay_cpu']:.0f} %, "
        f"late/skipped ticks {r['late_ticks']}/{r['skipped_ticks']}"
        + (f"  ({note})" if note else "")
        + ("" if r["quiet"] else "  (machine busy)"),
        flush=True,
    )


def run_point(workers: int, calls: int, args: argparse.Namespace) -> dict[str, Any]:
    """`run_once`, repeated while it fails (bench_media's retry rule)."""
    return bm.retried(lambda: run_once(workers, calls, args), args.retries, _progress)


def capacity(workers: int, args: argparse.Namespace) -> dict[str, Any] | None:
    """The largest N that passes (its measurement), or None if even --start fails."""
    best: dict[str, Any] | None = None
    n = args.start * workers
    bad = args.max_calls + 1
    while n <= args.max_calls:
        r = run_point(workers, n, args)
        if not r["ok"]:
            bad = n
            break
        best = r
        n += args.step * workers
    low = best["calls"] if best is not None else 0
    while bad - low > args.resolution:
        mid = (low + bad) // 2
        r = run_point(workers, mid, args)
        if r["ok"]:
            best, low = r, mid
        else:
            bad = mid
    return best


def report(results: dict[int, dict[str, Any] | None], loopback: dict[str, Any] | None) -> None:
    cores = os.cpu_count() or 1
    print(f"\nMedia workers, bridged G.711 calls with DTMF + fax detection on every leg "
          f"({cores} cores, {time.strftime('%Y-%m-%d')}):")  # fmt: skip
    print(
        f"  {'workers':>7} {'max calls':>9} {'pkt/s':>8} {'CPU %':>6} {'us/pkt':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'node CPU %':>10} {'scaling':>8}"
    )
    base = results.get(1)
    for workers, r in sorted(results.items()):
        if r is None:
            print(f"  {workers:>7} {'< start':>9}")
            continue
        scale = r["calls"] / base["calls"] if base else float("nan")
        node_cpu = r["node_ticks"] / os.sysconf("SC_CLK_TCK") / (r["window_s"] + 1.2)
        print(
            f"  {workers:>7} {r['calls']:>9} {r['received'] / r['window_s']:>8.0f} "
            f"{100 * r['relay_cpu']:>6.0f} {r['us_per_pkt']:>7.1f} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {100 * node_cpu:>10.1f} {scale:>8.2f}"
        )
    if loopback is not None:
        print(
            f"  generator alone at {loopback['calls']} calls: bad {100 * loopback['bad_ratio']:.3f} %,"
            f" p99 {loopback['p99_ms']:.2f} ms, its CPU {100 * loopback['gen_cpu']:.0f} %"
        )
    if any(w + 1 > cores for w in results if w > 1):
        print(
            f"  NOTE: this machine has {cores} cores; with 2+ workers the C generator (itself "
            "near a core at these rates) shares the cores with the workers, so the scaling "
            "factor understates what W workers do on W free cores."
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, default=100)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.5)
    ap.add_argument("--start", type=int, default=100, help="first N, per worker")
    ap.add_argument("--step", type=int, default=50, help="ladder step, per worker")
    ap.add_argument("--resolution", type=int, default=10)
    ap.add_argument("--max-calls", type=int, default=1200)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--quiet", type=float, default=0.1)
    ap.add_argument("--quiet-timeout", type=float, default=30.0)
    ap.add_argument("--payload", choices=["speech", "silence"], default="speech")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    ap.add_argument("--quick", action="store_true", help="shorter runs, coarser bisection")
    ap.add_argument(
        "--no-pin", action="store_true", help="one worker unpinned too (the same placement as 2+)"
    )
    args = ap.parse_args()
    if args.no_pin:
        bm.CHILD_ENV["BENCH_WORKERS_NO_PIN"] = "1"  # for the pool process
    if args.serve is not None:
        from media.aio import loop_factory

        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            runner.run(_serve(args.serve, args.calls))
        return
    if args.quick:
        args.seconds, args.warmup, args.resolution, args.retries = 3.0, 1.0, 25, 1
    args.generator = bm.build_generator()
    args.payload_file = bm.speech_payload() if args.payload == "speech" else None
    counts = [int(w) for w in args.workers.split(",")]
    print(
        f"bench_workers: workers {counts}, {args.seconds:.0f} s per point, "
        f"load average {bm._loadavg()}",
        flush=True,
    )
    results: dict[int, dict[str, Any] | None] = {}
    for workers in counts:
        results[workers] = capacity(workers, args)
    top = max((r["calls"] for r in results.values() if r is not None), default=0)
    loopback = None
    if top:
        loopback = bm.run_once("loopback", top, args)
        loopback["calls"] = top
    inproc = None
    one = results.get(1)
    if one is not None:
        # The baseline: the same engine in one process, no pool (bench_media.py's "dsp").
        inproc = bm.run_once("dsp", one["calls"], args)
        inproc["calls"] = one["calls"]
    report(results, loopback)
    if inproc is not None:
        print(
            f"  baseline, the engine in one process (bench_media.py dsp) at {inproc['calls']} "
            f"calls: bad {100 * inproc['bad_ratio']:.3f} %, CPU {100 * inproc['relay_cpu']:.0f} %,"
            f" {inproc['us_per_pkt']:.1f} us/pkt, p99 {inproc['p99_ms']:.2f} ms"
        )


if __name__ == "__main__":
    main()
