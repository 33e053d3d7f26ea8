"""The asyncio shell of the media engine: one UDP socket per leg and the 20 ms clock.

The only asyncio code in media/. Each leg gets an even port from a range (RTCP on port + 1 when
asked). Datagrams are handed to the engine and what it returns is sent at once from the bridged
peer's socket (symmetric RTP: we send from the port the peer sends to). Two ways to read:

- The poller (Linux, the default): every leg's socket is registered in one epoll object whose
  descriptor the event loop watches (`loop.add_reader`). When it is readable, the shell takes
  one datagram from every ready socket in one loop, with one clock reading for the batch, and
  no Python object per packet beyond the call into the engine; then it stops watching for
  `BATCH_INTERVAL` (1 ms), so that under load datagrams gather into batches of dozens instead
  of waking the process for each. Once a leg has latched its
  source (symmetric RTP), its socket is connect()ed to that address: the kernel then drops
  datagrams from anyone else (the engine's own latching rule, applied earlier), the shell
  reads with `recv_into` into one preallocated buffer, `MediaEngine.receive_into` rewrites a
  packet to relay in place, and it leaves from the peer's socket with `send`. Until a leg has
  latched (and after a re-INVITE moves it: its socket is re-bound, unconnected) the shell
  reads with the source address and uses `MediaEngine.receive_on`. Measured on the project
  machine this costs less per packet than uvloop's datagram callbacks.
- Datagram protocols (other platforms, or an engine that overrides `receive_on`, e.g. a test
  tap): one asyncio DatagramProtocol per socket calling `MediaEngine.receive_on`.

The DSP clock is drift-free: tick k is scheduled with `loop.call_at` at start + k * 20 ms, so a
late tick does not push the next ones; after a stall of more than `MAX_CATCH_UP` ticks the
missed ticks are skipped (and counted) instead of run in a burst. Engine events are passed to a
callback after every tick and every batch of datagrams that made some. uvloop is used when
installed (`loop_factory()`), the default loop otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import random
import select
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol, cast

from media.engine import TICK, Event, Leg, MediaEngine
from media.session import Addr

__all__ = ["MediaShell", "loop_factory"]

log = logging.getLogger(__name__)

PORT_RANGE = (16384, 32767)
RTCP_INTERVAL = 5.0  # RFC 3550 section 6.2: minimum 5 s between reports
MAX_CATCH_UP = 5
SOCKET_BUFFER = 1 << 21
MAX_EVENTS = 4096  # ready sockets taken per poller batch
# The poller reads at most one batch per this many seconds. Woken for every datagram, a busy
# relay takes a few per wake-up and spends its time on wake-ups; letting them gather for up
# to a millisecond (the loop's timer resolution) makes batches of dozens under load, for at
# most about a millisecond of added delay.
BATCH_INTERVAL = 0.001
DATAGRAM_MAX = 2048


class Sender(Protocol):
    """What `MediaShell.transports` holds per leg: something that sends from its socket."""

    def sendto(self, data: bytes, addr: Any = None) -> None: ...

    def close(self) -> None: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...


def loop_factory(use_uvloop: bool | None = None) -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop factory for `asyncio.Runner`: uvloop when installed (or asked), else default."""
    if use_uvloop is not False:
        try:
            import uvloop
        except ImportError:
            if use_uvloop:
                raise
        else:
            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
            return factory
    return asyncio.new_event_loop


class _RtpProtocol(asyncio.DatagramProtocol):
    # Runs for every packet: slots and bound methods looked up once save a few dictionary
    # lookups per datagram.
    __slots__ = ("_engine", "_receive_on", "_time", "leg", "leg_id", "shell", "transport")

    def __init__(self, shell: MediaShell, leg_id: str) -> None:
        self.shell = shell
        self.leg_id = leg_id
        self.leg: Leg | None = None  # set once the engine has the leg; None after close
        self.transport: asyncio.DatagramTransport | None = None
        self._engine = shell.engine
        self._receive_on = shell.engine.receive_on
        self._time = shell.time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport: no isinstance.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        leg = self.leg
        if leg is None:
            return
        out = self._receive_on(leg, data, addr, self._time())
        if out is not None:
            # Relayed packets leave from the bridged peer's socket (Leg.io).
            peer = leg.peer
            if peer is not None and peer.io is not None:
                peer.io.sendto(out[0], out[1])
        if self._engine.pending_events:
            self.shell.drain_events()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable from a peer that went away: the RTP timeout will report it.
        log.debug("leg %s: %s", self.leg_id, exc)


class _Port:
    """A leg's RTP socket in the shell's own poller (also its entry in `transports`)."""

    __slots__ = ("connected", "fd", "leg", "leg_id", "shell", "sock")

    def __init__(self, shell: MediaShell, leg_id: str, sock: socket.socket) -> None:
        self.shell = shell
        self.leg_id = leg_id
        self.sock = sock
        self.fd = sock.fileno()
        self.leg: Leg | None = None
        self.connected: Addr | None = None  # the latched source the socket is connected to

    def sendto(self, data: bytes, addr: Any = None) -> None:
        """Send one datagram (to the connected source when `addr` is it or omitted)."""
        try:
            if addr is None or addr == self.connected:
                if self.connected is not None:
                    self.sock.send(data)
            else:
                self.sock.sendto(data, addr)
        except OSError as exc:
            # A full send buffer drops the packet, as the network would; an ICMP error from
            # a peer that went away is the RTP timeout's business.
            log.debug("leg %s: send: %s", self.leg_id, exc)

    def close(self) -> None:
        """Close the leg's sockets and remove the leg (as `MediaShell.close_leg`)."""
        self.shell.close_leg(self.leg_id)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """As asyncio transports: "socket", "sockname", "peername"."""
        if name == "socket":
            return self.sock
        if name == "sockname":
            return self.sock.getsockname()
        if name == "peername":
            return self.connected
        return default


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, shell: MediaShell, leg_id: str) -> None:
        self.shell = shell
        self.leg_id = leg_id

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.shell.engine.receive_rtcp(self.leg_id, data, addr, self.shell.loop.time())


class MediaShell:
    """Runs a MediaEngine on an asyncio loop; see the module docstring.

    `io` chooses how sockets are read: "poller" (epoll, Linux only), "protocol" (asyncio
    datagram protocols), or None for the poller where it exists and the engine's receive
    methods are the stock ones.
    """

    def __init__(
        self,
        engine: MediaEngine,
        *,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] | None = PORT_RANGE,
        rtcp: bool = False,
        on_event: Callable[[Event], None] | None = None,
        rng: random.Random | None = None,
        io: str | None = None,
        batch_interval: float = BATCH_INTERVAL,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port_range = port_range
        self.rtcp = rtcp
        self.on_event = on_event
        self._rng = rng or random.Random()
        self.loop = asyncio.get_running_loop()
        self.time = self.loop.time
        self.transports: dict[str, Sender] = {}
        self._rtcp_transports: dict[str, asyncio.DatagramTransport] = {}
        self._protocols: dict[str, _RtpProtocol] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._k = 0
        self._next_rtcp = 0.0
        self.skipped_ticks = 0
        self.late_ticks = 0
        if io is None:
            stock = (
                type(engine).receive_on is MediaEngine.receive_on
                and type(engine).receive_into is MediaEngine.receive_into
            )
            io = "poller" if hasattr(select, "epoll") and stock else "protocol"
        if io not in ("poller", "protocol"):
            raise ValueError(f"unknown io {io!r}")
        self.io = io
        self._ports: dict[int, _Port] = {}
        self._epoll: Any = None
        self.batch_interval = batch_interval
        self._rearm: asyncio.TimerHandle | None = None
        if io == "poller":
            self._epoll = select.epoll()
            self._poll = self._epoll.poll
            self._buf = bytearray(DATAGRAM_MAX)
            self._view = memoryview(self._buf)
            self._view172 = self._view[:172]
            self.loop.add_reader(self._epoll.fileno(), self._on_readable)
            engine.on_remote_change = self._remote_changed

    async def open_leg(self, leg_id: str, *, nat: bool = False) -> int:
        """Create the leg in the engine and bind its socket; returns the local RTP port."""
        for port in self._candidate_ports():
            # Bind here, synchronously: given an address, create_datagram_endpoint resolves
            # it in the executor (a thread hop per leg, tens of ms under load).
            try:
                sock = self._bind(port)
            except OSError:
                continue
            bound = sock.getsockname()[1]
            if self.rtcp and self.port_range is not None:
                try:
                    rtcp_sock = self._bind(bound + 1)
                except OSError:
                    sock.close()
                    continue
                rtcp_transport, _ = await self.loop.create_datagram_endpoint(
                    lambda: _RtcpProtocol(self, leg_id), sock=rtcp_sock
                )
                self._rtcp_transports[leg_id] = rtcp_transport
            self._tune(sock)
            leg = self.engine.create_leg(leg_id, bound, self.loop.time(), nat=nat)
            if self.io == "poller":
                entry = _Port(self, leg_id, sock)
                entry.leg = leg
                leg.io = entry
                self._ports[entry.fd] = entry
                self._epoll.register(entry.fd, select.EPOLLIN)
                self.transports[leg_id] = entry
            else:
                transport, proto = await self.loop.create_datagram_endpoint(
                    lambda: _RtpProtocol(self, leg_id), sock=sock
                )
                leg.io = transport
                proto.leg = leg
                self._protocols[leg_id] = proto
                self.transports[leg_id] = cast(Sender, transport)
            return int(bound)
        raise OSError("no free RTP port in range")

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def _candidate_ports(self) -> Iterator[int]:
        """Even ports of the range from a random start (a lazy walk: no list per leg)."""
        if self.port_range is None:
            yield 0
            return
        low, high = self.port_range
        first = low + (low & 1)
        count = (high - first + 1) // 2
        start = self._rng.randrange(count)
        for k in range(count):
            yield first + 2 * ((start + k) % count)

    @staticmethod
    def _tune(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        except OSError:
            log.debug("could not enlarge receive buffer")

    # -- the poller ----------------------------------------------------------------------------

    def _on_readable(self) -> None:
        """One datagram from every ready socket (see the module docstring)."""
        now = self.time()
        if self.batch_interval > 0:
            # Stop watching until the interval has passed (then at once if still readable).
            self.loop.remove_reader(self._epoll.fileno())
            self._rearm = self.loop.call_at(now + self.batch_interval, self._watch)
        ports = self._ports
        buf = self._buf
        view, view172 = self._view, self._view172
        receive_into = self.engine.receive_into
        for fd, _ in self._poll(0, MAX_EVENTS):
            port = ports.get(fd)
            if port is None:
                continue
            leg = port.leg
            assert leg is not None
            if port.connected is None:
                self._receive_unconnected(port, leg, now)
                continue
            try:
                n = port.sock.recv_into(buf)
            except OSError:
                continue  # nothing after all, or an ICMP error from the peer
            m = receive_into(leg, buf, n, now)
            if not m:
                continue
            peer = leg.peer
            out = peer.io if peer is not None else None
            if type(out) is not _Port:
                continue
            data = view172 if m == 172 else view[:m]
            try:
                if out.connected is not None:
                    out.sock.send(data)
                else:
                    dest = peer.session.destination  # type: ignore[union-attr]
                    if dest is not None:
                        out.sock.sendto(data, dest)
            except OSError as exc:
                log.debug("leg %s: send: %s", out.leg_id, exc)
        if self.engine.pending_events:
            self.drain_events()

    def _watch(self) -> None:
        self._rearm = None
        if self._epoll is not None:
            self.loop.add_reader(self._epoll.fileno(), self._on_readable)

    def _receive_unconnected(self, port: _Port, leg: Leg, now: float) -> None:
        """A socket that has not latched yet: read with the source, connect once latched."""
        try:
            data, addr = port.sock.recvfrom(DATAGRAM_MAX)
        except OSError:
            return
        out = self.engine.receive_on(leg, data, addr, now)
        if out is not None:
            peer = leg.peer
            if peer is not None and peer.io is not None:
                peer.io.sendto(out[0], out[1])
        latched = leg.session.latched
        if latched is not None and port.connected is None:
            try:
                port.sock.connect(latched)
            except OSError as exc:
                log.debug("leg %s: connect %s: %s", port.leg_id, latched, exc)
            else:
                port.connected = latched

    def _remote_changed(self, leg: Leg) -> None:
        """After set_remote: a socket connected to another source is re-bound, unconnected."""
        port = leg.io
        if type(port) is not _Port or port.connected is None:
            return
        if port.connected == leg.session.latched:
            return
        local = port.sock.getsockname()
        self._epoll.unregister(port.fd)
        del self._ports[port.fd]
        port.sock.close()
        # UDP has no TIME_WAIT: the port is free again at once (datagrams that arrive in
        # between are lost, as around any re-INVITE).
        try:
            sock = self._bind(local[1])
        except OSError as exc:
            # Someone took the port in that instant: the leg is deaf until it is closed (its
            # RTP timeout will say so); never an exception into the caller's set_remote.
            log.error("leg %s: cannot re-bind port %s: %s", port.leg_id, local[1], exc)
            port.connected = None
            port.fd = -1
            return
        self._tune(sock)
        port.sock = sock
        port.fd = sock.fileno()
        port.connected = None
        self._ports[port.fd] = port
        self._epoll.register(port.fd, select.EPOLLIN)

    # -- lifecycle -----------------------------------------------------------------------------

    def close_leg(self, leg_id: str) -> None:
        """Close the leg's sockets and remove it from the engine."""
        proto = self._protocols.pop(leg_id, None)
        if proto is not None:
            proto.leg = None
        sender = self.transports.pop(leg_id, None)
        if type(sender) is _Port:
            if self._ports.pop(sender.fd, None) is not None:
                self._epoll.unregister(sender.fd)
            sender.sock.close()
            sender.leg = None
        elif sender is not None:
            sender.close()
        rtcp = self._rtcp_transports.pop(leg_id, None)
        if rtcp is not None:
            rtcp.close()
        if leg_id in self.engine.legs:
            self.engine.close_leg(leg_id)
        self.drain_events()

    def start(self) -> None:
        """Start the 20 ms clock."""
        self._start = self.loop.time()
        self._k = 0
        self._next_rtcp = self._start + RTCP_INTERVAL
        self._timer = self.loop.call_at(self._start, self._tick)

    def stop(self) -> None:
        """Stop the clock and close every socket."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for leg_id in list(self.transports):
            self.close_leg(leg_id)
        if self._rearm is not None:
            self._rearm.cancel()
            self._rearm = None
        if self._epoll is not None:
            self.loop.remove_reader(self._epoll.fileno())
            self._epoll.close()
            self._epoll = None
            if self.engine.on_remote_change == self._remote_changed:
                self.engine.on_remote_change = None

    def _tick(self) -> None:
        now = self.loop.time()
        due = self._start + self._k * TICK
        if now - due > MAX_CATCH_UP * TICK:
            missed = int((now - due) / TICK)
            self._k += missed
            self.skipped_ticks += missed
        elif now - due > TICK:
            self.late_ticks += 1
        transports = self.transports
        for leg_id, packet, dest in self.engine.tick(now):
            sender = transports.get(leg_id)
            if sender is not None:
                sender.sendto(packet, dest)
        if now >= self._next_rtcp:
            self._next_rtcp = now + RTCP_INTERVAL
            self._send_rtcp(now)
        self.drain_events()
        self._k += 1
        self._timer = self.loop.call_at(self._start + self._k * TICK, self._tick)

    def _send_rtcp(self, now: float) -> None:
        if not self._rtcp_transports:
            return
        for leg_id, packet, dest in self.engine.rtcp_reports(now, time.time()):
            transport = self._rtcp_transports.get(leg_id)
            if transport is not None:
                transport.sendto(packet, dest)

    def drain_events(self) -> None:
        """Pass every pending engine event to the callback (or drop them without one)."""
        engine = self.engine
        while (event := engine.next_event()) is not None:
            if self.on_event is not None:
                self.on_event(event)
