"""Recorder: one leg's received audio to a 16-bit 8 kHz mono WAV file.

Frames arrive from the engine's tick (decoded, after the jitter buffer). Recording stops at
`max_s`, on a stop digit (the frames carrying the digit's tone are trimmed, so a '#' to end a
voicemail is not heard in it), or after `silence_s` of frames whose RMS stays below
`silence_rms` (the trailing silence is trimmed, keeping a short tail). Samples are kept in
memory (16 kB/s, bounded by `max_s`) and written with the stdlib `wave` module by `finish()`.
"""

from __future__ import annotations

import enum
import os
import wave

import numpy as np
import numpy.typing as npt

__all__ = ["Recorder", "StopReason"]

FRAME = 160
RATE = 8000
FRAME_S = FRAME / RATE
# Frames dropped from the end on a stop digit: the detector reports ~40-60 ms after onset.
DIGIT_TRIM_FRAMES = 4
# Silence kept after the last sound when stopping on silence.
SILENCE_TAIL_FRAMES = 10


class StopReason(enum.Enum):
    """Why a recording ended."""

    MAX_LENGTH = "max_length"
    DIGIT = "digit"
    SILENCE = "silence"
    STOPPED = "stopped"


class Recorder:
    """Collects frames for one leg; see the module docstring."""

    __slots__ = (
        "_frames",
        "_silent_run",
        "max_frames",
        "path",
        "reason",
        "silence_frames",
        "silence_rms",
        "stop_on",
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_s: float = 60.0,
        stop_on: str = "#",
        silence_s: float | None = 5.0,
        silence_rms: float = 200.0,
    ) -> None:
        self.path = os.fspath(path)
        self.max_frames = max(1, round(max_s / FRAME_S))
        self.stop_on = stop_on
        self.silence_frames = None if silence_s is None else max(1, round(silence_s / FRAME_S))
        self.silence_rms = silence_rms
        self._frames: list[npt.NDArray[np.int16]] = []
        self._silent_run = 0
        self.reason: StopReason | None = None

    @property
    def done(self) -> bool:
        """True once the recording has stopped for any reason."""
        return self.reason is not None

    def feed(self, frame: npt.NDArray[np.int16]) -> bool:
        """Add one 20 ms frame; True when this frame ended the recording."""
        if self.reason is not None:
            return False
        self._frames.append(frame.copy())
        energy = float(np.dot(frame.astype(np.float32), frame.astype(np.float32))) / len(frame)
        if energy < self.silence_rms * self.silence_rms:
            self._silent_run += 1
        else:
            self._silent_run = 0
        if self.silence_frames is not None and self._silent_run >= self.silence_frames:
            keep = len(self._frames) - self._silent_run + SILENCE_TAIL_FRAMES
            del self._frames[max(0, keep) :]
            self.reason = StopReason.SILENCE
            return True
        if len(self._frames) >= self.max_frames:
            self.reason = StopReason.MAX_LENGTH
            return True
        return False

    def on_digit(self, digit: str) -> bool:
        """Tell the recorder a digit arrived; True when it stopped the recording."""
        if self.reason is None and digit and digit in self.stop_on:
            del self._frames[max(0, len(self._frames) - DIGIT_TRIM_FRAMES) :]
            self.reason = StopReason.DIGIT
            return True
        return False

    def stop(self) -> None:
        """End the recording now (hang-up, or the service cancelled it)."""
        if self.reason is None:
            self.reason = StopReason.STOPPED

    @property
    def duration(self) -> float:
        """Seconds of audio kept so far."""
        return len(self._frames) * FRAME_S

    def finish(self) -> float:
        """Write the WAV file and return its duration in seconds."""
        self.stop()
        pcm = np.concatenate(self._frames) if self._frames else np.zeros(0, dtype=np.int16)
        with wave.open(self.path, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(RATE)
            out.writeframes(pcm.astype("<i2").tobytes())
        return len(pcm) / RATE
