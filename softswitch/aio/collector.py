"""When the cyclic garbage collector runs, so that it never stalls signalling for long.

Python frees almost everything by reference counting; the cyclic collector is only for objects
that refer to each other in a loop (SQLAlchemy's statement objects do; the SIP stack's
messages do not). What it costs is a walk over every object in the generations it collects,
about 0.3-0.5 microseconds per object on a loaded machine.

A busy node holds a great many objects that live for seconds: every answered server transaction
lingers after its final response (Timer J, 32 s on UDP). Since 2026-12-05 the transaction layer
keeps those as compact records (``scripts/mem_linger.py --service``: 2 tracked objects and 828
bytes per trigger call while both linger, against 15 and 4,065 bytes before), so at 2,500
trigger calls/s about 90,000 are alive (the CANCELs' 80,000, held 32 s, and the INVITEs'
12,500, held 5 s), not 730,000, besides the calls in progress; the full transactions were most
of what the stalls below walked. With CPython's automatic collection the youngest generation is
collected when allocations minus deallocations pass a threshold; once the node is in a steady
state the two cancel out, the young list grows without the count moving, and the collection
that finally comes walks all of it: measured (2026-12-05, ``scripts/bench_triggers.py``) as
stalls of 20-70 ms every second or two at 2,000-2,500 calls/s, and more the longer the run.
Every call arriving during a stall waits for its 180.

So the node collects on a clock instead (:class:`Collector`):

* at start, what start-up loaded (modules, tables: over 100,000 objects) is collected once and
  frozen (``gc.freeze``): no later collection walks it again.
* every :data:`YOUNG_INTERVAL` the youngest generation only: what was allocated since the
  last tick and is still alive. That is a few thousand objects even at full load, a pause of
  a few milliseconds. Garbage cycles made and dropped within a tick (a statement built,
  executed and discarded) are freed here. What survives moves to the older generation, which
  nothing collects automatically (reference counting still frees it the moment nothing
  refers to it).
* every :data:`FULL_INTERVAL` the older generation too, which frees the cycles that became
  garbage after surviving a tick (a few dozen objects in ten minutes of trigger calls). This
  walks every object of the calls in progress and of the transactions lingering, so it waits
  for a quiet moment: a second in which no young collection took over :data:`QUIET_PAUSE`. At a
  few hundred calls/s that is any second and the collection takes tens of milliseconds; under
  sustained heavy load it is put off for up to :data:`FULL_MAX_DELAY` and then run anyway
  (measured 2026-12-05 at 2,500 trigger calls/s: 0.65-1.0 s, and one forced that way every 20 s
  failed 30 of 150,000 calls; with the compact transaction records, forced every 10 s at
  2,500/s: 0.10-0.15 s, 0 of 100,000 failed, p99 64 ms). Each is logged with its pause and
  counted on ``/metrics``.

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
#: Seconds between full collections (the cycles older objects made since the last one).
FULL_INTERVAL = 600.0
#: A full collection that is due runs in the first second whose young collections all paused
#: the loop for at most this long (load low enough for a full one to be short)...
QUIET_PAUSE = 0.002
#: ...or, when no second is that quiet, this long after it fell due.
FULL_MAX_DELAY = 3600.0


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
    quiet_pause: float = QUIET_PAUSE
    full_max_delay: float = FULL_MAX_DELAY
    young: Pauses = field(default_factory=Pauses)
    full: Pauses = field(default_factory=Pauses)
    #: Full collections put off for load (each second a due one waited).
    deferred: int = 0
    #: The longest young pause since the last look (is this second quiet?).
    _recent: float = field(default=0.0, init=False, repr=False)
    #: When the pending full collection fell due (None: none pending).
    _due_since: float | None = field(default=None, init=False, repr=False)
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
        """One young collection; the number of objects freed."""
        started = time.perf_counter()
        collected = gc.collect(0)
        took = time.perf_counter() - started
        self.young.add(took, collected)
        if took > self._recent:
            self._recent = took
        return collected

    def collect_full(self) -> int:
        """One collection of everything since start-up; the number of objects freed."""
        started = time.perf_counter()
        collected = gc.collect()
        took = time.perf_counter() - started
        self.full.add(took, collected)
        log.info(
            "garbage collection: %d unreachable objects freed, the node paused %.0f ms "
            "(every %g s, in a quiet second when there is one; README, Metrics)",
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
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if self._due_since is None:
            self._due_since = now
            self._recent = 0.0  # judge the second from now on
            self._full_timer = loop.call_later(1.0, self._collect_full)
            return
        quiet = self._recent <= self.quiet_pause
        self._recent = 0.0
        if not quiet and now - self._due_since < self.full_max_delay:
            self.deferred += 1
            self._full_timer = loop.call_later(1.0, self._collect_full)
            return
        self._due_since = None
        self.collect_full()
        self._full_timer = loop.call_later(self.full_interval, self._collect_full)


__all__ = [
    "FULL_INTERVAL",
    "FULL_MAX_DELAY",
    "QUIET_PAUSE",
    "YOUNG_INTERVAL",
    "Collector",
    "Pauses",
]
