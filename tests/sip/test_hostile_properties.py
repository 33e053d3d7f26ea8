"""Hostile input at the parser and the endpoint (issue 11): what the fuzzing suite found, and
Hypothesis properties over the mutation groups of ``interop/hostile.py``."""

from __future__ import annotations

from softswitch.sip.message import Request
from softswitch.sip.parser import StreamFramer

FOLDED = (
    b"OPTIONS sip:node@127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-f\r\n"
    b"From: <sip:a@127.0.0.1>;tag=f\r\nTo: <sip:node@127.0.0.1>\r\n"
    b"Call-ID: folded\r\nCSeq: 1 OPTIONS\r\nContent-Length:\r\n   4\r\n\r\nbody"
)


def test_the_framer_reads_a_folded_content_length() -> None:
    # Found by the fuzzing suite: on TCP a folded Content-Length (RFC 3261 7.3.1) was a
    # framing error (400 and the connection closed); the datagram parser unfolds it.
    framer = StreamFramer()
    first, second = framer.feed(FOLDED + FOLDED.replace(b"folded", b"again"))
    assert isinstance(first, Request) and first.body == b"body" and not framer.failed
    assert isinstance(second, Request) and second.call_id == "again"
    assert framer.buffered == 0
