"""Trigger handling (SPEC section 1): a ring on a trigger number means "call me back".

The switch never answers a trigger call. It rings (100, 180) until the customer hangs up;
the hang-up (CANCEL, a BYE in the early dialog, or the ring limit) is the signal. This module
decides, without knowing SIP: which numbers are triggers, and whether a finished trigger asks
for a callback or is absorbed because one is already under way for that number.

A number's callback is under way from the trigger that asked for it until the call controller
reports the customer's call over (:meth:`TriggerService.callback_done`): de-duplication is
against live calls, not a time window, so a customer still talking ten minutes after their
trigger is never rung a second time by a repeated trigger. (The controller also de-duplicates
by account, so an account's other trigger numbers are absorbed the same way, and the store's
one-open-callback-per-account index does it across nodes.)

States of one trigger call: RINGING -> ENDED (:data:`TABLE`).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from softswitch import fsm

log = logging.getLogger("softswitch.service.trigger")


class TriggerOutcome(enum.Enum):
    RING = "ring"
    UNKNOWN = "unknown"


class TriggerState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"  # into the Location menu (SPEC section 4): no callback
    ENDED = "ended"


class TriggerError(fsm.TransitionError):
    """A trigger call event its state has no entry for."""


class _In(enum.Enum):
    HUNG_UP = "caller hung up (CANCEL, BYE) or rang too long"
    ANSWERED = "answered into the location menu"


#: A trigger call rings, then ends (the free signal), unless the customer asks for the
#: Location menu (``#`` in the early media, or staying on the line), which answers it.
TABLE: fsm.Table[TriggerState, _In, None] = fsm.Table(
    "trigger call",
    {
        (TriggerState.RINGING, _In.HUNG_UP): (None, TriggerState.ENDED),
        (TriggerState.RINGING, _In.ANSWERED): (None, TriggerState.ANSWERED),
    },
    initial=TriggerState.RINGING,
    final={TriggerState.ENDED, TriggerState.ANSWERED},
    error=TriggerError,
)


@dataclass(frozen=True, slots=True)
class TriggerEnded:
    """A trigger call that has ended: what its CDR is made of, and whether it asks for a callback.

    ``callback`` is False when a callback for that number was already under way (absorbed).
    Times are the node's ``now`` (the ring began when the INVITE was answered with 180).
    """

    trigger: str
    caller: str
    started_at: float
    ended_at: float
    how: str
    status: int
    callback: bool
    #: The node's key of the call (Call-ID and From tag), for what else it is tied to.
    key: str = ""


def normalize_number(text: str) -> str:
    """Digits of an E.164-ish number: ``+81 50-1234`` -> ``81501234``; '' if none."""
    if text.isascii() and text.isdigit():
        return text
    return "".join(ch for ch in text if ch.isdigit())


@dataclass(slots=True)
class _Ringing:
    number: str
    caller: str
    started_at: float
    state: TriggerState = TriggerState.RINGING


class TriggerService:
    """Recognises trigger calls and turns their end into callback requests."""

    def __init__(self, numbers: Iterable[str]) -> None:
        self._numbers = {normalize_number(n) for n in numbers if normalize_number(n)}
        self._ringing: dict[str, _Ringing] = {}
        self._under_way: set[str] = set()

    def set_numbers(self, numbers: Iterable[str]) -> None:
        """Replace the trigger numbers (accounts added or removed in the store)."""
        fresh = {normalize_number(n) for n in numbers if normalize_number(n)}
        if fresh != self._numbers:
            log.info("%d trigger numbers (was %d)", len(fresh), len(self._numbers))
        self._numbers = fresh

    @property
    def numbers(self) -> frozenset[str]:
        return frozenset(self._numbers)

    def trigger_started(
        self, call_key: str, dialled: str, caller: str, now: float = 0.0
    ) -> TriggerOutcome:
        """An INVITE arrived for ``dialled``: ring it, or tell the caller it does not exist."""
        number = normalize_number(dialled)
        if number not in self._numbers:
            log.info("INVITE for %s from %s: not a trigger number (404)", dialled, caller)
            return TriggerOutcome.UNKNOWN
        self._ringing[call_key] = _Ringing(number, caller, now)
        log.debug("trigger %s from %s ringing (call %s)", number, caller, call_key)
        return TriggerOutcome.RING

    def trigger_ended(
        self, call_key: str, how: str, now: float, status: int = 487
    ) -> TriggerEnded | None:
        """The trigger call ended before answer (``how``: CANCEL, BYE, ring timeout ...)."""
        ringing = self._ringing.pop(call_key, None)
        if ringing is None:
            return None
        ringing.state = TABLE.step(log, call_key, ringing.state, _In.HUNG_UP)
        number = ringing.number
        if number in self._under_way:
            log.info(
                "trigger %s from %s (%s): a callback is already under way, absorbed",
                number,
                ringing.caller,
                how,
            )
            callback = False
        else:
            self._under_way.add(number)
            log.info(
                "trigger %s from %s ended by %s: callback scheduled", number, ringing.caller, how
            )
            callback = True
        return TriggerEnded(
            number, ringing.caller, ringing.started_at, now, how, status, callback, call_key
        )

    def request(self, trigger: str) -> bool:
        """A trigger from elsewhere (web, e-mail) asks for a callback for ``trigger``.

        True if it may go ahead (now under way), False if one is already under way (absorbed)
        or the number is not a trigger number. The same de-duplication as a phone trigger.
        """
        number = normalize_number(trigger)
        if number not in self._numbers or number in self._under_way:
            return False
        self._under_way.add(number)
        return True

    def trigger_answered(self, call_key: str) -> None:
        """The trigger call was answered into the Location menu: it asks no callback."""
        ringing = self._ringing.pop(call_key, None)
        if ringing is not None:
            ringing.state = TABLE.step(log, call_key, ringing.state, _In.ANSWERED)

    def callback_done(self, trigger: str) -> None:
        """The call a trigger of ``trigger`` asked for is over; a new trigger may ask again."""
        self._under_way.discard(normalize_number(trigger))

    def under_way(self, trigger: str) -> bool:
        """Whether a callback for ``trigger`` is under way (a new trigger would be absorbed)."""
        return normalize_number(trigger) in self._under_way

    def ringing_count(self) -> int:
        return len(self._ringing)
