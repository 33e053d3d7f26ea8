"""media/__init__.py: numpy's BLAS must not start worker threads in the media process."""

import os
import subprocess
import sys

_SHOW = "import media, os; print(os.environ['OPENBLAS_NUM_THREADS'], os.environ['OMP_NUM_THREADS'])"


def _run(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _SHOW], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_single_threaded_blas_unless_set_explicitly() -> None:
    base = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    assert _run(base) == "1 1"
    assert _run({**base, "OPENBLAS_NUM_THREADS": "4"}) == "4 1"
