#!/usr/bin/env python3
"""Benchmark: whole callback calls per second with 1, 2 and 3 nodes behind Kamailio's
dispatcher on one PostgreSQL (issue 12), on this machine, against one node on the carrier
directly (the baseline, measured in the same run).

The rig is the cluster test's (interop/test_cluster.py), all on loopback: PostgreSQL,
Kamailio as the carrier (registrar, digest challenges, routing a block of trigger numbers to
the switch and every other number to the "PSTN"), Kamailio as the dispatcher (interop/cluster:
it registers as the switch, hashes each trigger to a node, answers the carrier's challenges
on the nodes' calls), N ``softswitch serve`` nodes, and SIPp twice: the trigger callers
through the carrier and the PSTN UAS (interop/cluster/scenarios/uas_pstn.xml: a customer
answers after 100 ms and hangs up after ``--talk`` seconds, a destination answers at once).
The default talk, 4 s, makes a whole call (setup, ring, talk) last about one of the node's
5 s heartbeats of its live calls, so the store's rows per call include the heartbeat a real
call writes every 5 s, once; a longer call adds one row per 5 s (README, Running a cluster).
The node's CPU per call includes the media clock of two bridged legs for the talk (no RTP).
The accounts are hotline accounts (customer and destination called together, joined when both
answer), so a whole call is: trigger (INVITE, 180, CANCEL, 487), callback and destination
legs placed through the dispatcher and the carrier (each INVITE challenged once), both
answered and bridged, the customer's BYE, the destination's BYE, three CDRs. Signalling and
store only: no RTP flows (bench_media.py measures the media engine).

The baseline is the same rig with one node registered to the carrier itself (no dispatcher:
the carrier challenges the node, which answers): what the dispatcher hop costs.

Method: per configuration, a ladder of trigger rates, each for ``--duration`` seconds, every
trigger for a different account (a pool of ``--accounts``, reused once the step's calls have
ended). A step passes when every trigger became a whole call: SIPp counted no failed trigger,
and within ``--talk`` + 15 s of the last trigger every account of the step has an answered
callback leg and an answered destination leg in the store and no live call left. The ladder
multiplies the rate by 1.5 from ``--start`` until the first failure (or halves it until the
first pass, when ``--start`` already fails), then bisects down to 2 calls/s. For
each step it reports whole calls/s, CPU seconds per whole call by process (the nodes,
PostgreSQL, both Kamailios, both SIPps) and the whole machine's CPU use, and the store's work
per call from pg_stat_database (commits and rows written, background included).

This machine has 2 vCPUs, shared with everything above: the nodes, PostgreSQL, Kamailio and
SIPp compete for them, so the figure is the machine's ceiling for the whole rig, not the
design's; the per-call CPU figures are what to scale from (see the README's estimate). Other
people's tests share the machine too: before each configuration the script waits (at most
``--quiet-timeout``) until the rest of the machine uses under ``--quiet`` of a core, and each
step says how much CPU the rest of the machine took while it ran ("others").

    .venv/bin/python scripts/bench_cluster.py                 # direct, 1, 2, 3 nodes
    .venv/bin/python scripts/bench_cluster.py --quick         # shorter steps
    .venv/bin/python scripts/bench_cluster.py --nodes 2 --start 40 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interop.callback_setup import rtp_range, switch_config
from interop.cluster import SCENARIOS as CLUSTER_SCENARIOS
from interop.cluster import Dispatcher, node_config
from interop.faults import PgCluster, pg_bindir
from interop.kamailio import Kamailio
from interop.peers import Node, Sipp, find_program, find_softswitch, free_port
from softswitch.store import CdrFilter, Store
from softswitch.store.models import AccountKind, Language, LegKind, Location, Rate

TRIGGER_BLOCK = "8150123"
OPEN = ("pending", "claimed")
RING_MS = 100
LIMITS = "\n[limits]\noutbound_per_minute = 0\nper_trigger = 100000\n"


def trigger(i: int) -> str:
    return f"{TRIGGER_BLOCK}{i:05d}"


def customer(i: int) -> str:
    return f"815022{i:06d}"


def destination(i: int) -> str:
    return f"4412{i:07d}"


# --- CPU by process tree -------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds of the process and its waited-for children)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / ticks


def tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and every live descendant (and children they reaped)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            parents[int(entry)], cpu[int(entry)] = _stat(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    total, todo = 0.0, [root]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += cpu.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


def own_cpu() -> float:
    """CPU seconds this script has spent (the store polls and SIPp's reaped children)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_for_quiet(limit: float, timeout: float) -> bool:
    """Wait until the rest of the machine has used under ``limit`` of a core for 3 s running
    (other people's tests and benchmarks share it); False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    waited = False
    while True:
        before, mine = machine_cpu(), own_cpu()
        time.sleep(1.0)
        used = (machine_cpu() - before) - (own_cpu() - mine)
        now = time.monotonic()
        if used < limit:
            quiet_since = quiet_since or now
            if now - quiet_since >= 3.0:
                if waited:
                    print("  (the machine is quiet now)", flush=True)
                return True
        else:
            quiet_since = None
            if not waited:
                print(f"  (waiting for a quiet machine: others use {100 * used:.0f}% of a core)")
                waited = True
        if now > deadline:
            print(f"  (not quiet after {timeout:g} s: measuring anyway)", flush=True)
            return False


def machine_cpu() -> float:
    """CPU seconds the whole machine spent (all cores), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    busy = sum(int(v) for v in fields[:3]) + sum(int(v) for v in fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


# --- the rig ---------------------------------------------------------------------------------------


async def _provision(db_url: str, accounts: int) -> None:
    store = await Store.open(db_url)
    try:
        for i in range(accounts):
            await store.accounts.add(
                f"customer{i}",
                kind=AccountKind.HOTLINE,
                language=Language.EN,
                triggers=[trigger(i)],
                location=Location(customer(i)),
                credit_limit=10_000_000,
                hotline_destination=destination(i),
            )
        await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
    finally:
        await store.close()


async def _pg_stats(db_url: str) -> tuple[int, int]:
    """(commits, rows inserted + updated + deleted) of the database so far."""
    store = await Store.open(db_url, migrate=False, create=False)
    try:
        async with store.db.read() as conn:
            row: tuple[object, ...] = tuple(
                (
                    await conn.exec_driver_sql(
                        "SELECT xact_commit, tup_inserted + tup_updated + tup_deleted "
                        "FROM pg_stat_database WHERE datname = current_database()"
                    )
                ).one()
            )
        return int(str(row[0])), int(str(row[1]))
    finally:
        await store.close()


async def _quiet(db_url: str) -> tuple[int, int]:
    """(live calls, open callbacks) in the store now."""
    store = await Store.open(db_url, migrate=False, create=False)
    try:
        live = len(await store.live_calls.list())
        open_ = sum(1 for c in await store.callbacks.list() if c.state.value in OPEN)
    finally:
        await store.close()
    return live, open_


async def _clear(db_url: str) -> None:
    """Between configurations: what a stopped rig left open is closed (not measured)."""
    store = await Store.open(db_url, migrate=False, create=False)
    try:
        async with store.db.write() as conn:
            await conn.exec_driver_sql(
                "UPDATE callbacks SET state = 'failed', claimed_by = NULL, "
                "claimed_until_us = NULL WHERE state IN ('pending', 'claimed')"
            )
            await conn.exec_driver_sql("DELETE FROM live_calls")
    finally:
        await store.close()


def wait_quiet(db_url: str, timeout: float) -> bool:
    """Wait until no call is live and no callback open (the last step's tail is over)."""
    deadline = time.monotonic() + timeout
    while True:
        live, open_ = asyncio.run(_quiet(db_url))
        if live == 0 and open_ == 0:
            return True
        if time.monotonic() > deadline:
            print(f"  (still {live} live calls and {open_} open callbacks)", flush=True)
            return False
        time.sleep(0.5)


@dataclass(frozen=True)
class CallRecord:
    callback_answered: bool = False
    destination_answered: bool = False


async def _calls_since(db_url: str, since: float) -> tuple[dict[int, CallRecord], int]:
    """Per account, what its customer call since ``since`` reached; and the live calls left."""
    store = await Store.open(db_url, migrate=False, create=False)
    try:
        records = await store.cdrs.list(CdrFilter(since=since), limit=1_000_000)
        live = len(await store.live_calls.list())
    finally:
        await store.close()
    out: dict[int, CallRecord] = {}
    for cdr in records:
        if cdr.account_id is None:
            continue
        got = out.get(cdr.account_id, CallRecord())
        answered = cdr.answer_at is not None
        if cdr.leg is LegKind.CALLBACK:
            got = replace(got, callback_answered=got.callback_answered or answered)
        elif cdr.leg is LegKind.DESTINATION:
            got = replace(got, destination_answered=got.destination_answered or answered)
        out[cdr.account_id] = got
    return out, live


@dataclass
class Rig:
    """PostgreSQL, the carrier, the PSTN UAS, the nodes and (in a cluster) the dispatcher."""

    workdir: Path
    db_url: str
    carrier: Kamailio
    pstn: Sipp
    nodes: list[Node]
    dispatcher: Dispatcher | None
    pg: PgCluster
    sipp: str
    processes: dict[str, list[int]] = field(default_factory=dict)
    #: CPU seconds a second each kind of process spends with no call (probes, claims,
    #: heartbeats, the media clock): measured before the ladder, taken off the per-call CPU.
    idle: dict[str, float] = field(default_factory=dict)

    def measure_idle(self, seconds: float = 5.0) -> None:
        before = self.cpu()
        time.sleep(seconds)
        after = self.cpu()
        self.idle = {k: (after[k] - before[k]) / seconds for k in after}

    def cpu(self) -> dict[str, float]:
        return {name: sum(tree_cpu(p) for p in pids) for name, pids in self.processes.items()}

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        self.carrier.stop()
        self.pstn.kill()


def start_rig(
    workdir: Path,
    pg: PgCluster,
    db_url: str,
    nodes: int,
    *,
    direct: bool,
    talk_s: float,
    kamailio: str,
    sipp: str,
    softswitch: str,
) -> Rig:
    workdir.mkdir(parents=True, exist_ok=True)
    pstn_port = free_port()
    carrier = Kamailio(
        kamailio,
        workdir,
        trigger_number=trigger(0),
        trigger_prefix=TRIGGER_BLOCK,
        pstn_target=f"127.0.0.1:{pstn_port}",
    ).start()
    scenario = (CLUSTER_SCENARIOS / "uas_pstn.xml").read_text(encoding="latin-1")
    scenario = scenario.replace("TALK_LIMIT_MS", "60000").replace("RING_MS", str(RING_MS))
    (workdir / "uas_pstn.xml").write_text(scenario.replace("TALK_MS", str(int(talk_s * 1000))))
    pstn = Sipp(
        str(workdir / "uas_pstn.xml"),
        workdir,
        pstn_port,
        calls=0,
        timeout_s=3600,
        binary=sipp,
        trace_messages=False,
        extra=("-max_socket", "4096"),
    ).start()
    ports = [free_port() for _ in range(nodes)]
    dispatcher = None
    if not direct:
        dispatcher = Dispatcher(
            kamailio, workdir, [f"127.0.0.1:{p}" for p in ports], carrier.address
        )
    started: list[Node] = []
    rtp_low = rtp_range(1000 * nodes)[0]
    try:
        for i, port in enumerate(ports):
            rtp = (rtp_low + 1000 * i, rtp_low + 1000 * i + 999)
            if dispatcher is not None:
                text = node_config(port, dispatcher.address, db_url, rtp_ports=rtp, extra=LIMITS)
            else:
                text = switch_config(port, carrier.address, db_url, rtp_ports=rtp, log_level="INFO")
                text += LIMITS
            started.append(Node(softswitch, workdir / f"node{i}", port, text).start())
        if dispatcher is not None:
            dispatcher.start()
        if not carrier.wait_for_log("carrier: registered switch", 20):
            raise RuntimeError(f"nobody registered to the carrier:\n{carrier.log()[-2000:]}")
    except BaseException:
        for node in started:
            node.kill()
        if dispatcher is not None:
            dispatcher.kill()
        carrier.kill()
        pstn.kill()
        raise
    rig = Rig(workdir, db_url, carrier, pstn, started, dispatcher, pg, sipp)
    postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
    assert carrier.proc is not None and pstn.proc is not None
    rig.processes = {
        "nodes": [n.proc.pid for n in started if n.proc is not None],
        "postgres": [postmaster],
        "kamailio": [carrier.proc.pid] + ([dispatcher.pid()] if dispatcher else []),
        "sipp": [pstn.proc.pid],
    }
    return rig


# --- one step ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    rate: float
    offered: int
    whole: int
    failed: int
    seconds: float
    cpu: dict[str, float]
    machine: float
    commits: int
    rows: int
    elapsed: float
    idle: dict[str, float]
    #: CPU the rest of the machine used meanwhile, in cores (other people's work).
    foreign: float
    #: Live calls still in the store when the step gave up waiting (a failed step).
    live: int = 0

    def per_call_ms(self, name: str) -> float:
        """CPU milliseconds per whole call of ``name``, its idle work taken off."""
        busy = self.cpu.get(name, 0.0) - self.idle.get(name, 0.0) * self.elapsed
        return 1000 * max(0.0, busy) / max(1, self.whole)

    @property
    def passed(self) -> bool:
        return self.failed == 0 and self.whole == self.offered

    @property
    def per_second(self) -> float:
        return self.whole / self.seconds if self.seconds else 0.0


def run_step(rig: Rig, rate: float, duration: float, talk_s: float, pool: int) -> Step:
    calls = max(1, min(pool, round(rate * duration)))
    numbers = rig.workdir / f"triggers_{rate:g}.csv"
    numbers.write_text("SEQUENTIAL\n" + "".join(f"{trigger(i)};\n" for i in range(calls)))
    commits0, rows0 = asyncio.run(_pg_stats(rig.db_url))
    cpu0, machine0 = rig.cpu(), machine_cpu()
    reaped0 = os.times()
    own0 = own_cpu()
    since = time.time()
    began = time.monotonic()
    callers = Sipp(
        str(CLUSTER_SCENARIOS / "trigger.xml"),
        rig.workdir,
        free_port(),
        remote=rig.carrier.address,
        calls=calls,
        rate=rate,
        timeout_s=duration + 60,
        binary=rig.sipp,
        trace_messages=False,
        name=f"trigger_{rate:g}",
        extra=("-inf", str(numbers)),
    ).start()
    result = callers.wait(duration + 90)
    deadline = time.monotonic() + talk_s + 15
    while True:
        found, live = asyncio.run(_calls_since(rig.db_url, since))
        whole = sum(1 for r in found.values() if r.callback_answered and r.destination_answered)
        if (whole >= calls and live == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    ended = time.monotonic()
    cpu1, machine1 = rig.cpu(), machine_cpu()
    cpu = {name: cpu1[name] - cpu0.get(name, 0.0) for name in cpu1}
    # The trigger SIPp has exited and been reaped by us: its CPU is our children's.
    reaped1 = os.times()
    cpu["sipp"] += (reaped1.children_user - reaped0.children_user) + (
        reaped1.children_system - reaped0.children_system
    )
    # What the rest of the machine (not this rig, not this script) took meanwhile.
    foreign = (
        (machine1 - machine0)
        - sum(cpu.values())
        - (own_cpu() - own0)
        + (
            (reaped1.children_user - reaped0.children_user)
            + (reaped1.children_system - reaped0.children_system)
        )
    )
    time.sleep(1.0)  # PostgreSQL's statistics reach pg_stat_database within a second
    commits1, rows1 = asyncio.run(_pg_stats(rig.db_url))
    failed = result.stat("FailedCall") + (0 if result.returncode in (0, 1) else 1)
    # The trigger's time + the slowest call's length: whole calls per second sustained.
    seconds = calls / rate if rate else 0.0
    return Step(
        rate=rate,
        offered=calls,
        whole=whole,
        failed=failed,
        seconds=seconds,
        cpu=cpu,
        machine=(machine1 - machine0) / max(1e-9, ended - began),
        commits=commits1 - commits0,
        rows=rows1 - rows0,
        elapsed=ended - began,
        idle=rig.idle,
        foreign=max(0.0, foreign) / max(1e-9, ended - began),
        live=live,
    )


def ladder(
    rig: Rig, start: float, duration: float, talk_s: float, pool: int, max_steps: int
) -> list[Step]:
    steps: list[Step] = []
    rate, good, bad = start, 0.0, 0.0
    while len(steps) < max_steps:
        step = run_step(rig, rate, duration, talk_s, pool)
        steps.append(step)
        print_step(step)
        if step.passed:
            good = max(good, rate)
        else:
            bad = min(bad, rate) if bad else rate
        if not bad:
            rate = rate * 1.5  # up until the first failure
            if rate * duration > pool:
                print(f"  (the account pool of {pool} caps the rate at {pool / duration:g}/s)")
                break
        elif not good:
            rate = round(rate / 2, 1)  # down until the first pass
            if rate < 1:
                break
        else:
            if bad - good < 2:
                break
            rate = round((good + bad) / 2, 1)
        if not wait_quiet(rig.db_url, 60):
            break
    return steps


def print_step(step: Step) -> None:
    per = {k: step.per_call_ms(k) for k in step.cpu}
    print(
        f"  {step.rate:6.1f}/s  {step.whole:4d}/{step.offered:<4d} whole  "
        f"{'ok  ' if step.passed else 'FAIL'}  failed {step.failed:<3d} live {step.live:<3d} "
        f"CPU ms/call nodes {per.get('nodes', 0):5.1f} pg {per.get('postgres', 0):4.1f} "
        f"kamailio {per.get('kamailio', 0):4.1f} sipp {per.get('sipp', 0):4.1f}  "
        f"machine {100 * step.machine:3.0f}% of 200% (others {100 * step.foreign:3.0f}%)  "
        f"store {step.commits / max(1, step.whole):4.1f} commits "
        f"{step.rows / max(1, step.whole):4.1f} rows/call",
        flush=True,
    )


def best(steps: list[Step]) -> Step | None:
    passed = [s for s in steps if s.passed]
    return max(passed, key=lambda s: s.rate) if passed else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--no-baseline", action="store_true", help="skip the direct node")
    parser.add_argument("--start", type=float, default=20.0, help="first rate of each ladder")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per step")
    parser.add_argument("--talk", type=float, default=4.0, help="customer's talk, seconds")
    parser.add_argument("--accounts", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=7, help="at most this many per ladder")
    parser.add_argument("--quick", action="store_true", help="6 s steps, 5 per ladder")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.15,
        help="before each configuration, wait until others use under this much of a core",
    )
    parser.add_argument("--quiet-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.steps = 6.0, 5
    bindir = pg_bindir()
    if bindir is None:
        print("PostgreSQL server binaries are not installed", file=sys.stderr)
        return 2
    kamailio = shutil.which("kamailio") or "/usr/sbin/kamailio"
    sipp, softswitch = find_program("sipp"), find_softswitch()
    workdir = Path(tempfile.mkdtemp(prefix="bench_cluster_"))
    pg = PgCluster(bindir, free_port())
    pg.init().start()
    print(
        f"bench_cluster {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"load {os.getloadavg()[0]:.2f}; hotline calls, talk {args.talk:g} s, steps of "
        f"{args.duration:g} s; work in {workdir}",
        flush=True,
    )
    db_url = pg.createdb("softswitch")
    began = time.monotonic()
    asyncio.run(_provision(db_url, args.accounts))
    print(f"{args.accounts} accounts in {time.monotonic() - began:.1f} s", flush=True)
    configs: list[tuple[str, int, bool]] = []
    if not args.no_baseline:
        configs.append(("1 node on the carrier directly (baseline)", 1, True))
    configs += [
        (f"{n} node{'s' if n > 1 else ''} behind the dispatcher", n, False) for n in args.nodes
    ]
    results: list[tuple[str, Step | None]] = []
    try:
        for label, count, direct in configs:
            print(f"\n{label}:", flush=True)
            asyncio.run(_clear(db_url))
            if args.quiet > 0:
                wait_for_quiet(args.quiet, args.quiet_timeout)
            rig = start_rig(
                workdir / label.split()[0].replace(" ", "") / ("direct" if direct else "cluster"),
                pg,
                db_url,
                count,
                direct=direct,
                talk_s=args.talk,
                kamailio=kamailio,
                sipp=sipp,
                softswitch=softswitch,
            )
            try:
                rig.measure_idle()
                idle = ", ".join(f"{k} {100 * v:.1f}%" for k, v in rig.idle.items())
                print(f"  idle CPU (one core = 100%): {idle}", flush=True)
                steps = ladder(rig, args.start, args.duration, args.talk, args.accounts, args.steps)
            finally:
                rig.stop()
            results.append((label, best(steps)))
            time.sleep(2.0)
    finally:
        pg.destroy()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("\nwhole callback calls per second with 0 failed (the highest rate that passed):")
    for label, step in results:
        if step is None:
            print(f"  {label:<44} none passed")
            continue
        per_call = sum(step.per_call_ms(k) for k in step.cpu)
        print(
            f"  {label:<44} {step.per_second:6.1f}/s  "
            f"(rig CPU {per_call:.1f} ms per call, of it nodes "
            f"{step.per_call_ms('nodes'):.1f} ms, PostgreSQL {step.per_call_ms('postgres'):.1f},"
            f" Kamailio {step.per_call_ms('kamailio'):.1f}; store "
            f"{step.commits / max(1, step.whole):.1f} commits, "
            f"{step.rows / max(1, step.whole):.1f} rows per call; machine "
            f"{100 * step.machine:.0f}% of 200%)"
        )
    print(
        "The 2 vCPUs are shared by the nodes, PostgreSQL, two Kamailios and two SIPps: the "
        "machine caps these figures, not the design (see README, Running a cluster)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
