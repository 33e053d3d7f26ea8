"""A media worker process, and the small protocol the node speaks to it.

``softswitch serve`` with ``[media] workers`` >= 1 runs the media engine in worker processes
(``python -m media.worker``), each a :class:`media.aio.MediaShell` + :class:`MediaEngine` on
its own event loop (uvloop when installed), owning its RTP sockets and its DSP; the node
assigns every leg of one call to one worker (:mod:`softswitch.aio.mediapool`). What crosses
the process boundary is small and batched: operations on legs one way, engine events and
answers the other; never a packet.

The process is started with ``subprocess`` (``sys.executable -m media.worker``, the control
socket passed with ``pass_fds``), not ``multiprocessing``: a fresh interpreter inherits none
of the node's state (its event loop, database connections, SIP sockets, signal handlers),
which a fork would duplicate and ``multiprocessing``'s spawn would re-import the node's main
module to avoid; it imports only ``media`` (numpy, uvloop: about 0.3 s), and it shows in
``ps`` as what it is. The worker ignores SIGINT, SIGTERM and SIGHUP (a terminal or systemd
signals the whole process group; the node decides when its media stops, after a drain) and
exits when the node says ``stop`` or when its control socket reaches end of file, so a
node that dies (SIGKILL) leaves no worker holding its RTP ports.

The wire: a frame is a 4-byte big-endian length and a pickled list of tuples, one frame per
event-loop iteration and direction (whatever was queued in that iteration). Pickle is safe
here: both ends are this program, over a socketpair no one else holds.

Node to worker (:func:`apply` and :func:`open_leg` carry them out, in process too)::

    ("open", leg_id, service_digits)       -> ("opened", leg_id, port) | ("failed", leg_id, why)
    ("close", leg_id)
    ("remote", leg_id, host, port, codec, dtmf_pt)
    ("play", leg_id, items, barge_in, mix)   items: paths and media.player.Tone values
    ("stop_play", leg_id)
    ("digits", leg_id, digits, mode)
    ("bridge", leg_a, leg_b, early_media)
    ("unbridge", leg_id)
    ("conference", conf_id, legs)
    ("record", leg_id, path, max_s, silence_s)
    ("stop",)

Worker to node: ``("ready", pid)`` once, ``("event", Event)`` for every engine event, the
answers to ``open``, and ``("stats", late_ticks, skipped_ticks, legs, lost, jitter, foreign,
malformed)`` every ``STATS_INTERVAL`` seconds (what ``/metrics`` shows, summed over workers).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import pickle
import signal
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from media.aio import MediaShell, loop_factory
from media.engine import Event, MediaEngine

__all__ = [
    "FrameReader",
    "MediaStats",
    "Op",
    "apply",
    "encode",
    "main",
    "media_stats",
    "open_leg",
]

log = logging.getLogger("media.worker")

#: One message: a tuple whose first item names it (see the module docstring).
Op = tuple[Any, ...]
HEADER = struct.Struct("!I")
#: A frame larger than this is a protocol error (a batch of commands is a few kilobytes).
MAX_FRAME = 64 << 20
#: Seconds between a worker's statistics reports.
STATS_INTERVAL = 1.0


def encode(batch: Sequence[Op]) -> bytes:
    """One frame holding ``batch``."""
    payload = pickle.dumps(list(batch), protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


class FrameReader:
    """Reassembles frames from a byte stream (data arrives in arbitrary pieces)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[list[Op]]:
        """The batches completed by ``data``, in order."""
        buf = self._buf
        buf += data
        out: list[list[Op]] = []
        start = 0
        while len(buf) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buf, start)
            if size > MAX_FRAME:
                raise ValueError(f"frame of {size} bytes")
            end = start + HEADER.size + size
            if len(buf) < end:
                break
            batch = pickle.loads(bytes(buf[start + HEADER.size : end]))
            if not isinstance(batch, list):
                raise ValueError("a frame that is not a list")
            out.append(batch)
            start = end
        if start:
            del buf[:start]
        return out


# --- carrying the operations out (the worker, and the node itself with workers = 0) -----------


async def open_leg(shell: MediaShell, leg_id: str, service_digits: bool) -> int:
    """Bind the leg's socket with in-band DTMF and fax detection on; its RTP port.

    ``service_digits``: the service decides which of this leg's keys reach its bridge peer
    (RFC 4733 events not relayed, in-band tones clamped out of the relayed audio).
    """
    port = await shell.open_leg(leg_id)
    engine = shell.engine
    if leg_id not in engine.legs:  # closed while it was being bound
        return port
    engine.enable_dtmf(leg_id, inband=True, fax=True)
    if service_digits:
        engine.relay_dtmf_events(leg_id, False)
        engine.set_dtmf_clamp(leg_id, True)
    return port


def apply(shell: MediaShell, op: Op) -> None:
    """Carry out one operation other than ``open``; one on a leg the engine lacks is ignored
    (the node may close a leg whose socket is still being bound, or a leg of a dead worker)."""
    engine = shell.engine
    legs = engine.legs
    kind = op[0]
    if kind == "close":
        if op[1] in shell.transports or op[1] in legs:
            shell.close_leg(op[1])
    elif kind == "remote":
        _, leg_id, host, port, codec, dtmf_pt = op
        if leg_id in legs:
            engine.set_remote(leg_id, host, port, codec, dtmf_pt, shell.loop.time())
    elif kind == "play":
        _, leg_id, items, barge_in, mix = op
        if leg_id in legs:
            engine.play(leg_id, list(items), barge_in=barge_in, mix=mix)
    elif kind == "stop_play":
        if op[1] in legs:
            engine.stop_play(op[1])
    elif kind == "digits":
        _, leg_id, digits, mode = op
        if leg_id in legs:
            for digit in digits:
                engine.send_dtmf(leg_id, digit, mode=mode)
    elif kind == "bridge":
        _, a, b, early = op
        if a in legs and b in legs:
            engine.bridge(a, b, early_media=early)
    elif kind == "unbridge":
        if op[1] in legs:
            engine.unbridge(op[1])
            engine.leave_conference(op[1])
    elif kind == "conference":
        _, conf_id, members = op
        for leg_id in members:
            if leg_id in legs:
                engine.join_conference(conf_id, leg_id)
    elif kind == "record":
        _, leg_id, path, max_s, silence_s = op
        if leg_id in legs:
            engine.record(leg_id, path, max_s=max_s, stop_on="#", silence_s=silence_s)
    else:
        raise ValueError(f"unknown media operation {kind!r}")


class MediaStats:
    """What ``/metrics`` shows of one media shell (or the sum over workers). ``foreign`` and
    ``malformed`` count RTP/RTCP packets dropped since start (`MediaEngine.foreign_dropped`,
    `MediaEngine.malformed`)."""

    __slots__ = ("foreign", "jitter", "late_ticks", "legs", "lost", "malformed", "skipped_ticks")

    def __init__(
        self,
        late_ticks: int = 0,
        skipped_ticks: int = 0,
        legs: int = 0,
        lost: int = 0,
        jitter: float = 0.0,
        foreign: int = 0,
        malformed: int = 0,
    ) -> None:
        self.late_ticks = late_ticks
        self.skipped_ticks = skipped_ticks
        self.legs = legs
        self.lost = lost
        self.jitter = jitter
        self.foreign = foreign
        self.malformed = malformed

    def as_op(self) -> Op:
        return (
            "stats",
            self.late_ticks,
            self.skipped_ticks,
            self.legs,
            self.lost,
            self.jitter,
            self.foreign,
            self.malformed,
        )


def media_stats(shell: MediaShell) -> MediaStats:
    """The shell's tick counters, its legs, RTP loss and worst jitter over live legs, and the
    packets its engine dropped (foreign sources, malformed)."""
    lost = 0
    jitter = 0.0
    engine = shell.engine
    for leg in engine.legs.values():
        rx = leg.session.rx
        if rx is None or rx.probation:
            continue
        lost += max(0, rx.lost)
        jitter = max(jitter, rx.jitter / 8000.0)
    return MediaStats(
        shell.late_ticks,
        shell.skipped_ticks,
        len(engine.legs),
        lost,
        jitter,
        engine.foreign_dropped,
        engine.malformed,
    )


# --- the worker process ------------------------------------------------------------------------


class _Control(asyncio.Protocol):
    """The worker's end of the control socket."""

    def __init__(self, on_batch: Callable[[list[Op]], None], on_lost: Callable[[], None]) -> None:
        self.reader = FrameReader()
        self.on_batch = on_batch
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for batch in self.reader.feed(data):
            self.on_batch(batch)

    def eof_received(self) -> bool | None:
        return None  # close our end too

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()


class Worker:
    """The worker's side: applies the node's batches to its shell, reports back in batches."""

    def __init__(self, sock: socket.socket, host: str, port_range: tuple[int, int] | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.shell = MediaShell(
            MediaEngine(), host=host, port_range=port_range, on_event=self._event
        )
        self.done = asyncio.Event()
        self._out: list[Op] = []
        self._flushing = False
        self._control: _Control | None = None
        self._stats: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        _, self._control = await self.loop.connect_accepted_socket(
            lambda: _Control(self._batch, self.done.set), sock=self.sock
        )
        self.shell.start()
        self.send(("ready", os.getpid()))
        self._stats = self.loop.call_later(STATS_INTERVAL, self._report)
        await self.done.wait()
        if self._stats is not None:
            self._stats.cancel()
        self.shell.stop()
        transport = self._control.transport
        if transport is not None:
            transport.close()

    def send(self, op: Op) -> None:
        self._out.append(op)
        if not self._flushing:
            self._flushing = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flushing = False
        out, self._out = self._out, []
        transport = self._control.transport if self._control is not None else None
        if out and transport is not None and not transport.is_closing():
            transport.write(encode(out))

    def _event(self, event: Event) -> None:
        self.send(("event", event))

    def _report(self) -> None:
        self.send(media_stats(self.shell).as_op())
        self._stats = self.loop.call_later(STATS_INTERVAL, self._report)

    def _batch(self, batch: list[Op]) -> None:
        for op in batch:
            kind = op[0]
            if kind == "open":
                task = self.loop.create_task(self._open(op[1], op[2]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif kind == "stop":
                self.done.set()
                return
            else:
                try:
                    apply(self.shell, op)
                except Exception:
                    log.exception("media operation %r failed", op)

    async def _open(self, leg_id: str, service_digits: bool) -> None:
        try:
            port = await open_leg(self.shell, leg_id, service_digits)
        except OSError as exc:
            self.send(("failed", leg_id, str(exc)))
        else:
            self.send(("opened", leg_id, port))


class _UtcFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, tz=UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m media.worker", description=__doc__.split("\n")[0])
    ap.add_argument("--fd", type=int, required=True, help="the control socket's descriptor")
    ap.add_argument("--host", default="127.0.0.1", help="the address RTP sockets bind")
    ap.add_argument("--ports", type=int, nargs=2, metavar=("LOW", "HIGH"), help="RTP port range")
    ap.add_argument("--index", type=int, default=0, help="the worker's number (for logs)")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    # The node's own line format (softswitch.cli.app), so that its log reads as one.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_UtcFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(args.log_level)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=args.fd)
    sock.setblocking(False)
    ports = (args.ports[0], args.ports[1]) if args.ports else None

    async def serve() -> None:
        # What start-up allocated (numpy, the tables) lives for the whole run: out of the
        # collector's reach, a full collection does not stall the 20 ms clock (the node
        # itself collects on a clock instead: softswitch.aio.collector).
        gc.collect()
        gc.freeze()
        await Worker(sock, args.host, ports).run()

    runner = asyncio.Runner(loop_factory=loop_factory(None if args.loop == "uvloop" else False))
    with runner:
        runner.run(serve())
    return 0


if __name__ == "__main__":  # pragma: no cover - the process entry point
    sys.exit(main())
