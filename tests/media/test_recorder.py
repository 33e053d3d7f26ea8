"""Recorder stop conditions and the WAV it writes."""

import wave
from pathlib import Path

import numpy as np

from media.recorder import Recorder, StopReason

LOUD = (5000 * np.sin(np.arange(160) * 0.3)).astype(np.int16)
QUIET = np.zeros(160, dtype=np.int16)


def test_stops_on_hash_and_trims_the_digit(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "r.wav", max_s=10, silence_s=None)
    for _ in range(50):
        assert not rec.feed(LOUD)
    assert not rec.on_digit("5")
    assert rec.on_digit("#")
    assert rec.reason is StopReason.DIGIT
    assert not rec.feed(LOUD)
    duration = rec.finish()
    assert abs(duration - (50 - 4) * 0.02) < 1e-9
    with wave.open(str(tmp_path / "r.wav")) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.getnframes() == 46 * 160


def test_stops_after_silence_keeping_a_short_tail(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "s.wav", max_s=10, silence_s=1.0)
    for _ in range(25):
        rec.feed(LOUD)
    stopped_at = None
    for i in range(100):
        if rec.feed(QUIET):
            stopped_at = i
            break
    assert stopped_at == 49
    assert rec.reason is StopReason.SILENCE
    assert abs(rec.finish() - (25 + 10) * 0.02) < 1e-9


def test_stops_at_max_length(tmp_path: Path) -> None:
    rec = Recorder(tmp_path / "m.wav", max_s=0.2, silence_s=None)
    results = [rec.feed(QUIET) for _ in range(10)]
    assert results == [False] * 9 + [True]
    assert rec.reason is StopReason.MAX_LENGTH
    assert abs(rec.finish() - 0.2) < 1e-9
