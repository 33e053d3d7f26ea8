"""The asyncio shell of the media engine: one UDP socket per leg and the 20 ms clock.

The only asyncio code in media/. Each leg gets an even port from a range (RTCP on port + 1 when
asked) and one DatagramProtocol that hands datagrams to `MediaEngine.receive_packet` and sends
what comes back from the bridged peer's socket at once (symmetric RTP: we send from the port the
peer sends to). The DSP clock is drift-free: tick k is scheduled with `loop.call_at` at
start + k * 20 ms, so a late tick does not push the next ones; after a stall of more than
`MAX_CATCH_UP` ticks the missed ticks are skipped (and counted) instead of run in a burst.
Engine events are passed to a callback after every tick and every datagram that made some.
uvloop is used when installed (`loop_factory()`), the default loop otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

from media.engine import TICK, Event, Leg, MediaEngine

__all__ = ["MediaShell", "loop_factory"]

log = logging.getLogger(__name__)

PORT_RANGE = (16384, 32767)
RTCP_INTERVAL = 5.0  # RFC 3550 section 6.2: minimum 5 s between reports
MAX_CATCH_UP = 5
SOCKET_BUFFER = 1 << 21


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


class _RtcpProtocol(asyncio.DatagramProtocol):
    def __init__(self, shell: MediaShell, leg_id: str) -> None:
        self.shell = shell
        self.leg_id = leg_id

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.shell.engine.receive_rtcp(self.leg_id, data, addr, self.shell.loop.time())


class MediaShell:
    """Runs a MediaEngine on an asyncio loop; see the module docstring."""

    def __init__(
        self,
        engine: MediaEngine,
        *,
        host: str = "127.0.0.1",
        port_range: tuple[int, int] | None = PORT_RANGE,
        rtcp: bool = False,
        on_event: Callable[[Event], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port_range = port_range
        self.rtcp = rtcp
        self.on_event = on_event
        self._rng = rng or random.Random()
        self.loop = asyncio.get_running_loop()
        self.time = self.loop.time
        self.transports: dict[str, asyncio.DatagramTransport] = {}
        self._rtcp_transports: dict[str, asyncio.DatagramTransport] = {}
        self._protocols: dict[str, _RtpProtocol] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._start = 0.0
        self._k = 0
        self._next_rtcp = 0.0
        self.skipped_ticks = 0
        self.late_ticks = 0

    async def open_leg(self, leg_id: str, *, nat: bool = False) -> int:
        """Create the leg in the engine and bind its socket; returns the local RTP port."""
        for port in self._candidate_ports():
            # Bind here, synchronously: given an address, create_datagram_endpoint resolves
            # it in the executor (a thread hop per leg, tens of ms under load).
            try:
                sock = self._bind(port)
            except OSError:
                continue
            transport, proto = await self.loop.create_datagram_endpoint(
                lambda: _RtpProtocol(self, leg_id), sock=sock
            )
            bound = transport.get_extra_info("sockname")[1]
            if self.rtcp and self.port_range is not None:
                try:
                    rtcp_sock = self._bind(bound + 1)
                except OSError:
                    transport.close()
                    continue
                rtcp_transport, _ = await self.loop.create_datagram_endpoint(
                    lambda: _RtcpProtocol(self, leg_id), sock=rtcp_sock
                )
                self._rtcp_transports[leg_id] = rtcp_transport
            self._tune(transport)
            self.transports[leg_id] = transport
            leg = self.engine.create_leg(leg_id, bound, self.loop.time(), nat=nat)
            leg.io = transport
            proto.leg = leg
            self._protocols[leg_id] = proto
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
    def _tune(transport: asyncio.DatagramTransport) -> None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            except OSError:
                log.debug("could not enlarge receive buffer")

    def close_leg(self, leg_id: str) -> None:
        """Close the leg's sockets and remove it from the engine."""
        proto = self._protocols.pop(leg_id, None)
        if proto is not None:
            proto.leg = None
        for table in (self.transports, self._rtcp_transports):
            transport = table.pop(leg_id, None)
            if transport is not None:
                transport.close()
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
            transport = transports.get(leg_id)
            if transport is not None:
                transport.sendto(packet, dest)
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
