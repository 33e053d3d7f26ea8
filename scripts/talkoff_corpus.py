# ruff: noqa: RUF001  (the texts are in their own scripts on purpose)
"""Talk-off corpus for the DTMF receiver: speech in many languages, music-like signals, noise.

Nothing here is committed as audio: every signal is generated, deterministically from a seed,
and the speech is cached under ``~/.cache/softswitch/talkoff/`` (``$SOFTSWITCH_CACHE`` or
``$XDG_CACHE_HOME`` move it), keyed by the espeak-ng version, pyopenjtalk's when it speaks the
Japanese, ``GENERATOR_VERSION``, the seed and the texts, so a rerun reads it back in a second.

Speech. Per language, utterances until ``seconds`` of speech: one of the sentences written
below for it, or numbers, times and digit strings that the voice reads in its own language
(IVR-like content); each with its own speed (``-s``) and pitch (``-p``), spoken by espeak-ng
(Japanese also by pyopenjtalk-plus, the ``prompts`` extra, when importable: ``ja-openjtalk``),
band-limited to 300-3400 Hz and resampled to 8 kHz by sox as a phone line would, and set to an
active speech level between -30 and -10 dBm0; pauses of 0.1-0.8 s between utterances. The
benchmark then passes the 8 kHz streams through G.711 mu-law and A-law (media.g711, the
codec of a real call) as well as linear.

Music-like signals: harmonic tones with vibrato, chords of such tones, sweeps, and melodies of
pure tones near the DTMF frequencies (single tones, or two tones of the same group, never a
low + high pair). Noise: white, pink, and babble (several speech streams mixed).

Usage: talkoff_corpus.py [--langs de,fr,...] [--seconds 75] [--seed N]  (builds and describes)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media.tones import DBM0_PEAK, DTMF_HIGH, DTMF_LOW

GENERATOR_VERSION = 1
RATE = 8000
SEED = 4733
Signal = NDArray[np.int16]

# A few sentences per language (IVR, everyday speech, tongue-twister-like sound runs); numbers,
# times and digit strings are added per utterance and read by the voice in its language.
TEXTS: dict[str, tuple[str, ...]] = {
    "en-us": (
        "Please enter your account number, followed by the pound key.",
        "Thank you for calling. Your call is important to us, please stay on the line.",
        "She sells sea shells by the sea shore; Peter Piper picked a peck of pickled peppers.",
    ),
    "en-gb": (
        "The quick brown fox jumps over the lazy dog while the band plays on.",
        "I'm afraid the person you are calling is not available at the moment.",
        "Would you like a cup of tea, or shall we wait until the rain stops?",
    ),
    "de": (
        "Bitte geben Sie jetzt Ihre Kundennummer ein und bestätigen Sie mit der Rautetaste.",
        "Der Zug nach München fährt heute ausnahmsweise von Gleis sieben ab.",
        "Fischers Fritz fischt frische Fische, frische Fische fischt Fischers Fritz.",
    ),
    "fr-fr": (
        "Veuillez composer votre code confidentiel, puis appuyez sur la touche dièse.",
        "Nous sommes désolés, tous nos conseillers sont actuellement en ligne.",
        "Les chaussettes de l'archiduchesse sont-elles sèches, archi-sèches ?",
    ),
    "es": (
        "Por favor, marque el número de su extensión o espere a ser atendido.",
        "Mañana por la tarde iremos al mercado a comprar fruta y pan.",
        "Tres tristes tigres tragaban trigo en un trigal.",
    ),
    "it": (
        "Per parlare con un operatore, resti in linea oppure prema il tasto zero.",
        "Domani andiamo al mare se il tempo lo permette.",
        "Sopra la panca la capra campa, sotto la panca la capra crepa.",
    ),
    "pt-br": (
        "Digite o número do seu documento e aguarde a confirmação.",
        "O rato roeu a roupa do rei de Roma.",
        "Hoje o céu está azul e as crianças estão brincando no parque.",
    ),
    "nl": (
        "Toets uw klantnummer in, gevolgd door een hekje.",
        "Het regent al de hele week en de fietsen staan nat in de schuur.",
        "Achtentachtig prachtige grachtenpanden in Amsterdam.",
    ),
    "sv": (
        "Var vänlig och slå ditt personnummer följt av fyrkant.",
        "Sju sjösjuka sjömän sköttes av sju sköna sjuksköterskor.",
        "Vi ses på stationen klockan åtta i morgon bitti.",
    ),
    "da": (
        "Tast venligst dit kundenummer efterfulgt af firkant.",
        "Rødgrød med fløde er en klassisk dansk dessert.",
        "Vi holder ferie på Bornholm hele juli måned.",
    ),
    "pl": (
        "Proszę podać numer klienta i zatwierdzić krzyżykiem.",
        "W Szczebrzeszynie chrząszcz brzmi w trzcinie.",
        "Jutro rano pojedziemy pociągiem do Krakowa.",
    ),
    "cs": (
        "Zadejte prosím své číslo zákazníka a potvrďte mřížkou.",
        "Třistatřicettři stříbrných stříkaček přestříkalo přes třistatřicettři střech.",
        "Večer půjdeme do divadla na novou hru.",
    ),
    "ru": (
        "Пожалуйста, наберите номер договора и нажмите решётку.",
        "Шла Саша по шоссе и сосала сушку.",
        "Завтра утром мы поедем на дачу к бабушке.",
    ),
    "uk": (
        "Будь ласка, введіть номер рахунку та натисніть решітку.",
        "Сьогодні в Києві сонячно і тепло.",
        "Котилася торба з високого горба.",
    ),
    "el": (
        "Παρακαλώ πληκτρολογήστε τον αριθμό πελάτη σας και πατήστε δίεση.",
        "Αύριο θα πάμε στη θάλασσα αν έχει καλό καιρό.",
        "Ο παπάς ο παχύς έφαγε παχιά φακή.",
    ),
    "tr": (
        "Lütfen müşteri numaranızı tuşlayın ve kare tuşuna basın.",
        "Şu köşe yaz köşesi, şu köşe kış köşesi, ortada su şişesi.",
        "Yarın sabah erkenden İstanbul'a gideceğiz.",
    ),
    "fi": (
        "Näppäile asiakasnumerosi ja paina risuaitaa.",
        "Vesihiisi sihisi hississä.",
        "Huomenna menemme mökille kalastamaan.",
    ),
    "hu": (
        "Kérjük, adja meg ügyfélszámát, majd nyomja meg a kettőskereszt gombot.",
        "Mit sütsz, kis szűcs? Sós húst sütsz, kis szűcs?",
        "Holnap reggel vonattal megyünk Debrecenbe.",
    ),
    "ro": (
        "Vă rugăm să introduceți codul de client urmat de tasta diez.",
        "Capra calcă piatra, piatra crapă-n patru.",
        "Mâine dimineață plecăm la munte cu prietenii.",
    ),
    "ar": (
        "من فضلك أدخل رقم الحساب ثم اضغط على المربع.",
        "سنذهب غدا إلى السوق لشراء الخبز والفاكهة.",
        "شكرا لاتصالك، سيتم الرد عليك في أقرب وقت.",
    ),
    "he": (
        "נא להקיש את מספר הלקוח ולאחר מכן סולמית.",
        "מחר בבוקר ניסע לים עם כל המשפחה.",
        "תודה שהתקשרת, נציג יענה לך בהקדם.",
    ),
    "hi": (
        "कृपया अपना खाता नंबर दर्ज करें और फिर हैश दबाएं।",
        "कल सुबह हम बाज़ार जाएंगे और ताज़े फल खरीदेंगे।",
        "कच्चा पापड़ पक्का पापड़।",
    ),
    "cmn": (
        "请输入您的账号，然后按井号键结束。",
        "四是四，十是十，十四是十四，四十是四十。",
        "明天早上我们坐火车去北京看朋友。",
    ),
    "yue": (
        "請輸入你嘅戶口號碼，然後按井字鍵。",
        "今日天氣好好，我哋去飲茶啦。",
        "多謝你嘅來電，請稍候。",
    ),
    "ko": (
        "고객 번호를 입력하신 후 우물 정자를 눌러 주십시오.",
        "간장 공장 공장장은 강 공장장이고 된장 공장 공장장은 장 공장장이다.",
        "내일 아침에 기차를 타고 부산에 갑니다.",
    ),
    "ja": (
        "おでんわ ありがとう ございます。 あんしょう ばんごう を にゅうりょく して ください。",
        "ただいま でんわ に でる ことが できません。 はっしんおん の あとに メッセージ を どうぞ。",
        "なまむぎ なまごめ なまたまご。 あかまきがみ あおまきがみ きまきがみ。",
    ),
    "vi": (
        "Xin vui lòng nhập số tài khoản rồi bấm phím thăng.",
        "Ngày mai chúng tôi sẽ đi chợ mua rau và trái cây.",
        "Cảm ơn quý khách đã gọi đến tổng đài.",
    ),
    "id": (
        "Silakan masukkan nomor pelanggan Anda, lalu tekan tombol pagar.",
        "Besok pagi kami akan pergi ke pasar membeli sayur.",
        "Kuku kaki kakak kakekku kaku-kaku.",
    ),
    "sw": (
        "Tafadhali ingiza nambari yako ya akaunti kisha bonyeza alama ya reli.",
        "Kesho asubuhi tutakwenda sokoni kununua matunda.",
        "Asante kwa kupiga simu, tafadhali subiri kidogo.",
    ),
    "th": (
        "กรุณากดหมายเลขบัญชีของท่าน แล้วกดเครื่องหมายสี่เหลี่ยม",
        "พรุ่งนี้เช้าเราจะไปตลาดซื้อผลไม้",
        "ยายกินลำไย น้ำลายยายไหลย้อย",
    ),
}
# Japanese by pyopenjtalk-plus (its dictionary and HTS voice ship in the wheel).
OPENJTALK_TEXTS = (
    "お電話ありがとうございます。暗証番号を入力してください。",
    "ただいま電話に出ることができません。発信音の後にメッセージをどうぞ。",
    "生麦生米生卵。隣の客はよく柿食う客だ。",
    "明日の午前十時に、東京駅の八重洲口で待ち合わせましょう。",
)
OPENJTALK = "ja-openjtalk"


def cache_root() -> Path:
    base = os.environ.get("SOFTSWITCH_CACHE") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) / "softswitch" if base else Path.home() / ".cache" / "softswitch"
    return root / "talkoff"


@cache
def espeak_version() -> str | None:
    """espeak-ng's version (the cache key), or None when it is not installed."""
    if shutil.which("espeak-ng") is None:
        return None
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=False)
    words = out.stdout.split()
    return next((w for w in words if w[:1].isdigit()), out.stdout.strip() or "unknown")


@cache
def openjtalk_version() -> str | None:
    """pyopenjtalk's version when it is importable (the ``prompts`` extra), else None."""
    try:
        from importlib.metadata import version

        import pyopenjtalk  # noqa: F401
    except ImportError:
        return None
    return version("pyopenjtalk-plus")


def languages() -> list[str]:
    """Every language of the corpus (ja-openjtalk only when pyopenjtalk is importable)."""
    return [*TEXTS, *([OPENJTALK] if openjtalk_version() else [])]


def _number_text(rng: np.random.Generator) -> str:
    kind = int(rng.integers(0, 4))
    if kind == 0:  # a phone number read digit by digit
        return " ".join(str(int(d)) for d in rng.integers(0, 10, int(rng.integers(6, 12))))
    if kind == 1:
        return f"{int(rng.integers(0, 24))}:{int(rng.integers(0, 60)):02d}"
    if kind == 2:
        return (
            f"{int(rng.integers(1, 29))}.{int(rng.integers(1, 13))}.{int(rng.integers(1950, 2040))}"
        )
    return str(int(rng.integers(10, 100000)))


def _to_8k(raw: bytes, rate: int, encoding: str, bits: int) -> NDArray[np.float64]:
    """sox: band-limit to 300-3400 Hz and resample to 8 kHz; float samples (int16 scale)."""
    cmd = ["sox", "-t", "raw", "-r", str(rate), "-e", encoding, "-b", str(bits), "-c", "1", "-"]
    cmd += ["-t", "raw", "-r", str(RATE), "-e", "floating-point", "-b", "32", "-"]
    cmd += ["sinc", "300-3400"]
    out = subprocess.run(cmd, input=raw, capture_output=True, check=True).stdout
    return np.frombuffer(out, dtype=np.float32).astype(np.float64) * 32768.0


def _espeak(voice: str, text: str, speed: int, pitch: int) -> NDArray[np.float64]:
    cmd = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    wav = subprocess.run(cmd, capture_output=True, check=True).stdout
    # espeak-ng's WAV: 44-byte header, 16-bit mono at 22050 Hz.
    return _to_8k(wav[44:], 22050, "signed-integer", 16)


def _openjtalk(text: str, speed: float, half_tone: float) -> NDArray[np.float64]:
    import pyopenjtalk

    x, rate = pyopenjtalk.tts(text, speed=speed, half_tone=half_tone, predict_nani=False)
    pcm = np.clip(np.asarray(x), -32768, 32767).astype("<i2")
    return _to_8k(pcm.tobytes(), int(rate), "signed-integer", 16)


def _set_level(x: NDArray[np.float64], dbm0: float) -> NDArray[np.float64]:
    """Scale so the RMS of the active 10 ms blocks (within 30 dB of the loudest) is ``dbm0``."""
    blocks = x[: len(x) // 80 * 80].reshape(-1, 80)
    power = (blocks**2).mean(axis=1)
    if len(power) == 0 or power.max() <= 0:
        return x
    active = power[power >= power.max() * 1e-3].mean()
    target = (DBM0_PEAK / np.sqrt(2)) ** 2 * 10 ** (dbm0 / 10)
    gain = float(np.sqrt(target / active))
    return x * gain


def _speak_language(lang: str, seconds: float, seed: int) -> Signal:
    rng = np.random.default_rng([seed, zlib.crc32(lang.encode())])
    texts = OPENJTALK_TEXTS if lang == OPENJTALK else TEXTS[lang]
    parts: list[NDArray[np.float64]] = []
    total = 0
    k = 0
    while total < seconds * RATE:
        # Sentences in turn, every third utterance a number (with or without a sentence).
        text = texts[k % len(texts)]
        if k % 3 == 2:
            number = _number_text(rng)
            text = number if rng.random() < 0.5 else f"{text} {number}"
        k += 1
        if lang == OPENJTALK:
            x = _openjtalk(text, float(rng.uniform(0.8, 1.4)), float(rng.uniform(-4, 6)))
        else:
            x = _espeak(lang, text, int(rng.integers(110, 260)), int(rng.integers(10, 95)))
        x = _set_level(x, float(rng.uniform(-30, -10)))
        pause = np.zeros(int(rng.integers(800, 6400)))
        parts += [x, pause]
        total += len(x) + len(pause)
    out = np.clip(np.rint(np.concatenate(parts)), -32768, 32767).astype(np.int16)
    return out[: int(seconds * RATE)]


def _key(lang: str, seconds: float, seed: int) -> str:
    texts = OPENJTALK_TEXTS if lang == OPENJTALK else TEXTS[lang]
    blob = json.dumps([GENERATOR_VERSION, lang, seconds, seed, texts, openjtalk_version()])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def speech(
    langs: list[str] | None = None, seconds: float = 75.0, seed: int = SEED, workers: int = 2
) -> dict[str, Signal]:
    """``seconds`` of speech per language, generated once and cached; {} without espeak-ng."""
    version = espeak_version()
    if version is None:
        return {}
    langs = languages() if langs is None else langs
    folder = cache_root() / f"espeak-ng-{version}-g{GENERATOR_VERSION}"
    folder.mkdir(parents=True, exist_ok=True)

    def one(lang: str) -> Signal:
        path = folder / f"{lang}-{_key(lang, seconds, seed)}.npy"
        if path.exists():
            data: Signal = np.load(path)
            return data
        sig = _speak_language(lang, seconds, seed)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, sig)
        tmp.replace(path)
        return sig

    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(langs, pool.map(one, langs), strict=True))


def _harmonic(
    f0: NDArray[np.float64], n_harm: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """A harmonic tone following the instantaneous fundamental ``f0`` (Hz per sample)."""
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    amps = rng.uniform(0.3, 1.0, n_harm) / np.arange(1, n_harm + 1) ** rng.uniform(0.5, 1.5)
    out = np.zeros(len(f0))
    for h, a in enumerate(amps, 1):
        out += a * np.sin(h * phase + rng.uniform(0, 2 * np.pi)) * (h * f0 < 3800)
    return out


def _envelope(n: int) -> NDArray[np.float64]:
    ramp = min(80, n // 4)
    env = np.ones(n)
    env[:ramp] = np.linspace(0, 1, ramp)
    env[n - ramp :] = np.linspace(1, 0, ramp)
    return env


def _scale(x: NDArray[np.float64], dbm0: float) -> Signal:
    rms = np.sqrt(np.mean(x**2)) or 1.0
    y = x / rms * DBM0_PEAK / np.sqrt(2) * 10 ** (dbm0 / 20)
    out: Signal = np.clip(np.rint(y), -32768, 32767).astype(np.int16)
    return out


def _notes(
    seconds: float, rng: np.random.Generator, note: Callable[[int], NDArray[np.float64]]
) -> NDArray[np.float64]:
    parts: list[NDArray[np.float64]] = []
    n_total = int(seconds * RATE)
    while sum(len(p) for p in parts) < n_total:
        n = int(rng.integers(600, 4000))  # 75-500 ms
        parts.append(note(n) * _envelope(n))
    return np.concatenate(parts)[:n_total]


def music(seconds: float = 60.0, seed: int = SEED) -> dict[str, Signal]:
    """Music-like signals, ``seconds`` of each kind."""
    rng = np.random.default_rng([seed, 1])
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    semitones = 2 ** (np.arange(-24, 30) / 12) * 220.0

    def vibrato_note(m: int) -> NDArray[np.float64]:
        f0 = rng.choice(semitones[semitones < 1100])
        rate, depth = rng.uniform(4, 7), rng.uniform(0.005, 0.03)
        tt = np.arange(m) / RATE
        return _harmonic(f0 * (1 + depth * np.sin(2 * np.pi * rate * tt)), 10, rng)

    def chord(m: int) -> NDArray[np.float64]:
        root = rng.integers(0, 30)
        chords = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 5, 7, 12))
        steps = chords[int(rng.integers(0, len(chords)))]
        tt = np.arange(m) / RATE
        vib = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 6) * tt)
        return sum(
            (_harmonic(np.full(m, semitones[root + s]) * vib, 8, rng) for s in steps),
            np.zeros(m),
        )

    def near_dtmf(m: int) -> NDArray[np.float64]:
        # One DTMF tone, or two of the same group, each within +-3 % of nominal; never a pair.
        group = DTMF_LOW if rng.random() < 0.5 else DTMF_HIGH
        count = 1 if rng.random() < 0.6 else 2
        freqs = rng.choice(group, count, replace=False) * (1 + rng.uniform(-0.03, 0.03, count))
        tt = np.arange(m) / RATE
        return sum((np.sin(2 * np.pi * f * tt + rng.uniform(0, 6)) for f in freqs), np.zeros(m))

    def near_dtmf_speechlike(m: int) -> NDArray[np.float64]:
        # A tone near a low-group frequency with its 2nd harmonic near a high-group one
        # (e.g. 680 + 1360 Hz ~ digit 2), the classic talk-off shape; kept where one of the
        # two is more than 3.5 % off (Q.24's reject), as a receiver may accept both inside.
        while True:
            f0 = rng.uniform(600, 820)
            dev_lo = min(abs(f0 / f - 1) for f in DTMF_LOW)
            dev_hi = min(abs(2 * f0 / f - 1) for f in DTMF_HIGH)
            if max(dev_lo, dev_hi) > 0.035:
                break
        tt = np.arange(m) / RATE
        return np.sin(2 * np.pi * f0 * tt) + rng.uniform(0.3, 1.0) * np.sin(4 * np.pi * f0 * tt)

    sweeps = np.zeros(n)
    pos = 0
    while pos < n:
        m = min(n - pos, int(rng.integers(8000, 40000)))
        f0, f1 = rng.uniform(200, 3500, 2)
        tt = np.arange(m) / RATE
        if rng.random() < 0.5:  # linear
            ph = 2 * np.pi * (f0 * tt + (f1 - f0) / (2 * tt[-1]) * tt**2)
        else:  # exponential
            k = np.log(f1 / f0) / tt[-1]
            ph = 2 * np.pi * f0 * (np.exp(k * tt) - 1) / k
        sweeps[pos : pos + m] = np.sin(ph) * _envelope(m)
        pos += m
    del t
    return {
        "vibrato tones": _scale(_notes(seconds, rng, vibrato_note), -12),
        "chords": _scale(_notes(seconds, rng, chord), -10),
        "sweeps": _scale(sweeps, -8),
        "pure tones near DTMF": _scale(_notes(seconds, rng, near_dtmf), -8),
        "tone + 2nd harmonic": _scale(_notes(seconds, rng, near_dtmf_speechlike), -8),
    }


def noise(
    speech_streams: dict[str, Signal], seconds: float = 60.0, seed: int = SEED
) -> dict[str, Signal]:
    """White and pink noise at several levels, and babble: 3-6 speech streams mixed."""
    rng = np.random.default_rng([seed, 2])
    n = int(seconds * RATE)
    levels = np.repeat(rng.uniform(-40, -8, int(seconds)), RATE)[:n]
    gain = 10 ** (levels / 20)
    white = rng.normal(0, 1, n)
    spectrum = np.fft.rfft(rng.normal(0, 1, n))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1 / RATE), 20.0))
    pink = np.fft.irfft(spectrum, n)
    out = {
        "white noise": _scale(white * gain, -16),
        "pink noise": _scale(pink * gain, -16),
    }
    streams = [s.astype(np.float64) for s in speech_streams.values() if len(s)]
    if len(streams) >= 3:
        babble = np.zeros(n)
        pos = 0
        while pos < n:
            m = min(n - pos, int(rng.integers(16000, 80000)))
            talkers = min(len(streams), int(rng.integers(3, 7)))
            for i in rng.choice(len(streams), talkers, replace=False):
                s = streams[i]
                start = int(rng.integers(0, max(1, len(s) - m)))
                seg = s[start : start + m]
                babble[pos : pos + len(seg)] += seg * rng.uniform(0.3, 1.0)
            pos += m
        out["babble"] = _scale(babble, -18)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--langs", help="comma-separated (default: all)")
    parser.add_argument("--seconds", type=float, default=75.0, help="speech per language")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    langs = args.langs.split(",") if args.langs else None
    streams = speech(langs, args.seconds, args.seed)
    if not streams:
        print("espeak-ng is not installed", file=sys.stderr)
        return 1
    total = sum(len(s) for s in streams.values()) / RATE
    langs = len({k.split("-")[0] for k in streams if k != "en-gb"})
    print(f"speech: {len(streams)} voices, {langs} languages, {total / 60:.1f} min")
    print(f"cache: {cache_root()}")
    for name, sig in {**music(10, args.seed), **noise(streams, 10, args.seed)}.items():
        print(f"  {name}: {len(sig) / RATE:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
