"""Prompt loading (PyAV resample + cache) and the player's sequencing and barge-in."""

import os
import wave
from pathlib import Path

import numpy as np
import pytest

from media.player import FRAME, PromptPlayer, Tone, clear_cache, dtmf_frames, load_audio


def _write_wav(path: Path, seconds: float, rate: int = 16000, channels: int = 2) -> None:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    mono = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")
    data = np.repeat(mono, channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def test_load_resamples_to_8k_mono_padded_and_caches(tmp_path: Path) -> None:
    path = tmp_path / "hello.wav"
    _write_wav(path, 0.5)
    pcm = load_audio(path)
    assert pcm.dtype == np.int16 and pcm.ndim == 1
    assert len(pcm) % FRAME == 0
    assert 3900 <= len(pcm) <= 4160
    assert 6000 < np.abs(pcm).max() < 9000
    assert load_audio(str(path)) is pcm
    _write_wav(path, 1.0)
    os.utime(path, ns=(1, 1))
    assert len(load_audio(path)) > 7800


def test_sequence_plays_every_item_then_finishes(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    _write_wav(path, 0.1, rate=8000, channels=1)
    arr = np.full(200, 7, dtype=np.int16)
    player = PromptPlayer([path, arr, Tone("beep")])
    frames = []
    while (f := player.next_frame()) is not None:
        frames.append(f)
    assert player.finished and not player.interrupted
    # 0.1 s file = 5 frames, 200 samples padded to 2 frames, 200 ms beep = 10 frames.
    assert len(frames) == 5 + 2 + 10
    assert frames[5][0] == 7 and frames[6][39] == 7 and frames[6][40] == 0
    assert all(len(f) == FRAME for f in frames)


def test_barge_in_stops_on_first_digit_only_when_asked() -> None:
    player = PromptPlayer([Tone("ringback", "US")], barge_in=True)
    assert player.next_frame() is not None
    assert player.on_digit("5")
    assert player.next_frame() is None and player.interrupted
    keep = PromptPlayer([Tone("ringback", "US", duration_s=0.1)], barge_in=False)
    assert not keep.on_digit("5")
    count = 0
    while keep.next_frame() is not None:
        count += 1
    assert count == 5


def test_dtmf_frames_are_whole_frames_with_trailing_gap() -> None:
    frames = dtmf_frames("5", 100)
    assert len(frames) == 5 + 3
    assert np.abs(frames[0]).max() > 1000
    assert not np.any(frames[-1])
