"""Write a Request or Response to wire bytes (RFC 3261 section 7).

Order: start line, one ``Via`` line per entry, From, To, Call-ID, CSeq, the other headers in
their stored order, then ``Content-Length`` computed from the body, the empty line and the body.
Long header names only. Text is UTF-8; ``surrogateescape`` gives back, byte for byte, octets
that arrived in a header but were not valid UTF-8.

A header name or value holding CR or LF would let a value inject header lines of its own, so
it is refused with ``ValueError`` (parsed messages never hold one: folding is undone on input).
"""

from __future__ import annotations

from softswitch.sip.headers import CANONICAL
from softswitch.sip.message import Request, Response
from softswitch.sip.uri import format_name_addr, format_uri

__all__ = ["serialize"]

_OTHER_KNOWN = frozenset(CANONICAL.values()) - {"Content-Length"}


def serialize(msg: Request | Response) -> bytes:
    """Wire form of ``msg``; ``Content-Length`` always written, from ``len(msg.body)``."""
    if isinstance(msg, Request):
        start = f"{msg.method} {format_uri(msg.uri)} {msg.version}\r\n"
    else:
        start = f"{msg.version} {msg.status} {msg.reason}\r\n"
    parts = [start]
    for via in msg.vias:
        raw = via.raw
        parts.append(f"Via: {via if raw is None else raw}\r\n")
    from_, to, cseq = msg.from_, msg.to, msg.cseq
    parts.append(f"From: {format_name_addr(from_) if from_.raw is None else from_.raw}\r\n")
    parts.append(f"To: {format_name_addr(to) if to.raw is None else to.raw}\r\n")
    parts.append(f"Call-ID: {msg.call_id}\r\nCSeq: {cseq.seq} {cseq.method}\r\n")
    for name, value in msg.headers:
        # Known names other than Content-Length need no lower-casing to be told apart.
        if name not in _OTHER_KNOWN and name.lower() == "content-length":
            continue
        parts.append(f"{name}: {value}\r\n")
    parts.append(f"Content-Length: {len(msg.body)}\r\n\r\n")
    head = "".join(parts)
    # Exactly one CR per line means no value smuggled a line break in.
    lines = head.count("\n")
    if lines != len(parts) + 2 or head.count("\r") != lines:
        raise ValueError("CR or LF inside a header name or value")
    data = head.encode("utf-8", "surrogateescape")
    return data + msg.body if msg.body else data
