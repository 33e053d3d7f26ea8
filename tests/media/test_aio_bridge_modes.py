"""Early media and the DTMF clamp through media/aio.py, on real UDP sockets on 127.0.0.1."""

import asyncio
import itertools
from collections.abc import Callable
from typing import cast

from media.aio import MediaShell
from media.engine import DigitReceived, Event, MediaEngine
from media.rtp import build_packet, parse_header

from .test_dtmf_clamp import _far_end, _keys

CUSTOMER = bytes([0x10]) * 160
RINGBACK = bytes([0x20]) * 160
SILENT = b"\xff" * 160


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport  # set by connection_made
        self.seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.append(data)

    def send(self, payload: bytes, port: int, ssrc: int) -> None:
        pkt = build_packet(0, self.seq == 0, self.seq & 0xFFFF, self.seq * 160, ssrc, payload)
        self.transport.sendto(pkt, ("127.0.0.1", port))
        self.seq += 1


async def _setup(events: list[Event]) -> tuple[MediaShell, Phone, Phone, int, int]:
    loop = asyncio.get_running_loop()
    engine = MediaEngine(max_legs=8)
    shell = MediaShell(engine, port_range=None, on_event=events.append)
    port_a = await shell.open_leg("a")
    port_b = await shell.open_leg("b")
    phones = []
    for _ in range(2):
        _, proto = await loop.create_datagram_endpoint(Phone, local_addr=("127.0.0.1", 0))
        phones.append(proto)
    now = loop.time()
    engine.set_remote(
        "a", "127.0.0.1", phones[0].transport.get_extra_info("sockname")[1], "PCMU", None, now
    )
    engine.set_remote(
        "b", "127.0.0.1", phones[1].transport.get_extra_info("sockname")[1], "PCMU", None, now
    )
    shell.start()
    return shell, phones[0], phones[1], port_a, port_b


async def _paced(frames: int, send: Callable[[int], None]) -> None:
    """Call send(k) for k in range(frames) every 20 ms on an absolute schedule."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for k in range(frames):
        send(k)
        await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - loop.time()))


async def test_early_media_then_answer_over_loopback() -> None:
    events: list[Event] = []
    shell, phone_a, phone_b, port_a, port_b = await _setup(events)
    engine = shell.engine
    try:
        engine.bridge("a", "b", early_media=True)

        def both(k: int) -> None:
            phone_a.send(CUSTOMER, port_a, 0xA)
            phone_b.send(RINGBACK, port_b, 0xB)

        await _paced(15, both)
        await asyncio.sleep(0.05)
        early = len(phone_b.received)
        assert {p[12:] for p in phone_a.received} == {RINGBACK}
        assert early >= 10 and {p[12:] for p in phone_b.received} == {SILENT}
        engine.bridge("a", "b")  # answered
        await _paced(15, both)
        await asyncio.sleep(0.05)
    finally:
        shell.stop()
        for phone in (phone_a, phone_b):
            phone.transport.close()
    got = phone_b.received
    later = [p[12:] for p in got[early:]]
    assert later.count(CUSTOMER) == 15 and later[-1] == CUSTOMER
    headers = [parse_header(p) for p in got]
    assert len({h.ssrc for h in headers}) == 1
    assert [(h.sequence - headers[0].sequence) & 0xFFFF for h in headers] == list(range(len(got)))
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(headers)]
    assert all(s % 160 == 0 and 0 < s <= 160 * 3 for s in steps)


async def test_dtmf_clamp_over_loopback() -> None:
    events: list[Event] = []
    shell, phone_a, phone_b, port_a, _ = await _setup(events)
    engine = shell.engine
    try:
        engine.bridge("a", "b")
        engine.enable_dtmf("a", inband=True)
        engine.set_dtmf_clamp("a", True)
        frames = _keys("**") + _keys("12#")
        await _paced(len(frames), lambda k: phone_a.send(frames[k], port_a, 0xA))
        await asyncio.sleep(0.1)
    finally:
        shell.stop()
        for phone in (phone_a, phone_b):
            phone.transport.close()
    digits = [e.digit for e in events if isinstance(e, DigitReceived) and e.leg_id == "a"]
    assert digits == list("**12#")
    received = sorted(phone_b.received, key=lambda p: parse_header(p).sequence)
    payloads = [p[12:] for p in received]
    assert len(payloads) >= len(frames) - 1
    assert _far_end(payloads) == ("", 0)
    # The silence sent instead of the tones is the only change.
    assert all(p in (f, SILENT) for p, f in zip(payloads, frames, strict=False))
    changed = sum(1 for p, f in zip(payloads, frames, strict=False) if p != f)
    assert 5 * 5 <= changed <= 5 * (5 + 1 + 2)
