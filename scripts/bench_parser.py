"""Benchmark the SIP parser and serializer on the messages of a typical call.

Prints, for an INVITE, 180, CANCEL, 487 and ACK, the microseconds per parse, per serialize and
per parse+serialize, and messages/s for parse+serialize. Each iteration gets a fresh Call-ID,
tags and branch (as real traffic does), so caches only help where real traffic repeats too:
Request-URIs and Contacts. Target: under ~25 us to parse a typical INVITE.

    .venv/bin/python scripts/bench_parser.py [--seconds 0.5]
"""

from __future__ import annotations

import argparse
import time
from email.parser import BytesHeaderParser

from softswitch.sip.message import BadMessage
from softswitch.sip.parser import parse_message
from softswitch.sip.serializer import serialize

SDP = (
    b"v=0\r\no=- 3712 3712 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
)

HEAD = (
    "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n}a;rport\r\n"
    'From: "Callback" <sip:+15551234567@192.0.2.10>;tag=f{n}\r\n'
    "To: <sip:+819012345678@carrier.example.net>{totag}\r\n"
    "Call-ID: {n}c84b4c76e66710@192.0.2.10\r\n"
)

TEMPLATES = {
    "INVITE": (
        "INVITE sip:+819012345678@carrier.example.net SIP/2.0\r\n" + HEAD + "CSeq: 1 INVITE\r\n"
        "Max-Forwards: 70\r\n"
        "Contact: <sip:switch@192.0.2.10:5060;transport=udp>\r\n"
        "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE\r\n"
        "Supported: timer, replaces\r\n"
        "User-Agent: softswitch\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n",
        SDP,
    ),
    "180": (
        "SIP/2.0 180 Ringing\r\n"
        + HEAD.replace("rport", "rport=5060;received=192.0.2.10")
        + "CSeq: 1 INVITE\r\n"
        "Contact: <sip:callee@198.51.100.7:5060>\r\n"
        "Record-Route: <sip:198.51.100.1;lr>\r\n"
        "Content-Length: 0\r\n\r\n",
        b"",
    ),
    "CANCEL": (
        "CANCEL sip:+819012345678@carrier.example.net SIP/2.0\r\n" + HEAD + "CSeq: 1 CANCEL\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n",
        b"",
    ),
    "487": (
        "SIP/2.0 487 Request Terminated\r\n" + HEAD + "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        b"",
    ),
    "ACK": (
        "ACK sip:+819012345678@carrier.example.net SIP/2.0\r\n" + HEAD + "CSeq: 1 ACK\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n",
        b"",
    ),
}


def make(name: str, n: int) -> bytes:
    head, body = TEMPLATES[name]
    totag = "" if name in ("INVITE", "CANCEL") else f";tag=t{n}"
    return head.format(n=n, totag=totag).encode() + body


def bench(name: str, seconds: float) -> tuple[float, float, int]:
    batch = [make(name, n) for n in range(2000)]
    parsed = [parse_message(d) for d in batch]
    assert not any(isinstance(m, BadMessage) for m in parsed), parsed[0]
    count = 0
    t_parse = 0.0
    t_ser = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for d in batch:
            parse_message(d)
        t1 = time.perf_counter()
        for m in parsed:
            serialize(m)  # type: ignore[arg-type]
        t2 = time.perf_counter()
        t_parse += t1 - t0
        t_ser += t2 - t1
        count += len(batch)
    return t_parse / count * 1e6, t_ser / count * 1e6, count


def bench_reference(seconds: float) -> float:
    """The standard library's RFC 5322 header parser on the same INVITE, for scale."""
    batch = [make("INVITE", n) for n in range(2000)]
    parser = BytesHeaderParser()
    count = 0
    spent = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for d in batch:
            parser.parsebytes(d.split(b"\r\n", 1)[1])
        spent += time.perf_counter() - t0
        count += len(batch)
    return spent / count * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5, help="time per message kind")
    args = ap.parse_args()
    print(f"{'message':8} {'bytes':>6} {'parse us':>9} {'ser. us':>8} {'both us':>8} {'msg/s':>9}")
    for name in TEMPLATES:
        p_us, s_us, _ = bench(name, args.seconds)
        size = len(make(name, 0))
        both = p_us + s_us
        print(f"{name:8} {size:6d} {p_us:9.1f} {s_us:8.1f} {both:8.1f} {1e6 / both:9.0f}")
    ref = bench_reference(args.seconds)
    print(f"reference: email.parser.BytesHeaderParser, same INVITE headers: {ref:.1f} us/parse")


if __name__ == "__main__":
    main()
