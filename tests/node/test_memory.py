"""Long runs, on a fake clock: whole callback calls leave nothing behind in the node.

Three batches of :data:`CALLS` whole calls (trigger, callback answered, digits, destination
answered, talk, and an end: the customer's BYE, the destination's BYE, ``**``, or a busy
destination then the customer's BYE), :data:`AT_ONCE` calls overlapping, then the clock runs on
until every timer of those calls has fallen due (the trigger hold, the rate window, Timer K).
Between the first batch and the third, no container reachable from the node may have grown
by more than :data:`SLACK` entries, nor any of the project's types by more than that many live
objects: one entry or object left per call grows by ``2 * CALLS``. Caches that are bounded by
design are emptied before counting (``tests.census.clear_caches``) and checked against their
bound instead.

Found by it (issue 11, the soak's RSS): the outbound legs' routing table kept every client
transaction of every call (keyed by ``id()``, which CPython reuses: a stale entry could also
swallow another layer's response), and the controller's timer heap kept the disarmed credit
timers of every call until they would have fallen due, hours later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest

from softswitch.config import LimitsConfig
from softswitch.service.trigger import TriggerEnded
from softswitch.store.models import LegKind
from tests.census import census, clear_caches, grown, object_counts
from tests.node.harness import Call, Rig, account

CALLS = 200
AT_ONCE = 8
#: What may grow between batches: structures swept or compacted in amortized passes hold up
#: to about this many dead entries between passes. A leak of one entry per call: 2 * CALLS.
SLACK = CALLS // 2
#: Caches bounded by design (attribute name -> bound): emptied before counting.
BOUNDED = {"_fixed_vias": 4096}


def trigger_number(i: int) -> str:
    return f"8150000000{i:02d}"


def customer(i: int) -> str:
    return f"8190123456{i:02d}"


def destination(n: int) -> str:
    return f"4412345{n:05d}"


def make_rig() -> Rig:
    accounts = [
        account(i + 1, triggers=[trigger_number(i)], location=customer(i)) for i in range(AT_ONCE)
    ]
    # A short rate window, so that 200 calls on 8 accounts are not refused as a flood.
    return Rig(accounts=accounts, limits=LimitsConfig(window=60.0))


def wave(rig: Rig, first: int) -> None:
    """:data:`AT_ONCE` whole calls at once, call ``first`` onwards."""
    slots = range(AT_ONCE)
    for i in slots:
        rig.trigger(trigger_number(i), customer(i), ring=0.2)
    callbacks: list[Call] = []
    for i in slots:
        callback = rig.last_call(customer(i))
        rig.ring(callback)
        callbacks.append(callback)
    rig.advance(1.0)
    for callback in callbacks:
        rig.answer(callback)
    for i, callback in enumerate(callbacks):
        rig.keys(callback, destination(first + i) + "*", gap=0.05)
    destinations = [rig.last_call(destination(first + i)) for i in slots]
    for i, dest in enumerate(destinations):
        rig.ring(dest)
        if (first + i) % 4 == 3:
            rig.reject(dest, 486)
    rig.advance(1.0)
    for i, dest in enumerate(destinations):
        if (first + i) % 4 != 3:
            rig.answer(dest)
    rig.advance(5.0)
    for i, (callback, dest) in enumerate(zip(callbacks, destinations, strict=True)):
        end = (first + i) % 4
        if end == 0:
            rig.hang_up(callback)
        elif end == 1:
            rig.hang_up(dest)
            rig.advance(0.5)
            rig.hang_up(callback)  # back at the dial prompt, the customer hangs up
        elif end == 2:
            rig.keys(callback, "**", gap=0.05)
        else:
            rig.advance(0.5)
            rig.hang_up(callback)  # heard the busy tone
    rig.advance(1.0)


def batch(rig: Rig, first: int) -> None:
    for start in range(first, first + CALLS, AT_ONCE):
        wave(rig, start)
    rig.advance(900.0)  # every timer of these calls falls due
    assert rig.calls.idle and rig.calls.sessions == {}
    assert rig.media.live() == [] and rig.store.reservations == {}
    # Every call ran to its end: a destination leg each, three in four answered.
    destinations = rig.store.cdrs_of(LegKind.DESTINATION)
    assert len(destinations) == CALLS
    assert sum(c.answer_at is not None for c in destinations) == CALLS * 3 // 4
    # The test's own records of the calls (not the node's).
    for records in (rig.commands, rig.requests, rig.responses, rig.calls_out):
        records.clear()
    rig.store.cdrs.clear()
    rig.store.settled.clear()
    rig.store.renewed.clear()
    rig.store.queue.clear()
    rig.media.legs.clear()


def measure(rig: Rig) -> tuple[Counter[str], Counter[str]]:
    sizes = census(rig.node)
    for path, size in sizes.items():
        name = path.rsplit(".", 1)[-1]
        if name in BOUNDED:
            assert size <= BOUNDED[name], f"{path} holds {size}, over its bound"
    clear_caches(rig.node.endpoint._fixed_vias)
    return census(rig.node, skip=BOUNDED), object_counts()


def run(rig: Rig, between: Callable[[], None] = lambda: None) -> None:
    batch(rig, 0)
    sizes, objects = measure(rig)
    batch(rig, CALLS)
    between()
    batch(rig, 2 * CALLS)
    sizes_after, objects_after = measure(rig)
    containers = grown(sizes, sizes_after, SLACK)
    assert containers == {}, f"containers that grew with the calls: {containers}"
    types = grown(objects, objects_after, SLACK)
    assert types == {}, f"objects that piled up with the calls: {types}"


def test_whole_calls_leave_nothing_behind_in_the_node() -> None:
    run(make_rig())


def test_the_census_sees_an_entry_left_per_call() -> None:
    """The check itself: a dict of the controller that keeps one entry per call is reported."""
    rig = make_rig()
    calls = rig.calls
    leaked: dict[int, TriggerEnded] = {}
    calls._leak_probe = leaked  # type: ignore[attr-defined]
    original = calls.trigger_ended

    def leaking(ended: TriggerEnded, now: float) -> None:
        leaked[len(leaked)] = ended
        original(ended, now)

    calls.trigger_ended = leaking  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="_leak_probe"):
        run(rig)
