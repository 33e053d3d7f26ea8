"""Tone generators: frequencies (FFT peak), cadences, continuity, DTMF synthesis, levels."""

import numpy as np
import pytest

from media.tones import (
    DBM0_PEAK,
    DTMF_FREQS,
    ToneGenerator,
    dbm0_to_peak,
    dtmf_tone,
    tone_cycle,
)


def peaks(x: np.ndarray, n: int, min_sep: float = 20) -> list[float]:
    spec = np.abs(np.fft.rfft(x.astype(float) * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / 8000)
    found: list[float] = []
    for i in np.argsort(spec)[::-1]:
        if all(abs(freqs[i] - f) > min_sep for f in found):
            found.append(float(freqs[i]))
        if len(found) == n:
            break
    return sorted(found)


def on_off_ms(x: np.ndarray) -> list[tuple[bool, int]]:
    """Run lengths (ms) of tone / silence, using a 10 ms energy envelope."""
    env = (x.reshape(-1, 80).astype(float) ** 2).mean(axis=1) > 1000
    runs: list[tuple[bool, int]] = []
    for v in env:
        if runs and runs[-1][0] == v:
            runs[-1] = (bool(v), runs[-1][1] + 10)
        else:
            runs.append((bool(v), 10))
    return runs


@pytest.mark.parametrize(
    ("country", "name", "freqs", "cadence"),
    [
        ("US", "ringback", [440, 480], [(True, 2000), (False, 4000)]),
        ("US", "busy", [480, 620], [(True, 500), (False, 500)]),
        ("US", "congestion", [480, 620], [(True, 250), (False, 250)]),
        ("ITU", "ringback", [425], [(True, 1000), (False, 4000)]),
        ("ITU", "busy", [425], [(True, 500), (False, 500)]),
        ("JP", "busy", [400], [(True, 500), (False, 500)]),
    ],
)
def test_frequencies_and_cadence(
    country: str, name: str, freqs: list[int], cadence: list[tuple[bool, int]]
) -> None:
    cycle = tone_cycle(country, name)
    on_ms = cadence[0][1]
    assert peaks(cycle[: on_ms * 8], len(freqs)) == pytest.approx(freqs, abs=3)
    assert on_off_ms(cycle) == cadence


def test_japanese_ringback_is_400hz_modulated_by_16hz() -> None:
    cycle = tone_cycle("JP", "ringback")
    assert len(cycle) == 3 * 8000
    burst = cycle[:8000]
    # AM at 16 Hz puts the energy at 400 Hz and 400 +- 16 Hz.
    assert peaks(burst, 3, min_sep=8) == pytest.approx([384, 400, 416], abs=2)
    assert np.all(cycle[8000:] == 0)


def test_generator_frames_are_continuous_and_cycle() -> None:
    gen = ToneGenerator("US", "busy")
    frames = np.concatenate([gen.next_frame() for _ in range(100)])  # 2 s = two cycles
    cycle = tone_cycle("US", "busy")
    assert np.array_equal(frames, np.concatenate([cycle, cycle]))
    dial = ToneGenerator("US", "dial")
    x = np.concatenate([dial.next_frame() for _ in range(60)]).astype(float)
    # No click at the 1 s cycle boundary: the sample-to-sample step stays sine-like.
    assert np.abs(np.diff(x)).max() < 2 * np.abs(np.diff(x[:4000])).max()


def test_beep_is_one_shot() -> None:
    gen = ToneGenerator("ITU", "beep")
    frames = [gen.next_frame() for _ in range(12)]
    assert gen.done
    assert peaks(np.concatenate(frames[:10]), 1) == pytest.approx([1000], abs=3)
    assert not frames[10].any() and not frames[11].any()


def test_dtmf_tone_frequencies_level_twist_and_deviation() -> None:
    for digit, (lo, hi) in DTMF_FREQS.items():
        assert peaks(dtmf_tone(digit, 200), 2) == pytest.approx([lo, hi], abs=3)
    x = dtmf_tone("1", 1000, level_dbm0=0.0, twist_db=-6.0, freq_dev=(0.02, -0.03))

    def amplitude(f: float) -> float:
        t = np.arange(len(x)) / 8000
        return float(np.abs(np.sum(x * np.exp(-2j * np.pi * f * t))) * 2 / len(x))

    assert amplitude(697 * 1.02) == pytest.approx(DBM0_PEAK, rel=0.01)
    assert amplitude(1209 * 0.97) == pytest.approx(dbm0_to_peak(-6.0), rel=0.01)
    # +3.17 dBm0 is the mu-law full-scale sine (G.711): peak 32636 on the 16-bit scale.
    assert dbm0_to_peak(3.17) == pytest.approx(32636, abs=1)
