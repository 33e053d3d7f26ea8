"""In-band DTMF detection for many legs at once (ITU-T Q.23 / Q.24, ETSI ES 201 235-3).

Theory of operation. Each leg's audio is cut into 20 ms analysis windows (160 samples) every
10 ms (two per frame; the last 80 samples of the previous frame are kept per leg). Windows are
classified with the DFT at 44 probe frequencies, by matrix products over the whole batch: each
of the 8 DTMF frequencies f and f * (1 +- 2 %), f * (1 +- 4 %), and 3 f for the low group. A
window holds a valid digit when:

- the strongest tone of each group (power = best of the f and +-2 % probes) is above
  ``MIN_LEVEL_DBM0`` and beats the other tones of its group by ``GROUP_MARGIN_DB``;
- the twist (high minus low) is within ``-NORMAL_TWIST_DB .. +REVERSE_TWIST_DB``;
- the two tones carry at least ``ENERGY_FRACTION`` of the window's power (talk-off guard);
- each tone is nearer its nominal frequency than the +-4 % probes, which puts the acceptance
  edge at about +-2 %: inside Q.24's "accept +-1.5 %, reject +-3.5 %", and narrow enough that
  a fundamental and its 2nd harmonic cannot pass as a low and a high tone (2 f is >= 4.2 %
  away from every high tone);
- the low tone's 3rd harmonic is ``HARMONIC_DB`` below it (voiced sounds have one);
- the signal fills the window: the weakest 5 ms quarter holds at least ``FILL_RATIO`` of the
  strongest. This is what rejects short tones (a window only partly covered by a tone still
  looks like a pure tone) and makes gaps visible.
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
can pass) or that clearly fails the fill test is invalid without any DFT. Only the windows left
go through the probe product, with exact (float64) energies for the thresholds, in two stages:
the 24 probes that give the tone powers first (level, twist, margins, energy fraction, fill),
then the +-4 % and harmonic probes for the few windows that pass. The window straddling two
frames is analysed only next to a valid window on the frame or on a leg already in a digit or
candidate (a digit needs two consecutive valid windows, one of which is always a whole frame).
The per-leg state machine runs only for legs that are in a digit, have a candidate, or have a
valid window: an idle leg with an invalid window keeps its state. Every shortcut gives exactly
the events of the full analysis (tests/media/test_dtmf.py checks each); speech costs about
0.3 us per leg and frame, silence less.

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
# best of the three). Stage 2: f (1 - 4 %) and f (1 + 4 %), which put the acceptance edge at
# about +-2 %, and the 3rd harmonic of each low-group tone: a voiced sound whose fundamental and
# 2nd harmonic land near a low and a high DTMF tone (e.g. 680 + 1360 Hz ~ digit 2) also has one.
_PROBE_FREQS1 = ((1.0 + np.array([-0.02, 0.0, 0.02]))[:, None] * _FREQS[None, :]).ravel()
_PROBE_FREQS2 = np.concatenate(
    [(_FREQS[:, None] * (1.0 + np.array([-0.04, 0.04]))[None, :]).ravel(), 3 * _FREQS[:4]]
)
_PROBES1 = probe_matrix(_PROBE_FREQS1)
_PROBES2 = probe_matrix(_PROBE_FREQS2)
_NPROBE1 = len(_PROBE_FREQS1)
_NPROBE2 = len(_PROBE_FREQS2)
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
_MARGIN = 10 ** (GROUP_MARGIN_DB / 10)
_REVERSE_TWIST = 10 ** (REVERSE_TWIST_DB / 10)
_NORMAL_TWIST = 10 ** (-NORMAL_TWIST_DB / 10)


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
        live = np.stack(
            [
                (e[0] + e[1] + sum23 >= _GATE_ENERGY)
                & (np.minimum(lo01, lo23) >= _GATE_FILL * np.maximum(hi01, hi23)),
                (sum23 + e[4] + e[5] >= _GATE_ENERGY)
                & (np.minimum(lo23, lo45) >= _GATE_FILL * np.maximum(hi23, hi45)),
            ]
        )
        digits = np.full((2, n), -1, dtype=np.int8)
        levels = np.zeros((2, n, 2), dtype=np.float64)
        # Legs in a digit or with a candidate: their state machine runs on every window.
        state = (self._cur[idx] >= 0) | (self._cand[idx] >= 0)
        # The window on this frame (k = 1) first, wherever the gate let it through.
        full = np.flatnonzero(live[1])
        if len(full):
            d, lv = self._classify(frames[full])
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
            d, lv = self._classify(np.concatenate([tail, frames[half, : WINDOW - HOP]], axis=1))
            digits[0, half] = d
            levels[0, half] = lv
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
    ) -> tuple[NDArray[np.int8], NDArray[np.float64]]:
        """Digit index per window (or -1), and the (low, high) tone powers.

        Two stages: the tone powers (best of f and f +- 2 %) with the level, twist, group
        margin, energy fraction and fill tests first; the +-4 % probes (centring) and the
        3rd harmonics only for the few windows that pass all of those.
        """
        win = pcm.astype(np.float32)
        m = len(win)
        # Exact energies (integer squares summed in float64) for the thresholds.
        sq = pcm.astype(np.float64)
        sq *= sq
        quarters = sq.reshape(m, 4, QUARTER).sum(axis=2)
        total = quarters.sum(axis=1) / WINDOW
        ri = win @ _PROBES1
        ri *= ri
        power = (ri[:, :_NPROBE1] + ri[:, _NPROBE1:]) * np.float32(_POWER_SCALE)
        power = power.reshape(m, 3, 8)  # (-2 %, 0, +2 %) x the 8 tones
        tone = np.maximum(np.maximum(power[:, 0], power[:, 1]), power[:, 2])
        rows = np.arange(m)
        lo = tone[:, :4].argmax(axis=1)
        hi = tone[:, 4:].argmax(axis=1)
        p_lo = tone[rows, lo]
        p_hi = tone[rows, 4 + hi]
        # The runner-up of each group: the group's maximum once the winner is knocked out.
        others = tone.copy()
        others[rows, lo] = -1.0
        others[rows, 4 + hi] = -1.0
        second_lo = others[:, :4].max(axis=1)
        second_hi = others[:, 4:].max(axis=1)
        valid = (
            (p_lo >= _MIN_POWER)
            & (p_hi >= _MIN_POWER)
            & (p_hi <= p_lo * _REVERSE_TWIST)
            & (p_hi >= p_lo * _NORMAL_TWIST)
            & (p_lo >= _MARGIN * second_lo)
            & (p_hi >= _MARGIN * second_hi)
            & (p_lo + p_hi >= ENERGY_FRACTION * total)
            & (quarters.min(axis=1) >= FILL_RATIO * quarters.max(axis=1))
        )
        cand = np.flatnonzero(valid)
        if len(cand):
            ri2 = win[cand] @ _PROBES2
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
            valid[cand] = centred & harmonic
        levels = np.stack([p_lo, p_hi], axis=1).astype(np.float64)
        return np.where(valid, _DIGIT_INDEX[lo, hi], -1).astype(np.int8), levels

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
