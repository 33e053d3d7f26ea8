"""The ``softswitch`` command itself: help texts say what the commands really do."""

from __future__ import annotations

from typer.testing import CliRunner

from softswitch.cli.app import app


def _help(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_demo_help_describes_the_demo_that_runs() -> None:
    text = _help("demo")
    # softswitch/demo/run.py: a real node and an emulated carrier (no SIPp), a whole callback.
    assert "SIPp" not in text and "registration and a trigger call" not in text
    for fragment in ("whole callback call", "emulated carrier", "exits 0 only if every check"):
        assert fragment in text, text
