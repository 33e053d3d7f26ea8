"""The shell's in-place fast path (`receive_into`) against `receive_on`, packet for packet.

Two engines built alike (same random seed) get the same packet stream, one through each entry
point; everything observable must match after every packet and every tick: what is sent, the
statistics of both legs, the events.
"""

import random
from collections.abc import Sequence
from dataclasses import astuple
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from media.engine import MediaEngine
from media.g711 import ulaw_encode
from media.rfc4733 import build_payload
from media.rtp import build_packet
from media.tones import dtmf_tone

A_PEER = ("192.0.2.1", 4000)
B_PEER = ("192.0.2.2", 5000)


def _pair(codec_b: str, dsp: bool, clamp: bool, early: bool) -> MediaEngine:
    engine = MediaEngine(max_legs=8, rng=random.Random(5))
    engine.create_leg("a", 20000, 0.0)
    engine.create_leg("b", 20002, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.set_remote("b", *B_PEER, codec_b, 96, 0.0)
    engine.bridge("a", "b", early_media=early)
    if dsp:
        engine.enable_dtmf("a", inband=True, fax=True)
    if clamp:
        engine.set_dtmf_clamp("a", True)
    return engine


def _observe(engine: MediaEngine) -> tuple[Any, ...]:
    legs = []
    for leg_id in ("a", "b"):
        s = engine.leg(leg_id).session
        rx = s.rx
        legs.append(
            (
                astuple(s.stats()),
                s.out_seq,
                s.out_ts,
                s.relay_src,
                s.relay_seq_off,
                s.relay_ts_off,
                s.latched,
                None if rx is None else (rx.max_seq, rx.cycles, rx.received, rx.jitter),
            )
        )
    return tuple(legs)


_TONE = [ulaw_encode(f) for f in dtmf_tone("5", 100, -6.0).reshape(-1, 160)]


@st.composite
def _streams(draw: st.DrawFn) -> list[tuple[str, Any]]:
    steps: list[tuple[str, Any]] = []
    seq, ts, ssrc = draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 2**32 - 1)), 0x1234
    for _ in range(draw(st.integers(5, 60))):
        kind = draw(
            st.sampled_from(
                ["audio"] * 8
                + ["tone", "dup", "back", "jump", "ssrc", "event", "odd", "pt", "ext", "tick"]
                + ["tick"] * 4
                + ["play", "short"]
            )
        )
        if kind == "jump":
            seq = (seq + draw(st.integers(100, 40000))) & 0xFFFF
        elif kind == "back":
            seq = (seq - draw(st.integers(1, 5))) & 0xFFFF
        elif kind == "ssrc":
            ssrc = draw(st.integers(1, 2**32 - 1))
        elif kind == "dup":
            seq = (seq - 1) & 0xFFFF
        payload = draw(st.binary(min_size=160, max_size=160))
        if kind == "tone":
            payload = _TONE[draw(st.integers(0, len(_TONE) - 1))]
        pt = 0
        if kind == "event":
            pt, payload = 101, build_payload(draw(st.integers(0, 15)), draw(st.booleans()), 10, 320)
        elif kind == "odd":
            payload = payload[: draw(st.integers(0, 159))]
        elif kind == "pt":
            pt = 8
        marker = draw(st.booleans())
        packet = build_packet(pt, marker, seq, ts, ssrc, payload)
        if kind == "ext":
            packet = bytes([0x90]) + packet[1:12] + b"\xbe\xde\x00\x01abcd" + packet[12:]
        elif kind == "short":
            packet = packet[: draw(st.integers(0, 11))]
        if kind in ("tick", "play"):
            steps.append((kind, None))
        else:
            steps.append(("packet", packet))
            seq = (seq + 1) & 0xFFFF
            ts = (ts + 160) & 0xFFFFFFFF
    return steps


@settings(max_examples=200, deadline=None)
@given(
    steps=_streams(),
    codec_b=st.sampled_from(["PCMU", "PCMA"]),
    dsp=st.booleans(),
    clamp=st.booleans(),
    early=st.booleans(),
)
def test_receive_into_matches_receive_on(
    steps: list[tuple[str, Any]], codec_b: str, dsp: bool, clamp: bool, early: bool
) -> None:
    slow = _pair(codec_b, dsp, clamp, early)
    fast = _pair(codec_b, dsp, clamp, early)
    buf = bytearray(2048)
    now = 0.0
    for kind, packet in steps:
        now += 0.007
        if kind == "tick":
            assert slow.tick(now) == fast.tick(now)
        elif kind == "play":
            for engine in (slow, fast):
                engine.play("b", [np.zeros(160 * 3, dtype=np.int16)])
        else:
            expected = slow.receive_packet("a", packet, A_PEER, now)
            got: Sequence[tuple[bytes, tuple[str, int] | None]]
            if fast.leg("a").session.latched is None:
                # The shell reads with the source address until the leg has latched.
                got = fast.receive_packet("a", packet, A_PEER, now)
            else:
                buf[: len(packet)] = packet
                m = fast.receive_into(fast.leg("a"), buf, len(packet), now)
                got = [(bytes(buf[:m]), fast.leg("b").session.destination)] if m else []
            assert got == expected
        assert _observe(fast) == _observe(slow)
        assert list(iter(fast.next_event, None)) == list(iter(slow.next_event, None))
