"""In-band DTMF detection for many legs at once (ITU-T Q.23 / Q.24, ETSI ES 201 235-3).

Theory of operation. Each leg's audio is cut into 20 ms analysis windows (160 samples) every
10 ms (two per frame; the last 80 samples of the previous frame are kept per leg). Windows are
classified with the DFT at 46 probe frequencies, by matrix products over the whole batch: each
of the 8 DTMF frequencies f and f * (1 +- 2 %), f * (1 +- 4 %), 3 f for the low group, and the
dial tone's 350 and 440 Hz. The dial tone is taken out first: its least-squares fit over the
window (two sines, four amplitudes) is subtracted from the probes, from the window's power and,
for the windows that reach stage 2, from the samples; so every test below sees the window
without dial tone, and digits are found under a dial tone 13 dB above them (spandsp's test:
digits at -15 dBm0 per tone, 350 + 440 Hz up to -2 dBm0 per tone, where their sum starts to
clip; before, up to -19). A window holds a valid digit when:

- the strongest tone of each group (power = best of the f and +-2 % probes) is above
  ``MIN_LEVEL_DBM0`` and beats the other tones of its group by ``GROUP_MARGIN_DB``;
- the twist (high minus low) is within ``-NORMAL_TWIST_DB .. +REVERSE_TWIST_DB``;
- the two tones carry at least ``ENERGY_FRACTION`` of the window's power (talk-off guard);
- each tone is nearer its nominal frequency than the +-4 % probes, which puts the acceptance
  edge at about +-2 %: inside Q.24's "accept +-1.5 %, reject +-3.5 %", and narrow enough that
  a fundamental and its 2nd harmonic cannot pass as a low and a high tone (2 f is >= 4.2 %
  away from every high tone);
- the low tone's 3rd harmonic is ``HARMONIC_DB`` below it (voiced sounds have one);
- spectral purity: in a Hann-windowed DFT (50 Hz bins) nothing outside 140 Hz of the two
  tones (and above 100 Hz) comes within ``PURITY_DB`` of the weaker one. A voiced sound whose
  harmonics land near a low and a high tone (a 174 Hz voice: 4th = 697, 7th = 1220 Hz) has
  its other harmonics beside them; the talk-off corpus (scripts/talkoff_corpus.py) found one;
- the signal fills the window: the weakest 5 ms quarter holds at least ``FILL_RATIO`` of the
  strongest. This is what rejects short tones (a window only partly covered by a tone still
  looks like a pure tone) and makes gaps visible. Where the dial tone is at least
  ``DIAL_SHARE`` of the window's power the test is made on the window without it (350 and
  440 Hz beat at 90 Hz: their own quarters can differ five-fold).
- to start a digit, both tone powers must also be steady (within ``STEADY_DB``) from one
  window to the next, which rejects two sounds cross-fading through the windows (music).

Per leg a small state machine, vectorised over legs: a digit starts after ``START_WINDOWS``
consecutive valid windows of the same digit (reported at once as an onset) and ends after
``END_MISSES`` consecutive windows without it (a 10 ms interruption spoils at most three
windows, so Q.24's bridging of <= 10 ms breaks comes for free) or as soon as another digit has
been confirmed. The end event carries the duration from the first to the last valid window.
Sans-IO: time is the leg's sample count passed to :meth:`DtmfDetector.process`.

Cost. Most windows hold silence, noise or clicks, so every window first goes through a gate
computed for the whole batch from the 5 ms quarter energies (one float32 pass over the new
frame; the previous frame's last two quarters are kept per leg): a window whose power is below
a quarter of ``MIN_LEVEL_DBM0`` (a DFT probe sees at most twice the window's power, so no tone
can pass) or that clearly fails the fill test is invalid without any DFT. The gate's fill test
is the strict one except on a leg under dial tone (a window on a frame showed it, each of its
tones holding half of ``DIAL_SEEN`` of a full window's power; it lasts ``DIAL_HOLD`` samples,
checked every ``SWEEP_CALLS`` calls), where the raw quarters need only ``FILL_FLOOR`` (the
beat dips to 0.18), so speech legs keep the strict gate and its cost. Only the windows left go through the probe product, with exact (float64)
energies for the thresholds, in two stages: the 24 tone probes and the dial tone's 2 first
(level, twist, margins, energy fraction, raw fill), then the dial tone's removal from the
samples, the fill without it, the +-4 % and harmonic probes and the purity DFT for the few
windows that pass. The window straddling two
frames is analysed only next to a valid window on the frame or on a leg already in a digit or
candidate (a digit needs two consecutive valid windows, one of which is always a whole frame).
The per-leg state machine runs only for legs that are in a digit, have a candidate, or have a
valid window: an idle leg with an invalid window keeps its state. Every shortcut gives exactly
the events of the full analysis (tests/media/test_dtmf.py checks each). Speech costs about
0.5 us per leg and frame on this machine (5,000 instructions, 6 % more than without the dial
tone and purity work), noise below the gate 0.2 (2,300 instructions, as before).

``last_tone`` after each call says which frames held a valid tone pair in either window: the
media engine's DTMF clamp silences those frames in what the bridge peer hears.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable

import numpy as np
from numpy.typing import NDArray

from media.digits import DIGITS, DigitEvent
from media.tones import DBM0_PEAK, DTMF_HIGH, DTMF_LOW, FRAME, RATE

__all__ = ["DtmfDetector", "probe_matrix"]

log = logging.getLogger(__name__)

WINDOW = 160  # 20 ms: 50 Hz resolution, enough to split 697/770 Hz and to judge +-2 %
HOP = 80  # 10 ms
QUARTER = WINDOW // 4
# Analyse the window straddling two frames only where it can change an event (see process()).
LAZY_STRADDLE = True

MIN_LEVEL_DBM0 = -38.0  # per tone; Q.24 asks for operation down to about -32 dBm0 per tone
GROUP_MARGIN_DB = 8.0
NORMAL_TWIST_DB = 10.0  # high tone weaker than low: Q.24 asks for 8 dB
REVERSE_TWIST_DB = 7.0  # high tone stronger than low: Q.24 asks for 4 dB
ENERGY_FRACTION = 0.65
FILL_RATIO = 0.35
START_WINDOWS = 2
STEADY_DB = 3.0
HARMONIC_DB = 15.0
PURITY_DB = 10.0
DIAL_TONE = (350.0, 440.0)  # precise dial tone (ITU-T E.180 / North America), removed first
DIAL_SHARE = 0.1  # above this share of the window's power, judge the fill without dial tone
FILL_FLOOR = 0.15  # raw fill below this fails even under dial tone (a beat dips to 0.18)
DIAL_SEEN = 0.6  # share of a window's power in dial tone (half in each) that shows it
DIAL_HOLD = RATE  # samples a leg counts as under dial tone after a window that showed it
SWEEP_CALLS = 10  # process() calls between the checks for legs whose dial tone has gone
END_MISSES = 5  # 40 ms gaps (ETSI: recognised) spoil >= 5 windows; 20 ms gaps spoil <= 4

_FREQS = np.array(DTMF_LOW + DTMF_HIGH)
# Row/column -> digit index in DIGITS (RFC 4733 event code order).
_KEYPAD = ("123A", "456B", "789C", "*0#D")
_DIGIT_INDEX = np.array([[DIGITS.index(k) for k in row] for row in _KEYPAD], dtype=np.int8)


def probe_matrix(freqs: NDArray[np.float64], n: int = WINDOW) -> NDArray[np.float32]:
    """``(n, 2 * len(freqs))`` matrix: cosine columns, then sine columns, at ``freqs`` Hz.

    ``windows @ probe_matrix(freqs)`` gives the real and imaginary DFT parts of every window at
    every frequency in one product (a Goertzel filter bank, batched).
    """
    t = np.arange(n)[:, None] / RATE
    arg = 2 * np.pi * freqs[None, :] * t
    return np.concatenate([np.cos(arg), np.sin(arg)], axis=1).astype(np.float32)


class SlotIndex:
    """Slots as a slice when they are one ascending run, as the media engine's batch usually
    is: per-slot state is then read and written through views instead of fancy indexing.
    The answer for the last slots array seen is kept (the engine passes the same one each
    tick)."""

    __slots__ = ("_last", "_result")

    def __init__(self) -> None:
        self._last: NDArray[np.intp] | None = None
        self._result: slice | NDArray[np.intp] = slice(0, 0)

    def of(self, slots: NDArray[np.intp]) -> slice | NDArray[np.intp]:
        """A slice equal to ``slots`` when there is one, else ``slots``."""
        if slots is self._last:
            return self._result
        n = len(slots)
        first = int(slots[0])
        run = int(slots[-1]) - first == n - 1 and (n < 3 or bool((np.diff(slots) == 1).all()))
        self._last = slots
        self._result = slice(first, first + n) if run else slots
        return self._result


# Stage 1 probes: each DTMF frequency f at f (1 - 2 %), f, f (1 + 2 %) (the tone power is the
# best of the three), then the dial tone's frequencies. Stage 2: f (1 - 4 %) and f (1 + 4 %),
# which put the acceptance edge at about +-2 %, and the 3rd harmonic of each low-group tone: a
# voiced sound whose fundamental and 2nd harmonic land near a low and a high DTMF tone (e.g.
# 680 + 1360 Hz ~ digit 2) also has one.
_PROBE_FREQS1 = ((1.0 + np.array([-0.02, 0.0, 0.02]))[:, None] * _FREQS[None, :]).ravel()
_PROBE_FREQS2 = np.concatenate(
    [(_FREQS[:, None] * (1.0 + np.array([-0.04, 0.04]))[None, :]).ravel(), 3 * _FREQS[:4]]
)
_NPROBE1 = len(_PROBE_FREQS1)
_NPROBE2 = len(_PROBE_FREQS2)
# Least squares on the dial tone: with B the cosine and sine columns at its two frequencies
# and c = B^T x, the fitted amplitudes are a = G^-1 c = (B G^-1)^T x (G = B^T B: the columns
# are not orthogonal over 20 ms), the fit B a, the energy it explains a . c, and the probes of
# the window without it x (I - B G^-1 B^T) P. All three are columns of the one stage 1
# product: the tone probes already projected off the dial tone, then B G^-1, then B.
_DIAL_BASIS = probe_matrix(np.array(DIAL_TONE)).astype(np.float64)  # cos 350, 440, sin ...
_DIAL_AMPS = _DIAL_BASIS @ np.linalg.inv(_DIAL_BASIS.T @ _DIAL_BASIS)
_TONE_PROBES = probe_matrix(_PROBE_FREQS1).astype(np.float64)
_PROBES1 = np.concatenate(
    [_TONE_PROBES - _DIAL_BASIS @ (_DIAL_AMPS.T @ _TONE_PROBES), _DIAL_AMPS, _DIAL_BASIS], axis=1
).astype(np.float32)
_DIAL_SAMPLES = np.ascontiguousarray(_DIAL_BASIS.T, dtype=np.float32)  # amplitudes -> the fit
_DIAL_PAIRS = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=np.float32)  # -> A^2 per tone
_PROBES2 = probe_matrix(_PROBE_FREQS2)
# Spectral purity: a Hann-windowed DFT (bins 50 Hz apart) of the window without dial tone.
_HANN = np.hanning(WINDOW + 2)[1:-1].astype(np.float32)
_BIN_HZ = np.fft.rfftfreq(WINDOW, 1 / RATE)
_PURITY = 10 ** (PURITY_DB / 10)
# |X|^2 * 2 / N^2 turns a DFT magnitude into the mean power of the sine it matches.
_POWER_SCALE = 2.0 / WINDOW**2
_STEADY = 10 ** (STEADY_DB / 10)
_HARMONIC = 10 ** (HARMONIC_DB / 10)
_MIN_POWER = (DBM0_PEAK**2 / 2) * 10 ** (MIN_LEVEL_DBM0 / 10)
# |X(f)|^2 <= N * sum(x^2) (Cauchy-Schwarz), so a probe's power is at most twice the window's
# mean power: a window below _MIN_POWER / 2 cannot hold a valid tone. The gate keeps another
# factor of two so float32 rounding in the probe product can never matter.
_GATE_ENERGY = np.float32(WINDOW * _MIN_POWER / 4)  # on the sum of squares
# The fill test again, loosened far beyond float32 rounding (the exact test follows).
_GATE_FILL = np.float32(FILL_RATIO * 0.999)
_GATE_FLOOR = np.float32(FILL_FLOOR * 0.999)  # on legs under dial tone
_MARGIN = 10 ** (GROUP_MARGIN_DB / 10)
_REVERSE_TWIST = 10 ** (REVERSE_TWIST_DB / 10)
_NORMAL_TWIST = 10 ** (-NORMAL_TWIST_DB / 10)
_FRACTION = ENERGY_FRACTION / WINDOW  # on energies (sums of squares)
_SEEN = DIAL_SEEN / WINDOW


class DtmfDetector:
    """Batched in-band DTMF detector for up to ``max_legs`` legs."""

    def __init__(self, max_legs: int) -> None:
        self.max_legs = max_legs
        self._leg_of_slot: list[Hashable | None] = [None] * max_legs
        self._slot_of_leg: dict[Hashable, int] = {}
        self._tail = np.zeros((max_legs, WINDOW - HOP), dtype=np.float32)
        self._tail_energy = np.zeros((max_legs, 2), dtype=np.float32)  # its two quarters
        self._cur = np.full(max_legs, -1, dtype=np.int8)
        self._cand = np.full(max_legs, -1, dtype=np.int8)
        self._cand_count = np.zeros(max_legs, dtype=np.int32)
        self._cand_start = np.zeros(max_legs, dtype=np.int64)
        self._cand_levels = np.zeros((max_legs, 2), dtype=np.float64)
        self._misses = np.zeros(max_legs, dtype=np.int32)
        self._onset = np.zeros(max_legs, dtype=np.int64)
        self._last_end = np.zeros(max_legs, dtype=np.int64)
        # Dial tone per leg: until when it counts as under dial tone, and the fill floors
        # that follow (the stage 1 one, and the gate's), refreshed every SWEEP_CALLS calls.
        self._dial_until = np.zeros(max_legs, dtype=np.int64)
        self._fill = np.full(max_legs, FILL_RATIO, dtype=np.float64)
        self._gate_fill = np.full(max_legs, _GATE_FILL, dtype=np.float32)
        self._any_dial = False  # no leg has ever shown dial tone: scalar floors, no sweeps
        self._sweep = 0
        #: After :meth:`process`: per row of that call, whether either analysis window touching
        #: the frame held a valid DTMF tone pair (tone energy, before any digit is confirmed).
        #: The media engine's DTMF clamp silences such frames in what the bridge peer hears.
        self.last_tone: NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        #: After :meth:`process`: the energy of each 5 ms quarter of every frame (n, 4), in
        #: float32 (the fax detector's gate reuses them for the same frames).
        self.last_quarters: NDArray[np.float32] = np.zeros((0, 4), dtype=np.float32)
        self._index = SlotIndex()

    def add_leg(self, leg_id: Hashable) -> int:
        """Reserve a slot for ``leg_id`` (fresh state) and return it."""
        if leg_id in self._slot_of_leg:
            raise ValueError(f"leg {leg_id!r} already added")
        try:
            slot = self._leg_of_slot.index(None)
        except ValueError:
            raise RuntimeError(f"DtmfDetector full ({self.max_legs} legs)") from None
        self._leg_of_slot[slot] = leg_id
        self._slot_of_leg[leg_id] = slot
        self._reset(slot)
        return slot

    def remove_leg(self, leg_id: Hashable) -> None:
        """Free the slot of ``leg_id``; a digit still in progress is dropped silently."""
        slot = self._slot_of_leg.pop(leg_id)
        self._leg_of_slot[slot] = None
        self._reset(slot)

    def slot(self, leg_id: Hashable) -> int:
        """The slot of ``leg_id``."""
        return self._slot_of_leg[leg_id]

    def _reset(self, slot: int) -> None:
        self._tail[slot] = 0
        self._tail_energy[slot] = 0
        self._cur[slot] = -1
        self._cand[slot] = -1
        self._cand_count[slot] = 0
        self._misses[slot] = 0
        self._dial_until[slot] = 0
        self._fill[slot] = FILL_RATIO
        self._gate_fill[slot] = _GATE_FILL

    def process(
        self,
        slots: NDArray[np.intp],
        frames: NDArray[np.int16] | NDArray[np.float32],
        sample_time: int | NDArray[np.int64],
    ) -> list[tuple[Hashable, DigitEvent]]:
        """Analyse one 160-sample frame for each leg in ``slots``.

        ``frames[i]`` belongs to ``slots[i]`` (int16 samples, or the same values in float32);
        ``sample_time`` is the leg's sample count at the first sample of the frame (one number
        for all, or one per slot). Returns the onsets and ends detected, in slot order.
        """
        slots = np.asarray(slots, dtype=np.intp)
        n = len(slots)
        if n == 0:
            self.last_tone = np.zeros(0, dtype=np.bool_)
            self.last_quarters = np.zeros((0, 4), dtype=np.float32)
            return []
        if frames.shape != (n, FRAME):
            raise ValueError(f"frames must have shape ({n}, {FRAME}), got {frames.shape}")
        idx = self._index.of(slots)
        # The gate, in float32 for the whole batch: the quarter energies of this frame, after
        # the last two of the previous one (kept per slot), as rows (6, n). The two windows
        # are quarters 0-3 and 2-5 since HOP is two quarters.
        f = np.asarray(frames, dtype=np.float32).reshape(n * 4, QUARTER)
        quarters = np.einsum("ij,ij->i", f, f).reshape(n, 4)
        self.last_quarters = quarters
        e = np.empty((6, n), dtype=np.float32)
        e[:2] = self._tail_energy[idx].T
        e[2:] = quarters.T
        self._tail_energy[idx] = quarters[:, 2:]
        lo01, lo23, lo45 = np.minimum(e[0], e[1]), np.minimum(e[2], e[3]), np.minimum(e[4], e[5])
        hi01, hi23, hi45 = np.maximum(e[0], e[1]), np.maximum(e[2], e[3]), np.maximum(e[4], e[5])
        sum23 = e[2] + e[3]
        # Legs under dial tone (seen in the last DIAL_HOLD samples) get the looser fill floor.
        # Legs under dial tone (shown in the last DIAL_HOLD samples) get the looser fill floor.
        fill: NDArray[np.float64] | None = None
        gate_fill: NDArray[np.float32] | np.float32 = _GATE_FILL
        if self._any_dial:
            self._sweep -= 1
            if self._sweep <= 0:
                self._sweep = SWEEP_CALLS
                held = self._dial_until[idx] > sample_time
                self._fill[idx] = np.where(held, FILL_FLOOR, FILL_RATIO)
                self._gate_fill[idx] = np.where(held, _GATE_FLOOR, _GATE_FILL)
            fill, gate_fill = self._fill[idx], self._gate_fill[idx]
        live = np.stack(
            [
                (e[0] + e[1] + sum23 >= _GATE_ENERGY)
                & (np.minimum(lo01, lo23) >= gate_fill * np.maximum(hi01, hi23)),
                (sum23 + e[4] + e[5] >= _GATE_ENERGY)
                & (np.minimum(lo23, lo45) >= gate_fill * np.maximum(hi23, hi45)),
            ]
        )
        digits = np.full((2, n), -1, dtype=np.int8)
        levels = np.zeros((2, n, 2), dtype=np.float64)
        # Legs in a digit or with a candidate: their state machine runs on every window.
        state = (self._cur[idx] >= 0) | (self._cand[idx] >= 0)
        # The window on this frame (k = 1) first, wherever the gate let it through.
        full = np.flatnonzero(live[1])
        dial: NDArray[np.bool_] | None = None
        if len(full):
            d, lv, dial = self._classify(frames[full], None if fill is None else fill[full])
            digits[1, full] = d
            levels[1, full] = lv
        # The window straddling the previous frame (k = 0) only where it can matter: beside a
        # valid window on this frame, or on a leg already in a digit or candidate (whose
        # candidate then came from the previous frame's window). A digit needs two
        # consecutive valid windows, and any two consecutive windows include one k = 1
        # window; a valid k = 0 window on an idle leg between two invalid ones would make a
        # candidate that the next window drops, so skipping it changes no event.
        need = live[0] & (state | (digits[1] >= 0)) if LAZY_STRADDLE else live[0]
        half = np.flatnonzero(need)
        if len(half):
            tail = self._tail[slots[half]]
            d, lv, _ = self._classify(
                np.concatenate([tail, frames[half, : WINDOW - HOP]], axis=1),
                None if fill is None else fill[half],
                spot=False,
            )
            digits[0, half] = d
            levels[0, half] = lv
        if dial is not None and dial.any():
            # Dial tone shown on this frame: the looser floors from the next frame on.
            seen = full[dial]
            shown = slots[seen]
            if np.ndim(sample_time) == 0:
                self._dial_until[shown] = int(sample_time) + DIAL_HOLD
            else:
                self._dial_until[shown] = np.asarray(sample_time)[seen] + DIAL_HOLD
            self._fill[shown] = FILL_FLOOR
            self._gate_fill[shown] = _GATE_FLOOR
            self._any_dial = True
        self._tail[idx] = frames[:, FRAME - (WINDOW - HOP) :]
        # Either window valid: the two int8 digits of a leg as one uint16, -1 -1 = 0xFFFF.
        self.last_tone = np.ascontiguousarray(digits.T).view(np.uint16)[:, 0] != 0xFFFF
        out: list[tuple[Hashable, DigitEvent]] = []
        for k in range(2):
            d = digits[k]
            # Idle legs (no digit, no candidate) with an invalid window do not change state.
            busy = np.flatnonzero(state | (d >= 0))
            if len(busy) == 0:
                continue
            if np.ndim(sample_time) == 0:
                start = np.full(len(busy), int(sample_time) - HOP + k * HOP, dtype=np.int64)
            else:
                start = np.asarray(sample_time, dtype=np.int64)[busy] - HOP + k * HOP
            out.extend(self._step(slots[busy], d[busy], levels[k, busy], start, start + WINDOW))
            if k == 0:
                state = (self._cur[idx] >= 0) | (self._cand[idx] >= 0)
        return out

    @staticmethod
    def _classify(
        pcm: NDArray[np.int16] | NDArray[np.float32],
        fill: NDArray[np.float64] | None,
        spot: bool = True,
    ) -> tuple[NDArray[np.int8], NDArray[np.float64], NDArray[np.bool_] | None]:
        """Digit index per window (or -1), and the (low, high) tone powers.

        Two stages: the tone powers (best of f and f +- 2 %) with the level, twist, group
        margin, energy fraction and fill tests first; the +-4 % probes (centring) and the
        3rd harmonics only for the few windows that pass all of those.
        """
        win = pcm.astype(np.float32)
        m = len(win)
        # Exact energies (integer squares summed in float64) for the thresholds.
        x = pcm.astype(np.float64).reshape(m, 4, QUARTER)
        quarters = np.einsum("ijk,ijk->ij", x, x)
        energy = quarters.sum(axis=1)  # WINDOW x the mean power
        q_min = quarters.min(axis=1)
        q_max = quarters.max(axis=1)
        product = win @ _PROBES1
        coef = product[:, 2 * _NPROBE1 : 2 * _NPROBE1 + 4]  # the dial tone's fitted amplitudes
        dial = np.einsum("ij,ij->i", coef, product[:, 2 * _NPROBE1 + 4 :])  # energy of the fit
        ri = product[:, : 2 * _NPROBE1]  # the probes of the window without the dial tone
        ri *= ri
        power = (ri[:, :_NPROBE1] + ri[:, _NPROBE1:]) * np.float32(_POWER_SCALE)
        power = power.reshape(m, 3, 8)  # (-2 %, 0, +2 %) x the 8 tones
        group = np.maximum(np.maximum(power[:, 0], power[:, 1]), power[:, 2]).reshape(m, 2, 4)
        arg = group.argmax(axis=2)
        ranked = np.sort(group, axis=2)
        lo, hi = arg[:, 0], arg[:, 1]
        p_lo, p_hi = ranked[:, 0, 3], ranked[:, 1, 3]
        valid = (
            (p_lo >= _MIN_POWER)
            & (p_hi >= _MIN_POWER)
            & (p_hi <= p_lo * _REVERSE_TWIST)
            & (p_hi >= p_lo * _NORMAL_TWIST)
            & (p_lo >= _MARGIN * ranked[:, 0, 2])
            & (p_hi >= _MARGIN * ranked[:, 1, 2])
            & (p_lo + p_hi >= (energy - dial) * _FRACTION)
            & (q_min >= (FILL_RATIO if fill is None else fill) * q_max)
        )
        cand = np.flatnonzero(valid)
        if len(cand):
            # The candidates without the dial tone's fit (nearly themselves when there is none).
            res = win[cand] - coef[cand] @ _DIAL_SAMPLES
            # Fill: on the window, or on what is left of it when dial tone is a real share of
            # it (two tones 90 Hz apart beat: their 5 ms quarters alone can differ 10-fold).
            heavy = dial[cand] >= DIAL_SHARE * energy[cand]
            rq = res.reshape(len(cand), 4, QUARTER)
            rq = np.einsum("ijk,ijk->ij", rq, rq)
            filled = np.where(
                heavy,
                rq.min(axis=1) >= FILL_RATIO * rq.max(axis=1),
                q_min[cand] >= FILL_RATIO * q_max[cand],
            )
            ri2 = res @ _PROBES2
            ri2 *= ri2
            power2 = (ri2[:, :_NPROBE2] + ri2[:, _NPROBE2:]) * np.float32(_POWER_SCALE)
            wide = power2[:, :16].reshape(len(cand), 8, 2)  # f (1 - 4 %), f (1 + 4 %)
            third = power2[:, 16:]
            c_lo, c_hi = lo[cand], 4 + hi[cand]
            sub = np.arange(len(cand))
            nominal = power[cand, 1]
            centred = (nominal[sub, c_lo] >= wide[sub, c_lo].max(axis=1)) & (
                nominal[sub, c_hi] >= wide[sub, c_hi].max(axis=1)
            )
            harmonic = third[sub, c_lo] * _HARMONIC <= p_lo[cand]
            # Purity: no other component within PURITY_DB of the weaker tone (a voiced sound
            # whose harmonics land near a low and a high tone has its other harmonics too).
            dft = np.fft.rfft(res * _HANN, axis=1)
            spec = dft.real**2 + dft.imag**2
            d_lo = np.abs(_BIN_HZ[None, :] - _FREQS[c_lo][:, None])
            d_hi = np.abs(_BIN_HZ[None, :] - _FREQS[c_hi][:, None])
            weak = np.minimum(
                np.where(d_lo <= 60, spec, 0).max(axis=1), np.where(d_hi <= 60, spec, 0).max(axis=1)
            )
            outside = (d_lo > 140) & (d_hi > 140) & (_BIN_HZ[None, :] >= 100)
            pure = np.where(outside, spec, 0).max(axis=1) * _PURITY <= weak
            valid[cand] = filled & centred & harmonic & pure
        levels = ranked[:, :, 3].astype(np.float64)  # p_lo, p_hi
        # Dial tone shown: each of its two tones holds DIAL_SEEN / 2 of a loud enough window
        # that fills it (a sine's mean power is half its squared amplitude).
        if not spot:
            return np.where(valid, _DIGIT_INDEX[lo, hi], -1).astype(np.int8), levels, None
        seen = ((coef * coef) @ _DIAL_PAIRS).min(axis=1) >= energy * _SEEN
        if seen.any():
            seen &= (energy >= WINDOW * _MIN_POWER) & (q_min >= FILL_RATIO * q_max)
        return np.where(valid, _DIGIT_INDEX[lo, hi], -1).astype(np.int8), levels, seen

    def _step(
        self,
        slots: NDArray[np.intp],
        d: NDArray[np.int8],
        levels: NDArray[np.float64],
        win_start: NDArray[np.int64],
        win_end: NDArray[np.int64],
    ) -> list[tuple[Hashable, DigitEvent]]:
        """Advance the per-leg digit state machines by one window."""
        cur = self._cur[slots]
        active = cur >= 0
        hit = active & (d == cur)
        other = d >= 0
        other &= d != cur

        # Candidate tracking for a (new) digit: consecutive windows of the same digit.
        # A real tone is steady: both tone powers stay within STEADY_DB of the previous window.
        # Two sounds cross-fading through a window (music, speech) are not.
        ratio = levels / np.maximum(self._cand_levels[slots], 1e-9)
        steady = np.all((ratio <= _STEADY) & (ratio >= 1 / _STEADY), axis=1)
        same_cand = other & (d == self._cand[slots]) & steady
        cand_count = np.where(same_cand, self._cand_count[slots] + 1, np.where(other, 1, 0))
        cand = np.where(other, d, -1).astype(np.int8)
        cand_start = np.where(same_cand, self._cand_start[slots], win_start)
        confirmed = cand_count >= START_WINDOWS

        misses = np.where(hit, 0, np.minimum(self._misses[slots] + 1, END_MISSES))
        ending = active & ~hit & ((misses >= END_MISSES) | confirmed)
        starting = confirmed

        events: list[tuple[Hashable, DigitEvent]] = []
        if ending.any() or starting.any():
            for i in np.flatnonzero(ending | starting):
                events.extend(
                    self._emit(
                        int(slots[i]),
                        bool(ending[i]),
                        bool(starting[i]),
                        int(d[i]),
                        int(cand_start[i]),
                        int(win_end[i]),
                    )
                )

        last_end = np.where(hit, win_end, self._last_end[slots])
        self._last_end[slots] = np.where(starting, win_end, last_end)
        self._onset[slots] = np.where(starting, cand_start, self._onset[slots])
        self._cur[slots] = np.where(starting, d, np.where(ending, -1, cur))
        self._misses[slots] = np.where(starting | ending, 0, misses)
        self._cand[slots] = np.where(starting, -1, cand)
        self._cand_count[slots] = np.where(starting, 0, cand_count)
        self._cand_start[slots] = cand_start
        self._cand_levels[slots] = levels
        return events

    def _emit(
        self, slot: int, ending: bool, starting: bool, d: int, onset: int, win_end: int
    ) -> list[tuple[Hashable, DigitEvent]]:
        leg = self._leg_of_slot[slot]
        out: list[tuple[Hashable, DigitEvent]] = []
        if ending:
            start = int(self._onset[slot])
            digit = DIGITS[int(self._cur[slot])]
            duration = (int(self._last_end[slot]) - start) * 1000 // RATE
            log.debug("leg %r: digit %s -> ended (%d ms)", leg, digit, duration)
            out.append((leg, DigitEvent(digit, start * 1000 // RATE, duration, "inband", True)))
        if starting:
            log.debug("leg %r: idle -> digit %s", leg, DIGITS[d])
            out.append((leg, DigitEvent(DIGITS[d], onset * 1000 // RATE, 0, "inband", False)))
        return out
