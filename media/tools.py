"""DTMF file tools behind ``softswitch tools``: detect digits in any audio file, write digits.

Files are decoded with PyAV (any container/codec FFmpeg knows), resampled to 8 kHz mono int16
and run through the same :class:`~media.dtmf.DtmfDetector` the media engine uses, one leg, one
160-sample frame at a time. Writing uses the stdlib ``wave`` module for ``.wav`` and PyAV for
other extensions (``.flac``, ``.ogg``, ``.opus``, ``.mp3`` ...), always 8 kHz mono.
"""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray

from media.dtmf import DtmfDetector
from media.tones import FRAME, RATE, dtmf_tone

__all__ = ["detect_dtmf", "detect_dtmf_file", "gen_dtmf_file", "read_audio", "write_audio"]

_CODECS = {".flac": "flac", ".ogg": "libopus", ".opus": "libopus", ".mp3": "libmp3lame"}
_RATES = {".ogg": 48000, ".opus": 48000}  # Ogg here is Ogg Opus; Opus streams are 48 kHz


def read_audio(path: str | Path) -> NDArray[np.int16]:
    """Decode the first audio stream of ``path`` to 8 kHz mono int16."""
    chunks: list[NDArray[np.generic]] = []
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(chunks).astype(np.int16)


def detect_dtmf(pcm: NDArray[np.int16]) -> list[tuple[str, int, int]]:
    """``(digit, start_ms, duration_ms)`` for each digit in 8 kHz int16 ``pcm``."""
    # Trailing silence lets a digit that runs to the end of the file finish.
    tail = (-len(pcm)) % FRAME + 10 * FRAME
    pcm = np.concatenate([pcm.astype(np.int16), np.zeros(tail, dtype=np.int16)])
    detector = DtmfDetector(1)
    slot = np.array([detector.add_leg(0)], dtype=np.intp)
    found: list[tuple[str, int, int]] = []
    for start in range(0, len(pcm), FRAME):
        for _, event in detector.process(slot, pcm[None, start : start + FRAME], start):
            if event.ended:
                found.append((event.digit, event.start_ms, event.duration_ms))
    return found


def detect_dtmf_file(path: str | Path) -> list[tuple[str, int, int]]:
    """``(digit, start_ms, duration_ms)`` for each DTMF digit in an audio file of any format."""
    return detect_dtmf(read_audio(path))


def write_audio(path: str | Path, pcm: NDArray[np.int16]) -> None:
    """Write 8 kHz mono int16 ``pcm``: WAV via ``wave``, other extensions via PyAV."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".wav":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.astype("<i2").tobytes())
        return
    codec = _CODECS.get(suffix)
    if codec is None:
        raise ValueError(f"no encoder known for {suffix!r} (use .wav {' '.join(_CODECS)})")
    rate = _RATES.get(suffix, RATE)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        if not isinstance(stream, av.audio.stream.AudioStream):
            raise TypeError(f"{codec} is not an audio codec")
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            pcm.astype(np.int16)[None, :], format="s16", layout="mono"
        )
        frame.sample_rate = RATE
        frame.pts = None
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def gen_dtmf_file(
    digits: str,
    out_path: str | Path,
    level_dbm0: float = -4.0,
    on_ms: int = 50,
    off_ms: int = 50,
) -> None:
    """Write ``digits`` as DTMF bursts (``on_ms`` tone, ``off_ms`` silence) to ``out_path``."""
    gap = np.zeros(off_ms * RATE // 1000, dtype=np.int16)
    parts = [gap]
    for digit in digits:
        parts += [dtmf_tone(digit, on_ms, level_dbm0), gap]
    write_audio(out_path, np.concatenate(parts))
