"""One de-duplicated digit stream per leg, merging in-band and RFC 4733 DTMF.

Theory of operation: a phone may signal one key press twice, as audio tones and as RFC 4733
telephone-events. Both detectors report a key press as an onset (``ended=False``) followed by
an end (``ended=True``). :class:`DigitStream` keeps the key presses of the last ``window``
seconds (by arrival time ``now``, because the two sources run on unrelated clocks). An onset
joins an earlier press of the same digit if that press is younger than ``window`` and has not
been seen on this source yet; otherwise it is a new press. The first source to report a press
wins: its onset is passed on at once, the other source's onset is swallowed. The first end
reported for a press is passed on once, labelled ``source="both"`` when both paths saw it; later
ends are swallowed. Two presses of the same key on one source are always two digits.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["DIGITS", "DigitEvent", "DigitStream"]

DIGITS = "0123456789*#ABCD"  # RFC 4733 section 3.2: event codes 0-15 in this order


@dataclass(frozen=True, slots=True)
class DigitEvent:
    """A DTMF key press: its onset (``ended=False``) or its end with the final duration.

    ``start_ms`` is on the reporting source's own clock (the leg's sample clock for in-band,
    the RTP timestamp for RFC 4733); ``duration_ms`` is 0 at onset. ``source`` is "inband",
    "rfc4733" or, from :class:`DigitStream`, "both".
    """

    digit: str
    start_ms: int
    duration_ms: int
    source: str
    ended: bool


@dataclass(slots=True)
class _Press:
    digit: str
    onset_now: float
    first: DigitEvent
    sources: set[str] = field(default_factory=set)
    end_reported: bool = False
    ended_sources: set[str] = field(default_factory=set)


class DigitStream:
    """Merge the in-band and RFC 4733 digit events of one leg into single key presses.

    ``suppress_inband(True)`` drops in-band events entirely (e.g. when the service trusts only
    RFC 4733 on a trunk known to leak tones); by default both paths are used and de-duplicated.
    """

    def __init__(self, window: float = 0.15) -> None:
        self.window = window
        self._presses: list[_Press] = []
        self._inband_suppressed = False

    def suppress_inband(self, on: bool) -> None:
        """Ignore (True) or use (False) in-band detections from now on."""
        self._inband_suppressed = on

    def push(self, event: DigitEvent, now: float) -> list[DigitEvent]:
        """Feed one event from either detector; returns the events to pass on (0 or 1)."""
        if event.source == "inband" and self._inband_suppressed:
            return []
        self._expire(now)
        if not event.ended:
            return self._onset(event, now)
        return self._end(event)

    def _onset(self, event: DigitEvent, now: float) -> list[DigitEvent]:
        for press in self._presses:
            if (
                press.digit == event.digit
                and event.source not in press.sources
                and now - press.onset_now <= self.window
            ):
                press.sources.add(event.source)
                return []
        self._presses.append(_Press(event.digit, now, event, {event.source}))
        return [event]

    def _end(self, event: DigitEvent) -> list[DigitEvent]:
        # The newest press of this digit that this source has not ended yet.
        for press in reversed(self._presses):
            if (
                press.digit == event.digit
                and event.source in press.sources
                and event.source not in press.ended_sources
            ):
                press.ended_sources.add(event.source)
                if press.end_reported:
                    return []
                press.end_reported = True
                source = "both" if len(press.sources) > 1 else event.source
                return [dataclasses.replace(event, source=source)]
        # An end without an onset we saw (e.g. the onset was suppressed): drop it.
        return []

    def _expire(self, now: float) -> None:
        # Keep unfinished presses (their end is still due) and anything inside the window.
        self._presses = [
            p
            for p in self._presses
            if now - p.onset_now <= self.window or (not p.end_reported and now - p.onset_now < 60)
        ]
