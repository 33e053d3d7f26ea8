"""The node's garbage collector on the loop's clock (softswitch.aio.collector).

These run the real ``gc`` module: what is asserted is which garbage a young collection frees,
which waits for the full one, and that the automatic collector is handed back.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from softswitch.aio.collector import Collector


class Node:
    """Something that can be part of a reference cycle and be watched by a weakref."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@pytest.fixture
def collector() -> Iterator[Collector]:
    was_enabled = gc.isenabled()
    gc.disable()
    gc.collect()
    gc.freeze()
    made = Collector()
    try:
        yield made
    finally:
        made.stop()
        if not was_enabled:
            gc.disable()


def test_young_collection_frees_a_cycle_dropped_before_it(collector: Collector) -> None:
    a, ref = cycle()
    del a
    assert ref() is not None  # a cycle: reference counting alone cannot free it
    freed = collector.collect_young()
    assert ref() is None
    assert freed >= 2
    assert collector.young.count == 1 and collector.young.collected == freed
    assert collector.young.longest == collector.young.seconds > 0


def test_survivors_are_frozen_until_the_full_collection(collector: Collector) -> None:
    a, ref = cycle()
    collector.collect_young()  # a survives: frozen
    frozen = gc.get_freeze_count()
    assert frozen > 0
    del a
    collector.collect_young()
    assert ref() is not None  # garbage now, but out of the young collection's reach
    collector.collect_full()
    assert ref() is None
    assert collector.full.count == 1 and collector.full.collected >= 2
    assert gc.get_freeze_count() <= frozen


def test_frozen_objects_are_still_freed_by_reference_counting(collector: Collector) -> None:
    a = Node()  # no cycle: what every SIP message is
    ref = weakref.ref(a)
    collector.collect_young()
    del a
    assert ref() is None


async def test_runs_on_the_loop_clock_and_hands_back_the_automatic_collector() -> None:
    was_enabled = gc.isenabled()
    collector = Collector(young_interval=0.01, full_interval=0.05)
    try:
        collector.start(asyncio.get_running_loop())
        assert not gc.isenabled()
        a, ref = cycle()
        collector.collect_young()  # frozen while still referenced
        del a
        for _ in range(100):
            if collector.full.count and collector.young.count >= 3:
                break
            await asyncio.sleep(0.01)
        assert collector.young.count >= 3
        assert collector.full.count >= 1
        assert ref() is None  # the timed full collection freed the frozen cycle
    finally:
        collector.stop()
        assert gc.isenabled()
        if not was_enabled:
            gc.disable()
