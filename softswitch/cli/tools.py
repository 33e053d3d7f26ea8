"""``softswitch tools``: command-line tools for debugging calls (DTMF detection, test tones)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

tools_app = typer.Typer(no_args_is_help=True, help="Tools for debugging calls (DTMF, audio).")


@tools_app.command("detect-dtmf")
def detect_dtmf(
    file: Annotated[
        Path, typer.Argument(help="Any audio file PyAV can read.", exists=True, dir_okay=False)
    ],
) -> None:
    """Print each DTMF digit in FILE as: DIGIT START_MS DURATION_MS."""
    from media.tools import detect_dtmf_file

    try:
        digits = detect_dtmf_file(str(file))
    except Exception as exc:  # PyAV raises many kinds; the user needs the message, not a trace
        typer.echo(f"softswitch: cannot read {file}: {exc}", err=True)
        raise typer.Exit(1) from None
    for digit, start_ms, duration_ms in digits:
        typer.echo(f"{digit} {start_ms} {duration_ms}")


@tools_app.command("gen-dtmf")
def gen_dtmf(
    digits: Annotated[str, typer.Argument(help="Digits 0-9 * # A-D.")],
    out: Annotated[Path, typer.Argument(help="Output WAV file.", dir_okay=False)],
    level: Annotated[float, typer.Option("--level", help="Level per tone, dBm0.")] = -4.0,
    on: Annotated[int, typer.Option("--on", help="Tone duration, ms.")] = 50,
    off: Annotated[int, typer.Option("--off", help="Pause between digits, ms.")] = 50,
) -> None:
    """Write DTMF test tones to OUT.wav (8 kHz, 16-bit mono)."""
    from media.tools import gen_dtmf_file

    bad = [d for d in digits.upper() if d not in "0123456789*#ABCD"]
    if bad:
        typer.echo(f"softswitch: not DTMF digits: {''.join(bad)!r}", err=True)
        raise typer.Exit(2)
    gen_dtmf_file(digits.upper(), str(out), level_dbm0=level, on_ms=on, off_ms=off)
