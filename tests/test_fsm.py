"""softswitch.fsm: the one table type every state machine of the project is written with."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

import pytest

from softswitch import fsm

log = logging.getLogger("tests.fsm")


class Door(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    LOCKED = "locked"
    GONE = "gone"


class Push(enum.Enum):
    OPEN = "open it"
    CLOSE = "close it"
    LOCK = "lock it"
    BURN = "burn it"


class DoorError(fsm.TransitionError):
    """The door's own error."""


class Knock:
    """An input given as a class (as the call flow does with its events)."""


_Handler = Callable[[], str]


def _ajar() -> str:
    return "ajar"


def door_table() -> fsm.Table[Door, object, _Handler]:
    return fsm.Table(
        "door",
        {
            (Door.CLOSED, Push.OPEN): (_ajar, Door.OPEN),
            (Door.OPEN, Push.CLOSE): (None, Door.CLOSED),
            (Door.CLOSED, Push.LOCK): (None, Door.LOCKED),
            (Door.LOCKED, Push.OPEN): (None, Door.LOCKED),  # refused politely: stays locked
            (Door.CLOSED, Knock): (None, {Door.OPEN, Door.CLOSED}),
            (Door.LOCKED, "timer burn"): (None, Door.GONE),
        },
        initial=Door.CLOSED,
        final={Door.GONE},
        error=DoorError,
    )


def test_entries_are_transitions_with_their_targets() -> None:
    table = door_table()
    assert len(table) == 6
    entry = table.fire(Door.CLOSED, Push.OPEN)
    assert entry.handler is _ajar and entry.targets == {Door.OPEN} and entry.target is Door.OPEN
    assert table.fire(Door.OPEN, Push.CLOSE).handler is None
    several = table.fire(Door.CLOSED, Knock)
    assert several.targets == {Door.OPEN, Door.CLOSED}
    with pytest.raises(ValueError, match="2 targets"):
        _ = several.target
    assert dict(table) == table.entries
    assert table.initial == {Door.CLOSED} and table.final == {Door.GONE}


def test_a_missing_pair_raises_the_machines_error_with_where_it_happened() -> None:
    table = door_table()
    assert table.accepts(Door.CLOSED, Push.OPEN)
    assert not table.accepts(Door.OPEN, Push.LOCK)
    with pytest.raises(DoorError) as info:
        table.fire(Door.OPEN, Push.LOCK, who="front")
    assert isinstance(info.value, fsm.TransitionError)
    assert info.value.state is Door.OPEN and info.value.input is Push.LOCK
    assert str(info.value) == "door (front) in OPEN: no transition for lock it"
    with pytest.raises(DoorError, match="door in OPEN: no transition for Knock"):
        table.fire(Door.OPEN, Knock)


def test_default_error_is_transition_error() -> None:
    table: fsm.Table[Door, Push, None] = fsm.Table(
        "plain", {(Door.OPEN, Push.CLOSE): (None, Door.CLOSED)}, initial=Door.OPEN
    )
    assert table.error is fsm.TransitionError
    with pytest.raises(fsm.TransitionError):
        table.fire(Door.CLOSED, Push.OPEN)


def test_move_checks_the_target_against_the_entry_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table = door_table()
    entry = table.fire(Door.CLOSED, Knock)
    with caplog.at_level(logging.DEBUG, logger="tests.fsm"):
        assert table.move(log, "front", Door.CLOSED, Door.OPEN, entry, Knock) is Door.OPEN
        assert table.move(log, "front", Door.CLOSED, Door.CLOSED, entry, Knock) is Door.CLOSED
    # A change is logged once, old -> new with the input; staying put is not a change.
    assert [r.getMessage() for r in caplog.records] == ["door front: CLOSED -> OPEN (Knock)"]
    assert caplog.records[0].levelno == logging.DEBUG
    with pytest.raises(DoorError, match="Knock may lead to CLOSED, OPEN, not LOCKED") as info:
        table.move(log, "front", Door.CLOSED, Door.LOCKED, entry, Knock)
    assert info.value.state is Door.CLOSED and info.value.input is Knock


def test_step_fires_and_moves_at_the_level_asked(caplog: pytest.LogCaptureFixture) -> None:
    table = door_table()
    with caplog.at_level(logging.INFO, logger="tests.fsm"):
        assert table.step(log, "front", Door.CLOSED, Push.LOCK) is Door.LOCKED
        assert table.step(log, "front", Door.LOCKED, "timer burn", level=logging.INFO) is Door.GONE
    assert [r.getMessage() for r in caplog.records] == ["door front: LOCKED -> GONE (timer burn)"]
    with pytest.raises(ValueError, match="2 targets"):
        table.step(log, "front", Door.CLOSED, Knock)
    with pytest.raises(DoorError):
        table.step(log, "front", Door.GONE, Push.OPEN)


def test_states_sources_and_reachable() -> None:
    table = door_table()
    assert table.states() == frozenset(Door)
    assert table.reachable() == frozenset(Door)
    assert table.sources(Push.OPEN) == {Door.CLOSED, Door.LOCKED}
    assert table.sources(Push.BURN) == frozenset()
    island: fsm.Table[Door, Push, None] = fsm.Table(
        "island",
        {
            (Door.OPEN, Push.CLOSE): (None, Door.CLOSED),
            (Door.LOCKED, Push.BURN): (None, Door.GONE),
        },
        initial=Door.OPEN,
    )
    assert island.states() == frozenset(Door)
    assert island.reachable() == {Door.OPEN, Door.CLOSED}


def test_a_table_refuses_entries_for_final_states_and_entries_leading_nowhere() -> None:
    with pytest.raises(ValueError, match="final state GONE has an entry"):
        fsm.Table(
            "bad", {(Door.GONE, Push.OPEN): (None, Door.OPEN)}, initial=Door.OPEN, final={Door.GONE}
        )
    with pytest.raises(ValueError, match="OPEN on close it leads nowhere"):
        fsm.Table("bad", {(Door.OPEN, Push.CLOSE): (None, set())}, initial=Door.OPEN)


def test_mermaid_draws_the_table_with_parallel_edges_merged() -> None:
    assert door_table().mermaid() == "\n".join(
        [
            "stateDiagram-v2",
            "    [*] --> CLOSED",
            "    CLOSED --> OPEN: open it, Knock",
            "    OPEN --> CLOSED: close it",
            "    CLOSED --> LOCKED: lock it",
            "    LOCKED --> LOCKED: open it",
            "    CLOSED --> CLOSED: Knock",
            "    LOCKED --> GONE: timer burn",
            "    GONE --> [*]",
        ]
    )


def test_input_name() -> None:
    assert fsm.input_name(Push.BURN) == "burn it"
    assert fsm.input_name(Knock) == "Knock"
    assert fsm.input_name("timer ring") == "timer ring"
    assert fsm.input_name(7) == "7"
