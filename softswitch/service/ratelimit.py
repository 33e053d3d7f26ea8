"""Rate limits on triggers and on the calls the switch places. Sans-IO.

:class:`TriggerLimits` keeps two sliding windows: per *source* (an IP address, or an e-mail
sender) and per *trigger number*. One request may count for several sources (a mail counts for
its client's address and for its sender): each must be under the limit. A source over its limit
is banned for a while (every request from it is refused, whatever it asks for); a trigger
number over its limit is refused without banning anyone, so one customer's many clicks do not
lock out the web page for everyone behind the same NAT. Unknown trigger numbers count exactly as known ones do: the limits must not tell
an attacker which numbers exist. Phone triggers count in the same per-number window
(:meth:`TriggerLimits.check_trigger`); their source, the carrier, is never banned.

:class:`OutboundLimit` caps the call attempts a node places in any minute: whatever goes wrong
upstream (a loop, a flood of triggers on many numbers), the switch cannot dial the world.

Memory is bounded: keys whose window has passed are dropped as the clock moves on, and the
tables never hold more than :data:`MAX_KEYS` keys (the oldest go first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from softswitch.config import LimitsConfig

__all__ = ["MAX_KEYS", "Decision", "OutboundLimit", "TriggerLimits"]

MAX_KEYS = 100_000


@dataclass(frozen=True, slots=True)
class Decision:
    """What the limits say about one request: ``allowed``, or why not (``banned``: the source
    is still banned; ``source``: the source just went over its limit and is now banned;
    ``trigger``: the trigger number is over its limit)."""

    allowed: bool
    reason: str | None = None
    retry_after: float = 0.0


ALLOWED = Decision(True)


class _Window:
    """Timestamps per key within the last ``window`` seconds."""

    def __init__(self) -> None:
        self.hits: OrderedDict[str, deque[float]] = OrderedDict()

    def count(self, key: str, now: float, window: float) -> int:
        hits = self.hits.get(key)
        if hits is None:
            return 0
        while hits and hits[0] <= now - window:
            hits.popleft()
        if not hits:
            del self.hits[key]
            return 0
        return len(hits)

    def oldest(self, key: str) -> float:
        return self.hits[key][0]

    def add(self, key: str, now: float) -> None:
        hits = self.hits.get(key)
        if hits is None:
            hits = self.hits[key] = deque()
            if len(self.hits) > MAX_KEYS:
                self.hits.popitem(last=False)
        else:
            self.hits.move_to_end(key)
        hits.append(now)

    def expire(self, now: float, window: float) -> None:
        """Drop keys with nothing in the window, oldest first, until one is still live."""
        while self.hits:
            key, hits = next(iter(self.hits.items()))
            if hits and hits[-1] > now - window:
                break
            del self.hits[key]


class TriggerLimits:
    """Per-source and per-trigger-number limits; see the module docstring."""

    def __init__(self, config: LimitsConfig) -> None:
        self.config = config
        self._sources = _Window()
        self._triggers = _Window()
        self._bans: OrderedDict[str, float] = OrderedDict()

    def reconfigure(self, config: LimitsConfig) -> None:
        """New limits (SIGHUP): the counts so far and the bans in force stay."""
        self.config = config

    def check(self, source: str | Sequence[str], trigger: str, now: float) -> Decision:
        """May ``source`` ask for a callback to ``trigger`` now? Counts the request if so.

        ``source`` may be several keys (a mail's client address and its sender): the request
        is allowed only if none is banned and each is under ``per_source``; then it counts for
        every one. The keys over the limit are banned; a refused request counts for none.
        """
        config = self.config
        self._expire(now)
        sources = (source,) if isinstance(source, str) else tuple(dict.fromkeys(source))
        banned_for = 0.0
        for key in sources:
            until = self._bans.get(key)
            if until is not None:
                if now < until:
                    banned_for = max(banned_for, until - now)
                else:
                    del self._bans[key]
        if banned_for:
            return Decision(False, "banned", banned_for)
        over = [
            k for k in sources if self._sources.count(k, now, config.window) >= config.per_source
        ]
        if over:
            for key in over:
                if config.ban:
                    self._bans[key] = now + config.ban
                    if len(self._bans) > MAX_KEYS:
                        self._bans.popitem(last=False)
            retry = config.ban or max(self._sources.oldest(k) for k in over) + config.window - now
            return Decision(False, "source", retry)
        for key in sources:
            self._sources.add(key, now)
        return self._count_trigger(trigger, now)

    def check_trigger(self, trigger: str, now: float) -> Decision:
        """May ``trigger`` be used by phone now? Counts it if so (the per-number window only:
        the phone's source is the carrier)."""
        self._expire(now)
        return self._count_trigger(trigger, now)

    def _count_trigger(self, trigger: str, now: float) -> Decision:
        window = self.config.window
        if self._triggers.count(trigger, now, window) >= self.config.per_trigger:
            return Decision(False, "trigger", self._triggers.oldest(trigger) + window - now)
        self._triggers.add(trigger, now)
        return ALLOWED

    def banned(self, source: str, now: float) -> bool:
        """Whether ``source`` is banned now (checked before any work is done for it)."""
        until = self._bans.get(source)
        return until is not None and now < until

    def _expire(self, now: float) -> None:
        window = self.config.window
        self._sources.expire(now, window)
        self._triggers.expire(now, window)
        while self._bans:
            source, until = next(iter(self._bans.items()))
            if until > now:
                break
            del self._bans[source]


class OutboundLimit:
    """At most ``per_minute`` call attempts in any 60 s (0: no cap); see the module docstring."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._placed: deque[float] = deque()
        #: Attempts refused since the start (for the log and the metrics).
        self.refused = 0

    def allow(self, now: float) -> bool:
        """May one more call be placed now? Counts it if so."""
        if self.per_minute <= 0:
            return True
        placed = self._placed
        while placed and placed[0] <= now - 60.0:
            placed.popleft()
        if len(placed) >= self.per_minute:
            self.refused += 1
            return False
        placed.append(now)
        return True
