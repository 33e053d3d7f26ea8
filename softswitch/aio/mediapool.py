"""Where the node's media runs: in its own process, or in media worker processes.

``[media] workers`` (:attr:`Config.media_workers`) chooses. With 0, :class:`LocalMedia` runs
one :class:`media.aio.MediaShell` in the node's event loop (the unit tests' setting). With N
>= 1, :class:`WorkerPool` starts N processes (``python -m media.worker``; why a subprocess
and not ``multiprocessing`` is in that module's docstring), each with its own event loop,
RTP sockets and DSP, and a share of ``[media] rtp_ports`` (:func:`split_ports`) so that
they never collide. Both carry out the controller's media commands
(:mod:`softswitch.node.commands`) through the same functions (:func:`media.worker.apply`,
:func:`media.worker.open_leg`), so the in-process path the unit tests take is the one the
workers run.

The pool:

* assigns every leg of one call (``OpenMedia.call``: the session; the customer's leg, the
  destination, the operator of a ``00`` conference, anything bridged or conferenced
  together) to one worker: the least loaded (fewest legs) at the call's first ``OpenMedia``;
  the call keeps it while any of its legs is open or opening;
* sends each worker's commands as one frame per event-loop iteration (whatever the node
  asked in that iteration), and gets back events, answers to ``open`` and statistics, one
  frame per iteration of the worker's loop. Nothing per packet crosses processes;
* ``open`` is a request and its answer (the port), awaited; every other command is fire
  and forget, as in process;
* a worker that exits unasked (killed, crashed) ends only its own calls: it is logged once
  at ERROR with its pid and exit code, its legs' opens fail (``OSError`` -> the controller's
  ``media_failed``) and every leg it carried is reported as a :class:`media.engine.MediaLost`
  event through the usual event path; the controller then ends those calls as an operator's
  hang-up would (BYE or CANCEL on every leg, CDRs with cause ``media_lost``, the callback
  queued again if the customer had not answered). The worker is started again at once,
  then with a growing pause (to ``RESTART_MAX``) if it keeps dying young;
* sums the workers' statistics for ``/metrics`` (late and skipped ticks, legs, RTP loss,
  the worst jitter); a dead worker's tick counts stay in the sums so counters never drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from media import engine as me
from media import worker as mw
from media.aio import MediaShell
from softswitch.config import auto_media_workers as auto_workers
from softswitch.node import commands as cmd

__all__ = [
    "LocalMedia",
    "MediaBackend",
    "WorkerPool",
    "auto_workers",
    "split_ports",
    "to_op",
]

log = logging.getLogger("softswitch.media")

#: How long an ``open`` may wait for its worker's answer.
OPEN_TIMEOUT = 10.0
#: How long a stopping pool waits for its workers to exit before it kills them.
STOP_TIMEOUT = 3.0
#: A worker that ran less than this before dying is restarted after a pause (doubling from
#: ``RESTART_FIRST`` up to ``RESTART_MAX``): a worker that cannot start must not spin.
RESTART_YOUNG = 10.0
RESTART_FIRST = 0.2
RESTART_MAX = 10.0


def split_ports(ports: tuple[int, int] | None, count: int) -> list[tuple[int, int] | None]:
    """``count`` disjoint slices of the RTP port range, each starting on an even port.

    Raises ValueError if a slice would hold fewer than two ports (one RTP/RTCP pair).
    """
    if ports is None:
        return [None] * count
    low, high = ports
    first = low + (low & 1)
    pairs = (high - first + 1) // 2
    if pairs < count:
        raise ValueError(f"rtp_ports {low}-{high} is too small for {count} media workers")
    out: list[tuple[int, int] | None] = []
    for k in range(count):
        start = first + 2 * (pairs * k // count)
        end = first + 2 * (pairs * (k + 1) // count) - 1
        out.append((start, min(end, high)))
    return out


def to_op(command: cmd.MediaCommand, recordings: Path) -> mw.Op:
    """The worker operation for a controller command other than ``OpenMedia``."""
    if isinstance(command, cmd.CloseMedia):
        return ("close", command.leg_id)
    if isinstance(command, cmd.SetRemote):
        return ("remote", command.leg_id, command.host, command.port, command.codec,
                command.dtmf_pt)  # fmt: skip
    if isinstance(command, cmd.PlayMedia):
        return ("play", command.leg_id, command.items, command.barge_in, command.mix)
    if isinstance(command, cmd.StopMedia):
        return ("stop_play", command.leg_id)
    if isinstance(command, cmd.SendDigits):
        return ("digits", command.leg_id, command.digits, command.mode)
    if isinstance(command, cmd.BridgeMedia):
        return ("bridge", command.leg_a, command.leg_b, command.early_media)
    if isinstance(command, cmd.UnbridgeMedia):
        return ("unbridge", command.leg_id)
    if isinstance(command, cmd.ConferenceMedia):
        return ("conference", command.conf_id, command.legs)
    if isinstance(command, cmd.RecordMedia):
        path = str(recordings / command.recording)
        return ("record", command.leg_id, path, command.max_s, command.silence_s)
    raise TypeError(f"not a media command for to_op: {command!r}")


def _legs_of(op: mw.Op) -> tuple[str, ...]:
    """The legs an operation names (the first decides its worker)."""
    if op[0] == "bridge":
        return (op[1], op[2])
    if op[0] == "conference":
        return tuple(op[2])
    return (op[1],)


class MediaBackend:
    """What the service shell asks of its media, in process or in workers."""

    #: The open legs (and, in a pool, those being opened), by leg id.
    transports: Mapping[str, object]

    def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def open(self, command: cmd.OpenMedia) -> int:
        """Bind the leg's RTP socket; its port (``OSError`` if none can be had)."""
        raise NotImplementedError

    def apply(self, command: cmd.MediaCommand) -> None:
        """Carry out any other command (fire and forget)."""
        raise NotImplementedError

    def stats(self) -> mw.MediaStats:
        raise NotImplementedError


class LocalMedia(MediaBackend):
    """``workers = 0``: the media engine in the node's own event loop."""

    def __init__(
        self,
        *,
        host: str,
        port_range: tuple[int, int] | None,
        on_event: Callable[[me.Event], None],
        recordings: Path,
    ) -> None:
        self.shell = MediaShell(
            me.MediaEngine(), host=host, port_range=port_range, on_event=on_event
        )
        self.recordings = recordings
        self.transports = self.shell.transports

    def start(self) -> None:
        self.shell.start()

    async def stop(self) -> None:
        self.shell.stop()

    async def open(self, command: cmd.OpenMedia) -> int:
        return await mw.open_leg(self.shell, command.leg_id, command.service_digits)

    def apply(self, command: cmd.MediaCommand) -> None:
        mw.apply(self.shell, to_op(command, self.recordings))

    def stats(self) -> mw.MediaStats:
        return mw.media_stats(self.shell)


class _Channel(asyncio.Protocol):
    """The node's end of one worker's control socket."""

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.reader = mw.FrameReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            batches = self.reader.feed(data)
        except Exception as exc:
            log.error("media worker %d: unreadable frame (%s): stopping it", self.worker.index, exc)
            self.worker.kill()
            return
        for batch in batches:
            self.worker.pool._received(self.worker, batch)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class _Worker:
    """One generation of worker ``index`` (a restart makes a new one)."""

    def __init__(self, pool: WorkerPool, index: int, ports: tuple[int, int] | None) -> None:
        self.pool = pool
        self.index = index
        self.ports = ports
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0
        self.channel: _Channel | None = None
        self.started_at = 0.0
        self.alive = False
        #: The legs this worker carries (open, or being opened: those are in ``opening`` too).
        self.legs: set[str] = set()
        self.opening: dict[str, asyncio.Future[int]] = {}
        self.stats = mw.MediaStats()
        #: The pause before this generation started (doubles while workers die young).
        self.restart_pause = 0.0
        self._out: list[mw.Op] = []
        self._flushing = False

    def send(self, op: mw.Op) -> None:
        """Queue ``op``: everything queued in one loop iteration leaves in one frame."""
        if not self.alive:
            return
        self._out.append(op)
        if not self._flushing:
            self._flushing = True
            self.pool.loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flushing = False
        transport = self.channel.transport if self.channel is not None else None
        if transport is None:
            return  # still starting: kept until its socket is connected
        out, self._out = self._out, []
        if out and not transport.is_closing():
            transport.write(mw.encode(out))
            self.pool.frames_sent += 1

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)


class WorkerPool(MediaBackend):
    """``workers`` >= 1: media in worker processes; see the module docstring."""

    def __init__(
        self,
        count: int,
        *,
        host: str,
        port_range: tuple[int, int] | None,
        on_event: Callable[[me.Event], None],
        recordings: Path,
        log_level: str = "INFO",
        python: str = sys.executable,
    ) -> None:
        if count < 1:
            raise ValueError("a pool needs at least one worker")
        self.loop = asyncio.get_running_loop()
        self.host = host
        self.on_event = on_event
        self.recordings = recordings
        self.log_level = log_level
        self.python = python
        self.ranges = split_ports(port_range, count)
        self.workers = [_Worker(self, k, self.ranges[k]) for k in range(count)]
        #: leg id -> its worker; the call key -> (its worker, its legs open or opening).
        self._leg_worker: dict[str, _Worker] = {}
        self._leg_call: dict[str, str] = {}
        self._calls: dict[str, tuple[_Worker, int]] = {}
        self.transports: Mapping[str, object] = self._leg_worker
        self._stopping = False
        self._tasks: set[asyncio.Future[object]] = set()
        #: Tick counts of workers that died (counters never go down).
        self._retired = mw.MediaStats()
        self.restarts = 0
        self.frames_sent = 0
        self.frames_received = 0

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        for worker in self.workers:
            self._spawn(self._start(worker))

    async def _start(self, worker: _Worker) -> None:
        """Start ``worker``'s process (its commands may queue before it runs)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        argv = [self.python, "-m", "media.worker", "--fd", str(theirs.fileno()),
                "--host", self.host, "--index", str(worker.index),
                "--log-level", self.log_level]  # fmt: skip
        if worker.ports is not None:
            argv += ["--ports", str(worker.ports[0]), str(worker.ports[1])]
        worker.alive = True
        worker.started_at = self.loop.time()
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, pass_fds=(theirs.fileno(),)
            )
        except OSError as exc:
            theirs.close()
            ours.close()
            log.error("media worker %d could not start: %s", worker.index, exc)
            self._died(worker, None)
            return
        finally:
            if theirs.fileno() != -1:
                theirs.close()
        worker.pid = worker.proc.pid
        ours.setblocking(False)
        _, channel = await self.loop.connect_accepted_socket(lambda: _Channel(worker), sock=ours)
        worker.channel = channel
        worker.flush()  # what queued while the process started
        log.info(
            "media worker %d started (pid %d, RTP ports %s)",
            worker.index,
            worker.pid,
            "any" if worker.ports is None else f"{worker.ports[0]}-{worker.ports[1]}",
        )
        code = await worker.proc.wait()
        if not self._stopping:
            self._died(worker, code)

    def _died(self, worker: _Worker, code: int | None) -> None:
        """``worker`` exited unasked: end its calls, start another in its place."""
        worker.alive = False
        lived = self.loop.time() - worker.started_at
        how = "could not start" if code is None else f"exit code {code}"
        if code is not None and code < 0:
            with_name = signal.Signals(-code).name if -code in signal.valid_signals() else "?"
            how += f" ({with_name})"
        legs = [leg for leg in worker.legs if leg not in worker.opening]
        log.error(
            "media worker %d (pid %d) died, %s, after %.1f s: its %d legs are lost; restarting",
            worker.index,
            worker.pid,
            how,
            lived,
            len(legs),
        )
        self._retired.late_ticks += worker.stats.late_ticks
        self._retired.skipped_ticks += worker.stats.skipped_ticks
        self._retired.foreign += worker.stats.foreign
        self._retired.malformed += worker.stats.malformed
        if worker.channel is not None and worker.channel.transport is not None:
            worker.channel.transport.close()
        opening = list(worker.opening.items())
        worker.opening.clear()
        for leg_id in list(worker.legs):
            self._forget(leg_id)
        worker.legs.clear()
        for _, future in opening:
            if not future.done():
                future.set_exception(OSError(f"media worker {worker.index} died ({how})"))
        for leg_id in legs:
            self.on_event(me.MediaLost(leg_id, f"media worker {worker.index} died"))
        fresh = _Worker(self, worker.index, worker.ports)
        self.workers[worker.index] = fresh
        self.restarts += 1
        pause = 0.0
        if lived < RESTART_YOUNG:
            previous = worker.restart_pause
            pause = min(RESTART_MAX, previous * 2 if previous else RESTART_FIRST)
        fresh.restart_pause = pause
        fresh.alive = True  # takes commands (queued) while it waits to start
        self._spawn(self._restart(fresh, pause))

    async def _restart(self, worker: _Worker, pause: float) -> None:
        if pause:
            await asyncio.sleep(pause)
        if not self._stopping:
            await self._start(worker)

    async def stop(self) -> None:
        """Ask every worker to stop; kill those still running after ``STOP_TIMEOUT``."""
        self._stopping = True
        for worker in self.workers:
            if worker.alive:
                worker.send(("stop",))
                worker.flush()
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        if procs:
            waits = [asyncio.ensure_future(p.wait()) for p in procs]
            _, late = await asyncio.wait(waits, timeout=STOP_TIMEOUT)
            for worker in self.workers:
                if worker.proc is not None and worker.proc.returncode is None:
                    log.warning("media worker %d did not stop: killed", worker.index)
                    worker.kill()
            if late:
                await asyncio.wait(late, timeout=STOP_TIMEOUT)
        for worker in self.workers:
            worker.alive = False
            if worker.channel is not None and worker.channel.transport is not None:
                worker.channel.transport.close()
        for task in list(self._tasks):
            task.cancel()

    # --- commands -----------------------------------------------------------------------------

    def assign(self, call: str) -> _Worker:
        """The worker for a leg of ``call``: the call's, else the least loaded live one."""
        held = self._calls.get(call)
        if held is not None and held[0].alive:
            return held[0]
        live = [w for w in self.workers if w.alive] or self.workers
        # A worker that is (re)starting takes calls only when no running one can.
        return min(live, key=lambda w: (w.channel is None, len(w.legs), w.index))

    async def open(self, command: cmd.OpenMedia) -> int:
        leg_id = command.leg_id
        call = command.call or leg_id
        worker = self.assign(call)
        if not worker.alive:
            raise OSError("no media worker is running")
        future: asyncio.Future[int] = self.loop.create_future()
        worker.opening[leg_id] = future
        worker.legs.add(leg_id)
        self._leg_worker[leg_id] = worker
        self._leg_call[leg_id] = call
        held = self._calls.get(call)
        self._calls[call] = (worker, (held[1] if held is not None and held[0] is worker else 0) + 1)
        worker.send(("open", leg_id, command.service_digits))
        try:
            return await asyncio.wait_for(asyncio.shield(future), OPEN_TIMEOUT)
        except TimeoutError:
            raise OSError(
                f"media worker {worker.index} did not answer in {OPEN_TIMEOUT:.0f} s"
            ) from None
        finally:
            worker.opening.pop(leg_id, None)
            unbound = not future.done() or future.cancelled() or future.exception() is not None
            if unbound and self._leg_worker.get(leg_id) is worker:
                # Never bound (or not known to be): the node will not close it; we do.
                worker.send(("close", leg_id))
                self._forget(leg_id)
                worker.legs.discard(leg_id)

    def apply(self, command: cmd.MediaCommand) -> None:
        op = to_op(command, self.recordings)
        legs = _legs_of(op)
        if not legs:
            return
        worker = self._leg_worker.get(legs[0])
        if worker is None:
            return  # a leg of a dead worker, or never opened: nothing to do
        for other in legs[1:]:
            elsewhere = self._leg_worker.get(other)
            if elsewhere is not None and elsewhere is not worker:
                log.error(
                    "%s joins legs on media workers %d and %d: not carried out",
                    op[0],
                    worker.index,
                    elsewhere.index,
                )
                return
        worker.send(op)
        if op[0] == "close":
            self._forget(op[1])
            worker.legs.discard(op[1])

    def _forget(self, leg_id: str) -> None:
        self._leg_worker.pop(leg_id, None)
        call = self._leg_call.pop(leg_id, None)
        if call is None:
            return
        held = self._calls.get(call)
        if held is not None:
            if held[1] <= 1:
                del self._calls[call]
            else:
                self._calls[call] = (held[0], held[1] - 1)

    def _received(self, worker: _Worker, batch: list[mw.Op]) -> None:
        """One frame from ``worker``: answers, events, statistics."""
        self.frames_received += 1
        if self.workers[worker.index] is not worker:
            return  # a generation already replaced
        for op in batch:
            kind = op[0]
            if kind == "event":
                try:
                    self.on_event(op[1])
                except Exception:
                    # Never out of data_received: asyncio would close the channel, and the
                    # worker, seeing it closed, would exit with every call it carries.
                    log.exception("media event %r failed", op[1])
            elif kind == "opened" or kind == "failed":
                future = worker.opening.get(op[1])
                if future is None or future.done():
                    if kind == "opened":  # its open gave up waiting: close it
                        worker.send(("close", op[1]))
                    continue
                if kind == "opened":
                    future.set_result(int(op[2]))
                else:
                    future.set_exception(OSError(op[2]))
            elif kind == "stats":
                worker.stats = mw.MediaStats(*op[1:])
            elif kind == "ready":
                log.debug("media worker %d ready (pid %d)", worker.index, op[1])

    # --- reporting ----------------------------------------------------------------------------

    def stats(self) -> mw.MediaStats:
        """The sum over the workers (the worst jitter), dead workers' tick counts included."""
        retired = self._retired
        total = mw.MediaStats(
            retired.late_ticks,
            retired.skipped_ticks,
            foreign=retired.foreign,
            malformed=retired.malformed,
        )
        for worker in self.workers:
            s = worker.stats
            total.late_ticks += s.late_ticks
            total.skipped_ticks += s.skipped_ticks
            total.foreign += s.foreign
            total.malformed += s.malformed
            total.legs += s.legs
            total.lost += s.lost
            total.jitter = max(total.jitter, s.jitter)
        return total

    def per_worker(self) -> list[tuple[int, int, int, mw.MediaStats]]:
        """(index, pid, legs assigned, last statistics) of each worker."""
        return [(w.index, w.pid, len(w.legs), w.stats) for w in self.workers]

    def _spawn(self, coro: Awaitable[object]) -> None:
        task: asyncio.Future[object] = asyncio.ensure_future(coro)
        self._tasks.add(task)

        def done(t: asyncio.Future[object]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("media pool task failed", exc_info=t.exception())

        task.add_done_callback(done)
