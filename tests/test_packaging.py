"""A normal install carries everything the switch reads at run time.

The wheel (not the editable install the tests run from) must hold the prompt set and the
migrations' template: a switch installed without them played silence to every customer and
``softswitch demo`` failed. This test builds the wheel, checks what is in it, installs it into
a fresh virtual environment (dependencies from pip's cache, warmed by ``make setup``) and runs
the demo from there, in a directory far from the repository so nothing can be imported from
the source tree by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from softswitch.prompts import LANGUAGES, PROMPT_NAMES
from softswitch.service.callflow import PROMPTS_PLAYED

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str | Path], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_the_wheel_has_the_prompts_and_the_demo_runs_from_it(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO],
        tmp_path,
        300,
    )
    assert built.returncode == 0, built.stderr
    [wheel] = dist.glob("softswitch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for lang in LANGUAGES:
        for name in PROMPT_NAMES:
            assert f"softswitch/prompts/{lang}/{name}.wav" in names
    assert set(PROMPT_NAMES) >= PROMPTS_PLAYED
    assert "softswitch/prompts/manifest.toml" in names
    assert "softswitch/store/migrations/script.py.mako" in names
    assert "softswitch/store/migrations/versions/0001_initial.py" in names

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", venv], tmp_path, 120)
    assert made.returncode == 0, made.stderr
    installed = _run([venv / "bin" / "pip", "install", "-q", wheel], tmp_path, 600)
    assert installed.returncode == 0, installed.stderr[-3000:]
    where = _run(
        [venv / "bin" / "python", "-c", "import softswitch; print(softswitch.__file__)"],
        tmp_path,
        60,
    )
    assert where.stdout.strip().startswith(str(venv)), where.stdout  # not the source tree

    demo = _run([venv / "bin" / "softswitch", "demo"], tmp_path, 180)
    assert demo.returncode == 0, demo.stdout[-4000:] + demo.stderr[-2000:]
    assert "demo passed" in demo.stdout
