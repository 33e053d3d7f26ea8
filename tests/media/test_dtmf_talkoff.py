"""Talk-off on a CI-sized part of the generated corpus (scripts/talkoff_corpus.py): speech in
a few languages through linear, mu-law and A-law at three levels, music-like signals and
noise, must give no digit at all. The whole corpus runs in scripts/bench_dtmf.py."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from media import g711
from media.dtmf import DtmfDetector

ROOT = Path(__file__).resolve().parents[2]
# Languages whose speech came closest to a digit in the full corpus, and other scripts.
LANGS = ["hu", "de", "cmn", "ja", "ar", "ko"]


def _corpus() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "talkoff_corpus", ROOT / "scripts" / "talkoff_corpus.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("talkoff_corpus", module)
    spec.loader.exec_module(module)
    return module


def _need_espeak() -> None:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        if os.environ.get("CI"):
            pytest.fail("espeak-ng and sox are needed (make peers); CI is set")
        pytest.skip("espeak-ng or sox not installed")


def _onsets(signals: list[np.ndarray], law: g711.Law | None) -> list[str]:
    n = len(signals)
    length = max(len(s) for s in signals) + 1600
    length += (-length) % 160
    batch = np.zeros((n, length), dtype=np.int16)
    for i, s in enumerate(signals):
        batch[i, : len(s)] = s
    if law is not None:
        batch = g711.decode_batch(g711.encode_batch(batch, law), law)
    det = DtmfDetector(n)
    slots = np.array([det.add_leg(i) for i in range(n)], dtype=np.intp)
    out = [""] * n
    for t in range(0, length, 160):
        for leg, ev in det.process(slots, batch[:, t : t + 160], t):
            if not ev.ended:
                assert isinstance(leg, int)
                out[leg] += ev.digit
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    _need_espeak()
    tc = _corpus()
    os.environ["SOFTSWITCH_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        speech = tc.speech(LANGS, seconds=20.0)
        again = tc.speech(LANGS, seconds=20.0)  # from the cache this time
    finally:
        del os.environ["SOFTSWITCH_CACHE"]
    assert all(np.array_equal(speech[k], again[k]) for k in LANGS)
    return {**speech, **tc.music(10.0), **tc.noise(speech, 10.0)}


def test_corpus_is_speech_of_the_asked_length(corpus: dict[str, np.ndarray]) -> None:
    for lang in LANGS:
        sig = corpus[lang]
        assert len(sig) == 20 * 8000
        blocks = (sig[: len(sig) // 80 * 80].astype(np.float64).reshape(-1, 80) ** 2).mean(axis=1)
        assert (blocks > 1e4).mean() > 0.3  # mostly speech (about -30 dBm0 and up), some pauses


@pytest.mark.parametrize("law", [None, "ulaw", "alaw"])
def test_no_digit_in_speech_music_or_noise(
    corpus: dict[str, np.ndarray], law: g711.Law | None
) -> None:
    names = list(corpus)
    gains = (0.3, 1.0, 2.5)
    signals = [
        np.clip(np.rint(corpus[k] * g), -32768, 32767).astype(np.int16)
        for k in names
        for g in gains
    ]
    found = _onsets(signals, law)
    false = {f"{names[i // 3]} x{gains[i % 3]}": d for i, d in enumerate(found) if d}
    assert false == {}
