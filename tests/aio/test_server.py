"""The asyncio shell with real loopback sockets: UDP, TCP framing, the timer, shutdown."""

from __future__ import annotations

import asyncio
import socket

from softswitch.aio.server import Server
from softswitch.config import Config
from softswitch.demo.run import free_port
from softswitch.sip.message import Response
from softswitch.sip.parser import StreamFramer, parse_message


def options(branch: str, port: int, transport: str = "UDP") -> bytes:
    return (
        f"OPTIONS sip:node@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{branch};rport\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:node@127.0.0.1>\r\n"
        f"Call-ID: {branch}@test\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


async def start(**kwargs: object) -> tuple[Server, int]:
    port = free_port()
    server = Server(Config(listen=(("127.0.0.1", port),), **kwargs))  # type: ignore[arg-type]
    await server.startup()
    return server, port


async def test_udp_options_and_malformed_input() -> None:
    server, port = await start()
    loop = asyncio.get_running_loop()
    received: asyncio.Queue[bytes] = asyncio.Queue()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            received.put_nowait(data)

    transport, _ = await loop.create_datagram_endpoint(Client, local_addr=("127.0.0.1", 0))
    try:
        me = transport.get_extra_info("sockname")[1]
        transport.sendto(b"\x00garbage\r\n\r\n", ("127.0.0.1", port))
        transport.sendto(
            options("u1", me).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1), ("127.0.0.1", port)
        )
        transport.sendto(options("u2", me), ("127.0.0.1", port))
        first = parse_message(await asyncio.wait_for(received.get(), 2))
        second = parse_message(await asyncio.wait_for(received.get(), 2))
        assert isinstance(first, Response) and first.status == 505
        assert isinstance(second, Response) and second.status == 200
        assert received.empty()
    finally:
        transport.close()
        await server.shutdown()


async def test_tcp_framing_two_messages_in_one_segment_and_split_reads() -> None:
    server, port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        me = writer.get_extra_info("sockname")[1]
        data = options("t1", me, "TCP") + options("t2", me, "TCP")
        writer.write(data[:30])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(data[30:])
        await writer.drain()
        framer = StreamFramer()
        got: list[object] = []
        while len(got) < 2:
            chunk = await asyncio.wait_for(reader.read(65536), 2)
            assert chunk, "connection closed early"
            got += framer.feed(chunk)
        assert [m.status for m in got if isinstance(m, Response)] == [200, 200]
        assert [m.call_id for m in got if isinstance(m, Response)] == ["t1@test", "t2@test"]
    finally:
        writer.close()
        await server.shutdown()


async def test_tcp_idle_connections_are_closed() -> None:
    server, port = await start(tcp_idle_timeout=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await asyncio.wait_for(reader.read(100), 2) == b""  # closed by the node
    finally:
        writer.close()
        await server.shutdown()


async def test_timer_drives_retransmissions() -> None:
    """A 404 to an INVITE is retransmitted by Timer G through the shell's single timer."""
    server, port = await start()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        me = sock.getsockname()[1]
        invite = options("g1", me).replace(b"OPTIONS", b"INVITE")
        sock.sendto(invite, ("127.0.0.1", port))
        first = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2)
        started = loop.time()
        again = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2)
        elapsed = loop.time() - started
        assert first == again
        assert b"404" in first.split(b"\r\n", 1)[0]
        assert 0.3 < elapsed < 1.0  # T1 = 0.5 s
    finally:
        sock.close()
        await server.shutdown()


async def test_port_in_use_is_reported() -> None:
    server, port = await start()
    try:
        other = Server(Config(listen=(("127.0.0.1", port),)))
        try:
            await other.startup()
        except OSError as exc:
            assert exc.errno is not None
        else:
            raise AssertionError("a second node bound the same port")
    finally:
        await server.shutdown()


async def test_tcp_ping_gets_pong_and_framing_error_closes() -> None:
    server, port = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"\r\n\r\n")  # RFC 5626 keep-alive ping
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(2), 2) == b"\r\n"
        # No Content-Length on a stream: 400, then the connection is closed.
        writer.write(options("nocl", 1).replace(b"Content-Length: 0\r\n", b""))
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(65536), 2)
        assert rest.startswith(b"SIP/2.0 400")
        assert await asyncio.wait_for(reader.read(100), 2) == b""
    finally:
        writer.close()
        await server.shutdown()
