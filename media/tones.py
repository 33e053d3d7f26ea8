"""Call-progress tones, beeps and DTMF synthesis as int16 PCM at 8 kHz.

Theory of operation: every tone is a cadence (a list of on/off segments) repeated forever, or
played once for a beep. One full cycle of each (country, tone, level) is rendered once with numpy
and cached; a :class:`ToneGenerator` then hands out successive 160-sample frames by slicing that
cycle at its own position, so a tone stays continuous across frames and costs no per-sample work.
Every burst starts at phase zero, so a cycle boundary never clicks.

Levels are in dBm0 per frequency component. The reference is G.711's: the mu-law coder's
theoretical maximum load (a full-scale sine, peak 8159 on the 14-bit scale = 32636 on our 16-bit
scale) is +3.17 dBm0 (ITU-T G.711 section 4), so a 0 dBm0 sine has a peak amplitude of
``DBM0_PEAK = 32636 * 10**(-3.17/20)``, about 22657, RMS about 16021. A-law's load capacity is
+3.14 dBm0 at 4096 * 8 = 32768, i.e. 22822 for 0 dBm0: 0.03 dB apart, so one constant serves
both. Tests, detectors and the DTMF benchmark all use ``DBM0_PEAK``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "DBM0_PEAK",
    "DTMF_FREQS",
    "DTMF_HIGH",
    "DTMF_LOW",
    "FRAME",
    "RATE",
    "TONE_PLANS",
    "ToneGenerator",
    "TonePlan",
    "ToneSegment",
    "dbm0_to_peak",
    "dtmf_tone",
    "sine",
    "tone_cycle",
]

RATE = 8000
FRAME = 160
DBM0_PEAK = 32636.0 * 10.0 ** (-3.17 / 20.0)

# ITU-T Q.23 section 2: rows (low group) and columns (high group) of the keypad.
DTMF_LOW = (697.0, 770.0, 852.0, 941.0)
DTMF_HIGH = (1209.0, 1336.0, 1477.0, 1633.0)
_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQS: dict[str, tuple[float, float]] = {
    key: (DTMF_LOW[row], DTMF_HIGH[col])
    for row, keys in enumerate(_KEYPAD)
    for col, key in enumerate(keys)
}


def dbm0_to_peak(level_dbm0: float) -> float:
    """Peak amplitude (16-bit scale) of a sine at ``level_dbm0``."""
    return float(DBM0_PEAK * 10.0 ** (level_dbm0 / 20.0))


def _to_int16(x: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def sine(freqs: tuple[float, ...], ms: float, level_dbm0: float) -> NDArray[np.int16]:
    """Sum of sines, each at ``level_dbm0``, ``ms`` milliseconds long, starting at phase zero."""
    n = round(ms * RATE / 1000)
    t = np.arange(n) / RATE
    out = np.zeros(n)
    for f in freqs:
        out += dbm0_to_peak(level_dbm0) * np.sin(2 * np.pi * f * t)
    return _to_int16(out)


def dtmf_tone(
    digit: str,
    ms: float,
    level_dbm0: float = -4.0,
    twist_db: float = 0.0,
    freq_dev: float | tuple[float, float] = 0.0,
    phase: float = 0.0,
) -> NDArray[np.int16]:
    """Synthesize one DTMF digit.

    ``level_dbm0`` is the level of the low-group tone; the high-group tone is at
    ``level_dbm0 + twist_db`` (negative ``twist_db`` = "normal" twist, high tone weaker;
    positive = "reverse" twist). ``freq_dev`` is a relative frequency error applied to both
    tones, or a ``(low, high)`` pair (0.015 = +1.5 %). ``phase`` offsets both tones (radians).
    The sum is clipped to int16, as a real coder would.
    """
    low, high = DTMF_FREQS[digit.upper()]
    dev_low, dev_high = freq_dev if isinstance(freq_dev, tuple) else (freq_dev, freq_dev)
    n = round(ms * RATE / 1000)
    t = np.arange(n) / RATE
    out = dbm0_to_peak(level_dbm0) * np.sin(2 * np.pi * low * (1 + dev_low) * t + phase)
    out += dbm0_to_peak(level_dbm0 + twist_db) * np.sin(
        2 * np.pi * high * (1 + dev_high) * t + phase
    )
    return _to_int16(out)


@dataclass(frozen=True, slots=True)
class ToneSegment:
    """One burst of a cadence: ``freqs`` for ``ms`` milliseconds (no freqs = silence)."""

    freqs: tuple[float, ...]
    ms: int
    am_hz: float = 0.0  # amplitude modulation (Japanese ringback: 400 Hz by 16 Hz)


@dataclass(frozen=True, slots=True)
class TonePlan:
    """A cadence; ``repeat=False`` plays it once (beeps) and then yields silence."""

    segments: tuple[ToneSegment, ...]
    repeat: bool = True


def _plan(freqs: tuple[float, ...], *cadence_ms: int, am_hz: float = 0.0) -> TonePlan:
    segs = []
    for i, ms in enumerate(cadence_ms):
        segs.append(ToneSegment(freqs if i % 2 == 0 else (), ms, am_hz if i % 2 == 0 else 0.0))
    return TonePlan(tuple(segs))


# Continuous tones are rendered as one-second cycles: integer-Hz tones then wrap seamlessly.
TONE_PLANS: dict[str, dict[str, TonePlan]] = {
    "ITU": {  # ITU-T E.180 recommended values
        "dial": _plan((425.0,), 1000),
        "ringback": _plan((425.0,), 1000, 4000),
        "busy": _plan((425.0,), 500, 500),
        "congestion": _plan((425.0,), 250, 250),
    },
    "US": {  # North American precise tones
        "dial": _plan((350.0, 440.0), 1000),
        "ringback": _plan((440.0, 480.0), 2000, 4000),
        "busy": _plan((480.0, 620.0), 500, 500),
        "congestion": _plan((480.0, 620.0), 250, 250),
    },
    "JP": {  # NTT: 400 Hz; ringback is 400 Hz amplitude-modulated by 16 Hz
        "dial": _plan((400.0,), 1000),
        "ringback": _plan((400.0,), 1000, 2000, am_hz=16.0),
        "busy": _plan((400.0,), 500, 500),
        "congestion": _plan((400.0,), 500, 500),
    },
}
BEEP = TonePlan((ToneSegment((1000.0,), 200),), repeat=False)


def _render(plan: TonePlan, level_dbm0: float) -> NDArray[np.int16]:
    parts = []
    for seg in plan.segments:
        n = seg.ms * RATE // 1000
        t = np.arange(n) / RATE
        burst = np.zeros(n)
        for f in seg.freqs:
            burst += dbm0_to_peak(level_dbm0) * np.sin(2 * np.pi * f * t)
        if seg.am_hz:
            # Full-depth AM keeps the mean power of the burst at level_dbm0 * 0.75.
            burst *= 0.5 * (1.0 - np.cos(2 * np.pi * seg.am_hz * t))
        parts.append(burst)
    return _to_int16(np.concatenate(parts))


@functools.lru_cache(maxsize=64)
def tone_cycle(country: str, name: str, level_dbm0: float = -13.0) -> NDArray[np.int16]:
    """One full cadence cycle of a named tone, cached (read-only array).

    ``country`` is "ITU", "US" or "JP" (unknown countries fall back to "ITU"); ``name`` is
    "dial", "ringback", "busy", "congestion" or "beep" (1000 Hz, 200 ms, any country).
    """
    plan = BEEP if name == "beep" else TONE_PLANS.get(country.upper(), TONE_PLANS["ITU"])[name]
    cycle = _render(plan, level_dbm0)
    cycle.setflags(write=False)
    return cycle


class ToneGenerator:
    """Hands out successive 160-sample frames of a tone, continuous across frames."""

    def __init__(self, country: str, name: str, level_dbm0: float = -13.0) -> None:
        self._cycle = tone_cycle(country, name, level_dbm0)
        self._repeat = name != "beep"
        self._pos = 0

    @property
    def done(self) -> bool:
        """True once a one-shot tone (beep) has been fully played."""
        return not self._repeat and self._pos >= len(self._cycle)

    def next_frame(self, n: int = FRAME) -> NDArray[np.int16]:
        """The next ``n`` samples (silence after a one-shot tone has finished)."""
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        size = len(self._cycle)
        while filled < n:
            if self._pos >= size:
                if not self._repeat:
                    break
                self._pos = 0
            take = min(n - filled, size - self._pos)
            out[filled : filled + take] = self._cycle[self._pos : self._pos + take]
            filled += take
            self._pos += take
        return out
