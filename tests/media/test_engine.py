"""MediaEngine, sans-IO: fast path, DSP tick, digits, prompts, recording, fax, timeouts."""

from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from media.engine import (
    RTP_TIMEOUT,
    DigitReceived,
    Event,
    FaxDetected,
    MediaEngine,
    PlayFinished,
    RecordFinished,
    RtpTimeout,
)
from media.g711 import alaw_decode, transcode_ulaw_to_alaw, ulaw_decode, ulaw_encode
from media.player import Tone
from media.rfc4733 import build_payload
from media.rtp import build_packet, parse_header
from media.tones import dtmf_tone

A_PEER = ("192.0.2.1", 4000)
B_PEER = ("192.0.2.2", 5000)
SILENT = b"\xff" * 160


class Phone:
    """A remote RTP endpoint: numbered packets from one address."""

    def __init__(self, addr: tuple[str, int], ssrc: int, seq: int = 0, ts: int = 0) -> None:
        self.addr, self.ssrc, self.seq, self.ts = addr, ssrc, seq, ts

    def packet(
        self, payload: bytes = SILENT, pt: int = 0, marker: bool = False, ts: int | None = None
    ) -> bytes:
        pkt = build_packet(
            pt, marker, self.seq & 0xFFFF, self.ts if ts is None else ts, self.ssrc, payload
        )
        self.seq += 1
        if ts is None:
            self.ts = (self.ts + 160) & 0xFFFFFFFF
        return pkt


def _events(engine: MediaEngine) -> list[Event]:
    out = []
    while (ev := engine.next_event()) is not None:
        out.append(ev)
    return out


def _engine(*, rtp_timeout: float = RTP_TIMEOUT) -> MediaEngine:
    return MediaEngine(max_legs=16, rtp_timeout=rtp_timeout)


def _bridged(codec_b: str = "PCMU", dtmf_b: int | None = 96) -> MediaEngine:
    engine = _engine()
    engine.create_leg("a", 20000, 0.0)
    engine.create_leg("b", 20002, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.set_remote("b", *B_PEER, codec_b, dtmf_b, 0.0)
    engine.bridge("a", "b")
    return engine


def _tone_frames(digit: str, ms: int = 100, gap_ms: int = 100) -> list[bytes]:
    pcm = np.concatenate([dtmf_tone(digit, ms, -6.0), np.zeros(gap_ms * 8, dtype=np.int16)])
    return [ulaw_encode(f) for f in pcm.reshape(-1, 160)]


def test_bridge_relays_at_once_with_rewritten_header() -> None:
    engine = _bridged()
    phone = Phone(A_PEER, ssrc=0xAAAA, seq=65534, ts=2**32 - 160)
    b_ssrc = engine.leg("b").session.ssrc
    outs = [
        engine.receive_packet("a", phone.packet(bytes([i]) * 160), A_PEER, i * 0.02)
        for i in range(4)
    ]
    assert all(len(o) == 1 and o[0][1] == B_PEER for o in outs)
    hs = [parse_header(o[0][0]) for o in outs]
    assert all(h.ssrc == b_ssrc and h.payload_type == 0 for h in hs)
    assert [(h.sequence - hs[0].sequence) & 0xFFFF for h in hs] == [0, 1, 2, 3]
    assert [(h.timestamp - hs[0].timestamp) & 0xFFFFFFFF for h in hs] == [0, 160, 320, 480]
    assert outs[2][0][0][12:] == b"\x02" * 160
    # The reverse direction works too, and nothing needs the tick.
    back = Phone(B_PEER, ssrc=0xBBBB)
    assert engine.receive_packet("b", back.packet(), B_PEER, 0.1)[0][1] == A_PEER
    assert engine.tick(0.1) == []


def test_bleed_packets_from_other_sources_are_dropped_after_latching() -> None:
    engine = _bridged()
    phone = Phone(A_PEER, ssrc=1)
    assert engine.receive_packet("a", phone.packet(), A_PEER, 0.0)
    attacker = ("198.51.100.66", 4000)
    assert engine.receive_packet("a", phone.packet(), attacker, 0.02) == []
    assert engine.receive_packet("a", phone.packet(), ("192.0.2.1", 4002), 0.04) == []
    assert engine.leg("a").session.stats().rejected_source == 2


def test_pcmu_to_pcma_bridge_transcodes_by_table() -> None:
    engine = _bridged(codec_b="PCMA")
    phone = Phone(A_PEER, ssrc=1)
    pcm = (8000 * np.sin(np.arange(160) * 0.2)).astype(np.int16)
    ulaw = ulaw_encode(pcm)
    ((pkt, _),) = engine.receive_packet("a", phone.packet(ulaw), A_PEER, 0.0)
    assert parse_header(pkt).payload_type == 8
    assert pkt[12:] == transcode_ulaw_to_alaw(ulaw)
    assert np.max(np.abs(alaw_decode(pkt[12:]).astype(int) - ulaw_decode(ulaw))) < 300


def test_telephone_event_is_reported_once_and_relayed_with_mapped_pt() -> None:
    engine = _bridged(dtmf_b=96)
    phone = Phone(A_PEER, ssrc=1)
    engine.receive_packet("a", phone.packet(), A_PEER, 0.0)
    ts = phone.ts
    sent = []
    for k, end in [(1, False), (2, False), (5, True), (5, True), (5, True)]:
        payload = build_payload(5, end, 10, k * 160)
        sent += engine.receive_packet(
            "a", phone.packet(payload, pt=101, marker=k == 1, ts=ts), A_PEER, 0.02 * k
        )
    assert len(sent) == 5
    assert {parse_header(p).payload_type for p, _ in sent} == {96}
    assert parse_header(sent[0][0]).marker
    digits = [e for e in _events(engine) if isinstance(e, DigitReceived)]
    assert digits == [DigitReceived("a", "5", "rfc4733", digits[0].start_ms)]


def test_telephone_event_dropped_toward_leg_without_telephone_event() -> None:
    engine = _bridged(dtmf_b=None)
    phone = Phone(A_PEER, ssrc=1)
    pkt = phone.packet(build_payload(1, False, 10, 160), pt=101, marker=True)
    assert engine.receive_packet("a", pkt, A_PEER, 0.0) == []
    assert [e.digit for e in _events(engine) if isinstance(e, DigitReceived)] == ["1"]


def test_inband_dtmf_on_bridged_leg_keeps_fast_path_and_is_detected_once() -> None:
    engine = _bridged()
    engine.enable_dtmf("a", inband=True)
    phone = Phone(A_PEER, ssrc=7)
    now = 0.0
    relayed = 0
    frames = [SILENT] * 5 + _tone_frames("7") + _tone_frames("#")
    for frame in frames:
        out = engine.receive_packet("a", phone.packet(frame), A_PEER, now)
        relayed += len(out)
        assert out and out[0][0][12:] == frame  # relayed unchanged, on arrival
        engine.tick(now)
        now += 0.02
    for _ in range(10):
        engine.tick(now)
        now += 0.02
    assert relayed == len(frames)
    got = [(e.digit, e.source) for e in _events(engine) if isinstance(e, DigitReceived)]
    assert got == [("7", "inband"), ("#", "inband")]


def test_prompt_on_unbridged_leg_plays_then_finishes_and_barge_in(tmp_path: Path) -> None:
    engine = _engine()
    engine.create_leg("a", 20000, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.play("a", [Tone("beep")])
    packets = []
    for k in range(15):
        packets += engine.tick(k * 0.02)
    # The beep (10 frames), then silence: an unbridged leg's stream goes on without a gap.
    assert len(packets) == 15
    hs = [parse_header(p) for _, p, _ in packets]
    assert [(h.sequence - hs[0].sequence) & 0xFFFF for h in hs] == list(range(15))
    assert [(h.timestamp - hs[0].timestamp) & 0xFFFFFFFF for h in hs] == [
        160 * k for k in range(15)
    ]
    assert len({h.ssrc for h in hs}) == 1
    assert max(np.abs(ulaw_decode(packets[3][1][12:]))) > 3000
    assert all(max(np.abs(ulaw_decode(p[12:]))) < 10 for _, p, _ in packets[10:])
    assert _events(engine) == [PlayFinished("a", False)]
    engine.play("a", [Tone("ringback", "US")], barge_in=True)
    engine.tick(0.4)
    phone = Phone(A_PEER, ssrc=9)
    engine.receive_packet(
        "a", phone.packet(build_payload(3, False, 10, 160), pt=101, marker=True), A_PEER, 0.41
    )
    digit, finished = _events(engine)
    assert isinstance(digit, DigitReceived) and (digit.digit, digit.source) == ("3", "rfc4733")
    assert finished == PlayFinished("a", True)
    [(leg_id, silence, dest)] = engine.tick(0.44)  # barged in: silence, not the ringback
    assert (leg_id, dest) == ("a", A_PEER) and max(np.abs(ulaw_decode(silence[12:]))) < 10


def test_prompt_over_bridge_mixes_peer_audio_and_suspends_relay() -> None:
    engine = _bridged()
    phone = Phone(A_PEER, ssrc=1)
    level = (3000 * np.ones(160)).astype(np.int16)
    engine.play("b", [np.full(160 * 10, 2000, dtype=np.int16)], mix=True)
    engine.tick(0.0)
    outs = []
    for k in range(8):
        assert engine.receive_packet("a", phone.packet(ulaw_encode(level)), A_PEER, k * 0.02) == []
        outs += engine.tick(k * 0.02 + 0.01)
    mixed = [int(np.median(ulaw_decode(p[12:]))) for _, p, _ in outs]
    # Prompt alone until the jitter buffer primes, then prompt + peer voice.
    assert 1900 < mixed[0] < 2100
    assert 4800 < mixed[-1] < 5200
    while not any(isinstance(e, PlayFinished) for e in _events(engine)):
        engine.tick(1.0)
    engine.tick(1.0)
    assert len(engine.receive_packet("a", phone.packet(), A_PEER, 1.0)) == 1


def test_record_stops_on_hash_and_reports_duration(tmp_path: Path) -> None:
    engine = _engine()
    engine.create_leg("a", 20000, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.enable_dtmf("a", inband=True)
    path = tmp_path / "vm.wav"
    engine.record("a", str(path), max_s=30, stop_on="#")
    phone = Phone(A_PEER, ssrc=3)
    voice = ulaw_encode((4000 * np.sin(np.arange(160) * 0.05)).astype(np.int16))
    frames = [voice] * 50 + _tone_frames("#")
    now = 0.0
    for frame in frames + [SILENT] * 5:
        engine.receive_packet("a", phone.packet(frame), A_PEER, now)
        engine.tick(now)
        now += 0.02
    recs = [e for e in _events(engine) if isinstance(e, RecordFinished)]
    assert len(recs) == 1 and recs[0].reason == "digit" and recs[0].path == str(path)
    assert 0.9 < recs[0].duration < 1.1
    assert path.stat().st_size > 44


class FakeFax:
    """Fires on the first frame whose first sample is 1234."""

    def __init__(self) -> None:
        self.slots: dict[Hashable, int] = {}

    def add_leg(self, leg_id: Hashable) -> int:
        self.slots[leg_id] = len(self.slots)
        return self.slots[leg_id]

    def remove_leg(self, leg_id: Hashable) -> None:
        del self.slots[leg_id]

    def process(
        self, slots: npt.NDArray[np.intp], frames: npt.NDArray[np.int16], sample_time: int
    ) -> list[tuple[Hashable, Any]]:
        legs = {v: k for k, v in self.slots.items()}
        return [(legs[int(s)], "ced") for s, f in zip(slots, frames, strict=True) if f[0] > 1000]


@pytest.mark.parametrize(("codec_b", "clear"), [("PCMU", True), ("PCMA", False)])
def test_fax_tone_switches_bridge_to_clear_channel(codec_b: str, clear: bool) -> None:
    engine = MediaEngine(max_legs=8, fax_detector=FakeFax())
    engine.create_leg("a", 20000, 0.0)
    engine.create_leg("b", 20002, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.set_remote("b", *B_PEER, codec_b, None, 0.0)
    engine.bridge("a", "b")
    engine.enable_dtmf("a", inband=True, fax=True)
    engine.enable_dtmf("b", inband=True, fax=True)
    engine.play("b", [Tone("ringback")])
    phone = Phone(A_PEER, ssrc=1)
    tone = ulaw_encode(np.full(160, 2000, dtype=np.int16))
    for k in range(6):
        engine.receive_packet("a", phone.packet(tone), A_PEER, k * 0.02)
        engine.tick(k * 0.02)
    events = _events(engine)
    assert FaxDetected("a", "ced", clear) in events
    assert PlayFinished("b", True) in events
    a, b = engine.leg("a"), engine.leg("b")
    assert not (a.inband or b.inband or a.fax_detect or b.fax_detect)
    engine.tick(0.2)
    assert a.jb is None and b.jb is None
    ((pkt, _),) = engine.receive_packet("a", phone.packet(tone), A_PEER, 0.2)
    assert (pkt[12:] == tone) is clear
    bridge = engine.leg("a").bridge
    assert bridge is not None
    assert bridge.clear_channel is clear
    engine.enable_dtmf("a", inband=True)
    assert not a.inband


def test_send_dtmf_rfc4733_packet_train() -> None:
    engine = _bridged(dtmf_b=96)
    engine.send_dtmf("b", "9", duration_ms=60, mode="rfc4733")
    pkts = []
    for k in range(8):
        pkts += [p for _, p, _ in engine.tick(k * 0.02)]
    hs = [parse_header(p) for p in pkts]
    assert len(pkts) == 3 + 3
    assert all(h.payload_type == 96 for h in hs)
    assert hs[0].marker and not any(h.marker for h in hs[1:])
    assert len({h.timestamp for h in hs}) == 1
    assert [p[13] & 0x80 for p in pkts] == [0, 0, 0, 0x80, 0x80, 0x80]
    assert [int.from_bytes(p[14:16], "big") for p in pkts] == [160, 320, 480, 480, 480, 480]


def test_send_dtmf_inband_is_heard_by_a_detector() -> None:
    engine = _bridged(dtmf_b=None)
    listener = _engine()
    listener.create_leg("x", 30000, 0.0)
    listener.set_remote("x", "192.0.2.50", 20002, "PCMU", None, 0.0)
    listener.enable_dtmf("x", inband=True)
    engine.send_dtmf("b", "4", duration_ms=100, mode="rfc4733")  # falls back to in-band
    for k in range(20):
        for _, pkt, _ in engine.tick(k * 0.02):
            listener.receive_packet("x", pkt, ("192.0.2.50", 20002), k * 0.02)
        listener.tick(k * 0.02)
    assert [e.digit for e in _events(listener) if isinstance(e, DigitReceived)] == ["4"]


def test_conference_is_mix_minus() -> None:
    engine = _engine()
    phones = {}
    for i, name in enumerate("abc"):
        addr = (f"192.0.2.{10 + i}", 4000)
        engine.create_leg(name, 20000 + 2 * i, 0.0)
        engine.set_remote(name, *addr, "PCMU", None, 0.0)
        engine.join_conference("op", name)
        phones[name] = (Phone(addr, ssrc=i + 1), addr)
    levels = {"a": 1000, "b": 2000, "c": 4000}
    heard: dict[str, int] = {}
    for k in range(6):
        for name, (phone, addr) in phones.items():
            frame = ulaw_encode(np.full(160, levels[name], dtype=np.int16))
            engine.receive_packet(name, phone.packet(frame), addr, k * 0.02)
        for leg_id, pkt, _ in engine.tick(k * 0.02 + 0.01):
            heard[leg_id] = int(np.median(ulaw_decode(pkt[12:])))
    assert abs(heard["a"] - 6000) < 200
    assert abs(heard["b"] - 5000) < 200
    assert abs(heard["c"] - 3000) < 100
    engine.leave_conference("a")
    engine.bridge("b", "c")
    assert engine.leg("b").conference is None


def test_rtp_timeout_once_then_rearmed_by_traffic() -> None:
    engine = _engine(rtp_timeout=2.0)
    engine.create_leg("a", 20000, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", None, 0.0)
    now = 0.0
    for _ in range(250):
        now += 0.02
        engine.tick(now)
    assert [type(e) for e in _events(engine)] == [RtpTimeout]
    engine.receive_packet("a", Phone(A_PEER, 1).packet(), A_PEER, now)
    assert not engine.leg("a").timed_out


def test_close_leg_writes_recording_and_unbridges(tmp_path: Path) -> None:
    engine = _bridged()
    engine.record("a", str(tmp_path / "x.wav"))
    engine.close_leg("a")
    (ev,) = _events(engine)
    assert isinstance(ev, RecordFinished) and ev.reason == "stopped"
    assert engine.leg("b").peer is None
    assert engine.receive_packet("a", b"x", A_PEER, 0.0) == []


def test_rtcp_reports_go_to_port_plus_one() -> None:
    engine = _bridged()
    phone = Phone(A_PEER, ssrc=1)
    for k in range(5):
        engine.receive_packet("a", phone.packet(), A_PEER, k * 0.02)
    reports = dict((leg, (pkt, addr)) for leg, pkt, addr in engine.rtcp_reports(1.0, 1e9))
    assert reports["a"][1] == ("192.0.2.1", 4001)
    assert reports["b"][0][1] == 200  # SR: leg b has sent relayed packets
    engine.receive_rtcp("a", reports["b"][0], ("198.51.100.1", 4001), 1.1)
    assert engine.leg("a").session.rejected_source == 1


def test_real_fax_detector_on_ced_tone_switches_to_clear_channel() -> None:
    engine = _bridged(dtmf_b=None)
    engine.enable_dtmf("a", inband=True, fax=True)
    phone = Phone(A_PEER, ssrc=1)
    t = np.arange(160 * 200) / 8000
    ced = (8000 * np.sin(2 * np.pi * 2100 * t)).astype(np.int16).reshape(-1, 160)
    now = 0.0
    for frame in ced:
        engine.receive_packet("a", phone.packet(ulaw_encode(frame)), A_PEER, now)
        engine.tick(now)
        now += 0.02
        if engine.leg("a").clear_channel:
            break
    faxes = [e for e in _events(engine) if isinstance(e, FaxDetected)]
    assert [(f.leg_id, f.kind, f.clear_channel) for f in faxes] == [("a", "ced", True)]


class _FrameLog:
    """A BatchDetector that records the first sample of every frame it is given, per leg."""

    def __init__(self) -> None:
        self.slots: dict[Hashable, int] = {}
        self.seen: dict[int, list[int]] = {}

    def add_leg(self, leg_id: Hashable) -> int:
        self.slots[leg_id] = slot = len(self.slots)
        self.seen[slot] = []
        return slot

    def remove_leg(self, leg_id: Hashable) -> None:
        del self.slots[leg_id]

    def process(
        self, slots: npt.NDArray[np.intp], frames: npt.NDArray[np.int16], sample_time: int
    ) -> list[tuple[Hashable, Any]]:
        for slot, frame in zip(slots, frames, strict=True):
            self.seen[int(slot)].append(int(frame[0]))
        return []


def test_detection_only_leg_uses_frame_ring_which_survives_rebuilds(tmp_path: Path) -> None:
    log = _FrameLog()
    engine = MediaEngine(max_legs=16, dtmf_detector=log)
    engine.create_leg("a", 20000, 0.0)
    engine.create_leg("b", 20002, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", None, 0.0)
    engine.set_remote("b", *B_PEER, "PCMU", None, 0.0)
    engine.bridge("a", "b")
    engine.enable_dtmf("a", inband=True, fax=False)
    engine.tick(0.0)
    leg = engine.leg("a")
    assert leg.jb is None and leg.ring is not None  # analysed only: no jitter buffer
    phone = Phone(A_PEER, ssrc=9, seq=65533)  # crosses the sequence wrap
    codes = list(range(0x20, 0x40))
    now = 0.02
    for i, code in enumerate(codes):
        out = engine.receive_packet("a", phone.packet(bytes([code]) * 160), A_PEER, now)
        assert len(out) == 1  # relayed on arrival
        if i % 5 == 2:
            # Any command rebuilds the batches; frames queued in the ring must survive it.
            engine.create_leg(f"x{i}", 21000 + 2 * i, now)
            engine.enable_dtmf(f"x{i}", inband=True, fax=False)
        if i == 20:
            engine.record("a", str(tmp_path / "a.wav"))  # now heard: moves to a jitter buffer
        engine.tick(now)
        now += 0.02
    seen = log.seen[log.slots["a"]]
    expected = [int(v) for v in ulaw_decode(bytes(codes))]
    # The first tick had no packet; then one frame behind the newest while in the ring (no
    # frame lost across the rebuilds); the jitter buffer then primes again.
    assert seen[:21] == [0, 0, *expected[:19]]
    assert engine.leg("a").jb is not None and engine.leg("a").ring is None
    assert all(x == 0 or x in expected for x in seen)
