"""RFC 4733 receiver edge cases and the sender's packet train."""

import struct

import pytest

from media.digits import DigitEvent
from media.rfc4733 import (
    DtmfEventReceiver,
    DtmfEventSender,
    build_payload,
    parse_payload,
)


def pkt(event: int, duration: int, end: bool = False, volume: int = 10) -> bytes:
    return build_payload(event, end, volume, duration)


def feed(
    rx: DtmfEventReceiver, packets: list[tuple[bytes, int]], t0: float = 0.0
) -> list[DigitEvent]:
    out: list[DigitEvent] = []
    for i, (payload, ts) in enumerate(packets):
        out += rx.receive(payload, ts, i, i == 0, t0 + i * 0.02)
    return out


def press(event: int, ts: int, updates: int = 3, step: int = 160) -> list[tuple[bytes, int]]:
    packets = [(pkt(event, step * (k + 1)), ts) for k in range(updates)]
    packets += [(pkt(event, step * updates, end=True), ts)] * 3
    return packets


def test_payload_round_trip_and_layout() -> None:
    raw = build_payload(11, True, 10, 800)
    assert raw == bytes([11, 0x80 | 10, 0x03, 0x20])
    assert parse_payload(raw + raw[:2])[0].duration == 800  # ragged tail ignored
    assert len(parse_payload(raw + raw)) == 2


def test_one_event_per_timestamp_and_triple_end_reported_once() -> None:
    rx = DtmfEventReceiver(101)
    out = feed(rx, press(5, 1000))
    assert [(e.digit, e.ended, e.duration_ms) for e in out] == [("5", False, 0), ("5", True, 60)]
    assert out[0].start_ms == out[1].start_ms
    assert rx.next_deadline() is None


def test_same_packets_replayed_are_one_key_press() -> None:
    # Debian SIPp pcaps replay identical packets: one key press, not two.
    rx = DtmfEventReceiver(96)
    out = feed(rx, press(10, 5000))
    out += feed(rx, press(10, 5000), t0=1.0)
    assert [(e.digit, e.ended) for e in out] == [("*", False), ("*", True)]


def test_first_packet_already_ended() -> None:
    rx = DtmfEventReceiver(101)
    out = feed(rx, [(pkt(1, 400, end=True), 7)] * 3)
    assert [(e.digit, e.ended, e.duration_ms) for e in out] == [("1", False, 0), ("1", True, 50)]


def test_lost_end_packets_end_by_timeout() -> None:
    rx = DtmfEventReceiver(101, end_timeout=0.3)
    out = feed(rx, press(9, 100)[:3])
    assert [e.ended for e in out] == [False]
    deadline = rx.next_deadline()
    assert deadline is not None
    assert deadline == pytest.approx(0.04 + 0.3)
    assert rx.poll(deadline - 0.001) == []
    ended = rx.poll(deadline)
    assert [(e.digit, e.ended, e.duration_ms) for e in ended] == [("9", True, 60)]
    # The late end packet must not produce a second digit.
    assert rx.receive(pkt(9, 480, end=True), 100, 9, False, 1.0) == []


def test_new_timestamp_ends_event_whose_end_was_lost() -> None:
    rx = DtmfEventReceiver(101)
    out = feed(rx, press(1, 100)[:2] + press(2, 2000))
    assert [(e.digit, e.ended) for e in out] == [
        ("1", False),
        ("1", True),
        ("2", False),
        ("2", True),
    ]


def test_timestamp_wrap() -> None:
    rx = DtmfEventReceiver(101)
    first = (1 << 32) - 400
    out = feed(rx, press(3, first) + press(4, (first + 1600) % (1 << 32)))
    assert [(e.digit, e.ended) for e in out] == [
        ("3", False),
        ("3", True),
        ("4", False),
        ("4", True),
    ]
    assert out[2].start_ms - out[0].start_ms == 200  # 1600 samples later, across the wrap
    # A stale packet from before the wrap is ignored, not mistaken for a new digit.
    assert rx.receive(pkt(3, 160), first, 99, False, 1.0) == []


def test_long_event_segments_are_one_digit() -> None:
    # RFC 4733 section 2.5.1.3: durations saturate at 0xFFFF, then a new segment starts.
    rx = DtmfEventReceiver(101)
    ts = 10_000
    packets = [(pkt(0, d), ts) for d in range(4000, 0xFFFF, 4000)] + [(pkt(0, 0xFFFF), ts)]
    ts2 = ts + 0xFFFF
    packets += [(pkt(0, 800), ts2), (pkt(0, 1600, end=True), ts2), (pkt(0, 1600, end=True), ts2)]
    out = feed(rx, packets)
    assert [(e.digit, e.ended) for e in out] == [("0", False), ("0", True)]
    assert out[1].duration_ms == (0xFFFF + 1600) * 1000 // 8000


def test_multiple_events_in_one_packet() -> None:
    # RFC 4733 section 2.5.1.5: the second block starts where the first one ended.
    rx = DtmfEventReceiver(101)
    out = rx.receive(pkt(7, 800, end=True) + pkt(8, 400), 50_000, 1, True, 0.0)
    out += rx.receive(pkt(7, 800, end=True) + pkt(8, 800, end=True), 50_000, 2, False, 0.05)
    assert [(e.digit, e.ended) for e in out] == [
        ("7", False),
        ("7", True),
        ("8", False),
        ("8", True),
    ]
    assert out[2].start_ms - out[0].start_ms == 100


def test_invalid_fields_ignored() -> None:
    rx = DtmfEventReceiver(101)
    assert rx.receive(pkt(16, 400), 1, 1, True, 0.0) == []  # not a DTMF event
    assert rx.receive(pkt(200, 400, end=True), 2, 2, True, 0.0) == []
    assert rx.receive(pkt(4, 0, end=True), 3, 3, True, 0.0) == []  # end with duration 0
    assert rx.receive(b"\x01\x0a", 4, 4, True, 0.0) == []  # truncated block


def test_reordered_update_does_not_shrink_duration() -> None:
    rx = DtmfEventReceiver(101)
    out = feed(rx, [(pkt(6, 320), 9), (pkt(6, 160), 9), (pkt(6, 480, end=True), 9)])
    assert out[-1].duration_ms == 60


def test_sender_packet_train_decodes_to_one_digit() -> None:
    tx = DtmfEventSender(101, volume=10, interval_ms=50)
    packets = tx.start("#", 123_456, duration_ms=200)
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    assert all(p.timestamp == 123_456 for p in packets)
    ends = [p for p in packets if parse_payload(p.payload)[0].end]
    assert len(ends) == 3 and len({p.payload for p in ends}) == 1
    assert parse_payload(ends[0].payload)[0].duration == 1600
    assert parse_payload(packets[0].payload)[0].volume == 10
    offsets = [p.send_offset_ms for p in packets]
    assert offsets == sorted(offsets) and offsets[:4] == [0, 50, 100, 150]
    rx = DtmfEventReceiver(101)
    out = []
    for i, p in enumerate(packets):
        out += rx.receive(p.payload, p.timestamp, i, p.marker, p.send_offset_ms / 1000)
    assert [(e.digit, e.ended, e.duration_ms) for e in out] == [("#", False, 0), ("#", True, 200)]


def test_sender_segments_long_events() -> None:
    tx = DtmfEventSender(101, interval_ms=50)
    packets = tx.start("1", (1 << 32) - 100, duration_ms=10_000)  # 80000 samples > 0xFFFF
    stamps = sorted({p.timestamp for p in packets})
    assert stamps == sorted({(1 << 32) - 100, ((1 << 32) - 100 + 0xFFFF) % (1 << 32)})
    assert max(struct.unpack("!H", p.payload[2:])[0] for p in packets) == 0xFFFF
    rx = DtmfEventReceiver(101)
    out = []
    for i, p in enumerate(packets):
        out += rx.receive(p.payload, p.timestamp, i, p.marker, p.send_offset_ms / 1000)
    assert [(e.digit, e.ended, e.duration_ms) for e in out] == [
        ("1", False, 0),
        ("1", True, 10_000),
    ]
