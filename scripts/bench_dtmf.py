"""DTMF receiver conformance benchmark (ITU-T Q.24 / ETSI ES 201 235-3 style battery).

Builds the classic test battery (decode, frequency, twist, dynamic range, duration, gaps,
noise, dial tone, talk-off on speech and music), runs it through ``media.dtmf.DtmfDetector``
linear, through mu-law and through A-law, and prints one table row per requirement:
requirement | target | measured (lin / mu / A) | pass. Then the detector throughput.
Every signal of a test runs as one leg of the same detector batch, which is how the media
engine uses it. Exit status is non-zero when a requirement fails.

Usage: .venv/bin/python scripts/bench_dtmf.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import talkoff_corpus

from media import g711
from media.digits import DigitEvent
from media.dtmf import DtmfDetector
from media.tones import DBM0_PEAK, DTMF_FREQS, dtmf_tone, sine
from media.tools import read_audio

ALL = "0123456789*#ABCD"
LAWS: tuple[str | None, ...] = (None, "ulaw", "alaw")
Signal = NDArray[np.int16]
rng = np.random.default_rng(4733)


def detect_many(signals: list[Signal], law: str | None) -> list[list[DigitEvent]]:
    """Run every signal as one leg of a single detector batch; onsets+ends per signal."""
    n = len(signals)
    length = max(len(s) for s in signals) + 1600
    length += (-length) % 160
    batch = np.zeros((n, length), dtype=np.int16)
    for i, s in enumerate(signals):
        batch[i, : len(s)] = s
    if law == "ulaw":
        batch = g711.decode_batch(g711.encode_batch(batch, "ulaw"), "ulaw")
    elif law == "alaw":
        batch = g711.decode_batch(g711.encode_batch(batch, "alaw"), "alaw")
    det = DtmfDetector(n)
    slots = np.array([det.add_leg(i) for i in range(n)], dtype=np.intp)
    out: list[list[DigitEvent]] = [[] for _ in range(n)]
    for t in range(0, length, 160):
        for leg, ev in det.process(slots, batch[:, t : t + 160], t):
            out[int(leg)].append(ev)  # type: ignore[call-overload]
    return out


def onsets(events: list[DigitEvent]) -> str:
    return "".join(e.digit for e in events if not e.ended)


def train(digits: str, on_ms: float = 50, off_ms: float = 50, **kw: object) -> Signal:
    """Bursts with random sub-frame offsets and random phases."""
    parts = [np.zeros(400 + int(rng.integers(0, 160)), np.int16)]
    for d in digits:
        tone = dtmf_tone(d, on_ms, phase=float(rng.uniform(0, 2 * np.pi)), **kw)  # type: ignore[arg-type]
        parts += [tone, np.zeros(int(off_ms * 8) + int(rng.integers(0, 8)), np.int16)]
    return np.concatenate(parts)


def mix(*sigs: NDArray[np.floating] | Signal) -> Signal:
    n = min(len(s) for s in sigs)
    total = np.zeros(n)
    for s in sigs:
        total += s[:n]
    out: Signal = np.clip(np.rint(total), -32768, 32767).astype(np.int16)
    return out


def noise_for(sig: Signal, snr_db: float, tone_dbm0: float = -4.0) -> NDArray[np.float64]:
    # S/N relative to the digit's total power (two tones at tone_dbm0 each).
    signal_power = 2 * (DBM0_PEAK * 10 ** (tone_dbm0 / 20)) ** 2 / 2
    return rng.normal(0.0, np.sqrt(signal_power / 10 ** (snr_db / 10)), len(sig))


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, bool]] = []

    def add(self, req: str, target: str, measured: str, ok: bool) -> None:
        self.rows.append((req, target, measured, ok))
        print(f"  {req:<38} {target:<30} {measured:<50} {'pass' if ok else 'FAIL'}", flush=True)


def per_law(fn: Callable[[str | None], tuple[str, bool]]) -> tuple[str, bool]:
    results = [fn(law) for law in LAWS]
    return " / ".join(r[0] for r in results), all(r[1] for r in results)


def bench_decode(table: Table, reps: int) -> None:
    def one(law: str | None) -> tuple[str, bool]:
        sigs = [train(ALL) for _ in range(reps)]
        res = detect_many(sigs, law)
        good = sum(onsets(r) == ALL for r in res)
        return f"{good}/{reps}", good == reps

    table.add("16 digits, -4 dBm0, 50/50 ms", "each exactly once", *per_law(one))

    def durations(law: str | None) -> tuple[str, bool]:
        res = detect_many([train(ALL) for _ in range(reps)], law)
        d = [e.duration_ms for r in res for e in r if e.ended]
        return f"{min(d)}-{max(d)} ms", min(d) >= 40 and max(d) <= 60

    table.add("reported duration of 50 ms tones", "40-60 ms", *per_law(durations))


def bench_frequency(table: Table, step: float) -> None:
    devs = np.round(np.arange(step, 0.0601, step), 4)
    # One digit per DTMF frequency; sweep that frequency, keep the other nominal.
    freqs: list[tuple[str, int]] = []
    for f in sorted({f for pair in DTMF_FREQS.values() for f in pair}):
        digit = next(d for d, pair in DTMF_FREQS.items() if f in pair)
        freqs.append((digit, DTMF_FREQS[digit].index(f)))

    def one(law: str | None) -> tuple[str, bool]:
        cases = [(d, g, s * dev) for d, g in freqs for s in (-1, 1) for dev in devs]
        sigs = []
        for d, g, dev in cases:
            fd = (dev, 0.0) if g == 0 else (0.0, dev)
            sigs.append(train(d * 3, on_ms=60, off_ms=60, freq_dev=fd))
        res = detect_many(sigs, law)
        accepted = {
            (d, g, dev): onsets(r) == d * 3 for (d, g, dev), r in zip(cases, res, strict=True)
        }
        bandwidths = []
        ok = True
        for d, g in freqs:
            up = max(
                [dev for dev in devs if all(accepted[(d, g, x)] for x in devs if x <= dev)],
                default=0.0,
            )
            lo = max(
                [dev for dev in devs if all(accepted[(d, g, -x)] for x in devs if x <= dev)],
                default=0.0,
            )
            bandwidths.append(up + lo)
            ok &= all(accepted[(d, g, s * x)] for s in (-1, 1) for x in devs if x <= 0.015)
            for dev in devs:
                if dev >= 0.035 and (accepted[(d, g, dev)] or accepted[(d, g, -dev)]):
                    ok = False
        bw = f"bw {min(bandwidths) * 100:.1f}-{max(bandwidths) * 100:.1f}%"
        ok &= min(bandwidths) >= 0.03 and max(bandwidths) <= 0.15
        return bw, ok

    table.add("frequency: +-1.5% accept, >=3.5% rej", "bandwidth 3-15 %", *per_law(one))


def bench_twist(table: Table) -> None:
    def one(law: str | None) -> tuple[str, bool]:
        twists = np.arange(-14.0, 10.01, 1.0)
        res = detect_many([train(ALL, twist_db=float(t)) for t in twists], law)
        ok_t = [float(t) for t, r in zip(twists, res, strict=True) if onsets(r) == ALL]
        normal = -min(ok_t) if ok_t else 0.0
        reverse = max(ok_t) if ok_t else 0.0
        return f"norm {normal:.0f} rev {reverse:.0f} dB", normal >= 8 and reverse >= 4

    table.add("twist", "normal >= 8, reverse >= 4 dB", *per_law(one))


def bench_level(table: Table) -> None:
    def one(law: str | None) -> tuple[str, bool]:
        levels = np.arange(3.0, -45.01, -1.0)
        res = detect_many([train(ALL, level_dbm0=float(lv)) for lv in levels], law)
        good = [float(lv) for lv, r in zip(levels, res, strict=True) if onsets(r) == ALL]
        top, bottom = max(good), min(good)
        contiguous = all(lv in good for lv in levels if bottom <= lv <= top)
        rng_db = top - bottom
        return (
            f"{top:+.0f}..{bottom:.0f} dBm0 ({rng_db:.0f} dB)",
            contiguous and rng_db >= 35 and top >= 3 and bottom <= -32,
        )

    table.add("dynamic range (per tone)", ">= 35 dB, +3..-32 dBm0", *per_law(one))


def bench_duration(table: Table, reps: int) -> None:
    def one(law: str | None) -> tuple[str, bool]:
        durs = [10, 15, 19, 20, 25, 30, 35, 40, 45, 50, 60]
        sigs = [train(ALL, on_ms=d, off_ms=60) for d in durs for _ in range(reps)]
        res = detect_many(sigs, law)
        rate = {d: 0 for d in durs}
        for i, r in enumerate(res):
            rate[durs[i // reps]] += len(onsets(r))
        total = 16 * reps
        shortest = min((d for d in durs if rate[d] == total), default=0)
        longest_rej = max((d for d in durs if rate[d] == 0), default=0)
        ok = all(rate[d] == total for d in durs if d >= 40)
        ok &= all(rate[d] == 0 for d in durs if d < 20)
        return f"all from {shortest} ms, none <= {longest_rej} ms", ok

    table.add("tone duration", ">=40 ms yes, <20 ms no", *per_law(one))

    def gaps(law: str | None) -> tuple[str, bool]:
        gap_ms = [2, 5, 8, 10, 15, 20, 30, 40, 50]
        sigs = []
        for g in gap_ms:
            for _ in range(reps):
                lead = np.zeros(400 + int(rng.integers(0, 160)), np.int16)
                a, b = dtmf_tone("5", 60), dtmf_tone("5", 60, phase=float(rng.uniform(0, 6)))
                sigs.append(np.concatenate([lead, a, np.zeros(g * 8, np.int16), b]))
        res = detect_many(sigs, law)
        count = {g: 0 for g in gap_ms}
        for i, r in enumerate(res):
            count[gap_ms[i // reps]] += len(onsets(r))
        bridged = max((g for g in gap_ms if count[g] == reps), default=0)
        split = min((g for g in gap_ms if count[g] == 2 * reps), default=99)
        ok = all(count[g] == reps for g in gap_ms if g <= 10)
        ok &= all(count[g] == 2 * reps for g in gap_ms if g >= 40)
        return f"bridged <= {bridged} ms, split >= {split} ms", ok

    table.add("interruptions", "<=10 ms bridged, >=40 split", *per_law(gaps))


def bench_noise(table: Table, reps: int) -> None:
    for snr in (20.0, 15.0, 12.0):

        def one(law: str | None, snr: float = snr) -> tuple[str, bool]:
            sigs = []
            for _ in range(reps):
                s = train(ALL)
                sigs.append(mix(s, noise_for(s, snr)))
            res = detect_many(sigs, law)
            exact = sum(onsets(r) == ALL for r in res)
            return f"{exact}/{reps} exact", exact == reps or snr < 15

        target = "all digits, once" if snr >= 15 else "(informative)"
        table.add(f"white noise S/N {snr:.0f} dB", target, *per_law(one))


def bench_dial_tone(table: Table, reps: int) -> None:
    """spandsp's dial tone tolerance test: the 16 digits at -15 dBm0 per tone, ``reps`` times,
    under 350 + 440 Hz from -30 dBm0 per tone upwards in 1 dB steps; the figure is the highest
    dial tone level below the first one that loses a digit (higher is better). spandsp passes
    its receiver at a signal to dial tone ratio of <= 10 dB without its dial tone filter and
    <= -12 dB (dial tone 12 dB above the digits, -3 dBm0) with it."""
    levels = list(range(-30, 4))

    def one(law: str | None) -> tuple[str, bool]:
        sigs = []
        for j in levels:
            for _ in range(reps):
                s = train(ALL, level_dbm0=-15.0)
                sigs.append(mix(s, sine((350.0, 440.0), len(s) / 8, float(j))))
        res = detect_many(sigs, law)
        ok = [
            all(onsets(res[i * reps + r]) == ALL for r in range(reps)) for i in range(len(levels))
        ]
        first_fail = next((j for j, good in zip(levels, ok, strict=True) if not good), None)
        top = levels[-1] if first_fail is None else first_fail - 1
        return f"up to {top:+d} dBm0 (S/dial {-15 - top:+d} dB)", top >= -4

    table.add("dial tone 350+440 Hz, digits -15 dBm0", "up to >= -4 dBm0 (spandsp)", *per_law(one))


def speech_signals(seconds: float = 15.0) -> list[tuple[str, Signal]]:
    """(language, speech) from the talk-off corpus, ``seconds`` per language (every language
    of scripts/talkoff_corpus.py); [] without espeak-ng. bench_media.py's clamp run uses it."""
    return list(talkoff_corpus.speech(seconds=seconds).items())


def music_signals(seconds: float) -> list[Signal]:
    t = np.arange(int(8000 * seconds)) / 8000
    sigs: list[Signal] = []
    chords = [(261.6, 329.6, 392.0), (220.0, 277.2, 329.6, 440.0), (349.2, 440.0, 523.3, 698.5)]
    for chord in chords:
        x = np.zeros(len(t))
        for f in chord:
            for h in (1, 2, 3):
                x += np.sin(2 * np.pi * f * h * t) / h * 4000
        sigs.append(mix(x))
    for f0, f1 in ((300, 3400), (3400, 300), (600, 1700)):
        k = (f1 - f0) / seconds
        sigs.append(mix(np.sin(2 * np.pi * (f0 * t + k / 2 * t**2)) * 12000))
    for _ in range(6):
        notes = []
        for f0 in rng.uniform(110, 1000, size=int(seconds * 8)):
            n = t[:1000]
            amp = rng.uniform(0.3, 1.0, 8) / np.arange(1, 9) ** rng.uniform(0.5, 1.5)
            notes.append(sum(a * np.sin(2 * np.pi * f0 * h * n) for h, a in enumerate(amp, 1)))
        sigs.append(mix(np.concatenate(notes)[: len(t)] * 5000))
    return sigs


def prompt_signals() -> dict[str, Signal]:
    """The switch's own prompts (English by espeak-ng, Japanese by pyopenjtalk), 8 kHz."""
    root = Path(__file__).resolve().parent.parent / "softswitch" / "prompts"
    return {f"{p.parent.name}/{p.stem}": read_audio(p) for p in sorted(root.glob("*/*.wav"))}


def count_false(
    parts: dict[str, Signal], law: str | None, gains: tuple[float, ...]
) -> dict[str, int]:
    """False digits per named signal, each at every gain, all as legs of one batch."""
    names = list(parts)
    sigs = [mix(parts[k].astype(np.float64) * g) for k in names for g in gains]
    res = detect_many(sigs, law)
    out = dict.fromkeys(names, 0)
    for i, r in enumerate(res):
        out[names[i // len(gains)]] += len(onsets(r))
    return out


def talkoff_row(
    table: Table, label: str, parts: dict[str, Signal], gains: tuple[float, ...]
) -> None:
    seconds = sum(len(s) for s in parts.values()) / 8000 * len(gains)
    offenders: list[str] = []

    def one(law: str | None) -> tuple[str, bool]:
        false = count_false(parts, law, gains)
        offenders.extend(f"{k} ({law or 'lin'}): {n}" for k, n in false.items() if n)
        return f"{sum(false.values())} in {seconds / 60:.1f} min", not any(false.values())

    table.add(label, "0 false digits", *per_law(one))
    if offenders:
        print(f"    false digits: {', '.join(offenders)}")


def bench_talkoff(table: Table, speech_seconds: float, other_seconds: float) -> None:
    """Speech in every language of the corpus at three levels (-10, 0, +8 dB on utterances
    set between -30 and -10 dBm0), the switch's prompts, music-like signals and noise (see
    scripts/talkoff_corpus.py)."""
    gains = (0.3, 1.0, 2.5)
    speech = talkoff_corpus.speech(seconds=speech_seconds)
    if speech:
        langs = len({k.split("-")[0] for k in speech if k != "en-gb"})
        minutes = sum(len(s) for s in speech.values()) / 8000 / 60
        print(
            f"  talk-off corpus: {minutes:.1f} min of speech in {langs} languages "
            f"({' '.join(speech)}), each at 3 levels; cached in {talkoff_corpus.cache_root()}"
        )
        talkoff_row(table, f"talk-off: speech, {langs} languages", speech, gains)
    else:
        table.add("talk-off: speech", "0 false digits", "espeak-ng missing", False)
    talkoff_row(table, "talk-off: the switch's prompts (en, ja)", prompt_signals(), gains)
    music = {
        **talkoff_corpus.music(other_seconds),
        **{f"chords/sweeps/notes {i}": m for i, m in enumerate(music_signals(30.0))},
    }
    talkoff_row(table, "talk-off: music-like signals", music, (0.5, 1.0, 2.0))
    noise = talkoff_corpus.noise(speech, other_seconds)
    talkoff_row(table, "talk-off: white/pink noise, babble", noise, (0.5, 1.0, 2.0))


def bench_throughput() -> str:
    legs, ticks = 500, 100
    det = DtmfDetector(legs)
    slots = np.array([det.add_leg(i) for i in range(legs)], dtype=np.intp)
    audio = np.zeros((legs, 160 * ticks), dtype=np.int16)
    digits = train("123456789", on_ms=60, off_ms=60)[: 160 * ticks]
    audio[::5, : len(digits)] = digits  # every fifth leg is dialling
    audio += rng.normal(0, 300, audio.shape).astype(np.int16)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for t in range(ticks):
        det.process(slots, audio[:, t * 160 : (t + 1) * 160], t * 160)
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    rate = legs * ticks / cpu
    return (
        f"throughput: {legs} legs x {ticks} frames in {cpu:.3f} s CPU ({wall:.3f} s wall): "
        f"{rate:,.0f} leg-frames/s = {rate / 50:,.0f} legs in real time per CPU "
        f"({cpu / ticks * 1e3:.2f} ms per 20 ms tick for {legs} legs)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    reps = 4 if args.quick else 20
    table = Table()
    t0 = time.perf_counter()
    print(f"DTMF conformance (measured: linear / mu-law / A-law); 0 dBm0 peak = {DBM0_PEAK:.0f}")
    print(f"  {'requirement':<38} {'target':<30} {'measured':<50} result")
    bench_decode(table, reps)
    bench_frequency(table, 0.002 if args.quick else 0.001)
    bench_twist(table)
    bench_level(table)
    bench_duration(table, max(2, reps // 4))
    bench_noise(table, reps)
    bench_dial_tone(table, 3 if args.quick else 10)
    bench_talkoff(table, 20.0 if args.quick else 75.0, 20.0 if args.quick else 120.0)
    print(bench_throughput())
    failed = [r for r in table.rows if not r[3]]
    print(
        f"{len(table.rows) - len(failed)}/{len(table.rows)} requirements met "
        f"in {time.perf_counter() - t0:.0f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
