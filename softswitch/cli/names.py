"""Recorded names as files, for ``softswitch account name|delete`` (SPEC section 5).

A customer's recorded name lives in the node's recordings directory as ``name-<id>.wav``:
8 kHz mono 16-bit WAV, the format the switch records and plays. ``[service] recordings_dir``
sets the directory, by default beside the SQLite database; the CLI has no node config, so it
takes ``--recordings DIR`` and otherwise applies the node's own rule to ``--db``
(:func:`recordings_dir`, which is ``softswitch.node.calls.recordings_dir``).

Importing decodes any audio PyAV reads (``media.tools.read_audio``: any container and codec
FFmpeg knows, resampled to 8 kHz mono int16) and writes the WAV atomically: a temporary file
in the same directory, flushed to disk, then ``os.replace`` over the old name, so a node
playing the name at that moment reads the old file or the new one, never half of one.
Exporting writes WAV (a plain copy when the recording already is 8 kHz mono 16-bit WAV) or any
format PyAV encodes for the file's extension (``.flac``, ``.mp3``, ``.ogg``/``.opus``, ``.m4a``,
``.au`` ...), also through a temporary file.

Audio libraries are imported when a command needs them, so the rest of the CLI starts fast.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import wave
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

RATE = 8000
#: A name is played at every callback: a longer file is almost surely the wrong one.
MAX_NAME_S = 60.0


class NameFileError(Exception):
    """An audio file cannot be read, written or used as a name: the message says which, why.

    ``code`` is the CLI's exit status: 2 for a file given that will not do (missing, not
    audio, too long, a format nothing encodes), 1 when writing or removing fails.
    """

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def recordings_dir(db_url: str, directory: Path | None = None) -> Path:
    """Where the node keeps recorded names: ``directory`` if given (``[service]
    recordings_dir``), else the node's default for the database at ``db_url``."""
    from softswitch.config import Config
    from softswitch.node.calls import recordings_dir as node_rule

    return node_rule(Config(db_url=db_url, recordings_dir=directory))


def name_file(directory: Path, account_id: int) -> Path:
    """The file the account's recorded name is kept in (as the node names it)."""
    return directory / f"name-{account_id}.wav"


def inside(path: Path, directory: Path) -> bool:
    """Whether ``path`` is a file of ``directory`` (after resolving both)."""
    return path.resolve().parent == directory.resolve()


def duration(path: Path) -> float | None:
    """Seconds of audio in a WAV file (``None`` if it is missing or not a WAV)."""
    try:
        with wave.open(str(path), "rb") as w:
            return w.getnframes() / w.getframerate()
    except (OSError, EOFError, wave.Error):
        return None


def import_name(source: Path, directory: Path, account_id: int) -> tuple[Path, float]:
    """Decode ``source`` (any audio PyAV reads) to 8 kHz mono 16-bit WAV and put it in place
    as the account's name file, atomically. Returns the file (absolute) and its seconds."""
    pcm = _decode(source)
    seconds = len(pcm) / RATE
    if not len(pcm):
        raise NameFileError(f"{source}: no audio in it")
    if seconds > MAX_NAME_S:
        raise NameFileError(
            f"{source}: {seconds:.1f} s of audio; a name is played at every callback, "
            f"at most {MAX_NAME_S:g} s"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NameFileError(f"cannot create {directory}: {exc.strerror or exc}", 1) from None
    target = name_file(directory, account_id).resolve()
    _atomic(target, lambda tmp: _write_wav(tmp, pcm))
    return target, seconds


def export_name(source: Path, target: Path) -> float:
    """Write the recording ``source`` to ``target``: WAV, or what its extension names.
    Returns the seconds of audio written."""
    if not source.is_file():
        raise NameFileError(f"the recording {source} does not exist")
    if target.suffix.lower() == ".wav" and _is_name_wav(source):
        _atomic(target, lambda tmp: shutil.copyfile(source, tmp))
        return duration(target) or 0.0
    pcm = _decode(source)
    _atomic(target, lambda tmp: _encode(tmp, pcm))
    return len(pcm) / RATE


def remove(path: Path) -> bool:
    """Remove a recording file; ``False`` if there was none."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise NameFileError(f"cannot remove {path}: {exc.strerror or exc}", 1) from None
    return True


# -- audio --------------------------------------------------------------------------------------


def _decode(path: Path) -> NDArray[np.int16]:
    import av

    from media.tools import read_audio

    if not path.is_file():
        raise NameFileError(f"{path}: no such file")
    try:
        return read_audio(path)
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        # IndexError: a container without an audio stream (decode(audio=0)).
        raise NameFileError(f"{path}: not audio PyAV can decode ({_reason(exc)})") from None


def _is_name_wav(path: Path) -> bool:
    try:
        with wave.open(str(path), "rb") as w:
            return (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, RATE)
    except (OSError, EOFError, wave.Error):
        return False


def _write_wav(path: Path, pcm: NDArray[np.int16]) -> None:
    with open(path, "wb") as handle:
        with wave.open(handle, "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(pcm.astype("<i2").tobytes())
        handle.flush()
        os.fsync(handle.fileno())


def _encode(path: Path, pcm: NDArray[np.int16]) -> None:
    """WAV and the extensions ``media.tools.write_audio`` knows go through it; any other
    extension gets the default audio codec of the container PyAV picks for it."""
    import av

    from media.tools import write_audio

    try:
        try:
            write_audio(path, pcm)
        except ValueError as exc:
            if "no encoder known" not in str(exc):
                raise
            _encode_any(path, pcm)
    except (av.FFmpegError, ValueError, TypeError) as exc:
        raise NameFileError(
            f"cannot write {path.suffix or 'extension-less'} audio: {_reason(exc)} "
            "(use .wav, .flac, .mp3, .ogg, .m4a ...)"
        ) from None


def _encode_any(path: Path, pcm: NDArray[np.int16]) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as container:
        codec = container.default_audio_codec
        if not codec or codec == "none":
            raise ValueError(f"{container.format.name} holds no audio")
        rates = av.Codec(codec, "w").audio_rates
        rate = RATE if not rates or RATE in rates else min(rates, key=lambda r: abs(r - RATE))
        stream = container.add_stream(codec, rate=rate)
        if not isinstance(stream, av.AudioStream):
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


# -- files --------------------------------------------------------------------------------------


def _atomic(target: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``target`` (same extension), then rename it over
    ``target``: readers see the old file or the whole new one."""
    directory = target.parent
    try:
        fd, name = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=directory
        )
    except OSError as exc:
        raise NameFileError(f"cannot write in {directory}: {exc.strerror or exc}", 1) from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as exc:
        raise NameFileError(f"cannot write {target}: {exc.strerror or exc}", 1) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _sync_dir(directory)


def _sync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX); a directory that cannot be opened is left as is."""
    with contextlib.suppress(OSError), _opened(directory) as fd:
        os.fsync(fd)


@contextlib.contextmanager
def _opened(directory: Path) -> Iterator[int]:
    fd = os.open(directory, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
