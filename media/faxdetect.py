"""Fax and modem tone detection for many legs at once: CNG, CED/ANS and ANSam.

Theory of operation. Every 160-sample frame is split into two 10 ms halves; one matrix product
gives, for every half of every leg, the DFT at 1100 Hz (T.30 CNG, the calling fax) and 2100 Hz
(T.30 CED / V.25 ANS / V.8 ANSam, the answering fax or modem). Both are integer numbers of
cycles in 80 samples, so a steady tone keeps the same DFT phase from half to half. A half holds
a tone when that bin carries ``ENERGY_FRACTION`` of the half's power and is above
``MIN_LEVEL_DBM0``; a tone is a run of such halves (one or two bad halves are bridged).

- CNG: a run of ``CNG_MIN_S`` at 1100 Hz (CNG is 0.5 s on, 3 s off; T.30 section 5.2.1).
- 2100 Hz after ``ANS_DECIDE_S``: "ansam" if the phase jumped by about 180 degrees (V.25
  phase reversals every 450 ms, /ANS) or the envelope carries 15 Hz AM (V.8 ANSam, about 20 %
  depth); otherwise "ced". The reversal test compares the phase advance over 20 ms with the
  one 20 ms earlier, so a constant frequency error (V.25 allows +-15 Hz) cancels out.
One event per tone. Sans-IO: the sample clock comes in as ``sample_time``.

Cost. The 4-column DFT of every half is one small matrix product for the whole batch; what is
dear is the exact (float64) energy of each half and the per-leg state updates. So the halves
are first screened with float32 energies (a margin far beyond their rounding), and a leg none
of whose halves may hold a tone, and with no tone in progress, is left out. Such a leg has no
tone in progress, so its run counters stay at zero and its phase and envelope history are
refilled before they are used again (the tests need 6 and 55 halves inside a tone); only the
reversal refractory count is aged. Speech, which has energy but rarely a pure 1100 or 2100 Hz
tone, costs little more than silence.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from media.dtmf import SlotIndex, probe_matrix
from media.tones import DBM0_PEAK, FRAME, RATE

__all__ = ["FaxDetector", "FaxToneEvent"]

log = logging.getLogger(__name__)

HALF = FRAME // 2
CNG_HZ = 1100.0
ANS_HZ = 2100.0
MIN_LEVEL_DBM0 = -43.0
ENERGY_FRACTION = 0.7
CNG_MIN_S = 0.4
ANS_DECIDE_S = 0.55  # the first V.25 phase reversal comes 450 ms into the tone
BRIDGE_HALVES = 2
REVERSAL_RAD = 2 * np.pi / 3
REFRACTORY_HALVES = 10  # one reversal spoils a few 20 ms phase steps; reversals are 450 ms apart
AM_HZ = 15.0
AM_MIN_DEPTH = 0.1
ENV_LEN = 64
# Skip legs with no half that may hold a tone and no tone in progress (see the module
# docstring); tests turn it off to check that it changes no event.
SKIP_IDLE = True

_PROBES = probe_matrix(np.array([CNG_HZ, ANS_HZ]), HALF)
_POWER_SCALE = 2.0 / HALF**2
_MIN_POWER = (DBM0_PEAK**2 / 2) * 10 ** (MIN_LEVEL_DBM0 / 10)
# The screen's energy fraction: 0.1 % looser than the exact test (float32 sums of 80 squares
# are good to about 1e-5).
_SCREEN = np.float32(ENERGY_FRACTION * 0.999)


@dataclass(frozen=True, slots=True)
class FaxToneEvent:
    """A fax/modem tone: ``kind`` is "cng", "ced" or "ansam" (with what made it ANSam)."""

    kind: str
    start_ms: int
    phase_reversals: bool = False
    am: bool = False

    def __str__(self) -> str:
        return self.kind


class FaxDetector:
    """Batched CNG / CED / ANSam detector for up to ``max_legs`` legs."""

    #: `process` takes the frames' quarter energies when the caller has them.
    ACCEPTS_QUARTERS = True

    def __init__(self, max_legs: int) -> None:
        self.max_legs = max_legs
        self._leg_of_slot: list[Hashable | None] = [None] * max_legs
        self._slot_of_leg: dict[Hashable, int] = {}
        z = np.zeros(max_legs, dtype=np.int64)
        self._run = np.zeros((max_legs, 2), dtype=np.int64)  # halves in the current tone
        self._bad = np.zeros((max_legs, 2), dtype=np.int64)  # consecutive bad halves
        self._start = np.zeros((max_legs, 2), dtype=np.int64)
        self._reported = np.zeros((max_legs, 2), dtype=bool)
        self._phase = np.zeros((max_legs, 3))  # 2100 Hz phase of the last three halves
        self._step = np.zeros((max_legs, 3))  # 20 ms phase advances, newest last
        self._reversals = z.copy()
        self._refractory = z.copy()
        self._env = np.zeros((max_legs, ENV_LEN), dtype=np.float32)
        self._index = SlotIndex()

    def add_leg(self, leg_id: Hashable) -> int:
        """Reserve a slot for ``leg_id`` (fresh state) and return it."""
        if leg_id in self._slot_of_leg:
            raise ValueError(f"leg {leg_id!r} already added")
        try:
            slot = self._leg_of_slot.index(None)
        except ValueError:
            raise RuntimeError(f"FaxDetector full ({self.max_legs} legs)") from None
        self._leg_of_slot[slot] = leg_id
        self._slot_of_leg[leg_id] = slot
        self._run[slot] = 0
        self._bad[slot] = 0
        self._reported[slot] = False
        self._reversals[slot] = 0
        return slot

    def remove_leg(self, leg_id: Hashable) -> None:
        """Free the slot of ``leg_id``."""
        slot = self._slot_of_leg.pop(leg_id)
        self._leg_of_slot[slot] = None

    def process(
        self,
        slots: NDArray[np.intp],
        frames: NDArray[np.int16] | NDArray[np.float32],
        sample_time: int | NDArray[np.int64],
        quarters: NDArray[np.float32] | None = None,
    ) -> list[tuple[Hashable, FaxToneEvent]]:
        """Analyse one 160-sample frame per leg (int16, or the same values in float32);
        returns the tones recognised in this frame. ``quarters``: the float32 energies of
        the frames' 5 ms quarters (n, 4) when already known (the DTMF detector's gate has
        them), for the screen below."""
        slots = np.asarray(slots, dtype=np.intp)
        n = len(slots)
        if n == 0:
            return []
        t0 = np.broadcast_to(np.asarray(sample_time, dtype=np.int64), (n,))
        x = np.asarray(frames, dtype=np.float32).reshape(n * 2, HALF)
        ri = x @ _PROBES
        power = (ri[:, :2] ** 2 + ri[:, 2:] ** 2) * _POWER_SCALE
        if SKIP_IDLE:
            # The 4-column DFT of every half is cheap; the exact (float64) half energies are
            # not. Screen with float32 energies and a margin far beyond their rounding, and
            # leave out legs with no half that may hold a tone and no tone in progress.
            if quarters is not None and quarters.shape == (n, 4):
                energy = (quarters[:, 0::2] + quarters[:, 1::2]).reshape(n * 2)
            else:
                energy = np.einsum("ij,ij->i", x, x)
            maybe = (power >= _MIN_POWER) & (power * HALF >= _SCREEN * energy[:, None])
            run = self._run[self._index.of(slots)]
            # "Any of the four" as one 32-bit word per leg (four bools are four bytes).
            busy = maybe.reshape(n, 4).view(np.uint32)[:, 0] != 0
            busy |= (run[:, 0] | run[:, 1]) > 0
            if not busy.all():
                idle = slots[~busy]
                self._refractory[idle] = np.maximum(self._refractory[idle] - 2, 0)
                keep = np.flatnonzero(busy)
                if len(keep) == 0:
                    return []
                rows = (keep[:, None] * 2 + np.arange(2)).ravel()
                slots, t0 = slots[keep], t0[keep]
                x, ri, power = x[rows], ri[rows], power[rows]
                n = len(keep)
        total = (x.astype(np.float64) ** 2).mean(axis=1)
        valid = (power >= _MIN_POWER) & (power >= ENERGY_FRACTION * total[:, None])
        phase = np.arctan2(-ri[:, 3], ri[:, 1])
        amp = np.sqrt(power[:, 1])
        out: list[tuple[Hashable, FaxToneEvent]] = []
        for k in range(2):
            rows = np.arange(n) * 2 + k
            out.extend(self._half(slots, valid[rows], phase[rows], amp[rows], t0 + k * HALF))
        return out

    def _half(
        self,
        slots: NDArray[np.intp],
        valid: NDArray[np.bool_],
        phase: NDArray[np.float64],
        amp: NDArray[np.float32],
        t: NDArray[np.int64],
    ) -> list[tuple[Hashable, FaxToneEvent]]:
        run = self._run[slots]
        bad = np.where(valid, 0, self._bad[slots] + 1)
        alive = (run > 0) & (bad <= BRIDGE_HALVES)
        fresh = valid & ~alive
        new_run = np.where(valid & alive, run + 1, np.where(fresh, 1, np.where(alive, run, 0)))
        self._start[slots] = np.where(fresh, t[:, None], self._start[slots])
        self._reported[slots] = self._reported[slots] & (new_run > 0)
        self._run[slots] = new_run
        self._bad[slots] = bad

        # 2100 Hz phase tracking: the 20 ms advance, compared with the one 20 ms earlier.
        ph = np.concatenate([self._phase[slots][:, 1:], phase[:, None]], axis=1)
        step = np.angle(np.exp(1j * (ph[:, 2] - ph[:, 0])))
        steps = np.concatenate([self._step[slots][:, 1:], step[:, None]], axis=1)
        jump = np.abs(np.angle(np.exp(1j * (steps[:, 2] - steps[:, 0]))))
        in_ans = new_run[:, 1] >= 6  # all five phases in the comparison are inside the tone
        refr = np.maximum(self._refractory[slots] - 1, 0)
        rev = in_ans & (refr == 0) & (jump > REVERSAL_RAD)
        self._reversals[slots] = np.where(fresh[:, 1], 0, self._reversals[slots] + rev)
        self._refractory[slots] = np.where(rev, REFRACTORY_HALVES, refr)
        self._phase[slots] = ph
        self._step[slots] = steps
        self._env[slots] = np.concatenate([self._env[slots][:, 1:], amp[:, None]], axis=1)

        out: list[tuple[Hashable, FaxToneEvent]] = []
        cng_due = (new_run[:, 0] * HALF >= CNG_MIN_S * RATE) & ~self._reported[slots, 0]
        ans_due = (new_run[:, 1] * HALF >= ANS_DECIDE_S * RATE) & ~self._reported[slots, 1]
        for i in np.flatnonzero(cng_due | ans_due):
            slot = int(slots[i])
            leg = self._leg_of_slot[slot]
            if cng_due[i]:
                self._reported[slot, 0] = True
                start = int(self._start[slot, 0]) * 1000 // RATE
                log.debug("leg %r: 1100 Hz -> cng", leg)
                out.append((leg, FaxToneEvent("cng", start)))
            if ans_due[i]:
                self._reported[slot, 1] = True
                start = int(self._start[slot, 1]) * 1000 // RATE
                reversed_ = bool(self._reversals[slot] > 0)
                am = _am_depth(self._env[slot]) >= AM_MIN_DEPTH
                kind = "ansam" if reversed_ or am else "ced"
                log.debug("leg %r: 2100 Hz -> %s", leg, kind)
                out.append((leg, FaxToneEvent(kind, start, reversed_, am)))
        return out


def _am_depth(env: NDArray[np.float32]) -> float:
    """Depth of 15 Hz amplitude modulation in a 10 ms-spaced envelope (0 = none)."""
    e = env[-50:].astype(np.float64)
    if e.mean() <= 0:
        return 0.0
    w = np.hanning(len(e))
    t = np.arange(len(e)) * HALF / RATE
    line = np.abs(np.sum(w * (e - e.mean()) * np.exp(-2j * np.pi * AM_HZ * t)))
    return float(2 * line / np.sum(w * e))
