"""State machines: one table type, one way to fire it, one error, one diagram.

Every state machine of the project (SIP transactions, dialogs, registration and the trunk
keep-alive, outbound legs, test line calls, trigger calls, the customer's call flow, the
Location menu, the callback queue, the demo's phones) is written the same way, after
h2's and h11's: an Enum of states and a :class:`Table` mapping ``(state, input)`` to a
:class:`Transition`, the handler to run (or ``None`` where the move is all there is) and the
states it may leave the machine in. An input the table has no entry for is a protocol error
(:class:`TransitionError`), never a silent no-op; a handler that moves to a state the entry
does not list is a bug caught at once, not a wrong call. Every move is logged ``old -> new``
by :meth:`Table.move`, and :meth:`Table.mermaid` draws the real diagram from the same table
(``scripts/diagrams.py`` writes them all to ``docs/state-machines.md``, and a test fails when
that file is stale), so the documentation cannot drift from the code.

Inputs are whatever identifies an event: an Enum member (SIP transactions), an event class
(the call flow), or a string (timer names). Tables are plain dicts underneath, so the lookup
on a hot path (a transaction per SIP message) is one dictionary access.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

__all__ = ["Table", "Transition", "TransitionError", "input_name"]

S = TypeVar("S", bound=Enum)
I = TypeVar("I", bound=Hashable)  # noqa: E741  (the conventional name: state, input, handler)
H = TypeVar("H")


class TransitionError(Exception):
    """An input the machine has no entry for, or a move its entry does not allow.

    ``state`` and ``input`` say where it happened; the machine's own error types derive from
    this one so callers can catch them by machine.
    """

    def __init__(self, message: str, *, state: Enum | None = None, input: object = None) -> None:
        super().__init__(message)
        self.state = state
        self.input = input


def input_name(inp: object) -> str:
    """How an input is written in logs and diagrams: an Enum's value, a class's name."""
    if isinstance(inp, Enum):
        return str(inp.value)
    if isinstance(inp, type):
        return inp.__name__
    return str(inp)


@dataclass(frozen=True, slots=True)
class Transition(Generic[S, H]):
    """One table entry: run ``handler`` (if any); the machine ends in one of ``targets``."""

    handler: H | None
    targets: frozenset[S]

    @property
    def target(self) -> S:
        """The only state this entry leads to (for entries with a single target)."""
        if len(self.targets) != 1:
            raise ValueError(f"{len(self.targets)} targets: {sorted(t.name for t in self.targets)}")
        return next(iter(self.targets))


class Table(Generic[S, I, H]):
    """``(state, input) -> Transition``: the whole behaviour of one kind of machine.

    ``entries`` maps each pair to ``(handler, target)`` or ``(handler, {targets})``.
    ``initial`` are the states a machine may start in, ``final`` those it never leaves.
    ``error`` is the exception class raised for a missing pair or a disallowed move (a
    subclass of :class:`TransitionError` named after the machine).
    """

    __slots__ = ("entries", "error", "final", "initial", "name")

    def __init__(
        self,
        name: str,
        entries: Mapping[tuple[S, I], tuple[H | None, S | Iterable[S]]],
        *,
        initial: S | Iterable[S],
        final: Iterable[S] = (),
        error: type[TransitionError] = TransitionError,
    ) -> None:
        self.name = name
        self.error = error
        self.initial: frozenset[S] = (
            frozenset({initial}) if isinstance(initial, Enum) else frozenset(initial)
        )
        self.final: frozenset[S] = frozenset(final)
        self.entries: dict[tuple[S, I], Transition[S, H]] = {}
        for (state, inp), (handler, to) in entries.items():
            targets: frozenset[S] = frozenset({to}) if isinstance(to, Enum) else frozenset(to)
            if not targets:
                raise ValueError(f"{name}: {state.name} on {input_name(inp)} leads nowhere")
            if state in self.final:
                raise ValueError(f"{name}: final state {state.name} has an entry")
            self.entries[(state, inp)] = Transition(handler, targets)

    def __iter__(self) -> Iterator[tuple[tuple[S, I], Transition[S, H]]]:
        return iter(self.entries.items())

    def __len__(self) -> int:
        return len(self.entries)

    def accepts(self, state: S, inp: I) -> bool:
        """Whether ``inp`` has an entry in ``state``."""
        return (state, inp) in self.entries

    def fire(self, state: S, inp: I, *, who: object = None) -> Transition[S, H]:
        """The entry for ``inp`` in ``state``; :attr:`error` when there is none."""
        entry = self.entries.get((state, inp))
        if entry is None:
            where = f" ({who})" if who is not None else ""
            raise self.error(
                f"{self.name}{where} in {state.name}: no transition for {input_name(inp)}",
                state=state,
                input=inp,
            )
        return entry

    def move(
        self,
        log: logging.Logger,
        who: object,
        old: S,
        new: S,
        transition: Transition[S, H],
        inp: I,
        *,
        level: int = logging.DEBUG,
    ) -> S:
        """Check ``new`` against the entry that fired, log ``old -> new``, return ``new``.

        ``level`` is the log level of the move (machines whose every move is news to the
        operator, such as the trunk registration, log at INFO).
        """
        if new not in transition.targets:
            raise self.error(
                f"{self.name} ({who}) in {old.name}: {input_name(inp)} may lead to "
                f"{', '.join(sorted(t.name for t in transition.targets))}, not {new.name}",
                state=old,
                input=inp,
            )
        if new is not old and log.isEnabledFor(level):
            log.log(
                level, "%s %s: %s -> %s (%s)", self.name, who, old.name, new.name, input_name(inp)
            )
        return new

    def step(
        self, log: logging.Logger, who: object, state: S, inp: I, *, level: int = logging.DEBUG
    ) -> S:
        """:meth:`fire` and :meth:`move` for a single-target entry: the new state."""
        transition = self.fire(state, inp, who=who)
        return self.move(log, who, state, transition.target, transition, inp, level=level)

    def sources(self, inp: I) -> frozenset[S]:
        """The states that have an entry for ``inp``."""
        return frozenset(state for state, i in self.entries if i == inp)

    def states(self) -> frozenset[S]:
        """Every state named by the table (as source, target, initial or final)."""
        out = set(self.initial) | set(self.final)
        for (state, _), transition in self.entries.items():
            out.add(state)
            out |= transition.targets
        return frozenset(out)

    def reachable(self) -> frozenset[S]:
        """The states reachable from the initial ones."""
        seen = set(self.initial)
        todo = list(self.initial)
        while todo:
            state = todo.pop()
            for (source, _), transition in self.entries.items():
                if source is state:
                    for target in transition.targets - seen:
                        seen.add(target)
                        todo.append(target)
        return frozenset(seen)

    def mermaid(self) -> str:
        """The table as a Mermaid ``stateDiagram-v2``: one edge per (entry, target).

        Parallel edges between the same two states are merged into one labelled with every
        input, so the drawing stays legible for machines with many events per state.
        """
        lines = ["stateDiagram-v2"]
        lines += [f"    [*] --> {state.name}" for state in _ordered(self.initial)]
        labels: dict[tuple[S, S], list[str]] = {}
        for (state, inp), transition in self.entries.items():
            for target in _ordered(transition.targets):
                names = labels.setdefault((state, target), [])
                name = input_name(inp)
                if name not in names:
                    names.append(name)
        for (state, target), names in labels.items():
            lines.append(f"    {state.name} --> {target.name}: {', '.join(names)}")
        lines += [f"    {state.name} --> [*]" for state in _ordered(self.final)]
        return "\n".join(lines)


def _ordered(states: Iterable[S]) -> list[S]:
    """States in their Enum's declaration order (stable diagrams)."""
    items = list(states)
    if not items:
        return items
    order = {member: index for index, member in enumerate(type(items[0]))}
    return sorted(items, key=lambda s: order[s])
