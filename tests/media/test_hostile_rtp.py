"""Hostile RTP (issue 11), sans-IO.

Packets from anywhere but a leg's latched source are dropped and counted: per leg, in
``MediaEngine.foreign_dropped`` (closed legs included), and in what a media worker reports
(``MediaStats``, shown as ``softswitch_rtp_foreign_dropped_total``). Malformed RTP and RTCP,
from the latched source or from anyone, through every entry point the shells use
(``receive_packet``, the in-place ``receive_into``, ``receive_rtcp``), never raises, whatever
the leg is doing, and the call's media goes on afterwards.
"""

from __future__ import annotations

import random
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from media.engine import MediaEngine
from media.rtp import build_packet, parse_header
from media.worker import MediaStats

A_PEER = ("192.0.2.1", 4000)
B_PEER = ("192.0.2.2", 5000)
ATTACKER = ("198.51.100.66", 4000)
SAME_HOST = ("192.0.2.1", 4002)


def _call(dsp: bool = False, early: bool = False) -> MediaEngine:
    engine = MediaEngine(max_legs=8, rng=random.Random(3))
    engine.create_leg("a", 20000, 0.0)
    engine.create_leg("b", 20002, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.set_remote("b", *B_PEER, "PCMA", 96, 0.0)
    engine.bridge("a", "b", early_media=early)
    if dsp:
        engine.enable_dtmf("a", inband=True, fax=True)
    return engine


def _voice(seq: int, ssrc: int = 0xA1) -> bytes:
    return build_packet(0, False, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc, b"\x55" * 160)


def test_foreign_packets_are_dropped_counted_and_the_count_outlives_the_leg() -> None:
    engine = _call()
    assert engine.receive_packet("a", _voice(0), A_PEER, 0.0)  # latches A_PEER, relayed
    session = engine.leg("a").session
    for n in range(5):
        assert engine.receive_packet("a", _voice(1 + n, 0xBAD), ATTACKER, 0.01 * n) == []
    assert engine.receive_packet("a", _voice(9), SAME_HOST, 0.1) == []  # same host, other port
    engine.receive_rtcp("a", b"\x81\xc9\x00\x01" + b"\x00" * 4, ATTACKER, 0.2)
    assert session.packets_received == 1 and session.rx is not None and session.rx.ssrc == 0xA1
    assert engine.foreign_dropped == 7 == session.rejected_source
    (out,) = engine.receive_packet("a", _voice(2), A_PEER, 0.3)  # the call goes on
    assert out[1] == B_PEER
    engine.close_leg("a")
    assert engine.foreign_dropped == 7
    # What a media worker sends the node every second, read back as the pool does.
    stats = MediaStats(foreign=engine.foreign_dropped, malformed=engine.malformed)
    assert MediaStats(*stats.as_op()[1:]).foreign == 7


def test_malformed_packets_are_counted_too() -> None:
    engine = _call()
    engine.receive_packet("a", _voice(0), A_PEER, 0.0)
    engine.receive_packet("a", b"\x80\x00\x00", A_PEER, 0.01)  # shorter than a header
    engine.receive_packet("a", b"\xbf" + _voice(1)[1:20], A_PEER, 0.02)  # 15 CSRCs, no room
    buf = bytearray(2048)
    buf[:5] = b"\x80\x00\x00\x01\x00"
    assert engine.receive_into(engine.leg("a"), buf, 5, 0.03) == 0
    assert engine.malformed == 3


# --- garbage never raises ----------------------------------------------------------------


@st.composite
def _garbage(draw: st.DrawFn) -> bytes:
    """Bytes that look more or less like RTP or RTCP."""
    kind = draw(st.sampled_from(["random", "mutated", "header", "rtcp"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    if kind == "header":
        # A first byte with any version, padding, extension and CSRC count, a valid rest.
        b0 = draw(st.integers(0, 255))
        b1 = draw(st.integers(0, 255))
        rest = draw(st.binary(max_size=200))
        return bytes([b0, b1]) + struct.pack("!HII", draw(st.integers(0, 0xFFFF)), 0, 0xA1) + rest
    if kind == "rtcp":
        pt = draw(st.sampled_from([200, 201, 202, 203, 204, 0, 255]))
        count = draw(st.integers(0, 31))
        length = draw(st.integers(0, 0xFFFF))
        body = draw(st.binary(max_size=120))
        return bytes([0x80 | count, pt]) + struct.pack("!H", length) + body
    packet = bytearray(_voice(draw(st.integers(0, 0xFFFF))))
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, len(packet)))
        action = draw(st.integers(0, 2))
        if action == 0 and at < len(packet):
            packet[at] = draw(st.integers(0, 255))
        elif action == 1:
            del packet[at : at + draw(st.integers(1, 40))]
        else:
            packet[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(packet)


SOURCES = [A_PEER, SAME_HOST, ATTACKER, (A_PEER[0], A_PEER[1] + 1)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            _garbage(),
            st.sampled_from(SOURCES),
            st.sampled_from(["packet", "into", "rtcp", "rtcp", "tick", "play", "valid"]),
        ),
        max_size=50,
    ),
    dsp=st.booleans(),
    early=st.booleans(),
    latch_first=st.booleans(),
)
def test_garbage_rtp_and_rtcp_never_raise_and_the_call_goes_on(
    steps: list[tuple[bytes, tuple[str, int], str]], dsp: bool, early: bool, latch_first: bool
) -> None:
    engine = _call(dsp, early)
    now = 0.0
    seq = 100
    if latch_first:
        engine.receive_packet("a", _voice(seq), A_PEER, now)
    buf = bytearray(2048)
    for data, source, how in steps:
        now += 0.007
        if how == "packet":
            for leg in ("a", "b"):
                engine.receive_packet(leg, data, source, now)
        elif how == "into" and engine.leg("a").session.latched is not None:
            # The shell's fast path: only for a latched leg, from its latched source.
            n = min(len(data), len(buf))
            buf[:n] = data[:n]
            engine.receive_into(engine.leg("a"), buf, n, now)
        elif how == "rtcp":
            engine.receive_rtcp("a", data, source, now)
            engine.receive_rtcp("b", data, B_PEER, now)
        elif how == "tick":
            engine.tick(now)
        elif how == "play":
            engine.play("b", [np.zeros(160 * 2, dtype=np.int16)])
        else:
            seq += 1
            engine.receive_packet("a", _voice(seq), A_PEER, now)
        while engine.next_event() is not None:
            pass
    # The call goes on: the caller's next packets from the source it latched still reach the
    # other leg (over a second, so a jitter buffer or a tick-driven path has delivered).
    latched = engine.leg("a").session.latched or A_PEER
    sent: list[bytes] = []
    for _ in range(60):
        now += 0.02
        seq += 1
        sent += [p for p, dest in engine.receive_packet("a", _voice(seq), latched, now)]
        sent += [p for leg, p, dest in _ticked(engine, now) if leg == "b"]
    assert any(parse_header(p).payload_type == 8 for p in sent)  # transcoded to leg b's PCMA


def _ticked(engine: MediaEngine, now: float) -> list[tuple[str, bytes, tuple[str, int]]]:
    out = []
    for item in engine.tick(now):
        leg_id, packet, dest = item
        out.append((leg_id, packet, dest))
    while engine.next_event() is not None:
        pass
    return out
