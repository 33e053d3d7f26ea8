#!/usr/bin/env python3
"""Regenerate the committed prompt audio from prompts/manifest.toml with offline TTS.

Usage: make_prompts.py [--lang ja|en] [--only NAME ...] [--root DIR]

Every manifest entry becomes prompts/<lang>/<name>.wav for each language: English is spoken by
espeak-ng (`-v en-us -s 150`), Japanese by pyopenjtalk-plus at `JA_SPEED` (its dictionary and HTS voice ship
in the wheel, so neither engine touches the network); an entry with `tone` is a generated sine
beep, identical in both languages. Each result is then made uniform for the phone network:

1. resampled to 8 kHz mono with libswresample (PyAV), which low-passes below 4 kHz first;
2. trimmed to `PAD_S` (100 ms) of silence at each end, where "silence" is any 10 ms block more
   than `TRIM_DB` below the loudest block (TTS engines leave uneven leading/trailing gaps), and
   pauses inside shortened to `MAX_PAUSE_S` (the Japanese voice pauses ~0.5 s per sentence,
   which makes menus drag on the phone);
3. normalised so that the RMS of the active blocks (within `ACTIVE_DB` of the loudest) is
   `TARGET_RMS_DBFS`, unless that would push the peak above `PEAK_LIMIT_DBFS`, in which case the
   peak sets the gain: prompts then sound equally loud back to back;
4. written as 16-bit PCM WAV, only when the bytes differ from the file already there, so a rerun
   is idempotent and leaves unchanged files (and their modification times) alone.

The switch never imports this script: it only reads the WAV files (see media/prompts.py).
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import tomllib
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

RATE = 8000
PAD_S = 0.1
MAX_PAUSE_S = 0.35
BLOCK_S = 0.01
TRIM_DB = 45.0
ACTIVE_DB = 30.0
TARGET_RMS_DBFS = -20.0
PEAK_LIMIT_DBFS = -3.0
LANGUAGES = ("ja", "en")
ESPEAK_ARGS = ("-v", "en-us", "-s", "150")
# The HTS voice's default pace is slower than espeak-ng at 150 words a minute; this evens it out.
JA_SPEED = 1.1
ROOT = Path(__file__).resolve().parent.parent / "softswitch" / "prompts"

Float = npt.NDArray[np.float64]


def load_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """The manifest as {name: entry}, in file order; entries are checked for the needed keys."""
    with open(root / "manifest.toml", "rb") as f:
        manifest = tomllib.load(f)
    for name, entry in manifest.items():
        if not isinstance(entry, dict):
            raise SystemExit(f"manifest: {name!r} is not a table")
        if "tone" not in entry and any(lang not in entry for lang in LANGUAGES):
            raise SystemExit(f"manifest: {name!r} needs a text for each of {LANGUAGES}")
    return manifest


def resample(x: Float, rate: int) -> Float:
    """`x` (full scale 1.0, at `rate` Hz) resampled to 8 kHz with libswresample."""
    if rate == RATE:
        return x
    frame = av.AudioFrame.from_ndarray(
        x.astype(np.float32).reshape(1, -1), format="flt", layout="mono"
    )
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.float64)


def speak_en(text: str) -> Float:
    """English speech from espeak-ng, at 8 kHz, full scale 1.0."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.wav")
        subprocess.run(["espeak-ng", *ESPEAK_ARGS, "-w", path, text], check=True)
        with wave.open(path, "rb") as w:
            rate = w.getframerate()
            if w.getsampwidth() != 2 or w.getnchannels() != 1:
                raise SystemExit("espeak-ng: expected 16-bit mono WAV")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return resample(pcm.astype(np.float64) / 32768.0, rate)


def speak_ja(text: str) -> Float:
    """Japanese speech from pyopenjtalk-plus, at 8 kHz, full scale 1.0."""
    import pyopenjtalk

    # predict_nani needs onnxruntime (not installed; it only disambiguates the reading of 何).
    x, rate = pyopenjtalk.tts(text, speed=JA_SPEED, predict_nani=False)
    return resample(np.asarray(x, dtype=np.float64) / 32768.0, int(rate))


def tone(frequency_hz: float, duration_s: float) -> Float:
    """A sine beep with 5 ms raised-cosine ramps (no click at either end)."""
    n = round(duration_s * RATE)
    x = np.sin(2 * np.pi * frequency_hz * np.arange(n) / RATE)
    ramp = round(0.005 * RATE)
    window = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    x[:ramp] *= window
    x[n - ramp :] *= window[::-1]
    return np.asarray(x, dtype=np.float64)


def block_db(x: Float) -> Float:
    """RMS level of each whole 10 ms block in dBFS (full scale 1.0)."""
    size = round(BLOCK_S * RATE)
    blocks = x[: len(x) // size * size].reshape(-1, size)
    rms = np.sqrt(np.mean(blocks**2, axis=1))
    return np.asarray(20 * np.log10(np.maximum(rms, 1e-9)), dtype=np.float64)


def trim(x: Float) -> Float:
    """`x` cut to its first..last sounding block with `PAD_S` of digital silence each side, and
    every pause inside it shortened to at most `MAX_PAUSE_S`."""
    size = round(BLOCK_S * RATE)
    levels = block_db(x)
    if len(levels) == 0 or levels.max() < -90:
        raise SystemExit("the synthesiser produced silence")
    quiet = levels <= levels.max() - TRIM_DB
    loud = np.flatnonzero(~quiet)
    keep = np.zeros(len(levels), dtype=bool)
    keep[loud[0] : loud[-1] + 1] = True
    longest = round(MAX_PAUSE_S / BLOCK_S)
    start = None
    for i in range(loud[0], loud[-1] + 2):
        if i <= loud[-1] and quiet[i]:
            start = i if start is None else start
        elif start is not None:
            # Drop the middle of a long pause, keeping its edges (decays and onsets).
            if i - start > longest:
                keep[start + longest // 2 : i - (longest - longest // 2)] = False
            start = None
    core = x[: len(levels) * size].reshape(-1, size)[keep].reshape(-1)
    pad = np.zeros(round(PAD_S * RATE))
    return np.concatenate([pad, core, pad])


def normalise(x: Float) -> Float:
    """`x` scaled to the target active RMS, or to the peak limit if that is lower."""
    levels = block_db(x)
    active = levels[levels > levels.max() - ACTIVE_DB]
    active_rms_db = 10 * np.log10(np.mean(10 ** (active / 10)))
    gain_db = TARGET_RMS_DBFS - active_rms_db
    peak_db = 20 * np.log10(np.max(np.abs(x)))
    gain_db = min(gain_db, PEAK_LIMIT_DBFS - peak_db)
    return np.asarray(x * 10 ** (gain_db / 20), dtype=np.float64)


def to_wav(x: Float) -> bytes:
    """8 kHz mono 16-bit PCM WAV bytes."""
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def render(entry: dict[str, Any], lang: str) -> bytes:
    """The finished WAV file for one manifest entry in one language."""
    if "tone" in entry:
        raw = tone(float(entry["tone"]["frequency_hz"]), float(entry["tone"]["duration_s"]))
    elif lang == "en":
        raw = speak_en(entry["en"])
    else:
        raw = speak_ja(entry["ja"])
    return to_wav(normalise(trim(raw)))


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the selected prompts; prints one line per file and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lang", choices=LANGUAGES, help="only this language (default: all)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these prompts")
    parser.add_argument("--root", type=Path, default=ROOT, help="the prompts directory")
    args = parser.parse_args(argv)
    root: Path = args.root
    manifest = load_manifest(root)
    names = list(manifest) if args.only is None else list(args.only)
    unknown = [n for n in names if n not in manifest]
    if unknown:
        parser.error(f"not in the manifest: {', '.join(unknown)}")
    langs = LANGUAGES if args.lang is None else (args.lang,)
    written = unchanged = 0
    for lang in langs:
        (root / lang).mkdir(parents=True, exist_ok=True)
        for name in names:
            path = root / lang / f"{name}.wav"
            data = render(manifest[name], lang)
            if path.exists() and path.read_bytes() == data:
                unchanged += 1
                continue
            path.write_bytes(data)
            written += 1
            seconds = (len(data) - 44) / 2 / RATE
            print(f"{lang}/{name}.wav  {seconds:.2f} s")
    print(f"{written} written, {unchanged} unchanged", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
