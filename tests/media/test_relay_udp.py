"""Real UDP on 127.0.0.1: two phones, the shell relaying between their legs, the 20 ms clock."""

import asyncio
import socket
from typing import Any

import pytest

from media.aio import MediaShell, loop_factory
from media.engine import Event, MediaEngine, PlayFinished
from media.player import Tone
from media.rtp import build_packet, parse_header


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait(data)


async def _phone() -> tuple[asyncio.DatagramTransport, Phone, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
    return transport, proto, transport.get_extra_info("sockname")[1]


@pytest.mark.parametrize("io", ["poller", "protocol"])
async def test_relay_between_two_legs_over_loopback(io: str) -> None:
    events: list[Event] = []
    engine = MediaEngine(max_legs=8)
    shell = MediaShell(engine, port_range=None, on_event=events.append, io=io)
    assert shell.io == io
    port_a = await shell.open_leg("a")
    port_b = await shell.open_leg("b")
    ta, pa, phone_a = await _phone()
    tb, pb, phone_b = await _phone()
    now = shell.loop.time()
    engine.set_remote("a", "127.0.0.1", phone_a, "PCMU", 101, now)
    engine.set_remote("b", "127.0.0.1", phone_b, "PCMA", None, now)
    engine.bridge("a", "b")
    shell.start()
    try:
        for i in range(5):
            ta.sendto(build_packet(0, i == 0, i, i * 160, 42, b"\xff" * 160), ("127.0.0.1", port_a))
            data = await asyncio.wait_for(pb.received.get(), 1.0)
            header = parse_header(data)
            assert header.payload_type == 8
            assert header.ssrc == engine.leg("b").session.ssrc
            assert data[12:] == b"\xd5" * 160  # PCMU silence -> PCMA silence
        tb.sendto(build_packet(8, True, 9, 0, 43, b"\xd5" * 160), ("127.0.0.1", port_b))
        data = await asyncio.wait_for(pa.received.get(), 1.0)
        assert parse_header(data).payload_type == 0
        # The 20 ms clock plays a beep to phone A: ten packets, then PlayFinished.
        engine.play("a", [Tone("beep")])
        start = shell.loop.time()
        for _ in range(10):
            await asyncio.wait_for(pa.received.get(), 1.0)
        assert 0.12 < shell.loop.time() - start < 0.5
        await asyncio.sleep(0.06)
        assert PlayFinished("a", False) in events
    finally:
        shell.stop()
        ta.close()
        tb.close()
    assert not engine.legs


def test_loop_factory_prefers_uvloop_but_default_works() -> None:
    default = loop_factory(use_uvloop=False)()
    try:
        assert type(default).__module__.startswith("asyncio")
    finally:
        default.close()
    loop = loop_factory()()
    loop.close()


async def test_port_range_gives_even_ports() -> None:
    engine = MediaEngine(max_legs=4)
    shell = MediaShell(engine, port_range=(40000, 40100), rtcp=True)
    try:
        port = await shell.open_leg("x")
        assert port % 2 == 0 and 40000 <= port < 40100
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            # RTCP port is taken too.
            try:
                s.bind(("127.0.0.1", port + 1))
                bound = True
            except OSError:
                bound = False
        assert not bound
    finally:
        shell.stop()
