"""Who may talk to the node, and how much. Sans-IO: every input takes ``now``.

Each datagram (or TCP message) is admitted or dropped before it is parsed, in this order:

1. ``[sip] allow_from`` (with the trunk's proxy): outside it, dropped unanswered, a
   ``source_rejected`` event;
2. exempt sources (the trunk's proxy, ``[sip] exempt_from``) pass, except that a scanning
   tool's request is dropped wherever it comes from;
3. a banned source is dropped (``banned`` events);
4. a scanning tool's User-Agent bans its source at once (``scanner``); a source sending more
   than ``rate_per_source`` requests in a second is banned (``rate_limited``) for
   ``source_ban`` seconds.

A scanner learns nothing: no answer at all, not even to OPTIONS (a 200 would name the methods
and the software; SIPVicious' svmap maps networks from exactly those answers). A flood costs
one dictionary look-up per datagram once its source is banned. Security events go to the
``SECURITY`` log, at most one per source and kind every :data:`EVENT_INTERVAL` seconds, so a
flood does not flood the log while fail2ban still sees it. Every table here is bounded: the
rate counters are cleared every second and the ban table keeps the :data:`MAX_BANS` newest.

:class:`CapLog` is the rate-limited WARNING a sysadmin gets when a cap refuses work.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from softswitch.config import SipLimits
from softswitch.logs import security_event

__all__ = ["EVENT_INTERVAL", "RETRY_AFTER", "SCANNER", "CapLog", "SourcePolicy"]

log = logging.getLogger("softswitch.sources")

#: SIP requests from the usual scanning tools (SIPVicious's "friendly-scanner" and kin),
#: found in the raw datagram: one regular expression search per datagram.
SCANNER = re.compile(
    rb"(?im)^user-agent:[ \t]*[^\r\n]*"
    rb"(friendly-scanner|sipvicious|sipcli|sundayddr|sipsak|pplsip|vaxsipuseragent|sip-scan|iwar)"
)
#: The same tools, in a User-Agent value already parsed (TCP messages).
SCANNER_AGENT = re.compile(SCANNER.pattern.split(rb"]*", 1)[1].decode(), re.IGNORECASE)
#: One security event per source and kind this often at most.
EVENT_INTERVAL = 2.0
#: Seconds a client over a cap is told to wait (the Retry-After of the 503).
RETRY_AFTER = 30
#: Sources banned at once, at most (the oldest bans are forgotten first).
MAX_BANS = 100_000
#: How many (kind, source) pairs the event rate limit remembers.
_MAX_EVENT_KEYS = 10_000
_MAX_CACHED_HOSTS = 4096


@dataclass(frozen=True, slots=True)
class SourceStats:
    """What the policy dropped, by reason, since start."""

    acl: int
    banned: int
    scanner: int
    rate_limited: int
    bans: int


class SourcePolicy:
    """The ACL, the per-source limiter, its ban table and the scanner check; see the module."""

    def __init__(
        self, limits: SipLimits, allow_from: Iterable[str], trunk_hosts: Iterable[str] = ()
    ) -> None:
        self._allow = tuple(ipaddress.ip_network(n, strict=False) for n in allow_from)
        self._trunk = tuple(trunk_hosts)
        self._counts: dict[str, int] = {}
        self._window_end = 0.0
        self._bans: OrderedDict[str, float] = OrderedDict()
        self._events: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.dropped = {"acl": 0, "banned": 0, "scanner": 0, "rate_limited": 0, "invite": 0}
        self.reconfigure(limits)

    def reconfigure(self, limits: SipLimits) -> None:
        self.limits = limits
        self._exempt = tuple(
            ipaddress.ip_network(n, strict=False) for n in (*limits.exempt_from, *self._trunk)
        )
        self._inviters = (
            tuple(
                ipaddress.ip_network(n, strict=False) for n in (*limits.invite_from, *self._trunk)
            )
            if limits.invite_from
            else ()
        )
        # host -> (allowed, exempt, may send INVITEs)
        self._hosts: dict[str, tuple[bool, bool, bool]] = {}

    # --- what the node asks ---------------------------------------------------------------------

    def admit_datagram(self, host: str, data: bytes, now: float) -> bool:
        """Whether to read ``data`` from ``host`` at all (False: drop it unanswered)."""
        allowed, exempt, _ = self._host(host)
        if exempt:
            if SCANNER.search(data) is None:
                return True
            return self._scanner(host, _method(data), _agent(data), now, ban=False)
        if not allowed:
            self.dropped["acl"] += 1
            found = SCANNER.search(data)
            if found is not None:
                self._event("scanner", host, now, method=_method(data), user_agent=_agent(data))
            else:
                self._event("source_rejected", host, now, method=_method(data))
            return False
        if self._is_banned(host, _method(data), now):
            return False
        if SCANNER.search(data) is not None:
            return self._scanner(host, _method(data), _agent(data), now, ban=True)
        return self._count(host, now)

    def admit_message(self, host: str, method: str, user_agent: str | None, now: float) -> bool:
        """:meth:`admit_datagram` for a message the TCP framer has already parsed."""
        allowed, exempt, _ = self._host(host)
        scanner = user_agent is not None and SCANNER_AGENT.search(user_agent) is not None
        if exempt:
            if not scanner:
                return True
            return self._scanner(host, method, user_agent or "", now, ban=False)
        if not allowed:
            self.dropped["acl"] += 1
            if scanner:
                self._event("scanner", host, now, method=method, user_agent=user_agent)
            else:
                self._event("source_rejected", host, now, method=method)
            return False
        if self._is_banned(host, method, now):
            return False
        if scanner:
            return self._scanner(host, method, user_agent or "", now, ban=True)
        return self._count(host, now)

    def allowed(self, host: str) -> bool:
        """Inside ``allow_from`` (or the trunk's proxy)."""
        return self._host(host)[0]

    def exempt(self, host: str) -> bool:
        """Never limited: the trunk's proxy and ``exempt_from``."""
        return self._host(host)[1]

    def may_invite(self, host: str) -> bool:
        """May send INVITEs (``invite_from``, when set, and the trunk's proxy)."""
        return self._host(host)[2]

    def banned(self, host: str, now: float) -> bool:
        until = self._bans.get(host)
        return until is not None and now < until

    def connection_allowed(self, host: str, now: float) -> bool:
        """A TCP connection from ``host`` may be accepted (allowed, and not banned)."""
        allowed, exempt, _ = self._host(host)
        if exempt:
            return True
        if not allowed:
            self.dropped["acl"] += 1
            self._event("source_rejected", host, now, method="TCP")
            return False
        return not self._is_banned(host, "TCP", now)

    def invite_refused(self, host: str, now: float) -> None:
        """An INVITE from outside ``invite_from`` (answered 403)."""
        self.dropped["invite"] += 1
        self._event("source_rejected", host, now, method="INVITE", reason="invite_from")

    def ban(self, host: str, now: float, kind: str, **fields: object) -> None:
        """Ban ``host`` for ``source_ban`` seconds (exempt sources never are)."""
        if self._host(host)[1] or self.limits.source_ban <= 0:
            return
        self._bans.pop(host, None)
        self._bans[host] = now + self.limits.source_ban
        while len(self._bans) > MAX_BANS:
            self._bans.popitem(last=False)
        self._event(kind, host, now, retry_after=f"{self.limits.source_ban:.0f}", **fields)

    def stats(self, now: float) -> SourceStats:
        return SourceStats(
            acl=self.dropped["acl"],
            banned=self.dropped["banned"],
            scanner=self.dropped["scanner"],
            rate_limited=self.dropped["rate_limited"],
            bans=sum(1 for until in self._bans.values() if until > now),
        )

    # --- internals -----------------------------------------------------------------------------

    def _host(self, host: str) -> tuple[bool, bool, bool]:
        known = self._hosts.get(host)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            known = (False, False, False)
        else:
            allowed = any(ip in net for net in self._allow)
            exempt = allowed and any(ip in net for net in self._exempt)
            inviter = allowed and (not self._inviters or any(ip in n for n in self._inviters))
            known = (allowed, exempt, inviter)
        if len(self._hosts) >= _MAX_CACHED_HOSTS:
            self._hosts.clear()
        self._hosts[host] = known
        return known

    def _is_banned(self, host: str, method: str, now: float) -> bool:
        until = self._bans.get(host)
        if until is None:
            return False
        if now >= until:
            del self._bans[host]
            return False
        self.dropped["banned"] += 1
        self._event("banned", host, now, method=method)
        return True

    def _scanner(self, host: str, method: str, agent: str, now: float, *, ban: bool) -> bool:
        self.dropped["scanner"] += 1
        self._event("scanner", host, now, method=method, user_agent=agent[:120])
        if ban:
            self.ban(host, now, "banned", reason="scanner")
        return False

    def _count(self, host: str, now: float) -> bool:
        rate = self.limits.rate_per_source
        if rate <= 0:
            return True
        if now >= self._window_end:
            # One shared one-second window: the table holds the sources of the last second.
            self._counts.clear()
            self._window_end = now + 1.0
            self._expire(now)
        count = self._counts.get(host, 0) + 1
        self._counts[host] = count
        if count <= rate:
            return True
        self.dropped["rate_limited"] += 1
        self._counts.pop(host, None)
        self.ban(host, now, "rate_limited", limit=f"{rate}/s")
        return False

    def _expire(self, now: float) -> None:
        bans = self._bans
        while bans:
            host, until = next(iter(bans.items()))
            if until > now:
                break
            del bans[host]

    def _event(self, kind: str, host: str, now: float, **fields: object) -> None:
        key = (kind, host)
        last = self._events.get(key)
        if last is not None and now - last < EVENT_INTERVAL:
            return
        self._events[key] = now
        self._events.move_to_end(key)
        while len(self._events) > _MAX_EVENT_KEYS:
            self._events.popitem(last=False)
        security_event(kind, host, channel="sip", **fields)


class CapLog:
    """A WARNING when a cap refuses work, at most one per cap every ``interval`` seconds,
    saying how many were refused since the last line and which setting to change."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._refused: dict[str, int] = {}

    def refused(
        self, cap: str, held: int, limit: int, what: str, now: float, *, closed: bool = False
    ) -> None:
        """``what`` was refused by ``cap`` (503 Retry-After, or ``closed``: a connection)."""
        self._refused[cap] = self._refused.get(cap, 0) + 1
        last = self._last.get(cap)
        if last is not None and now - last < self.interval:
            return
        count = self._refused.pop(cap)
        self._last[cap] = now
        answer = "closed" if closed else f"answered 503 Retry-After {RETRY_AFTER}"
        log.warning(
            "over [sip] %s (%d held, limit %d): %s %s (%d refused since the last such line); "
            "raise %s if this load is legitimate",
            cap,
            held,
            limit,
            what,
            answer,
            count,
            cap,
        )


def _method(data: bytes) -> str:
    return data.lstrip(b"\r\n").split(b" ", 1)[0][:16].decode("ascii", "replace")


def _agent(data: bytes) -> str:
    found = SCANNER.search(data)
    if found is None:
        return ""
    return found.group(0).split(b":", 1)[1].strip()[:120].decode("ascii", "replace")
