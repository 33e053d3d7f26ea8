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


def test_survivors_wait_for_the_full_collection(collector: Collector) -> None:
    a, ref = cycle()
    collector.collect_young()  # a survives: into the older generation
    del a
    collector.collect_young()
    assert ref() is not None  # garbage now, but out of the young collection's reach
    collector.collect_full()
    assert ref() is None
    assert collector.full.count == 1 and collector.full.collected >= 2


def test_older_objects_are_still_freed_by_reference_counting(collector: Collector) -> None:
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
        collector.collect_young()  # survives while still referenced
        del a
        for _ in range(300):
            if collector.full.count:
                break
            await asyncio.sleep(0.01)
        # Due after 0.05 s, run after the next quiet second (young pauses of microseconds).
        assert collector.full.count == 1
        assert collector.deferred == 0
        assert collector.young.count >= 10
        assert ref() is None  # the timed full collection freed the cycle
    finally:
        collector.stop()
        assert gc.isenabled()
        if not was_enabled:
            gc.disable()


async def test_a_busy_node_puts_the_full_collection_off_then_runs_it() -> None:
    was_enabled = gc.isenabled()
    # No second is quiet enough (a young pause would have to take under no time at all),
    # so the full collection, due after 0.05 s, waits its longest (1.5 s) and then runs.
    collector = Collector(
        young_interval=0.01, full_interval=0.05, quiet_pause=-1.0, full_max_delay=1.5
    )
    try:
        loop = asyncio.get_running_loop()
        collector.start(loop)
        started = loop.time()
        while not collector.full.count and loop.time() - started < 5:
            await asyncio.sleep(0.05)
        assert collector.full.count == 1
        assert collector.deferred >= 1
        assert loop.time() - started >= 1.5
    finally:
        collector.stop()
        if not was_enabled:
            gc.disable()
