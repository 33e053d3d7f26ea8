"""The log's two stable formats: call lines and security events.

Every line is one event a person can read (``softswitch serve`` writes them to stderr, where
systemd's journal keeps them). Two kinds of line are also read by programs, so their shape is
fixed here and nowhere else:

* **Call lines** carry the customer call's UUID (the ``call_uuid`` of its CDRs), the leg, the
  account and the node: ``call=<uuid> leg=<leg> account=<id> node=<id>: <what happened>``
  (:func:`call_log`); ``grep call=<uuid>`` gives a call's whole story, and the CDRs join on it.
  In a cluster the story can span nodes (a survivor recovers a dead node's call), so each line
  names the node that wrote it (the ``node_id`` of the CDRs and of ``softswitch status``).
* **Security events** are ``SECURITY <kind> src=<address> key=value ...`` at WARNING on the
  ``softswitch.security`` logger (:func:`security_event`). ``kind`` is one of
  :data:`SECURITY_KINDS`; ``src`` is always there (``-`` when there is no address, e.g. a
  wrong security code by phone gives the caller's number in ``caller=``) so one fail2ban
  filter bans them all (``contrib/fail2ban/``). Values are quoted when they hold spaces, and
  control characters are escaped, so nothing a caller sends (an e-mail Subject, a
  User-Agent) can forge a line.

The last events are kept for the admin API (:func:`recent_security_events`) and counted by
kind for ``/metrics`` (:func:`security_counts`).

Lines are written by a thread of their own (:class:`LogWriter`), never by the event loop: a
write to a file whose disk is flushing, or to journald's pipe when it is full, can block for a
fifth of a second (measured: 210 ms inside one INFO line at 3,000 trigger calls/s), and every
call arriving meanwhile would wait for its answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, TextIO

__all__ = [
    "SECURITY_KINDS",
    "CallLog",
    "LogWriter",
    "SecurityEvent",
    "call_log",
    "format_fields",
    "recent_security_events",
    "security_counts",
    "security_event",
]

security_log = logging.getLogger("softswitch.security")

#: Every kind of security event, and what it means. A new kind is added here first.
SECURITY_KINDS: dict[str, str] = {
    "bad_security_code": "a wrong security code at the location-change menu (by phone)",
    "lockout": "the location-change menu locked for an account after wrong codes",
    "rate_limited": "a source or trigger number over its limit; the source is banned a while",
    "banned": "a request from a source still banned",
    "scanner": "a SIP request from a known scanner User-Agent (sipvicious, friendly-scanner)",
    "source_rejected": "SIP from an address outside [sip] allow_from",
    "web_rejected": "a web trigger refused (bad CSRF token, malformed form, bad destination)",
    "mail_rejected": "an e-mail trigger refused (relay attempt, bad Subject, sender, size)",
    "admin_unauthorized": "an admin API request without the right bearer token",
}

#: How many events the admin API can show.
RECENT = 200


@dataclass(frozen=True, slots=True)
class SecurityEvent:
    """One security event, as logged."""

    at: float  # UTC seconds
    kind: str
    src: str
    fields: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "src": self.src, **self.fields}


_recent: deque[SecurityEvent] = deque(maxlen=RECENT)
_counts: Counter[str] = Counter()


def _value(value: object) -> str:
    text = str(value)
    # Nothing from outside may end the line or fake a field: escape controls, quote spaces.
    if not text.isprintable():
        text = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
        )
    if not text or any(c in text for c in ' "='):
        return '"' + text.replace('"', '\\"') + '"'
    return text


def format_fields(fields: dict[str, object]) -> str:
    """``key=value`` pairs in the given order, values quoted when needed (``a="b c"``)."""
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


def security_event(kind: str, src: str | None = None, **fields: object) -> SecurityEvent:
    """Log ``SECURITY <kind> src=<src> k=v ...`` (WARNING) and keep it for the admin API."""
    if kind not in SECURITY_KINDS:
        raise ValueError(f"unknown security event kind {kind!r} (add it to SECURITY_KINDS)")
    source = src or "-"
    clean = {key: _value(value) for key, value in fields.items() if value is not None}
    event = SecurityEvent(time.time(), kind, source, clean)
    _recent.append(event)
    _counts[kind] += 1
    tail = " ".join(f"{key}={value}" for key, value in clean.items())
    security_log.warning("SECURITY %s src=%s%s", kind, _value(source), f" {tail}" if tail else "")
    return event


def recent_security_events(limit: int = 50) -> list[SecurityEvent]:
    """The last ``limit`` security events, newest first."""
    return list(reversed(_recent))[:limit]


def security_counts() -> dict[str, int]:
    """Security events since start, by kind (every kind present, zeros included)."""
    return {kind: _counts[kind] for kind in SECURITY_KINDS}


class CallLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose every line starts ``call=<uuid> leg=<leg> account=<id> node=<id>:``
    (``node=`` only when the node is known)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        extra = self.extra or {}
        fields = {
            "call": extra.get("call", "-"),
            "leg": extra.get("leg") or "-",
            "account": extra.get("account", "-"),
        }
        if extra.get("node"):
            fields["node"] = extra["node"]
        prefix = format_fields(fields)
        return f"{prefix}: {msg}", kwargs


def call_log(
    logger: logging.Logger,
    call_uuid: str,
    account: int | str | None,
    leg: str | None = None,
    *,
    node: str = "",
) -> CallLog:
    """The call-line logger of one customer call (and one of its legs, when given) on one
    node (its ``node_id``; empty: not named)."""
    return CallLog(
        logger,
        {
            "call": call_uuid,
            "leg": leg,
            "account": "-" if account is None else account,
            "node": node,
        },
    )


class LogWriter(logging.Handler):
    """Formats each record where it is logged and writes the lines from its own thread.

    The loop only formats and appends to a queue (about 2 microseconds beyond the formatting);
    the thread writes what has queued every ``interval`` seconds, in order, in one write. When
    the destination takes lines more slowly than the node makes them, at most ``capacity``
    lines wait; past that, lines are dropped and counted (``dropped``), and the next write
    says how many, so a stalled disk or journal costs log lines, never calls.

    ``flush()`` (which ``logging.shutdown`` calls at exit) writes everything queued before it
    returns; a process killed outright loses at most the last ``interval`` of lines.
    """

    def __init__(self, stream: TextIO, *, capacity: int = 100_000, interval: float = 0.02) -> None:
        super().__init__()
        self.stream = stream
        self.capacity = capacity
        self.interval = interval
        #: Lines dropped since start because ``capacity`` lines were waiting.
        self.dropped = 0
        self._unreported = 0
        self._lines: deque[str] = deque()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="softswitch-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if len(self._lines) >= self.capacity:
            self.dropped += 1
            self._unreported += 1
            return
        self._lines.append(line)

    def flush(self) -> None:
        self._write()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._write()
        super().close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def _write(self) -> None:
        # One writer at a time (this thread, or flush() from another), so lines keep their
        # order: each pops what is queued and writes it before the next may pop.
        with self._write_lock:
            lines = self._lines
            out: list[str] = []
            while lines:
                out.append(lines.popleft())
            unreported, self._unreported = self._unreported, 0
            if unreported:
                out.append(self.format(_dropped_record(unreported)))
            if not out:
                return
            try:
                self.stream.write("\n".join(out) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed or gone: nowhere left to say so


def _dropped_record(count: int) -> logging.LogRecord:
    return logging.LogRecord(
        "softswitch.logs",
        logging.WARNING,
        __file__,
        0,
        "%d log lines dropped: their destination (file, pipe or journal) took lines more "
        "slowly than the node wrote them",
        (count,),
        None,
    )
