"""Write a Request or Response to wire bytes (RFC 3261 section 7).

Order: start line, one ``Via`` line per entry, From, To, Call-ID, CSeq, the other headers in
their stored order, then ``Content-Length`` computed from the body, the empty line and the body.
Long header names only. Text is UTF-8; ``surrogateescape`` gives back, byte for byte, octets
that arrived in a header but were not valid UTF-8.

A header name or value holding CR or LF would let a value inject header lines of its own, so
it is refused with ``ValueError`` (parsed messages never hold one: folding is undone on input).
"""

from __future__ import annotations

from softswitch.sip.message import Request, Response
from softswitch.sip.uri import format_name_addr, format_uri

__all__ = ["serialize"]


def serialize(msg: Request | Response) -> bytes:
    """Wire form of ``msg``; ``Content-Length`` always written, from ``len(msg.body)``."""
    if isinstance(msg, Request):
        start = f"{msg.method} {format_uri(msg.uri)} {msg.version}\r\n"
    else:
        start = f"{msg.version} {msg.status} {msg.reason}\r\n"
    parts = [start]
    for via in msg.vias:
        parts.append(f"Via: {via}\r\n")
    parts.append(f"From: {format_name_addr(msg.from_)}\r\n")
    parts.append(f"To: {format_name_addr(msg.to)}\r\n")
    parts.append(f"Call-ID: {msg.call_id}\r\nCSeq: {msg.cseq.seq} {msg.cseq.method}\r\n")
    for name, value in msg.headers:
        if name.lower() == "content-length":
            continue
        parts.append(f"{name}: {value}\r\n")
    parts.append(f"Content-Length: {len(msg.body)}\r\n\r\n")
    head = "".join(parts)
    # Exactly one CR per line means no value smuggled a line break in.
    if head.count("\r") != head.count("\n") or head.count("\n") != len(parts) + 2:
        raise ValueError("CR or LF inside a header name or value")
    data = head.encode("utf-8", "surrogateescape")
    return data + msg.body if msg.body else data
