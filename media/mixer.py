"""Bridges and mixing.

A two-party `Bridge` is relayed packet by packet on the engine's fast path; it only records
who is joined and whether the pair went to clear channel (fax/modem: bit-exact G.711, no
transcoding, mixing or in-band detection). Mixing is for the DSP path: a prompt or warning tone
over a live bridge, and N-party conferences (an operator joining a call). Sums are taken in
int32 and saturated to int16 once, so clipping happens only where the mix really overflows.
`mix_minus` gives every participant the sum of all the others (never their own voice back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

__all__ = ["Bridge", "Conference", "mix", "mix_minus", "saturate"]

Pcm = npt.NDArray[np.int16]
INT16_MIN = -32768
INT16_MAX = 32767


def saturate(acc: npt.NDArray[np.int32]) -> Pcm:
    """Clip an int32 accumulator to the int16 range."""
    return np.clip(acc, INT16_MIN, INT16_MAX).astype(np.int16)


def mix(frames: list[Pcm] | npt.NDArray[np.int16]) -> Pcm:
    """The saturated sum of several equal-length frames."""
    stack = np.asarray(frames, dtype=np.int16)
    if stack.ndim == 1:
        return stack.copy()
    return saturate(stack.astype(np.int32).sum(axis=0))


def mix_minus(frames: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """For an (n, samples) batch, row i of the result is the sum of all rows except i."""
    wide = frames.astype(np.int32)
    total = wide.sum(axis=0)
    return saturate(total[np.newaxis, :] - wide)


@dataclass(slots=True)
class Bridge:
    """Two legs joined on the fast path."""

    a: str
    b: str
    clear_channel: bool = False

    def other(self, leg_id: str) -> str:
        """The leg on the far side of `leg_id`."""
        return self.b if leg_id == self.a else self.a


@dataclass(slots=True)
class Conference:
    """N legs mixed on the DSP path (mix-minus)."""

    conf_id: str
    members: list[str] = field(default_factory=list)
