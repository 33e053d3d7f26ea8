"""GroupCommit: batched store writes, where one bad item must not take its batch down with it.

Found by fuzzing (issue 11): a trigger caller whose number the database could not take made
the CDR write of its batch fail, and every other CDR written in the same commit was logged
CDR NOT WRITTEN with it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from softswitch.aio.service import GroupCommit
from softswitch.store import Store
from softswitch.store.db import DatabaseUnavailable
from softswitch.store.models import Cdr, LegKind


class Recorder:
    """A run function that records its batches and refuses any batch holding ``bad``."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.batches: list[list[str]] = []

    async def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        await asyncio.sleep(0)
        if "bad" in items:
            raise self.error
        return [item.upper() for item in items]


async def test_one_bad_item_fails_alone() -> None:
    run = Recorder(ValueError("cannot store 'bad'"))
    group: GroupCommit[str, str] = GroupCommit(run)
    results = await asyncio.gather(
        group.submit("a"), group.submit("bad"), group.submit("c"), return_exceptions=True
    )
    assert results[0] == "A"
    assert isinstance(results[1], ValueError)
    assert results[2] == "C"
    assert run.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]


async def test_an_unreachable_database_fails_the_batch_without_retrying_each() -> None:
    run = Recorder(DatabaseUnavailable("database at x: connection refused"))
    group: GroupCommit[str, str] = GroupCommit(run)
    results = await asyncio.gather(
        group.submit("a"), group.submit("bad"), group.submit("c"), return_exceptions=True
    )
    assert all(isinstance(r, DatabaseUnavailable) for r in results)
    assert run.batches == [["a", "bad", "c"]]


async def test_later_items_still_batch_after_a_bad_one() -> None:
    run = Recorder(ValueError("no"))
    group: GroupCommit[str, str] = GroupCommit(run)
    first = await asyncio.gather(group.submit("bad"), group.submit("b"), return_exceptions=True)
    assert isinstance(first[0], ValueError) and first[1] == "B"
    assert list(await asyncio.gather(group.submit("x"), group.submit("y"))) == ["X", "Y"]
    assert run.batches[-1] == ["x", "y"]


@pytest.mark.parametrize("caller", ["81\udc91234", "\ud800"])
async def test_cdrs_batched_with_an_unwritable_one_are_written(tmp_path: Path, caller: str) -> None:
    """On a real store: a CDR whose number cannot be encoded (a lone surrogate, what a
    non-UTF-8 escape decoded with surrogateescape gives) fails; the two beside it are durable."""
    store = await Store.open(f"sqlite:///{tmp_path / 'store.sqlite3'}")
    try:
        group: GroupCommit[Cdr, Cdr] = GroupCommit(store.cdrs.write_many)

        def cdr(n: int, number: str) -> Cdr:
            return Cdr(f"call-{n}", LegKind.TRIGGER, None, number, "815012345678", 1000.0 + n)

        results = await asyncio.gather(
            group.submit(cdr(1, "815011111111")),
            group.submit(cdr(2, caller)),
            group.submit(cdr(3, "815033333333")),
            return_exceptions=True,
        )
        assert isinstance(results[1], Exception)
        written = {c.call_uuid for c in await store.cdrs.list()}
        assert written == {"call-1", "call-3"}
    finally:
        await store.close()
