"""Trigger handling (SPEC section 1): a ring on a trigger number means "call me back".

The switch never answers a trigger call. It rings (100, 180) until the customer hangs up;
the hang-up (CANCEL, or a failure before answer) is the signal. This module decides, without
knowing SIP: which numbers are triggers, whether a finished trigger schedules a callback, and
that a second trigger while one is pending is absorbed rather than duplicated.

States of one trigger call: ``RINGING`` -> ``ENDED``. A trigger number's pending callback lives
until the callback layer reports it done (or, until that layer exists, ``absorb_window``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("softswitch.service.trigger")


class TriggerOutcome(enum.Enum):
    RING = "ring"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class CallbackRequested:
    """A callback to the account behind ``trigger`` should be placed."""

    trigger: str
    caller: str
    requested_at: float


def normalize_number(text: str) -> str:
    """Digits of an E.164-ish number: ``+81 50-1234`` -> ``81501234``; '' if none."""
    if text.isascii() and text.isdigit():
        return text
    return "".join(ch for ch in text if ch.isdigit())


class TriggerService:
    """Recognises trigger calls and turns their end into callback requests."""

    def __init__(self, numbers: Iterable[str], *, absorb_window: float = 120.0) -> None:
        self._numbers = {normalize_number(n) for n in numbers if normalize_number(n)}
        self._ringing: dict[str, tuple[str, str]] = {}
        self._pending: dict[str, float] = {}
        self.absorb_window = absorb_window

    def set_numbers(self, numbers: Iterable[str]) -> None:
        """Replace the trigger numbers (accounts added or removed in the store)."""
        fresh = {normalize_number(n) for n in numbers if normalize_number(n)}
        if fresh != self._numbers:
            log.info("%d trigger numbers (was %d)", len(fresh), len(self._numbers))
        self._numbers = fresh

    @property
    def numbers(self) -> frozenset[str]:
        return frozenset(self._numbers)

    def trigger_started(self, call_key: str, dialled: str, caller: str) -> TriggerOutcome:
        """An INVITE arrived for ``dialled``: ring it, or tell the caller it does not exist."""
        number = normalize_number(dialled)
        if number not in self._numbers:
            log.info("INVITE for %s from %s: not a trigger number (404)", dialled, caller)
            return TriggerOutcome.UNKNOWN
        self._ringing[call_key] = (number, caller)
        log.debug("trigger %s from %s ringing (call %s)", number, caller, call_key)
        return TriggerOutcome.RING

    def trigger_ended(self, call_key: str, how: str, now: float) -> CallbackRequested | None:
        """The trigger call ended before answer (``how``: cancel, bye, timeout ...)."""
        entry = self._ringing.pop(call_key, None)
        if entry is None:
            return None
        number, caller = entry
        since = self._pending.get(number)
        if since is not None and now - since < self.absorb_window:
            log.info(
                "trigger %s from %s (%s): a callback is already pending, absorbed",
                number,
                caller,
                how,
            )
            return None
        self._pending[number] = now
        log.info("trigger %s from %s ended by %s: callback scheduled", number, caller, how)
        return CallbackRequested(number, caller, now)

    def callback_done(self, trigger: str) -> None:
        """The callback for ``trigger`` finished; a new trigger may schedule another."""
        self._pending.pop(normalize_number(trigger), None)

    def expire(self, now: float) -> None:
        """Forget pending callbacks older than the absorb window (bounded memory)."""
        stale = [n for n, t in self._pending.items() if now - t >= self.absorb_window]
        for number in stale:
            del self._pending[number]

    def ringing_count(self) -> int:
        return len(self._ringing)
