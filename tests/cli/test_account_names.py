"""``softswitch account show|name|delete``: location history, recorded names as files (import
from any audio format, export to WAV or another format, atomic writes, the recordings
directory the node uses), and deleting an account with its recording."""

from __future__ import annotations

import asyncio
import json
import wave
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
import typer
from numpy.typing import NDArray
from typer.testing import CliRunner

from media.tools import read_audio, write_audio
from softswitch.cli import names
from softswitch.cli.admin import account_app
from softswitch.config import Config
from softswitch.node.calls import recordings_dir as node_recordings_dir
from softswitch.store import Location, Store

app = typer.Typer()
app.add_typer(account_app, name="account")


class Cli(Protocol):
    def __call__(self, *args: str, code: int = ...) -> Any: ...


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/var/admin.sqlite3"


@pytest.fixture
def recordings(tmp_path: Path) -> Path:
    """Where the node keeps names for ``db`` by default: beside the SQLite file."""
    return tmp_path / "var" / "recordings"


@pytest.fixture
def cli(db: str, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.setenv("SOFTSWITCH_DB", db)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Any:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.stdout, result.stderr)
        if code != 0:
            assert result.stderr.startswith("softswitch: ") and result.stderr.count("\n") == 1
        if "--json" in args and code == 0:
            return json.loads(result.stdout)
        return result

    return run


def tone(seconds: float, rate: int = 8000, hz: float = 440.0) -> NDArray[np.int16]:
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)


def wav_format(path: Path) -> tuple[int, int, int, int]:
    """(channels, bytes per sample, rate, frames)."""
    with wave.open(str(path), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()


def dominant_hz(pcm: NDArray[np.int16], rate: int = 8000) -> float:
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(pcm))


def leftovers(directory: Path) -> list[str]:
    """Temporary files left behind in ``directory`` (an atomic write leaves none)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# -- location history ---------------------------------------------------------------------------


def test_show_prints_the_last_location_changes(cli: Cli, db: str) -> None:
    aid = cli("account", "add", "Alice", "--location", "81312345678", "--json")["id"]
    shown = cli("account", "show", str(aid), "--json")
    assert shown["location_history"] == []
    assert "location history: none" in cli("account", "show", str(aid)).stdout

    async def by_phone() -> None:  # what the switch does when the Location menu saves
        async with await Store.open(db) as store:
            await store.accounts.set_location(aid, Location("6561234567", "812"), via="phone")

    asyncio.run(by_phone())
    cli("account", "edit", str(aid), "--location", "12125550100")
    cli("account", "edit", str(aid), "--clear-location")
    history = cli("account", "show", str(aid), "--json")["location_history"]
    assert [(h["via"], h["previous"], h["previous_extension"]) for h in history] == [
        ("cli", "12125550100", None),
        ("cli", "6561234567", "812"),
        ("phone", "81312345678", None),
    ]
    assert [(h["location"], h["extension"]) for h in history] == [
        (None, None),
        ("12125550100", None),
        ("6561234567", "812"),
    ]
    assert history[0]["changed_at"] >= history[1]["changed_at"] >= history[2]["changed_at"]
    assert history[2]["changed_at"].endswith("Z")

    text = cli("account", "show", str(aid)).stdout
    table = text[text.index("location history (newest first):") :].splitlines()
    assert table[1].split() == ["changed_at", "via", "from", "to"]
    assert table[2].split()[1:] == ["cli", "12125550100", "-"]
    assert table[4].split()[1:] == ["phone", "81312345678", "6561234567", "ext", "812"]
    assert len(table) == 5

    # Only the last few are shown: --history says how many.
    for number in ("4420712345678", "33142685300", "81312345678", "6561234567"):
        cli("account", "edit", str(aid), "--location", number)
    assert len(cli("account", "show", str(aid), "--json")["location_history"]) == 5
    two = cli("account", "show", str(aid), "--history", "2", "--json")["location_history"]
    assert [h["location"] for h in two] == ["6561234567", "81312345678"]
    assert cli("account", "show", str(aid), "--history", "0", "--json")["location_history"] == []


# -- recorded names -----------------------------------------------------------------------------


def test_the_recordings_directory_is_the_nodes(tmp_path: Path) -> None:
    for url in (
        "sqlite:///var/softswitch.sqlite3",
        f"sqlite:///{tmp_path}/a/b.sqlite3",
        "postgresql://ss@db.example.net/ss",
    ):
        assert names.recordings_dir(url) == node_recordings_dir(Config(db_url=url))
        given = tmp_path / "names"
        assert names.recordings_dir(url, given) == given
    assert (
        names.recordings_dir(f"sqlite:///{tmp_path}/a/b.sqlite3") == tmp_path / "a" / "recordings"
    )


@pytest.mark.parametrize(
    ("suffix", "rate", "channels"),
    [(".wav", 44100, 2), (".flac", 16000, 1), (".mp3", 8000, 1), (".ogg", 48000, 1)],
)
def test_set_converts_any_audio_to_an_8khz_mono_wav(
    cli: Cli, tmp_path: Path, recordings: Path, suffix: str, rate: int, channels: int
) -> None:
    aid = cli("account", "add", "Alice", "--json")["id"]
    source = tmp_path / f"name{suffix}"
    if suffix == ".wav":  # a CD-quality stereo WAV
        with wave.open(str(source), "wb") as w:
            w.setnchannels(channels)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(np.repeat(tone(1.5, rate), channels).astype("<i2").tobytes())
    else:
        write_audio(source, tone(1.5))

    done = cli("account", "name", str(aid), "--set", str(source), "--json")
    stored = recordings / f"name-{aid}.wav"
    assert done["recorded_name"] == str(stored.resolve()) and done["has_recorded_name"]
    assert done["seconds"] == pytest.approx(1.5, abs=0.1)
    channels_out, width, rate_out, frames = wav_format(stored)
    assert (channels_out, width, rate_out) == (1, 2, 8000)
    assert frames == pytest.approx(12000, abs=800)
    assert dominant_hz(read_audio(stored)) == pytest.approx(440, abs=5)
    assert leftovers(recordings) == []

    shown = cli("account", "show", str(aid), "--json")
    assert shown["recorded_name"] == str(stored.resolve()) and shown["has_recorded_name"]
    text = cli("account", "name", str(aid)).stdout
    assert str(stored.resolve()) in text and "1.5 s" in text


def test_play_to_exports_wav_exactly_and_other_formats_by_extension(
    cli: Cli, tmp_path: Path, recordings: Path
) -> None:
    aid = str(cli("account", "add", "Alice", "--json")["id"])
    no_name = cli("account", "name", aid, "--play-to", str(tmp_path / "x.wav"), code=2)
    assert "has no recorded name" in no_name.stderr and not (tmp_path / "x.wav").exists()
    assert cli("account", "name", aid, "--json")["has_recorded_name"] is False

    source = tmp_path / "in.flac"
    write_audio(source, tone(1.0, hz=1000))
    cli("account", "name", aid, "--set", str(source))
    stored = recordings / f"name-{aid}.wav"

    out = tmp_path / "out" / "name.wav"
    out.parent.mkdir()
    done = cli("account", "name", aid, "--play-to", str(out), "--json")
    assert done["written_to"] == str(out) and done["seconds"] == pytest.approx(1.0, abs=0.05)
    assert out.read_bytes() == stored.read_bytes()
    flac = tmp_path / "out" / "name.flac"
    cli("account", "name", aid, "--play-to", str(flac))
    assert np.array_equal(read_audio(flac), read_audio(stored))  # FLAC is lossless
    for suffix in (".mp3", ".m4a", ".au"):  # .m4a and .au: PyAV's codec for the container
        lossy = tmp_path / "out" / f"name{suffix}"
        cli("account", "name", aid, "--play-to", str(lossy))
        decoded = read_audio(lossy)
        assert len(decoded) == pytest.approx(8000, abs=2000), suffix
        assert dominant_hz(decoded) == pytest.approx(1000, abs=10), suffix
    assert leftovers(tmp_path / "out") == []

    bad = cli("account", "name", aid, "--play-to", str(tmp_path / "out" / "name.txt"), code=2)
    assert "cannot write .txt audio" in bad.stderr
    assert not (tmp_path / "out" / "name.txt").exists() and leftovers(tmp_path / "out") == []
    both = cli("account", "name", aid, "--set", str(source), "--play-to", str(out), code=2)
    assert "exclude each other" in both.stderr


def test_set_refuses_what_is_not_a_usable_name_and_keeps_the_old_one(
    cli: Cli, tmp_path: Path, recordings: Path
) -> None:
    aid = str(cli("account", "add", "Alice", "--json")["id"])
    good = tmp_path / "good.wav"
    write_audio(good, tone(1.0))
    cli("account", "name", aid, "--set", str(good))
    stored = recordings / f"name-{aid}.wav"
    before = stored.read_bytes()

    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    long = tmp_path / "long.flac"
    write_audio(long, tone(61.0))
    empty = tmp_path / "empty.wav"
    write_audio(empty, np.zeros(0, dtype=np.int16))
    for source, problem in (
        (tmp_path / "missing.wav", "no such file"),
        (text, "not audio PyAV can decode"),
        (long, "at most 60 s"),
        (empty, "no audio in it"),
    ):
        result = cli("account", "name", aid, "--set", str(source), code=2)
        assert str(source) in result.stderr and problem in result.stderr
    assert stored.read_bytes() == before and leftovers(recordings) == []
    assert cli("account", "name", aid, "--json")["recorded_name"] == str(stored.resolve())
    # An unknown account: nothing is written.
    cli("account", "name", "42", "--set", str(good), code=2)
    assert sorted(p.name for p in recordings.iterdir()) == [f"name-{aid}.wav"]


def test_set_replaces_the_name_atomically(
    cli: Cli, tmp_path: Path, recordings: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aid = str(cli("account", "add", "Alice", "--json")["id"])
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    write_audio(first, tone(1.0, hz=500))
    write_audio(second, tone(2.0, hz=1500))
    cli("account", "name", aid, "--set", str(first))
    stored = recordings / f"name-{aid}.wav"
    before = stored.read_bytes()

    real = names._write_wav

    def disk_full(path: Path, pcm: NDArray[np.int16]) -> None:
        real(path, pcm[: len(pcm) // 2])  # half of it reached the disk, then:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(names, "_write_wav", disk_full)
    failed = cli("account", "name", aid, "--set", str(second), code=1)
    assert "No space left on device" in failed.stderr
    assert stored.read_bytes() == before and leftovers(recordings) == []

    monkeypatch.setattr(names, "_write_wav", real)
    cli("account", "name", aid, "--set", str(second))
    assert wav_format(stored)[3] == 16000
    assert dominant_hz(read_audio(stored)) == pytest.approx(1500, abs=5)
    assert leftovers(recordings) == []


def test_recordings_option_and_clear(cli: Cli, tmp_path: Path, recordings: Path) -> None:
    aid = str(cli("account", "add", "Alice", "--json")["id"])
    source = tmp_path / "in.wav"
    write_audio(source, tone(0.5))
    elsewhere = tmp_path / "srv" / "names"
    done = cli("account", "name", aid, "--set", str(source), "--recordings", str(elsewhere))
    assert (elsewhere / f"name-{aid}.wav").is_file() and not recordings.exists()
    assert str(elsewhere / f"name-{aid}.wav") in done.stdout

    cleared = cli("account", "name", aid, "--clear", "--recordings", str(elsewhere), "--json")
    assert cleared["removed"] == [str(elsewhere / f"name-{aid}.wav")]
    assert cleared["recorded_name"] is None and not cleared["has_recorded_name"]
    assert list(elsewhere.iterdir()) == []
    assert "no recorded name" in cli("account", "name", aid).stdout


# -- deleting an account ------------------------------------------------------------------------


def test_delete_removes_the_account_and_its_recording(
    cli: Cli, db: str, tmp_path: Path, recordings: Path
) -> None:
    alice = str(cli("account", "add", "Alice", "-t", "815011110000", "--json")["id"])
    bob = str(cli("account", "add", "Bob", "--json")["id"])
    source = tmp_path / "in.wav"
    write_audio(source, tone(0.5))
    for aid in (alice, bob):
        cli("account", "name", aid, "--set", str(source))
    cli("account", "edit", alice, "--location", "81312345678")

    refused = cli("account", "delete", alice, code=2)
    assert "--yes" in refused.stderr
    assert cli("account", "show", alice, "--json")["has_recorded_name"]

    done = cli("account", "delete", alice, "--yes", "--json")
    assert done["deleted"]["name"] == "Alice"
    assert done["removed"] == [str(recordings / f"name-{alice}.wav")]
    assert sorted(p.name for p in recordings.iterdir()) == [f"name-{bob}.wav"]
    cli("account", "show", alice, code=2)
    cli("account", "delete", alice, "--yes", code=2)
    # The trigger number is free for a new account.
    cli("account", "add", "Carol", "-t", "815011110000")

    # A name file the switch did not make (outside the recordings directory) is left alone.
    own = tmp_path / "keep" / "bob.wav"
    own.parent.mkdir()
    write_audio(own, tone(0.5))
    cli("account", "edit", bob, "--recorded-name", str(own))
    text = cli("account", "delete", bob, "--yes").stdout
    assert text.startswith(f"account {bob} (Bob) deleted; removed ")
    assert own.is_file() and list(recordings.iterdir()) == []


def test_delete_is_refused_during_a_call_and_keeps_the_recording(
    cli: Cli, db: str, tmp_path: Path, recordings: Path
) -> None:
    aid = cli("account", "add", "Alice", "--credit-limit", "1000", "--json")["id"]
    source = tmp_path / "in.wav"
    write_audio(source, tone(0.5))
    cli("account", "name", str(aid), "--set", str(source))

    async def call(reserve: bool) -> None:
        async with await Store.open(db) as store:
            if reserve:
                assert await store.credit.reserve(aid, 100, "call-1", now=1_700_000_000)
            else:
                await store.credit.release("call-1")

    asyncio.run(call(True))
    refused = cli("account", "delete", str(aid), "--yes", code=2)
    assert "call in progress" in refused.stderr
    assert (recordings / f"name-{aid}.wav").is_file()
    asyncio.run(call(False))
    cli("account", "delete", str(aid), "--yes")
    assert not (recordings / f"name-{aid}.wav").exists()
