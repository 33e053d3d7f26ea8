"""The shell's poller on real loopback sockets: connect after latching, re-INVITE, fallback."""

import asyncio
from typing import Any

from media.aio import MediaShell
from media.engine import Leg, MediaEngine
from media.rtp import build_packet, parse_header
from media.session import Addr


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)

    @property
    def port(self) -> int:
        return int(self.transport.get_extra_info("sockname")[1])


async def _phone() -> Phone:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    return proto


async def _nothing(phone: Phone, wait: float = 0.1) -> bool:
    try:
        await asyncio.wait_for(phone.received.get(), wait)
    except TimeoutError:
        return True
    return False


async def test_latched_socket_is_connected_and_ignores_other_sources() -> None:
    engine = MediaEngine(max_legs=8)
    shell = MediaShell(engine, port_range=None, io="poller")
    port_a, port_b = await shell.open_leg("a"), await shell.open_leg("b")
    phone_a, phone_b, intruder = await _phone(), await _phone(), await _phone()
    now = shell.time()
    engine.set_remote("a", "127.0.0.1", phone_a.port, "PCMU", None, now)
    engine.set_remote("b", "127.0.0.1", phone_b.port, "PCMU", None, now)
    engine.bridge("a", "b")
    try:
        for seq in range(4):
            pkt = build_packet(0, seq == 0, seq, 160 * seq, 7, bytes([seq]) * 160)
            phone_a.transport.sendto(pkt, ("127.0.0.1", port_a))
            got = await asyncio.wait_for(phone_b.received.get(), 1.0)
            assert got[12:] == bytes([seq]) * 160
            assert parse_header(got).ssrc == engine.leg("b").session.ssrc
        sock = shell.transports["a"].get_extra_info("socket")
        assert sock.getpeername() == ("127.0.0.1", phone_a.port)
        # RTP injection from anyone else never reaches the bridge (nor the statistics).
        before = engine.leg("a").session.packets_received
        bleed = build_packet(0, False, 4, 640, 7, b"\x55" * 160)
        intruder.transport.sendto(bleed, ("127.0.0.1", port_a))
        assert await _nothing(phone_b)
        assert engine.leg("a").session.packets_received == before
        # The other way: b has not latched yet, so it reads with addresses (receive_on).
        back = build_packet(0, True, 9, 0, 8, b"\x11" * 160)
        phone_b.transport.sendto(back, ("127.0.0.1", port_b))
        assert (await asyncio.wait_for(phone_a.received.get(), 1.0))[12:] == b"\x11" * 160
        assert shell.transports["b"].get_extra_info("peername") == ("127.0.0.1", phone_b.port)
    finally:
        shell.stop()
        for phone in (phone_a, phone_b, intruder):
            phone.transport.close()


async def test_reinvite_to_a_new_address_rebinds_and_latches_again() -> None:
    engine = MediaEngine(max_legs=8)
    shell = MediaShell(engine, port_range=None, io="poller")
    port_a = await shell.open_leg("a")
    await shell.open_leg("b")
    old, new, phone_b = await _phone(), await _phone(), await _phone()
    now = shell.time()
    engine.set_remote("a", "127.0.0.1", old.port, "PCMU", None, now)
    engine.set_remote("b", "127.0.0.1", phone_b.port, "PCMU", None, now)
    engine.bridge("a", "b")
    try:
        old.transport.sendto(build_packet(0, True, 1, 0, 7, b"\x01" * 160), ("127.0.0.1", port_a))
        await asyncio.wait_for(phone_b.received.get(), 1.0)
        assert shell.transports["a"].get_extra_info("peername") == ("127.0.0.1", old.port)
        # A re-INVITE moves the customer to another address: same local port, new source.
        engine.set_remote("a", "127.0.0.1", new.port, "PCMU", None, shell.time())
        assert shell.transports["a"].get_extra_info("peername") is None
        assert shell.transports["a"].get_extra_info("sockname")[1] == port_a
        new.transport.sendto(build_packet(0, True, 50, 0, 9, b"\x02" * 160), ("127.0.0.1", port_a))
        assert (await asyncio.wait_for(phone_b.received.get(), 1.0))[12:] == b"\x02" * 160
        assert shell.transports["a"].get_extra_info("peername") == ("127.0.0.1", new.port)
        # The tick's packets for leg a follow it too (here: none, it is bridged); the old
        # address is now a stranger.
        old.transport.sendto(
            build_packet(0, False, 2, 160, 7, b"\x03" * 160), ("127.0.0.1", port_a)
        )
        assert await _nothing(phone_b)
        # A re-INVITE that keeps the address keeps the connection.
        engine.set_remote("a", "127.0.0.1", new.port, "PCMA", None, shell.time())
        assert shell.transports["a"].get_extra_info("peername") == ("127.0.0.1", new.port)
    finally:
        shell.stop()
        for phone in (old, new, phone_b):
            phone.transport.close()


class _Tap(MediaEngine):
    def __init__(self) -> None:
        super().__init__(max_legs=4)
        self.seen = 0

    def receive_on(
        self, leg: Leg, data: bytes, addr: Addr, now: float
    ) -> tuple[bytes, Addr] | None:
        self.seen += 1
        return super().receive_on(leg, data, addr, now)


async def test_engine_overriding_receive_on_gets_datagram_protocols() -> None:
    engine = _Tap()
    shell = MediaShell(engine, port_range=None)
    assert shell.io == "protocol"
    port = await shell.open_leg("a")
    phone = await _phone()
    engine.set_remote("a", "127.0.0.1", phone.port, "PCMU", None, shell.time())
    try:
        for seq in range(3):
            phone.transport.sendto(
                build_packet(0, False, seq, 0, 7, b"\xff" * 160), ("127.0.0.1", port)
            )
        for _ in range(50):
            if engine.seen == 3:
                break
            await asyncio.sleep(0.01)
        assert engine.seen == 3  # every packet through the override, latched or not
    finally:
        shell.stop()
        phone.transport.close()
    stock = MediaShell(MediaEngine(), port_range=None)
    assert stock.io == "poller"
    stock.stop()


async def test_failed_rebind_after_reinvite_is_logged_not_raised(monkeypatch: Any) -> None:
    engine = MediaEngine(max_legs=4)
    shell = MediaShell(engine, port_range=None, io="poller")
    port_a = await shell.open_leg("a")
    phone, other = await _phone(), await _phone()
    engine.set_remote("a", "127.0.0.1", phone.port, "PCMU", None, shell.time())
    try:
        phone.transport.sendto(build_packet(0, True, 1, 0, 7, b"\x01" * 160), ("127.0.0.1", port_a))
        for _ in range(50):
            if shell.transports["a"].get_extra_info("peername") is not None:
                break
            await asyncio.sleep(0.01)

        def taken(port: int) -> Any:
            raise OSError("address in use")

        monkeypatch.setattr(shell, "_bind", taken)
        engine.set_remote("a", "127.0.0.1", other.port, "PCMU", None, shell.time())  # no raise
        shell.close_leg("a")
        assert "a" not in engine.legs
    finally:
        shell.stop()
        phone.transport.close()
        other.transport.close()
