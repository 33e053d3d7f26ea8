"""A fresh ``Store`` on a SQLite file (the repositories are tested on PostgreSQL too in
``tests/store``; what the CLI adds, files and messages, does not depend on the database)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from softswitch.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(f"sqlite:///{tmp_path}/store.sqlite3")
    yield opened
    await opened.close()
