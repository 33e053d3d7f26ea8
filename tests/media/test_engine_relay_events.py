"""RFC 4733 events on a bridged leg: relayed by default, kept back when the application asks."""

from __future__ import annotations

import struct

from media.engine import DigitReceived, MediaEngine

A_PEER = ("127.0.0.1", 40000)
B_PEER = ("127.0.0.1", 40002)


def event_packet(seq: int, ts: int, digit: int, end: bool, duration: int) -> bytes:
    header = struct.pack("!BBHII", 0x80, (0x80 if seq == 1 else 0) | 101, seq, ts, 0x1234)
    flags = 0x80 if end else 0
    return header + struct.pack("!BBH", digit, flags | 10, duration)


def bridged() -> MediaEngine:
    engine = MediaEngine()
    engine.create_leg("a", 20000, 0.0)
    engine.create_leg("b", 20002, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.set_remote("b", *B_PEER, "PCMU", 101, 0.0)
    engine.bridge("a", "b")
    return engine


def send_digit(engine: MediaEngine) -> list[tuple[bytes, tuple[str, int]]]:
    out = []
    for seq, (end, duration) in enumerate([(False, 160), (False, 320), (True, 480)], start=1):
        out += engine.receive_packet("a", event_packet(seq, 1000, 5, end, duration), A_PEER, 0.1)
    return out


def digits(engine: MediaEngine) -> list[str]:
    found = []
    while (event := engine.next_event()) is not None:
        if isinstance(event, DigitReceived):
            found.append(event.digit)
    return found


def test_events_are_relayed_by_default() -> None:
    engine = bridged()
    out = send_digit(engine)
    assert len(out) == 3 and all(dest == B_PEER for _, dest in out)
    assert digits(engine) == ["5"]


def test_events_kept_back_are_still_reported() -> None:
    engine = bridged()
    engine.relay_dtmf_events("a", False)
    assert send_digit(engine) == []
    assert digits(engine) == ["5"]
