"""One-way bridge for early media, then the upgrade to two-way on answer (sans-IO, fake clock)."""

import numpy as np

from media.engine import DigitReceived, MediaEngine
from media.g711 import ulaw_decode, ulaw_encode
from media.player import dtmf_frames
from media.rfc4733 import build_payload
from media.rtp import parse_header

from .test_engine import A_PEER, B_PEER, SILENT, Phone

CUSTOMER = bytes([0x10]) * 160  # what the customer says (must not reach the destination early)
RINGBACK = bytes([0x20]) * 160  # what the destination plays


def _engine() -> MediaEngine:
    engine = MediaEngine(max_legs=8)
    engine.create_leg("a", 20000, 0.0)
    engine.create_leg("b", 20002, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.set_remote("b", *B_PEER, "PCMU", 101, 0.0)
    return engine


def _digits(engine: MediaEngine) -> list[str]:
    found = []
    while (event := engine.next_event()) is not None:
        if isinstance(event, DigitReceived):
            found.append(event.digit)
    return found


def test_early_media_relays_destination_to_customer_only() -> None:
    engine = _engine()
    engine.enable_dtmf("a", inband=True)
    engine.bridge("a", "b", early_media=True)
    customer, dest = Phone(A_PEER, ssrc=1), Phone(B_PEER, ssrc=2)
    to_b: list[bytes] = []
    to_a: list[bytes] = []
    now = 0.0
    frames = [CUSTOMER] * 3 + [ulaw_encode(f) for f in dtmf_frames("5", 100)] + [CUSTOMER] * 5
    for frame in frames:
        assert engine.receive_packet("a", customer.packet(frame), A_PEER, now) == []
        for pkt, addr in engine.receive_packet("b", dest.packet(RINGBACK), B_PEER, now + 0.005):
            assert addr == A_PEER
            to_a.append(pkt)
        for leg_id, pkt, addr in engine.tick(now + 0.01):
            assert (leg_id, addr) == ("b", B_PEER)
            to_b.append(pkt)
        now += 0.02
    # The customer hears the destination at once, on every packet.
    assert [p[12:] for p in to_a] == [RINGBACK] * len(frames)
    # The destination gets a steady stream of silence, never the customer (nor the tone).
    assert len(to_b) == len(frames)
    assert all(p[12:] == SILENT for p in to_b)
    # The customer's key is still detected (in-band, from audio that went nowhere).
    assert _digits(engine) == ["5"]
    # RFC 4733 events from the customer are kept back as well.
    event = customer.packet(build_payload(7, False, 10, 160), pt=101, marker=True)
    assert engine.receive_packet("a", event, A_PEER, now) == []
    assert _digits(engine) == ["7"]


def test_answer_upgrades_in_place_with_continuous_streams() -> None:
    engine = _engine()
    engine.bridge("a", "b", early_media=True)
    customer, dest = Phone(A_PEER, ssrc=1), Phone(B_PEER, ssrc=2)
    to_b: list[bytes] = []
    to_a: list[bytes] = []
    now = 0.0
    for k in range(30):
        if k == 10:
            engine.bridge("a", "b")  # the destination answered
        out = engine.receive_packet("a", customer.packet(CUSTOMER), A_PEER, now)
        to_b += [p for p, _ in out]
        to_a += [p for p, _ in engine.receive_packet("b", dest.packet(RINGBACK), B_PEER, now)]
        to_b += [p for leg_id, p, _ in engine.tick(now + 0.01) if leg_id == "b"]
        now += 0.02
    hb = [parse_header(p) for p in to_b]
    # Before the answer: silence from the tick; after it: the customer, relayed on arrival.
    assert [p[12:] for p in to_b] == [SILENT] * 10 + [CUSTOMER] * 20
    assert len({h.ssrc for h in hb}) == 1
    assert [(h.sequence - hb[0].sequence) & 0xFFFF for h in hb] == list(range(30))
    assert [(h.timestamp - hb[0].timestamp) & 0xFFFFFFFF for h in hb] == [
        160 * k for k in range(30)
    ]
    assert [k for k, h in enumerate(hb) if h.marker] == [0, 10]  # a new talkspurt on answer
    # The customer's stream was never interrupted: no re-base, no marker after the first.
    ha = [parse_header(p) for p in to_a]
    assert [(h.sequence - ha[0].sequence) & 0xFFFF for h in ha] == list(range(30))
    assert [(h.timestamp - ha[0].timestamp) & 0xFFFFFFFF for h in ha] == [
        160 * k for k in range(30)
    ]
    assert [k for k, h in enumerate(ha) if h.marker] == [0]


def test_prompt_mixed_over_early_media_bridge_leaves_customer_out() -> None:
    engine = _engine()
    engine.bridge("a", "b", early_media=True)
    engine.play("b", [np.full(160 * 20, 1000, dtype=np.int16)], mix=True)
    customer = Phone(A_PEER, ssrc=1)
    loud = ulaw_encode(np.full(160, 8000, dtype=np.int16))
    levels = []
    for k in range(10):
        engine.receive_packet("a", customer.packet(loud), A_PEER, k * 0.02)
        for leg_id, pkt, _ in engine.tick(k * 0.02 + 0.01):
            if leg_id == "b":
                levels.append(int(np.median(ulaw_decode(pkt[12:]))))
    assert levels and all(900 < x < 1100 for x in levels)


def test_unbridge_after_early_media_restores_two_way_default() -> None:
    engine = _engine()
    engine.bridge("a", "b", early_media=True)
    engine.unbridge("a")
    assert engine.leg("a").to_peer and engine.leg("b").to_peer
    engine.bridge("a", "b")
    out = engine.receive_packet("a", Phone(A_PEER, ssrc=1).packet(CUSTOMER), A_PEER, 0.0)
    assert len(out) == 1 and out[0][1] == B_PEER
