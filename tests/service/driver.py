"""A fake runtime for CustomerCall: a fake clock, the armed timers, and every action seen."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, TypedDict, TypeVar

from softswitch.service.callflow import (
    Action,
    CallbackAnswered,
    CallFlowConfig,
    CallState,
    CancelTimer,
    CustomerCall,
    DigitReceived,
    Event,
    PromptFinished,
    StartTimer,
    TimerFired,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

T = TypeVar("T")

LOCATION = "+815012345678"


def of(actions: list[Action], kind: type[T]) -> list[T]:
    return [a for a in actions if isinstance(a, kind)]


class CallArgs(TypedDict, total=False):
    """The keyword arguments of :class:`CustomerCall` (``location`` defaults to LOCATION)."""

    location: str
    caller_id: str | None
    extension: str
    has_name: bool
    preset_destination: str | None
    trigger_numbers: Iterable[str]
    operator: str
    config: CallFlowConfig | None
    name: str
    first_attempt: int


class Driver:
    """Drives one CustomerCall the way the runtime will, on a fake clock."""

    def __init__(self, **kwargs: Unpack[CallArgs]) -> None:
        kwargs.setdefault("location", LOCATION)
        self.call = CustomerCall(**kwargs)
        self.now = 0.0
        self.timers: dict[str, float] = {}
        self.actions: list[Action] = []

    @property
    def state(self) -> CallState:
        return self.call.state

    def in_state(self, state: CallState) -> bool:
        """The machine is in ``state`` (a call, so mypy does not narrow across events)."""
        return self.call.state is state

    def _apply(self, actions: list[Action]) -> list[Action]:
        for action in actions:
            if isinstance(action, StartTimer):
                assert action.at >= self.now
                self.timers[action.name] = action.at
            elif isinstance(action, CancelTimer):
                assert action.name in self.timers, action
                del self.timers[action.name]
        self.actions.extend(actions)
        assert self.timers == dict(self.call.armed_timers)
        return actions

    def start(self) -> list[Action]:
        return self._apply(self.call.start(self.now))

    def send(self, event: Event, after: float = 0.0) -> list[Action]:
        self.now += after
        return self._apply(self.call.handle(event, self.now))

    def fire(self, name: str) -> list[Action]:
        self.now = max(self.now, self.timers.pop(name))
        return self._apply(self.call.handle(TimerFired(name), self.now))

    def keys(self, keys: str, gap: float = 0.3) -> list[Action]:
        out: list[Action] = []
        for key in keys:
            out += self.send(DigitReceived(key), after=gap)
        return out

    def answered(self) -> list[Action]:
        """Start, answer the callback, let the dial prompt finish."""
        out = self.start()
        out += self.send(CallbackAnswered(), after=3.0)
        if self.state is CallState.ANNOUNCING and "extension" not in self.timers:
            out += self.send(PromptFinished(), after=4.0)
        return out
