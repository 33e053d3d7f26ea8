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
