"""TCP against hostile peers, with real loopback sockets (issue 11): the ACL is checked before
a byte is read, connections per source are capped, a slow or non-reading peer is cut off, and
a banned source loses its connection."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from softswitch.aio.server import TCP_MAX_BUFFER, Server
from softswitch.config import Config, SipLimits
from softswitch.demo.run import free_port
from tests.aio.test_server import options


async def start(**kwargs: object) -> tuple[Server, int]:
    port = free_port()
    server = Server(Config(listen=(("127.0.0.1", port),), **kwargs))  # type: ignore[arg-type]
    await server.startup()
    return server, port


async def connect(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed(reader: asyncio.StreamReader) -> bool:
    """The node closed the connection without a byte (or with only what it had sent)."""
    try:
        data = await asyncio.wait_for(reader.read(65536), 2)
    except ConnectionResetError:
        return True
    return data == b""


async def test_tcp_from_outside_allow_from_is_closed_before_reading() -> None:
    # Before issue 11 the ACL was only checked on UDP: TCP from anywhere was answered.
    server, port = await start(allow_from=("127.0.0.1/32",))
    reader, writer = await connect(port, "127.0.0.2")
    try:
        writer.write(options("acl", 1, "TCP"))
        assert await closed(reader)
        assert server.tcp == {} and server.node.sources.dropped["acl"] == 1
    finally:
        writer.close()
        await server.shutdown()


async def test_connections_per_source_are_capped_but_not_for_exempt_sources() -> None:
    limits = SipLimits(exempt_from=("127.0.0.1",), tcp_max_per_source=2)
    server, port = await start(sip_limits=limits)
    held = [await connect(port, "127.0.0.2") for _ in range(3)]
    exempt = [await connect(port, "127.0.0.1") for _ in range(4)]
    try:
        assert await closed(held[2][0])
        for reader, writer in held[:2] + exempt:
            writer.write(options(f"c{id(writer)}", 1, "TCP"))
            assert (await asyncio.wait_for(reader.read(65536), 2)).startswith(b"SIP/2.0 200")
        assert server.tcp_by_host == {"127.0.0.2": 2, "127.0.0.1": 4}
    finally:
        for _, writer in held + exempt:
            writer.close()
        await asyncio.sleep(0.1)
        assert server.tcp_by_host == {}
        await server.shutdown()


async def test_a_peer_that_never_reads_its_answers_is_cut_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="softswitch.server")
    server, port = await start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    try:
        await asyncio.sleep(0.05)
        (conn,) = server.tcp.values()
        assert conn.transport is not None
        conn.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
        )
        burst = b"".join(options(f"p{n}", 1, "TCP") for n in range(200))
        loop = asyncio.get_running_loop()
        for _ in range(4 * TCP_MAX_BUFFER // len(burst) + 20):
            if not server.tcp:
                break
            await loop.sock_sendall(sock, burst)
            await asyncio.sleep(0)
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        assert server.tcp == {}  # closed with its answers unread, not buffered without end
        assert "bytes of answers it does not read" in caplog.text
    finally:
        sock.close()
        await server.shutdown()


async def test_a_source_banned_while_connected_loses_its_connection() -> None:
    server, port = await start(sip_limits=SipLimits(exempt_from=(), rate_per_source=20))
    reader, writer = await connect(port, "127.0.0.2")
    try:
        writer.write(b"".join(options(f"b{n}", 1, "TCP") for n in range(50)))
        got = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 2)
            if not chunk:
                break
            got += chunk
        assert got.count(b"SIP/2.0 200") == 20
        assert server.node.sources.banned("127.0.0.2", server.loop.time())
        again, again_writer = await connect(port, "127.0.0.2")
        assert await closed(again)  # refused at once while the ban lasts
        again_writer.close()
    finally:
        writer.close()
        await server.shutdown()
