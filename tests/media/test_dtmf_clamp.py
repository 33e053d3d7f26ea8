"""The DTMF clamp: in-band tones typed on a leg never reach its bridge peer (sans-IO, fake clock).

The peer's side is checked the way a far-end receiver would: its received audio, in sequence
order, goes through the in-band detector, which must find no digit and no frame with tone
energy, while the near leg still reports every digit.
"""

import numpy as np
import numpy.typing as npt
import pytest

from media.dtmf import DtmfDetector
from media.engine import DigitReceived, MediaEngine
from media.g711 import ulaw_decode, ulaw_encode
from media.player import dtmf_frames
from media.rtp import parse_header
from media.tones import dtmf_tone, sine

from .test_engine import A_PEER, B_PEER, SILENT, Phone

Pcm = npt.NDArray[np.int16]
Float = npt.NDArray[np.float64]
Noise = npt.NDArray[np.int16] | npt.NDArray[np.int32]


def _engine(codec_b: str = "PCMU") -> MediaEngine:
    engine = MediaEngine(max_legs=8)
    engine.create_leg("a", 20000, 0.0)
    engine.create_leg("b", 20002, 0.0)
    engine.set_remote("a", *A_PEER, "PCMU", 101, 0.0)
    engine.set_remote("b", *B_PEER, codec_b, None, 0.0)
    engine.bridge("a", "b")
    engine.enable_dtmf("a", inband=True)
    engine.enable_dtmf("b", inband=True)
    return engine


def _run(
    engine: MediaEngine, frames: list[bytes], tick_phase: float = 0.01
) -> tuple[list[tuple[int, bytes]], list[tuple[int, int]], list[str]]:
    """Send `frames` from phone A every 20 ms (ticks `tick_phase` later); returns what leg b
    sent as (sequence, payload) with the index of the tick it left on, and the digits."""
    phone = Phone(A_PEER, ssrc=0xA)
    sent: list[tuple[int, bytes]] = []
    when: list[tuple[int, int]] = []  # (sequence, tick index)
    now = 0.0
    for k, frame in enumerate([*frames, SILENT, SILENT, SILENT]):
        for pkt, addr in engine.receive_packet("a", phone.packet(frame), A_PEER, now):
            assert addr == B_PEER
            seq = parse_header(pkt).sequence
            sent.append((seq, pkt[12:]))
            when.append((seq, k))
        for leg_id, pkt, addr in engine.tick(now + tick_phase):
            if leg_id == "b":
                assert addr == B_PEER
                seq = parse_header(pkt).sequence
                sent.append((seq, pkt[12:]))
                when.append((seq, k))
        now += 0.02
    digits = []
    while (event := engine.next_event()) is not None:
        if isinstance(event, DigitReceived) and event.leg_id == "a":
            digits.append(event.digit)
    base = sent[0][0] if sent else 0
    sent.sort(key=lambda x: (x[0] - base) & 0xFFFF)
    return sent, when, digits


def _far_end(payloads: list[bytes]) -> tuple[str, int]:
    """What a receiver at the far end detects: (digits, frames with DTMF tone energy)."""
    det = DtmfDetector(1)
    slot = np.array([det.add_leg("x")], dtype=np.intp)
    digits = ""
    energy = 0
    for t, payload in enumerate(payloads):
        frame = ulaw_decode(payload).reshape(1, 160)
        for _, ev in det.process(slot, frame, t * 160):
            if not ev.ended:
                digits += ev.digit
        energy += int(det.last_tone.sum())
    return digits, energy


def _keys(
    digits: str, *, lead: int = 5, offset: int = 0, noise: Noise | None = None
) -> list[bytes]:
    """In-band keys as the customer's phone sends them (each 100 ms on, 60 ms off), starting
    `offset` samples into a frame, over optional background `noise`."""
    return _keys_and_mask(digits, lead=lead, offset=offset, noise=noise)[0]


def _keys_and_mask(
    digits: str, *, lead: int = 5, offset: int = 0, noise: Noise | None = None
) -> tuple[list[bytes], list[bool]]:
    """`_keys`, and for every frame whether it holds any sample of a tone."""
    pcm = np.concatenate(
        [np.zeros(lead * 160 + offset, np.int16)]
        + [f for d in digits for f in dtmf_frames(d, 100)]
        + [np.zeros(5 * 160, np.int16)]
    )
    pcm = pcm[: len(pcm) - len(pcm) % 160]
    tone = [bool(frame.any()) for frame in pcm.reshape(-1, 160)]
    if noise is not None:
        pcm = np.clip(pcm.astype(np.int32) + noise[: len(pcm)], -32768, 32767).astype(np.int16)
    return [ulaw_encode(f) for f in pcm.reshape(-1, 160)], tone


def _speech_like(seconds: float, seed: int = 1) -> Pcm:
    """Voiced-speech-like audio: a gliding 90-220 Hz pulse train through three formants,
    syllable-rate amplitude modulation, and some noise."""
    rng = np.random.default_rng(seed)
    n = int(8000 * seconds)
    t = np.arange(n) / 8000
    f0 = 150 + 60 * np.sin(2 * np.pi * 0.7 * t) + 10 * np.sin(2 * np.pi * 5.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 8000
    voice: Float = np.zeros(n)
    for h in range(1, 25):
        freq = h * f0
        gain = sum(
            np.exp(-(((freq - fc) / bw) ** 2)) for fc, bw in ((500, 150), (1500, 250), (2500, 300))
        )
        voice += gain * np.sin(h * phase) / h**0.5
    envelope = np.clip(np.sin(2 * np.pi * 3.5 * t) * 0.8 + 0.4, 0, 1)
    pcm: Float = 5000 * voice * envelope / np.max(np.abs(voice)) + rng.normal(0, 100, n)
    return np.clip(pcm, -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("digits", ["**", "12#"])
def test_clamp_keeps_inband_keys_from_the_peer_and_reports_them(digits: str) -> None:
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    frames = _keys(digits)
    sent, _, reported = _run(engine, frames)
    assert reported == list(digits)
    assert len(sent) == len(frames) + 2  # every frame left (one still held at the end)
    assert _far_end([p for _, p in sent]) == ("", 0)
    # Only the frames around the tones were silenced.
    silenced = sum(1 for (_, p), f in zip(sent, frames, strict=False) if p != f)
    assert silenced <= len(digits) * (5 + 1 + 2)


def test_without_clamp_the_keys_reach_the_peer() -> None:
    engine = _engine()
    sent, when, reported = _run(engine, _keys("12#"))
    assert reported == list("12#")
    digits, energy = _far_end([p for _, p in sent])
    assert digits == "12#" and energy > 0
    assert all(seq_tick == k for k, (_, seq_tick) in enumerate(when))  # relayed on arrival


@pytest.mark.parametrize("offset", [0, 17, 40, 79, 80, 121, 159])
def test_clamp_covers_tones_starting_anywhere_in_a_frame(offset: int) -> None:
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    noise = np.random.default_rng(offset).normal(0, 200, 8000 * 3).astype(np.int32)
    frames, tone = _keys_and_mask("*#0", offset=offset, noise=noise)
    sent, _, reported = _run(engine, frames)
    assert reported == list("*#0")
    assert _far_end([p for _, p in sent]) == ("", 0)
    # Not even a fragment: every frame holding any sample of a tone arrives as silence.
    payloads = [p for _, p in sent][: len(frames)]
    assert all(payloads[k] == SILENT for k, t in enumerate(tone) if t)
    # ... and only a frame before each tone and the hang-over after it go with them.
    assert sum(p == SILENT for p in payloads) <= sum(tone) + 3 * (1 + 2)


def test_clamp_over_speech_keeps_the_keys_out() -> None:
    speech = _speech_like(3.0).astype(np.int32) // 2
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    frames, tone = _keys_and_mask("**", lead=20, noise=speech)
    sent, _, reported = _run(engine, frames)
    assert reported == ["*", "*"]
    assert _far_end([p for _, p in sent]) == ("", 0)
    payloads = [p for _, p in sent]
    assert all(payloads[k] == SILENT for k, t in enumerate(tone) if t)


@pytest.mark.parametrize("kind", ["1khz", "speech"])
def test_clamp_passes_other_audio_unchanged_one_frame_late(kind: str) -> None:
    pcm = sine((1000.0,), 2000, -10.0) if kind == "1khz" else _speech_like(2.0)
    frames = [ulaw_encode(f) for f in pcm.reshape(-1, 160)]
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    sent, when, reported = _run(engine, frames)
    assert reported == []
    assert [p for _, p in sent][: len(frames)] == frames  # bit-exact, nothing silenced
    # Frame k leaves on the tick after frame k + 1 arrived: one frame (20 ms) + the tick phase.
    assert all(tick == k + 1 for k, (_, tick) in enumerate(when))
    clamp = engine.leg("a").clamp
    assert clamp is not None and clamp.muted == 0


def test_clamp_delay_follows_arrival_jitter_and_keeps_order() -> None:
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    phone = Phone(A_PEER, ssrc=5)
    pcm = sine((1000.0,), 400, -10.0)
    frames = [ulaw_encode(f) for f in pcm.reshape(-1, 160)]
    got = []
    # Two packets in one tick, then none, then one: each is analysed once, in order.
    schedule = [[0], [1, 2], [], [3], [4, 5, 6], [7], [8], [], [9], [10], [11]]
    for t, batch in enumerate(schedule):
        for i in batch:
            assert engine.receive_packet("a", phone.packet(frames[i]), A_PEER, t * 0.02) == []
        got += [p for leg, p, _ in engine.tick(t * 0.02 + 0.01) if leg == "b"]
    seqs = [parse_header(p).sequence for p in got]
    assert [p[12:] for p in got] == frames[:11]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == list(range(11))


def test_clamp_off_drains_the_delay_line_then_relays_on_arrival() -> None:
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    phone = Phone(A_PEER, ssrc=5)
    frames = [bytes([i]) * 160 for i in range(1, 11)]
    got = []
    for k, frame in enumerate(frames):
        if k == 5:
            engine.set_dtmf_clamp("a", False)
        got += [p for p, _ in engine.receive_packet("a", phone.packet(frame), A_PEER, k * 0.02)]
        got += [p for leg, p, _ in engine.tick(k * 0.02 + 0.01) if leg == "b"]
    assert [p[12:] for p in got] == frames  # nothing lost, nothing reordered
    seqs = [parse_header(p).sequence for p in got]
    assert [(s - seqs[0]) & 0xFFFF for s in seqs] == list(range(10))
    assert engine.leg("a").clamp is None and engine.leg("a").delay is None


def test_clamp_with_early_media_analyses_but_relays_nothing() -> None:
    engine = _engine()
    engine.unbridge("a")
    engine.bridge("a", "b", early_media=True)
    engine.set_dtmf_clamp("a", True)
    sent, _, reported = _run(engine, _keys("#"))
    assert reported == ["#"]
    assert all(p == b"\xff" * 160 for _, p in sent)  # the destination hears silence only
    engine.bridge("a", "b")  # answered: the clamp's delay line takes over
    sent, _, reported = _run(engine, _keys("9"))
    assert reported == ["9"]
    assert _far_end([p for _, p in sent]) == ("", 0)


def test_clamp_toward_pcma_peer_silences_in_the_peer_law() -> None:
    engine = _engine(codec_b="PCMA")
    engine.set_dtmf_clamp("a", True)
    sent, _, reported = _run(engine, _keys("5"))
    assert reported == ["5"]
    payloads = [p for _, p in sent]
    assert b"\xd5" * 160 in payloads and b"\xff" * 160 not in payloads


def test_clamped_leg_mixed_under_a_prompt_leaves_tones_out() -> None:
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    engine.play("b", [np.zeros(160 * 60, dtype=np.int16)], mix=True)
    phone = Phone(A_PEER, ssrc=5)
    heard = []
    frames = _keys("3", lead=10)
    for k, frame in enumerate(frames):
        engine.receive_packet("a", phone.packet(frame), A_PEER, k * 0.02)
        heard += [p[12:] for leg, p, _ in engine.tick(k * 0.02 + 0.01) if leg == "b"]
    assert [e.digit for e in iter(engine.next_event, None) if isinstance(e, DigitReceived)] == ["3"]
    assert _far_end(heard)[0] == ""


def test_clear_channel_turns_the_clamp_off() -> None:
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    assert engine.set_clear_channel("a")
    engine.tick(0.0)
    assert engine.leg("a").clamp is None
    engine.set_dtmf_clamp("a", True)  # refused on a clear channel
    assert engine.leg("a").clamp is None


def test_enable_dtmf_off_turns_the_clamp_off() -> None:
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    engine.enable_dtmf("a", inband=False)
    engine.tick(0.0)
    assert engine.leg("a").clamp is None
    assert not engine.leg("a").inband


def test_dtmf_tone_is_flagged_by_the_detector_before_the_digit() -> None:
    det = DtmfDetector(1)
    slot = np.array([det.add_leg(0)], dtype=np.intp)
    tone = dtmf_tone("5", 60, -10.0)
    pcm = np.concatenate([np.zeros(320, np.int16), tone, np.zeros(480, np.int16)])
    flags, onsets = [], []
    for t, frame in enumerate(pcm.reshape(-1, 160)):
        events = det.process(slot, frame.reshape(1, 160), t * 160)
        flags.append(bool(det.last_tone[0]))
        onsets += [t for _, e in events if not e.ended]
    first = flags.index(True)
    assert onsets and first <= onsets[0]


def test_clamp_releases_the_last_frame_when_the_sender_pauses() -> None:
    engine = _engine()
    engine.set_dtmf_clamp("a", True)
    phone = Phone(A_PEER, ssrc=5)
    frames = [bytes([i]) * 160 for i in range(1, 6)]
    got: list[tuple[int, bytes]] = []
    for k in range(12):
        if k < len(frames):
            assert engine.receive_packet("a", phone.packet(frames[k]), A_PEER, k * 0.02) == []
        got += [(k, p[12:]) for leg, p, _ in engine.tick(k * 0.02 + 0.01) if leg == "b"]
    # Silence suppression: the talkspurt's last frame leaves two ticks after it was held.
    assert [p for _, p in got] == frames
    assert got[-1][0] == len(frames) - 1 + 2
