"""The asyncio shell around :class:`softswitch.node.node.Node` (uvicorn's Config -> Server).

One DatagramProtocol per UDP socket, one Protocol per TCP connection, and one timer re-armed
from ``node.get_timer()`` after every input (aioquic's ``transmit()``), which also hands the
node's store requests and media commands to the service shell
(:mod:`softswitch.aio.service`). Time is ``loop.time()``. Lifecycle: ``startup`` binds every
socket (failing loudly if a port is taken), starts the service (prompts, store, media), waits for
the accounts and starts the operations listeners (web and mail triggers, admin API and
metrics: :mod:`softswitch.aio.ops`); ``serve`` waits for SIGTERM/SIGINT, then drains (live
calls go on for up to ``[service] drain_timeout``, new triggers wait in the store's queue; a
second signal ends the drain); ``shutdown`` stops the listeners, hangs up live calls (their
CDRs written), unregisters from the trunk (bounded waits), then closes. SIGHUP re-reads the
configuration file and applies what can change without a restart (:data:`RELOADABLE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from softswitch.aio.collector import Collector
from softswitch.config import Config, ConfigError, load_config
from softswitch.node.node import Node
from softswitch.sip.message import Address
from softswitch.sip.parser import StreamFramer

if TYPE_CHECKING:
    from softswitch.aio.ops import Operations
    from softswitch.aio.service import ServiceShell
    from softswitch.store.db import Database

log = logging.getLogger("softswitch.server")

#: Bytes a TCP connection may buffer without completing a message (the framer caps messages;
#: this bounds what a slow-loris peer can make us hold), and answers it has not read yet (a
#: peer that pipelines requests and never reads would otherwise grow our write buffer).
TCP_MAX_BUFFER = 256 * 1024
SHUTDOWN_GRACE = 3.0
#: What SIGHUP may change in a running node; any other changed setting needs a restart.
RELOADABLE = (
    "log_level",
    "blocked_prefixes",
    "limits",
    "operator",
    "tone_country",
    "callback_ring_timeout",
    "destination_ring_timeout",
    "callback_attempts",
    "callback_retry_pause",
    "silence_timeout",
    "after_call_idle",
    "first_digit_timeout",
    "inter_digit_timeout",
    "drain_timeout",
    "sip_limits",
)


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        server = self.server
        server.node.receive_datagram(data, Address(addr[0], addr[1], "UDP"), server.loop.time())
        # The loop hands over every datagram waiting on the socket before it runs what
        # call_soon queued: their answers go out together, and the node's next timer is
        # worked out once per batch rather than once per datagram.
        if not server.flush_queued:
            server.flush_queued = True
            server.loop.call_soon(server.flush)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transaction timers deal with the loss.
        log.debug("UDP error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.address: Address | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, base: asyncio.BaseTransport) -> None:
        transport: asyncio.Transport = base  # type: ignore[assignment]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        server = self.server
        host = peer[0]
        sources = server.node.sources
        if not sources.connection_allowed(host, server.loop.time()):
            # Outside allow_from, or banned: closed before a byte is read.
            transport.abort()
            return
        self.address = Address(host, peer[1], "TCP")
        per_source = sources.limits.tcp_max_per_source
        if len(server.tcp) >= server.config.tcp_max_connections:
            server.node.caps.refused(
                "tcp_max_connections",
                len(server.tcp),
                server.config.tcp_max_connections,
                f"TCP connections (from {host})",
                server.loop.time(),
                closed=True,
            )
            transport.abort()
            return
        if per_source and not sources.exempt(host):
            count = server.tcp_by_host.get(host, 0)
            if count >= per_source:
                server.node.caps.refused(
                    "tcp_max_per_source",
                    count,
                    per_source,
                    f"TCP connections from {host}",
                    server.loop.time(),
                    closed=True,
                )
                transport.abort()
                return
        server.tcp[(host, peer[1])] = self
        server.tcp_by_host[host] = server.tcp_by_host.get(host, 0) + 1
        self._touch()

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.idle = self.server.loop.call_later(
            self.server.config.tcp_idle_timeout, self._idle_timeout
        )

    def _idle_timeout(self) -> None:
        log.info("closing idle TCP connection from %s", self.address)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        assert self.address is not None and self.transport is not None
        self._touch()
        server = self.server
        framer = self.framer
        pings = framer.pings
        messages = framer.feed(data)
        now = server.loop.time()
        for msg in messages:
            server.node.receive_message(msg, self.address, now)
        if framer.pings != pings:
            # RFC 5626 section 3.5.1: each double-CRLF ping gets a single CRLF pong.
            self.transport.write(b"\r\n" * (framer.pings - pings))
        server.transmit()
        if server.node.sources.banned(self.address.host, now):
            log.info("closing TCP connection from %s: source banned", self.address)
            self.transport.abort()
        elif framer.failed:
            # After a framing error the next message's start is unknown (RFC 3261 18.3).
            log.info("closing TCP connection from %s: framing error", self.address)
            self.transport.close()
        elif framer.buffered > TCP_MAX_BUFFER:
            log.info(
                "closing TCP connection from %s: %d bytes buffered without a message",
                self.address,
                framer.buffered,
            )
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        address = self.address
        if (
            address is not None
            and self.server.tcp.pop((address.host, address.port), None) is not None
        ):
            by_host = self.server.tcp_by_host
            left = by_host.pop(address.host, 1) - 1
            if left > 0:
                by_host[address.host] = left

    def send(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > TCP_MAX_BUFFER:
            log.warning(
                "closing TCP connection from %s: %d bytes of answers it does not read",
                self.address,
                transport.get_write_buffer_size(),
            )
            transport.abort()
            return
        transport.write(data)


class Server:
    """Runs one node until told to stop."""

    def __init__(
        self, config: Config, node: Node | None = None, *, with_service: bool = False
    ) -> None:
        self.config = config
        self.node = node or Node(
            config,
            service=with_service and config.service,
            # The host and pid say where to look; the random part tells this start from the
            # last one (a restarted container is pid 1 again), so its successor can recover it.
            node_id=f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(2)}",
        )
        self.loop: asyncio.AbstractEventLoop  # set by startup(), inside the running loop
        self.udp: list[_UdpProtocol] = []
        self.tcp: dict[tuple[str, int], _TcpProtocol] = {}
        self.tcp_by_host: dict[str, int] = {}
        self._tcp_servers: list[asyncio.base_events.Server] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._stop = asyncio.Event()
        self._pending_tcp: dict[tuple[str, int], list[bytes]] = {}
        self.bound: list[tuple[str, str, int]] = []
        self.service: ServiceShell | None = None
        self._db: Database | None = None
        #: The web and mail triggers, admin API and metrics (None: a signalling-only node).
        self.ops: Operations | None = None
        #: SIGTERM's drain is under way: live calls go on, new triggers are queued.
        self.draining = False
        self._hurry = asyncio.Event()
        #: Runs the cyclic garbage collector on the loop's clock (softswitch.aio.collector).
        self.collector = Collector()
        #: A flush() is queued for the datagrams received in this loop iteration.
        self.flush_queued = False

    # --- lifecycle ----------------------------------------------------------------------------

    async def serve(self) -> None:
        await self.startup()
        try:
            await self._stop.wait()
            await self.drain()
        finally:
            await self.shutdown()

    async def drain(self) -> None:
        """Let live calls finish, up to ``[service] drain_timeout`` (0: no drain) or a second
        signal; triggers meanwhile are queued in the store for the next node."""
        calls = self.node.calls
        timeout = self.config.drain_timeout
        if calls is None or timeout <= 0:
            return
        self.draining = True
        calls.drain(self.loop.time())
        self.transmit()
        deadline = self.loop.time() + timeout
        # Until every session is gone, its CDRs written and its queue row settled.
        while calls.sessions and not self._hurry.is_set():
            left = deadline - self.loop.time()
            if left <= 0:
                log.warning(
                    "drain timeout (%g s): hanging up %d live calls",
                    timeout,
                    len(calls.calls(self.loop.time())),
                )
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), min(0.1, left))
        log.info("drained: no live call left" if not self._hurry.is_set() else "drain cut short")

    async def startup(self) -> None:
        self.loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self.loop.add_signal_handler(sig, self._on_signal, sig)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            self.loop.add_signal_handler(signal.SIGHUP, self._on_hangup_signal)
        for host, port in self.config.listen:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            if "udp" in self.config.transports:
                transport, protocol = await self.loop.create_datagram_endpoint(
                    lambda: _UdpProtocol(self), local_addr=(host, port), family=family
                )
                sock = transport.get_extra_info("socket")
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
                self.udp.append(protocol)
                bound = transport.get_extra_info("sockname")
                self.bound.append(("udp", bound[0], bound[1]))
            if "tcp" in self.config.transports:
                tcp_server = await self.loop.create_server(
                    lambda: _TcpProtocol(self),
                    host=host,
                    port=port,
                    family=family,
                    reuse_address=True,
                )
                self._tcp_servers.append(tcp_server)
                bound = tcp_server.sockets[0].getsockname()
                self.bound.append(("tcp", bound[0], bound[1]))
        try:
            if self.node.calls is not None:
                await self._start_service()
            self.node.start(self.loop.time())
            self.transmit()
            if self.service is not None:
                await self.service.wait_ready()
            if self.node.calls is not None:
                await self._start_ops()
        except BaseException:
            # Nothing half-started stays behind: sockets, media clock, store connections.
            await self._close()
            raise
        # Before the line that says the node is up (tests, benchmarks and sysadmins start
        # sending on it): the start-up collection walks everything loaded, about 0.1 s, and
        # calls arriving during it would wait that long for their first answer.
        self.collector.start(self.loop)
        where = ", ".join(f"{t}:{h}:{p}" for t, h, p in self.bound)
        calls = self.node.calls
        log.info(
            "softswitch listening on %s (config %s, loop %s%s)",
            where,
            self.config.source,
            type(self.loop).__module__.split(".")[0],
            f", node {calls.node_id}" if calls is not None else "",
        )

    async def _start_service(self) -> None:
        from softswitch.aio.service import ServiceShell
        from softswitch.store.db import Database

        url = self.config.db_url
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self._db = Database(url)
        self.service = ServiceShell(
            self.config,
            self.node,
            self._db,
            transmit=self.transmit,
            address=" ".join(f"{t}:{h}:{p}" for t, h, p in self.bound),
        )
        await self.service.start()

    async def _start_ops(self) -> None:
        from softswitch.aio.ops import Operations

        self.ops = Operations(self)
        if self.service is not None:
            self.service.metrics = self.ops.metrics
        await self.ops.start()

    async def shutdown(self) -> None:
        log.info("shutting down")
        if self.ops is not None:
            await self.ops.stop()
        self.node.stop(self.loop.time())
        self.transmit()
        if self.service is not None:
            await self.service.stop()
        trunk = self.node.trunk
        if trunk is not None:
            deadline = self.loop.time() + SHUTDOWN_GRACE
            while not trunk.stopped() and self.loop.time() < deadline:
                await asyncio.sleep(0.05)
        await self._close()
        log.info("stopped")

    async def _close(self) -> None:
        self.collector.stop()
        if self._timer is not None:
            self._timer.cancel()
        if self.ops is not None:
            await self.ops.stop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                self.loop.remove_signal_handler(sig)
        if self.service is not None:
            await self.service.media.stop()
        for tcp_server in self._tcp_servers:
            tcp_server.close()
        for conn in list(self.tcp.values()):
            if conn.transport is not None:
                conn.transport.close()
        for udp in self.udp:
            if udp.transport is not None:
                udp.transport.close()
        for tcp_server in self._tcp_servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(tcp_server.wait_closed(), 1.0)
        if self._db is not None:
            await self._db.close()

    def _on_signal(self, sig: int) -> None:
        log.info("received %s", signal.Signals(sig).name)
        if self.draining and not self._hurry.is_set():
            log.warning("second signal: hanging up the calls still up")
            self._hurry.set()
            return
        if self._stop.is_set():
            log.warning("another signal: exiting now")
            raise SystemExit(1)
        self._stop.set()

    def _on_hangup_signal(self) -> None:
        log.info("received SIGHUP: reloading %s", self.config.source)
        self.reload()

    def reload(self, config: Config | None = None) -> list[str]:
        """Apply the reloadable settings of ``config`` (default: the file re-read) and return
        their names; a broken file changes nothing (logged, with its file, line and key)."""
        if config is None:
            if self.config.source == "<defaults>":
                log.info("no configuration file to reload")
                return []
            try:
                config = load_config(self.config.source)
            except ConfigError as exc:
                log.error("reload refused, nothing changed: configuration error: %s", exc)
                return []
        old = self.config
        # What the command line set (--sip-listen, --db) still wins over the file.
        config = dataclasses.replace(
            config, **{name: getattr(old, name) for name in old.overrides}, overrides=old.overrides
        )
        changed = [name for name in RELOADABLE if getattr(config, name) != getattr(old, name)]
        new_mail = old.mail
        if (
            old.mail is not None
            and config.mail is not None
            and config.mail.senders != old.mail.senders
        ):
            new_mail = dataclasses.replace(old.mail, senders=config.mail.senders)
            changed.append("mail.senders")
        applied = {name: getattr(config, name) for name in RELOADABLE}
        fresh = dataclasses.replace(old, mail=new_mail, **applied)
        restart = [
            f.name
            for f in dataclasses.fields(Config)
            if f.name not in (*RELOADABLE, "source", "mail", "overrides")
            and getattr(fresh, f.name) != getattr(config, f.name)
        ]
        if new_mail != config.mail:
            restart.append("mail")
        self.config = fresh
        logging.getLogger().setLevel(fresh.log_level)
        if self.node.calls is not None:
            self.node.calls.reconfigure(fresh)
        self.node.sources.reconfigure(fresh.sip_limits)
        if self.ops is not None:
            self.ops.reconfigure(fresh)
        log.info("reloaded: %s", ", ".join(changed) if changed else "nothing changed")
        if restart:
            log.warning("changed but not applied until a restart: %s", ", ".join(restart))
        return changed

    # --- I/O ----------------------------------------------------------------------------------

    def flush(self) -> None:
        """Send what the datagrams received in this loop iteration produced."""
        self.flush_queued = False
        self.transmit()

    def transmit(self) -> None:
        """Hand the node's commands to the service, send its datagrams, re-arm the one timer."""
        node = self.node
        if self.service is not None:
            self.service.poll()
        else:
            # A signalling-only node: ended trigger calls are in its log; nothing to carry out.
            while node.next_event() is not None:
                pass
        for data, addr in node.datagrams_to_send():
            if addr.transport == "UDP":
                if not 0 < addr.port < 65536:
                    # asyncio's sendto would raise inside the transport and close it: one
                    # bad destination must not make the node deaf (issue 11, fuzzing).
                    log.warning("not sent to %s:%s: no such port", addr.host, addr.port)
                elif self.udp and self.udp[0].transport is not None:
                    self.udp[0].transport.sendto(data, (addr.host, addr.port))
            else:
                self._send_tcp(data, addr)
        when = node.get_timer()
        if when != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = when
            if when is not None:
                self._timer = self.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.node.handle_timer(self.loop.time())
        self.transmit()

    def _send_tcp(self, data: bytes, addr: Address) -> None:
        key = (addr.host, addr.port)
        conn = self.tcp.get(key)
        if conn is not None:
            conn.send(data)
            return
        queued = self._pending_tcp.get(key)
        if queued is not None:
            queued.append(data)
            return
        self._pending_tcp[key] = [data]
        self.loop.create_task(self._connect_tcp(addr))

    async def _connect_tcp(self, addr: Address) -> None:
        key = (addr.host, addr.port)
        try:
            _, protocol = await asyncio.wait_for(
                self.loop.create_connection(lambda: _TcpProtocol(self), addr.host, addr.port),
                timeout=5.0,
            )
        except (TimeoutError, OSError) as exc:
            log.warning("TCP connection to %s failed: %s", addr, exc)
            self._pending_tcp.pop(key, None)
            return
        for data in self._pending_tcp.pop(key, []):
            protocol.send(data)


def install_uvloop() -> str:
    """Use uvloop when it is installed (DESIGN: 2x the packet rate); report which loop."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run(config: Config) -> int:
    """Run a node until SIGTERM/SIGINT; the exit status for the CLI."""
    from softswitch.prompts import MissingPromptsError

    install_uvloop()
    server = Server(config, with_service=True)
    try:
        asyncio.run(server.serve())
    except (OSError, MissingPromptsError) as exc:
        log.error("cannot start: %s", exc)
        return 1
    except TimeoutError:
        log.error("cannot start: the store did not answer (accounts not loaded)")
        return 1
    return 0
