"""Fax/modem tone detection: CNG, CED, ANSam by AM and by phase reversals."""

from collections.abc import Hashable

import numpy as np
import pytest

from media.faxdetect import FaxDetector, FaxToneEvent
from media.tones import dbm0_to_peak, dtmf_tone

T = np.arange(int(8000 * 1.2)) / 8000
A = dbm0_to_peak(-12.0)
REVERSALS = np.pi * np.floor(T / 0.45)  # V.25: 180 degree phase reversal every 450 ms
AM = 1 + 0.2 * np.sin(2 * np.pi * 15 * T)  # V.8 ANSam: 15 Hz, 20 %


def run(x: np.ndarray, lead: int = 333) -> list[FaxToneEvent]:
    sig = np.concatenate([np.zeros(lead), x, np.zeros(1600)])
    sig = np.clip(np.rint(sig), -32768, 32767).astype(np.int16)
    sig = np.concatenate([sig, np.zeros((-len(sig)) % 160, np.int16)])
    det = FaxDetector(2)
    slot = np.array([det.add_leg("fax")])
    out: list[FaxToneEvent] = []
    for i in range(0, len(sig), 160):
        out += [e for _, e in det.process(slot, sig[None, i : i + 160], i)]
    return out


def test_cng_after_half_a_second_once_per_burst() -> None:
    burst = np.where(T < 0.5, A * np.sin(2 * np.pi * 1100 * T), 0.0)
    events = run(np.concatenate([burst, burst]))
    assert [e.kind for e in events] == ["cng", "cng"]
    assert events[0].start_ms == pytest.approx(333 / 8, abs=10)
    assert str(events[0]) == "cng"


def test_short_1100hz_blip_is_not_cng() -> None:
    assert run(np.where(T < 0.25, A * np.sin(2 * np.pi * 1100 * T), 0.0)) == []


@pytest.mark.parametrize("df", [0.0, 12.0, -15.0])
def test_plain_2100hz_is_ced(df: float) -> None:
    events = run(A * np.sin(2 * np.pi * (2100 + df) * T))
    assert [(e.kind, e.phase_reversals, e.am) for e in events] == [("ced", False, False)]


@pytest.mark.parametrize("df", [0.0, 12.0, -15.0])
def test_phase_reversals_make_ansam(df: float) -> None:
    events = run(A * np.sin(2 * np.pi * (2100 + df) * T + REVERSALS), lead=517)
    assert [(e.kind, e.phase_reversals) for e in events] == [("ansam", True)]


def test_amplitude_modulation_makes_ansam() -> None:
    events = run(A * AM * np.sin(2 * np.pi * 2100 * T))
    assert [(e.kind, e.phase_reversals, e.am) for e in events] == [("ansam", False, True)]


def test_noisy_phase_reversed_ansam() -> None:
    rng = np.random.default_rng(9)
    x = A * AM * np.sin(2 * np.pi * 2100 * T + REVERSALS) + rng.normal(0, A / 10, len(T))
    assert [e.kind for e in run(x)] == ["ansam"]


def test_dtmf_and_silence_are_not_fax() -> None:
    digits = np.concatenate([dtmf_tone(d, 200) for d in "123#"])
    assert run(digits.astype(float)) == []
    assert run(np.zeros(8000)) == []


def test_batch_of_legs() -> None:
    det = FaxDetector(4)
    legs: list[Hashable] = [det.add_leg(name) for name in ("a", "b")]
    slots = np.array(legs)
    sig = np.clip(A * np.sin(2 * np.pi * 1100 * T[:4800]), -32768, 32767).astype(np.int16)
    frames = np.stack([sig, np.zeros_like(sig)])
    got = []
    for i in range(0, 4800, 160):
        got += det.process(slots, frames[:, i : i + 160], i)
    assert [(leg, ev.kind) for leg, ev in got] == [("a", "cng")]
    det.remove_leg("a")
    assert det.add_leg("c") == 0


def _mixed_legs(n_legs: int, seconds: float) -> np.ndarray:
    """CNG, CED and ANSam bursts at many levels, between noise, clicks and silence."""
    local = np.random.default_rng(7)
    legs = []
    for _ in range(n_legs):
        parts: list[np.ndarray] = []
        while sum(len(p) for p in parts) < seconds * 8000:
            kind = local.integers(0, 5)
            n = int(local.integers(80, 8000))
            t = np.arange(n) / 8000
            level = dbm0_to_peak(float(local.uniform(-50, -10)))
            if kind == 0:
                parts.append(np.zeros(n))
            elif kind == 1:
                parts.append(local.normal(0, level / 3, n))
            elif kind == 2:
                parts.append(level * np.sin(2 * np.pi * 1100 * t))
            elif kind == 3:
                rev = np.pi * np.floor(t / 0.45) if local.random() < 0.5 else 0.0
                am = 1 + 0.2 * np.sin(2 * np.pi * 15 * t) if local.random() < 0.5 else 1.0
                parts.append(level * am * np.sin(2 * np.pi * 2100 * t + rev))
            else:
                click = np.zeros(n)
                click[::160] = local.uniform(-32000, 32000, len(click[::160]))
                parts.append(click)
        legs.append(np.clip(np.concatenate(parts)[: int(seconds * 8000)], -32768, 32767))
    return np.stack(legs).astype(np.int16)


def _run_batch(sig: np.ndarray) -> list[tuple[Hashable, FaxToneEvent]]:
    det = FaxDetector(len(sig))
    slots = np.array([det.add_leg(i) for i in range(len(sig))])
    out: list[tuple[Hashable, FaxToneEvent]] = []
    for t in range(0, sig.shape[1], 160):
        out += det.process(slots, sig[:, t : t + 160], t)
    return out


def test_skipping_idle_legs_changes_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    sig = _mixed_legs(16, 20.0)
    gated = _run_batch(sig)
    assert {e.kind for _, e in gated} == {"cng", "ced", "ansam"}
    import media.faxdetect

    monkeypatch.setattr(media.faxdetect, "SKIP_IDLE", False)
    assert _run_batch(sig) == gated  # every leg analysed exactly on every frame: the same events


def test_screen_with_the_dtmf_gates_quarter_energies_changes_no_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from media.dtmf import DtmfDetector

    sig = _mixed_legs(16, 20.0).astype(np.float32)
    det = FaxDetector(len(sig))
    dtmf = DtmfDetector(len(sig))
    slots = np.array([det.add_leg(i) for i in range(len(sig))])
    dslots = np.array([dtmf.add_leg(i) for i in range(len(sig))])
    shared: list[tuple[Hashable, FaxToneEvent]] = []
    for t in range(0, sig.shape[1], 160):
        frames = np.ascontiguousarray(sig[:, t : t + 160])
        dtmf.process(dslots, frames, t)
        shared += det.process(slots, frames, t, quarters=dtmf.last_quarters)
    import media.faxdetect

    monkeypatch.setattr(media.faxdetect, "SKIP_IDLE", False)
    assert _run_batch(sig.astype(np.int16)) == shared
