"""Prompt player: audio files decoded once, played as 160-sample frames on the 20 ms clock.

`load_audio(path)` decodes any format PyAV reads, resamples it to 8 kHz mono signed 16-bit with
`av.AudioResampler`, pads it to whole 20 ms frames and caches the read-only array process-wide,
keyed by path and modification time (an edited prompt is re-read, an unchanged one never).
`PromptPlayer` walks a sequence of items (files, arrays, or frame iterators such as a tone
generator), hands out one frame per tick, and stops early on a digit when barge-in is on; the
engine turns its end into a PlayFinished event.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from media.tones import ToneGenerator, dtmf_tone

__all__ = [
    "FRAME",
    "PlayItem",
    "PromptPlayer",
    "Tone",
    "clear_cache",
    "dtmf_frames",
    "load_audio",
]

FRAME = 160
RATE = 8000
Pcm = npt.NDArray[np.int16]

_cache: dict[str, tuple[int, Pcm]] = {}


@dataclass(frozen=True, slots=True)
class Tone:
    """A call-progress tone or beep as a play item; `duration_s=None` plays until stopped."""

    name: str
    country: str = "ITU"
    duration_s: float | None = None
    level_dbm0: float = -13.0

    def frames(self) -> Iterator[Pcm]:
        """Successive 160-sample frames of the tone."""
        gen = ToneGenerator(self.country, self.name, self.level_dbm0)
        limit = None if self.duration_s is None else max(1, round(self.duration_s * RATE / FRAME))
        count = 0
        while not gen.done and (limit is None or count < limit):
            yield gen.next_frame(FRAME)
            count += 1


PlayItem = str | os.PathLike[str] | Pcm | Tone | Iterable[Pcm]


def load_audio(path: str | os.PathLike[str]) -> Pcm:
    """The whole file as 8 kHz mono int16, padded to a multiple of 160 samples (cached)."""
    key = os.fspath(path)
    mtime = os.stat(key).st_mtime_ns
    hit = _cache.get(key)
    if hit is not None and hit[0] == mtime:
        return hit[1]
    chunks: list[Pcm] = []
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    with av.open(key) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    pad = (-len(pcm)) % FRAME
    if pad:
        pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
    pcm.setflags(write=False)
    _cache[key] = (mtime, pcm)
    return pcm


def clear_cache() -> None:
    """Forget every decoded prompt (tests, or after replacing the prompt set)."""
    _cache.clear()


def dtmf_frames(digit: str, duration_ms: int, level_dbm0: float = -6.0) -> list[Pcm]:
    """An in-band DTMF burst in whole frames followed by 60 ms of silence (the gap)."""
    n = max(1, round(duration_ms * RATE / 1000 / FRAME)) * FRAME
    tone = dtmf_tone(digit, n * 1000 / RATE, level_dbm0)
    pcm = np.concatenate([tone, np.zeros(3 * FRAME, dtype=np.int16)])
    return list(pcm.reshape(-1, FRAME))


class PromptPlayer:
    """Plays a sequence of items, one 160-sample frame per `next_frame()` call."""

    __slots__ = ("_current", "_items", "barge_in", "finished", "frames_played", "interrupted")

    def __init__(self, items: Sequence[PlayItem], *, barge_in: bool = True) -> None:
        self._items: Iterator[PlayItem] = iter(items)
        self._current: Iterator[Pcm] | None = None
        self.barge_in = barge_in
        self.finished = False
        self.interrupted = False
        self.frames_played = 0

    def _open(self, item: PlayItem) -> Iterator[Pcm]:
        if isinstance(item, str | os.PathLike | Path):
            item = load_audio(item)
        if isinstance(item, Tone):
            return item.frames()
        if isinstance(item, np.ndarray):
            pcm = item.astype(np.int16, copy=False).reshape(-1)
            pad = (-len(pcm)) % FRAME
            if pad:
                pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16)])
            return iter(pcm.reshape(-1, FRAME))
        return iter(item)

    def next_frame(self) -> Pcm | None:
        """The next frame to send, or None once every item has played (or barge-in)."""
        while not self.finished:
            if self._current is None:
                item = next(self._items, None)
                if item is None:
                    self.finished = True
                    break
                self._current = self._open(item)
            frame = next(self._current, None)
            if frame is not None:
                self.frames_played += 1
                return frame
            self._current = None
        return None

    def on_digit(self, digit: str) -> bool:
        """Tell the player a digit arrived; True when it stopped playing (barge-in)."""
        if self.barge_in and not self.finished:
            self.stop()
            self.interrupted = True
            return True
        return False

    def stop(self) -> None:
        """Stop at once; `next_frame()` returns None from now on."""
        self.finished = True
        self._current = None
