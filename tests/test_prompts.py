"""The committed prompt set: complete, decodable, 8 kHz mono, sensible length, even loudness.

These tests read the files under softswitch/prompts/ only; no TTS engine runs here. They also cover the
loader (softswitch/prompts) and the signal processing of scripts/make_prompts.py on synthetic input.
"""

from __future__ import annotations

import importlib.util
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from media.player import clear_cache, load_audio
from softswitch.prompts import (
    DIGIT_PROMPTS,
    LANGUAGES,
    PROMPT_NAMES,
    PROMPTS_DIR,
    MissingPromptsError,
    check_prompts,
    digit_prompts,
    missing_prompts,
    prompt_path,
)
from softswitch.service.callflow import PROMPTS_PLAYED

REPO = Path(__file__).resolve().parent.parent
RATE = 8000
# Level window for the active part of each prompt (10 ms blocks within 30 dB of the loudest).
RMS_RANGE_DBFS = (-23.0, -17.0)
PEAK_MAX_DBFS = -2.5
MIN_S, MAX_S = 0.2, 9.0
ALL = [(lang, name) for lang in LANGUAGES for name in PROMPT_NAMES]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_prompts", REPO / "scripts/make_prompts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("make_prompts", module)
    spec.loader.exec_module(module)
    return module


make_prompts = _script()


def _manifest() -> dict[str, dict[str, Any]]:
    with open(PROMPTS_DIR / "manifest.toml", "rb") as f:
        return tomllib.load(f)


def _decode_native(path: Path) -> tuple[int, int, npt.NDArray[np.float64]]:
    """(sample rate, channels, samples at full scale 1.0) exactly as stored, no resampling."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        rate, channels = stream.codec_context.sample_rate, stream.codec_context.channels
        chunks = [f.to_ndarray().reshape(-1) for f in container.decode(stream)]
    pcm = np.concatenate(chunks)
    assert pcm.dtype == np.int16, f"{path}: {pcm.dtype}, expected 16-bit"
    return rate, channels, pcm.astype(np.float64) / 32768.0


def _active_rms_db(x: npt.NDArray[np.float64]) -> float:
    levels = make_prompts.block_db(x)
    active = levels[levels > levels.max() - 30.0]
    return float(10 * np.log10(np.mean(10 ** (active / 10))))


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    clear_cache()


def test_manifest_matches_prompt_names() -> None:
    manifest = _manifest()
    assert tuple(manifest) == PROMPT_NAMES
    for name, entry in manifest.items():
        if "tone" in entry:
            assert set(entry["tone"]) == {"frequency_hz", "duration_s"}, name
        else:
            assert {"en", "ja"} <= set(entry), name
            assert entry["en"].strip() and entry["ja"].strip(), name


def test_the_prompts_the_spec_asks_for_are_named() -> None:
    wanted = {
        "greeting",
        "dial_prompt",
        "invalid_number",
        "blocked_number",
        "no_credit",
        "over_limit",
        "destination_busy",
        "one_minute_warning",
        "connecting_customer_service",
        "goodbye",
        "security_code_enter",
        "security_code_wrong",
        "security_code_locked",
        "location_enter_number",
        "location_enter_extension",
        "location_you_entered",
        "location_confirm",
        "location_call_back_now",
        "name_menu",
        "beep",
    }
    assert wanted <= set(PROMPT_NAMES)
    digits = [f"digit_{d}" for d in "0123456789"] + ["digit_star", "digit_pound"]
    assert set(digits) <= set(PROMPT_NAMES)
    assert sorted(DIGIT_PROMPTS) == sorted("0123456789*#")
    assert len(set(PROMPT_NAMES)) == len(PROMPT_NAMES)


def test_dial_prompt_says_what_the_spec_says() -> None:
    entry = _manifest()["dial_prompt"]
    assert entry["en"] == "Please dial the number you want to call, then press star."


@pytest.mark.parametrize(("lang", "name"), ALL, ids=[f"{lang}-{name}" for lang, name in ALL])
def test_prompt_file(lang: str, name: str) -> None:
    path = prompt_path(lang, name)
    assert path.is_file(), f"{path} missing"
    rate, channels, x = _decode_native(path)
    assert (rate, channels) == (RATE, 1)
    seconds = len(x) / RATE
    assert MIN_S <= seconds <= MAX_S, f"{path}: {seconds:.2f} s"
    peak_db = 20 * np.log10(np.abs(x).max())
    assert -30.0 < peak_db <= PEAK_MAX_DBFS, f"{path}: peak {peak_db:.1f} dBFS"
    rms_db = _active_rms_db(x)
    assert RMS_RANGE_DBFS[0] <= rms_db <= RMS_RANGE_DBFS[1], f"{path}: rms {rms_db:.1f} dBFS"
    # Trimmed: about 100 ms of silence at each end, and sound right after it.
    assert np.abs(x[: RATE // 20]).max() < 0.01 and np.abs(x[-RATE // 20 :]).max() < 0.01
    assert np.abs(x[: RATE // 4]).max() > 0.05 and np.abs(x[-RATE // 4 :]).max() > 0.002
    # The player's own loader reads it too (what the switch does at run time).
    pcm = load_audio(path)
    assert abs(len(pcm) - len(x)) < 160


def test_beep_is_a_1khz_tone_in_both_languages() -> None:
    _, _, en = _decode_native(prompt_path("en", "beep"))
    _, _, ja = _decode_native(prompt_path("ja", "beep"))
    assert np.array_equal(en, ja)
    spectrum = np.abs(np.fft.rfft(en))
    assert abs(np.argmax(spectrum) * RATE / len(en) - 1000.0) < 10.0


def test_the_two_languages_differ() -> None:
    for name in ("dial_prompt", "digit_1", "goodbye"):
        assert prompt_path("en", name).read_bytes() != prompt_path("ja", name).read_bytes()


def test_total_size_stays_small() -> None:
    total = sum(p.stat().st_size for p in PROMPTS_DIR.rglob("*.wav"))
    assert total < 5_000_000
    extra = {p for p in PROMPTS_DIR.rglob("*.wav")} - {prompt_path(*k) for k in ALL}
    assert not extra, f"files not in the manifest: {sorted(map(str, extra))}"


def test_committed_set_passes_the_startup_check() -> None:
    assert missing_prompts() == []
    check_prompts(decode=True)


def test_every_prompt_the_call_flow_can_play_is_in_the_set() -> None:
    # Derived from the call flow, not written out here: Play takes only callflow.Prompt
    # members, so PROMPTS_PLAYED is every prompt it can play (the node checks the same list
    # at start-up). The defect this guards: the flow played call_failed, no_answer and
    # unknown_speed_dial, which did not exist, and customers heard silence.
    assert set(PROMPT_NAMES) >= PROMPTS_PLAYED
    assert {"call_failed", "no_answer", "unknown_speed_dial"} <= PROMPTS_PLAYED
    check_prompts(names=PROMPTS_PLAYED, decode=True)
    with pytest.raises(ValueError, match="not prompt names: hello"):
        check_prompts(names=["hello"])


def test_prompt_path_and_read_backs() -> None:
    assert prompt_path("ja", "dial_prompt") == PROMPTS_DIR / "ja" / "dial_prompt.wav"
    assert prompt_path("en", "beep", Path("/x")) == Path("/x/en/beep.wav")
    assert digit_prompts("en", "81*#", Path("/p")) == [
        Path("/p/en/digit_8.wav"),
        Path("/p/en/digit_1.wav"),
        Path("/p/en/digit_star.wav"),
        Path("/p/en/digit_pound.wav"),
    ]
    assert digit_prompts("ja", "") == []
    with pytest.raises(ValueError, match="language 'fr'"):
        prompt_path("fr", "greeting")
    with pytest.raises(ValueError, match="unknown prompt 'hello'"):
        prompt_path("en", "hello")
    with pytest.raises(ValueError, match="reads back 'A'"):
        digit_prompts("en", "1A")


def test_startup_check_names_every_missing_and_unreadable_file(tmp_path: Path) -> None:
    for lang in LANGUAGES:
        (tmp_path / lang).mkdir()
        for name in PROMPT_NAMES:
            src = prompt_path(lang, name)
            (tmp_path / lang / src.name).write_bytes(src.read_bytes())
    check_prompts(tmp_path, decode=True)
    (tmp_path / "en" / "greeting.wav").write_bytes(b"not audio at all" * 10)
    check_prompts(tmp_path)  # existence only: the garbage file is not looked into
    (tmp_path / "ja" / "goodbye.wav").unlink()
    (tmp_path / "en" / "digit_7.wav").unlink()
    (tmp_path / "en" / "beep.wav").write_bytes(b"")
    assert set(missing_prompts(tmp_path)) == {
        tmp_path / "ja" / "goodbye.wav",
        tmp_path / "en" / "digit_7.wav",
        tmp_path / "en" / "beep.wav",
    }
    with pytest.raises(MissingPromptsError) as info:
        check_prompts(tmp_path, decode=True)
    err = info.value
    assert len(err.missing) == 3
    assert [p for p, _ in err.unreadable] == [tmp_path / "en" / "greeting.wav"]
    text = str(err)
    for fragment in ("ja/goodbye.wav", "en/digit_7.wav", "en/beep.wav", "en/greeting.wav"):
        assert fragment in text
    assert "make_prompts.py" in text


# --- scripts/make_prompts.py's processing, on synthetic signals (no TTS) ---------------------


def _burst(seconds: float, amplitude: float) -> npt.NDArray[np.float64]:
    t = np.arange(round(seconds * RATE)) / RATE
    return np.asarray(amplitude * np.sin(2 * np.pi * 440 * t), dtype=np.float64)


def test_trim_keeps_100ms_each_end_and_shortens_long_pauses() -> None:
    silence = np.zeros
    x = np.concatenate(
        [silence(4000), _burst(0.5, 0.3), silence(8000), _burst(0.3, 0.3), silence(2400)]
    )
    y = make_prompts.trim(x)
    pad = round(make_prompts.PAD_S * RATE)
    assert not y[:pad].any() and not y[-pad:].any()
    assert np.abs(y[pad : pad + 80]).max() > 0.1 and np.abs(y[-pad - 80 : -pad]).max() > 0.1
    pause = round(make_prompts.MAX_PAUSE_S * RATE)
    assert len(y) == 2 * pad + 4000 + pause + 2400
    with pytest.raises(SystemExit):
        make_prompts.trim(silence(8000))


def test_normalise_targets_rms_unless_the_peak_limits() -> None:
    soft = make_prompts.normalise(_burst(1.0, 0.01))
    assert _active_rms_db(soft) == pytest.approx(make_prompts.TARGET_RMS_DBFS, abs=0.05)
    spiky = _burst(1.0, 0.01)
    spiky[100] = 0.5
    out = make_prompts.normalise(spiky)
    assert 20 * np.log10(np.abs(out).max()) == pytest.approx(make_prompts.PEAK_LIMIT_DBFS)


def test_resample_to_8k() -> None:
    t = np.arange(48000) / 48000
    y = make_prompts.resample(0.5 * np.sin(2 * np.pi * 1000 * t), 48000)
    assert abs(len(y) - RATE) < 64
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * RATE / len(y) - 1000.0) < 5.0


def test_beep_regenerates_byte_for_byte() -> None:
    entry = _manifest()["beep"]
    for lang in LANGUAGES:
        assert make_prompts.render(entry, lang) == prompt_path(lang, "beep").read_bytes()
