"""When the cyclic garbage collector runs, so that it never stalls signalling for long.

Python frees almost everything by reference counting; the cyclic collector is only for objects
that refer to each other in a loop (SQLAlchemy's statement objects do; the SIP stack's
messages do not). What it costs is a walk over every object in the generations it collects,
about 0.3-0.5 microseconds per object on a loaded machine.

A busy node holds a great many objects that live for seconds: every transaction lingers after
its final response (Timer J, 32 s on UDP), with its request and responses, so at 2,500
trigger calls/s about four million tracked objects are alive. With CPython's automatic
collection the youngest generation is collected when allocations minus deallocations pass a
threshold; once the node is in a steady state the two cancel out, the young list grows
without the count moving, and the collection that finally comes walks all of it: measured
(2026-12-05, ``scripts/bench_triggers.py``) as stalls of 20-70 ms every second or two at
2,000-2,500 calls/s, and more the longer the run. Every call arriving during a stall waits
for its 180.

So the node collects on a clock instead (:class:`Collector`):

* every :data:`YOUNG_INTERVAL` the youngest generation only: what was allocated since the
  last tick and is still alive. That is a few thousand objects even at full load, a pause of
  a few milliseconds. Garbage cycles made and dropped within a tick (a statement built,
  executed and discarded) are freed here.
* what survives a tick is then frozen (``gc.freeze``): moved where no automatic or young
  collection looks again. Frozen objects are still freed by reference counting the moment
  nothing refers to them; only a *cycle* that becomes garbage after surviving a tick is kept.
* every :data:`FULL_INTERVAL` everything is unfrozen and collected once, which frees those
  cycles. This pause grows with the live set (about 50 ms at a few hundred trigger calls/s,
  about a second at 2,500/s); it is logged and exported on ``/metrics`` with the young pauses.

The media workers keep their own tuning (they allocate almost nothing per packet).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: Seconds between collections of the youngest generation.
YOUNG_INTERVAL = 0.1
#: Seconds between full collections (the cycles frozen objects made since the last one).
FULL_INTERVAL = 600.0


@dataclass
class Pauses:
    """Collections of one kind (young or full): how many, how long in all, the longest."""

    count: int = 0
    seconds: float = 0.0
    longest: float = 0.0
    #: Unreachable objects found (the garbage cycles freed).
    collected: int = 0

    def add(self, seconds: float, collected: int) -> None:
        self.count += 1
        self.seconds += seconds
        self.collected += collected
        if seconds > self.longest:
            self.longest = seconds


@dataclass
class Collector:
    """Runs the cyclic garbage collector on the loop's clock (see the module's text)."""

    young_interval: float = YOUNG_INTERVAL
    full_interval: float = FULL_INTERVAL
    young: Pauses = field(default_factory=Pauses)
    full: Pauses = field(default_factory=Pauses)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _young_timer: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)
    _full_timer: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Collect what start-up left, freeze the rest, and take over from the automatic runs.

        Call it before announcing the node as up: this first collection walks everything
        imported and built at start-up (about 0.1 s).
        """
        self._loop = loop
        gc.disable()
        started = time.perf_counter()
        collected = gc.collect()
        gc.freeze()
        log.debug(
            "start-up garbage collection: %d objects freed in %.0f ms",
            collected,
            (time.perf_counter() - started) * 1000,
        )
        self._young_timer = loop.call_later(self.young_interval, self._collect_young)
        self._full_timer = loop.call_later(self.full_interval, self._collect_full)

    def stop(self) -> None:
        """Hand the collector back to CPython's automatic runs.

        What is frozen stays frozen (still freed by reference counting): unfreezing would make
        the next collection walk all of it, a pause for nothing when the process is about to
        exit, and for a test process that starts many nodes a tenth of a second per start.
        """
        for timer in (self._young_timer, self._full_timer):
            if timer is not None:
                timer.cancel()
        self._young_timer = self._full_timer = None
        gc.enable()

    def collect_young(self) -> int:
        """One young collection, its survivors frozen; the number of objects freed."""
        started = time.perf_counter()
        collected = gc.collect(0)
        gc.freeze()
        self.young.add(time.perf_counter() - started, collected)
        return collected

    def collect_full(self) -> int:
        """One full collection over everything, frozen or not; the number of objects freed."""
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        took = time.perf_counter() - started
        self.full.add(took, collected)
        log.info(
            "garbage collection: %d unreachable objects freed, the node paused %.0f ms "
            "(every %g s; see README, Performance)",
            collected,
            took * 1000,
            self.full_interval,
        )
        return collected

    def _collect_young(self) -> None:
        self.collect_young()
        assert self._loop is not None
        self._young_timer = self._loop.call_later(self.young_interval, self._collect_young)

    def _collect_full(self) -> None:
        self.collect_full()
        assert self._loop is not None
        self._full_timer = self._loop.call_later(self.full_interval, self._collect_full)


__all__ = ["FULL_INTERVAL", "YOUNG_INTERVAL", "Collector", "Pauses"]
