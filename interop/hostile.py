"""Hostile SIP: mutation groups over every header and SDP field the switch reads, the answer
the RFC asks for each, and a client that sends them to a running node and checks it.

A :class:`Case` is one datagram (or TCP message) made from a valid base request (OPTIONS, a
trigger INVITE with an SDP offer, an INVITE to an unknown number, a BYE and a CANCEL that match
nothing) by one mutation of one field, with the statuses a correct node may answer: the RFC's
error (400, 403, 404, 405, 413, 415, 416, 420, 481, 483, 501, 505), the base's normal answer
when the mutation is legal or concerns a field the switch may ignore (RFC 4475 section
3.1.2.12), or ``None``: a silent drop, where no answer can be addressed (no Via) or where
the RFC wants none (ACK). Groups (:data:`GROUPS`): method, request-URI, version, Via, From/To,
Call-ID, CSeq, Max-Forwards, Expires, Content-Type, Content-Length, Accept, CRLF placement,
other headers (Require, Contact, counts and sizes), SDP (v o s c t m a lines, rtpmap,
payload types) and size.

:class:`Prober` sends a case, then a valid OPTIONS from another socket, and waits for the
OPTIONS' 200: the node is alive, and everything it answers to the case at once has been sent
(a node handles datagrams in order). A trigger INVITE's 183 comes later (the RTP socket is
opened first), so ringing is waited for a little longer; a ringing INVITE is cancelled, and
every final answer to an INVITE is ACKed, so nothing is left ringing or retransmitting.
:func:`random_cases` makes seeded combinations for long runs (any RFC answer or a drop).

Used by ``tests/aio/test_hostile_sip.py`` (CI-sized, an in-process node) and
``scripts/fuzz_sip.py`` (a ``softswitch serve`` subprocess, as long as you like).
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

TRIGGER = "815012345678"
UNKNOWN = "4420799900000"
#: The statuses any case may get in a random run: RFC answers, the normal ones, a 503 from a
#: cap, or nothing. A 500 (or any other) means the node did something wrong.
ANY_ANSWER = frozenset(
    {None, 180, 183, 200, 400, 403, 404, 405, 413, 415, 416, 420, 481, 483, 501, 503, 505}
)
#: The normal answer of each base request.
NORMAL: dict[str, frozenset[int | None]] = {
    "options": frozenset({200}),
    "invite": frozenset({180, 183}),
    "unknown": frozenset({404}),
    "bye": frozenset({481}),
    "cancel": frozenset({481}),
}
BASES = tuple(NORMAL)
MAIN = ("options", "invite")
N = "normal"  # in an expectation: the base's normal answer

SDP = (
    "v=0\r\n"
    "o=carrier 1 1 IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\n"
    "a=sendrecv\r\n"
)


@dataclass(frozen=True, slots=True)
class Peer:
    """Where the client is (its address goes into Via and Contact) and the node is."""

    host: str
    port: int
    node_host: str
    node_port: int
    transport: str = "UDP"


@dataclass(frozen=True, slots=True)
class Template:
    """A request as parts, so a mutation can change one; ``{len}`` is the body's length."""

    base: str
    method: str
    uri: str
    version: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    eol: bytes = b"\r\n"

    def render(self) -> bytes:
        eol = self.eol
        head = eol.join(
            [f"{self.method} {self.uri} {self.version}".encode("utf-8", "surrogateescape")]
            + [
                f"{k}: {v}".replace("{len}", str(len(self.body))).encode("utf-8", "surrogateescape")
                for k, v in self.headers
            ]
        )
        return head + eol + eol + self.body

    def set(self, name: str, value: str) -> Template:
        """Every ``name`` header set to ``value`` (added at the end when absent)."""
        if not any(k == name for k, _ in self.headers):
            return self.add(name, value)
        return replace(self, headers=tuple((k, value if k == name else v) for k, v in self.headers))

    def drop(self, name: str) -> Template:
        return replace(self, headers=tuple((k, v) for k, v in self.headers if k != name))

    def add(self, name: str, value: str, *, before: str = "Content-Length") -> Template:
        headers = list(self.headers)
        at = next((i for i, (k, _) in enumerate(headers) if k == before), len(headers))
        headers.insert(at, (name, value))
        return replace(self, headers=tuple(headers))

    def dup(self, name: str, value: str | None = None) -> Template:
        current = self.get(name)
        return self.add(name, current if value is None else value, before=name)

    def get(self, name: str) -> str:
        return next(v for k, v in self.headers if k == name)

    def rename(self, old: str, new: str) -> Template:
        return replace(self, headers=tuple((new if k == old else k, v) for k, v in self.headers))

    def with_method(self, method: str) -> Template:
        cseq = self.get("CSeq").split()[0]
        return replace(self, method=method).set("CSeq", f"{cseq} {method}")


def base(kind: str, peer: Peer, token: str) -> Template:
    """A valid request of ``kind`` (:data:`BASES`); ``token`` is unique to the case and in its
    branch, tags and Call-ID, so answers are told apart."""
    node = f"{peer.node_host}:{peer.node_port}"
    user = {"unknown": UNKNOWN}.get(kind, TRIGGER)
    method = {"options": "OPTIONS", "bye": "BYE", "cancel": "CANCEL"}.get(kind, "INVITE")
    to = f"<sip:{user}@{node}>" + (";tag=nowhere" if kind == "bye" else "")
    caller = "81" + str(abs(hash(token)) % 10**9).zfill(9)
    headers = [
        ("Via", f"SIP/2.0/{peer.transport} {peer.host}:{peer.port};branch=z9hG4bK-{token};rport"),
        ("Max-Forwards", "70"),
        ("From", f'"Hostile Peer" <sip:{caller}@{peer.host}>;tag=f-{token}'),
        ("To", to),
        ("Call-ID", f"{token}@{peer.host}"),
        ("CSeq", f"1 {method}"),
        ("Contact", f"<sip:{caller}@{peer.host}:{peer.port}>"),
        ("User-Agent", "hostile-sip/1"),
        ("Accept", "application/sdp"),
        ("Expires", "180"),
    ]
    body = b""
    if kind == "invite":
        headers.append(("Content-Type", "application/sdp"))
        body = SDP.encode()
    headers.append(("Content-Length", "{len}"))
    return Template(kind, method, f"sip:{user}@{node}", "SIP/2.0", tuple(headers), body)


Expect = tuple[int | str | None, ...]


@dataclass(frozen=True, slots=True)
class Mutation:
    """One change to a base request and what a correct node answers to it.

    ``expect`` is for every base, ``per_base`` overrides it for some; ``tcp`` replaces both on
    a stream (Content-Length and line-ending mutations frame differently there).
    """

    group: str
    name: str
    apply: Callable[[Template], Template | bytes]
    expect: Expect = (N,)
    bases: tuple[str, ...] = MAIN
    per_base: dict[str, Expect] = field(default_factory=dict)
    tcp: Expect | None = None
    udp_only: bool = False
    tcp_only: bool = False


@dataclass(frozen=True, slots=True)
class Case:
    """One hostile message and the statuses that are right for it (``None``: no answer)."""

    group: str
    name: str
    base: str
    data: bytes
    expect: frozenset[int | None]
    token: str

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}/{self.base}"


def _expect(tokens: Expect, kind: str) -> frozenset[int | None]:
    out: set[int | None] = set()
    for t in tokens:
        if t == N:
            out |= NORMAL[kind]
        else:
            assert not isinstance(t, str)
            out.add(t)
    return frozenset(out)


# --- the mutation groups ------------------------------------------------------------------------


def _sdp(edit: Callable[[str], str]) -> Callable[[Template], Template]:
    def apply(t: Template) -> Template:
        return replace(t, body=edit(t.body.decode()).encode("utf-8", "surrogateescape"))

    return apply


def _sdp_line(prefix: str, new: str | None) -> Callable[[Template], Template]:
    """Replace (or with None, drop) every SDP line starting with ``prefix``."""

    def edit(text: str) -> str:
        lines = text.split("\r\n")
        out = [
            (new if new is not None else None) if line.startswith(prefix) else line
            for line in lines
        ]
        return "\r\n".join(x for x in out if x is not None)

    return _sdp(edit)


def _raw(edit: Callable[[bytes], bytes]) -> Callable[[Template], bytes]:
    return lambda t: edit(t.render())


def _uri(uri: str) -> Callable[[Template], Template]:
    return lambda t: replace(t, uri=uri.replace("{node}", t.uri.split("@", 1)[-1]))


def _hdr(name: str, value: str) -> Callable[[Template], Template]:
    return lambda t: t.set(name, value)


def _from_to(name: str) -> list[Mutation]:
    g = name.lower()
    tag = ";tag=f-x" if name == "From" else ""
    return [
        Mutation(g, "quoted-escapes", lambda t: t.set(name, _addr(t, name, r'"A \"Q\" \\ B" '))),
        Mutation(g, "unterminated-quote", lambda t: t.set(name, _addr(t, name, '"abc ')), (400,)),
        Mutation(g, "unicode-display", lambda t: t.set(name, _addr(t, name, '"アリス" '))),
        Mutation(g, "long-display", lambda t: t.set(name, _addr(t, name, f'"{"x" * 3000}" '))),
        Mutation(g, "token-display", lambda t: t.set(name, _addr(t, name, "Alice Smith "))),
        Mutation(g, "no-display", lambda t: t.set(name, _addr(t, name, ""))),
        Mutation(g, "addr-spec", lambda t: t.set(name, t.get(name).split("<")[1].replace(">", ""))),
        Mutation(g, "empty-uri", lambda t: t.set(name, f"<sip:>{tag}"), (400, None)),
        Mutation(g, "no-host", lambda t: t.set(name, f"<sip:user@>{tag}"), (400, None)),
        Mutation(g, "other-scheme", lambda t: t.set(name, f"<mailto:a@example.com>{tag}")),
        Mutation(g, "unbalanced-angle", lambda t: t.set(name, f"<sip:a@b{tag}"), (400, None)),
        Mutation(g, "empty-value", lambda t: t.set(name, ""), (400, None)),
        Mutation(g, "missing", lambda t: t.drop(name), (400, None)),
        Mutation(g, "twice", lambda t: t.dup(name), (400,)),
        Mutation(g, "compact", lambda t: t.rename(name, name[0].lower())),
        Mutation(g, "non-utf8", lambda t: t.set(name, _addr(t, name, '"\udcff\udcfe" ')), (N, 400)),
        Mutation(g, "control-char", lambda t: t.set(name, _addr(t, name, '"a\x01b" ')), (N, 400)),
        Mutation(g, "many-params", lambda t: t.set(name, t.get(name) + ";p=1" * 200)),
        Mutation(g, "empty-tag", lambda t: t.set(name, "<sip:a@b>;tag="), (400, N)),
        Mutation(g, "two-tags", lambda t: t.set(name, "<sip:a@b>;tag=a;tag=b"), (N, 400, 481)),
        Mutation(g, "nul", lambda t: t.set(name, _addr(t, name, '"a\x00b" ')), (400, N)),
    ]


def _addr(t: Template, name: str, display: str) -> str:
    value = t.get(name)
    return display + value[value.index("<") :]


def _grow_vias(count: int) -> Callable[[Template], Template]:
    def apply(t: Template) -> Template:
        for n in range(count):
            t = t.add("Via", f"SIP/2.0/UDP 192.0.2.{n % 250}:5060;branch=z9hG4bK-v{n}")
        return t

    return apply


def _cl(value: str) -> Callable[[Template], Template]:
    return lambda t: t.set("Content-Length", value)


def _mutations() -> list[Mutation]:
    m: list[Mutation] = []
    # method: the request line and the CSeq together, unless the mismatch is the point.
    m += [
        Mutation("method", "lower-case", lambda t: t.with_method(t.method.lower()), (501,)),
        Mutation("method", "unknown", lambda t: t.with_method("FOOBAR"), (501,)),
        Mutation("method", "token-chars", lambda t: t.with_method("F.O-O!%*_+`'~"), (501,)),
        Mutation("method", "long", lambda t: t.with_method("X" * 2000), (501,)),
        Mutation("method", "subscribe", lambda t: t.with_method("SUBSCRIBE"), (405,)),
        Mutation("method", "register", lambda t: t.with_method("REGISTER"), (405,)),
        Mutation("method", "message", lambda t: t.with_method("MESSAGE"), (405,)),
        Mutation("method", "bad-char", lambda t: t.with_method("INV@ITE"), (400,)),
        Mutation("method", "non-ascii", lambda t: t.with_method("INVITÉ"), (400,)),
        Mutation("method", "empty", lambda t: replace(t, method=""), (400, None)),
        Mutation("method", "cseq-mismatch", lambda t: t.set("CSeq", "1 BYE"), (400,)),
        Mutation("method", "ack", lambda t: t.with_method("ACK"), (None,)),
    ]
    m += [
        Mutation("request-uri", "unknown-scheme", _uri("foo:bar"), (416,)),
        Mutation("request-uri", "http", _uri("http://{node}/"), (416,)),
        Mutation(
            "request-uri", "tel", _uri(f"tel:+{TRIGGER}"), (N,), per_base={"invite": (180, 183)}
        ),
        Mutation("request-uri", "sips", _uri(f"sips:{TRIGGER}@{{node}}"), (N, 416)),
        Mutation("request-uri", "upper-scheme", _uri(f"SIP:{TRIGGER}@{{node}}")),
        Mutation("request-uri", "empty-sip", _uri("sip:"), (400,)),
        Mutation("request-uri", "no-host", _uri("sip:user@"), (400,)),
        Mutation("request-uri", "port-too-big", _uri(f"sip:{TRIGGER}@127.0.0.1:99999"), (400,)),
        Mutation("request-uri", "port-letters", _uri(f"sip:{TRIGGER}@127.0.0.1:ab"), (400,)),
        Mutation("request-uri", "headers", _uri(f"sip:{TRIGGER}@{{node}}?Subject=x"), (400,)),
        Mutation("request-uri", "space", _uri(f"sip:{TRIGGER} @{{node}}"), (400,)),
        Mutation("request-uri", "ipv6-unclosed", _uri(f"sip:{TRIGGER}@[::1"), (400,)),
        Mutation("request-uri", "ipv6", _uri(f"sip:{TRIGGER}@[::1]:5060")),
        Mutation("request-uri", "escaped-user", _uri("sip:%38%31%35012345678@{node}")),
        Mutation("request-uri", "bad-escape", _uri("sip:81%G1@{node}"), (400,)),
        Mutation(
            "request-uri",
            "long-user",
            _uri("sip:" + "9" * 3000 + "@{node}"),
            per_base={"invite": (404,)},
        ),
        Mutation(
            "request-uri", "params", _uri(f"sip:{TRIGGER}@{{node}};transport=tcp;lr;maddr=10.0.0.1")
        ),
        Mutation("request-uri", "semicolon-user", _uri("sip:81;x=y@{node}"), (N, 404)),
        Mutation("request-uri", "nul", _uri(f"sip:{TRIGGER}\x00@{{node}}"), (400,)),
        Mutation("request-uri", "unicode", _uri("sip:アリス@{node}"), (N, 400, 404)),
    ]
    m += [
        Mutation("version", "3.0", lambda t: replace(t, version="SIP/3.0"), (505,)),
        Mutation("version", "2.1", lambda t: replace(t, version="SIP/2.1"), (505,)),
        Mutation("version", "20.0", lambda t: replace(t, version="SIP/20.0"), (505,)),
        Mutation("version", "lower-case", lambda t: replace(t, version="sip/2.0")),
        Mutation("version", "no-minor", lambda t: replace(t, version="SIP/2"), (400,)),
        Mutation("version", "http", lambda t: replace(t, version="HTTP/1.1"), (400,)),
        Mutation("version", "missing", lambda t: replace(t, version=""), (400, None)),
        Mutation("version", "extra-token", lambda t: replace(t, version="SIP/2.0 x"), (400,)),
        Mutation("version", "tab", lambda t: replace(t, version="SIP/2.0\t"), (400, N)),
    ]
    via = "Via"
    m += [
        Mutation("via", "missing", lambda t: t.drop(via), (None,), bases=BASES),
        Mutation("via", "bad-host", lambda t: t.set(via, "SIP/2.0/UDP ba d;rport"), (400, None)),
        Mutation(
            "via", "port-too-big", lambda t: t.set(via, "SIP/2.0/UDP h:99999;rport"), (400, None)
        ),
        Mutation(
            "via", "port-letters", lambda t: t.set(via, "SIP/2.0/UDP h:ab;rport"), (400, None)
        ),
        # Found by a long random run: with no rport the 400 went to port 99999, asyncio's
        # sendto raised OverflowError and closed the node's UDP socket for good.
        Mutation(
            "via",
            "port-too-big-no-rport",
            lambda t: t.set(via, t.get(via).replace(";rport", "").replace(":", ":9", 1)),
            (400,),
            udp_only=True,
        ),
        Mutation(
            "via",
            "rport-too-big",
            lambda t: t.set(via, t.get(via) + "=99999"),
            (N, 400),
            udp_only=True,
        ),
        Mutation(
            "via", "no-branch", lambda t: t.set(via, t.get(via).split(";branch")[0] + ";rport")
        ),
        Mutation("via", "no-cookie", lambda t: t.set(via, t.get(via).replace("z9hG4bK-", "old-"))),
        Mutation("via", "empty-branch", lambda t: t.set(via, t.get(via) + ";branch="), (400, N)),
        Mutation("via", "long-branch", lambda t: t.set(via, t.get(via) + "x" * 1000)),
        Mutation(
            "via",
            "unknown-transport",
            lambda t: t.set(via, t.get(via).replace("/UDP", "/XYZ").replace("/TCP", "/XYZ")),
        ),
        # Via's protocol version is any token (RFC 3261 section 25.1): accepting it is lenient.
        Mutation(
            "via",
            "version-3",
            lambda t: t.set(via, t.get(via).replace("2.0", "3.0")),
            (N, 400, None),
        ),
        Mutation("via", "71-vias", _grow_vias(70), (400,)),
        Mutation("via", "60-vias", _grow_vias(59)),
        Mutation("via", "rport-letters", lambda t: t.set(via, t.get(via) + "=ab"), (N, 400, None)),
        Mutation("via", "received", lambda t: t.set(via, t.get(via) + ";received=192.0.2.1")),
        Mutation("via", "maddr", lambda t: t.set(via, t.get(via) + ";maddr=224.0.0.1;ttl=1")),
        Mutation(
            "via",
            "ipv6-sent-by",
            lambda t: t.set(via, t.get(via).replace("127.0.0.1", "[::1]")),
            (N, None),
        ),
        Mutation("via", "compact", lambda t: t.rename(via, "v")),
        Mutation(
            "via",
            "comma-list",
            lambda t: t.set(via, t.get(via) + ", SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK-2"),
        ),
        Mutation(
            "via", "folded", lambda t: t.set(via, t.get(via).replace(";branch", "\r\n ;branch"))
        ),
        Mutation("via", "nul", lambda t: t.set(via, t.get(via) + "\x00"), (400, None)),
    ]
    m += _from_to("From") + _from_to("To")
    m += [
        Mutation(
            "to",
            "tag-out-of-dialog",
            lambda t: t.set("To", t.get("To") + ";tag=nowhere"),
            (N,),
            per_base={"invite": (481,)},
        ),
    ]
    cid = "Call-ID"
    m += [
        Mutation("call-id", "missing", lambda t: t.drop(cid), (400, None)),
        Mutation("call-id", "empty", lambda t: t.set(cid, ""), (400, None)),
        Mutation("call-id", "space", lambda t: t.set(cid, "a b"), (400,)),
        Mutation("call-id", "long", lambda t: t.set(cid, "c" * 5000)),
        Mutation("call-id", "non-ascii", lambda t: t.set(cid, "ü-call"), (400, None)),
        Mutation("call-id", "two-ats", lambda t: t.set(cid, "a@b@c"), (400,)),
        Mutation("call-id", "twice", lambda t: t.dup(cid, "other"), (400,)),
        Mutation("call-id", "compact", lambda t: t.rename(cid, "i")),
        Mutation("call-id", "control", lambda t: t.set(cid, "a\x01b"), (400, None)),
    ]
    cseq = "CSeq"
    m += [
        Mutation("cseq", "letters", lambda t: t.set(cseq, f"abc {t.method}"), (400,)),
        Mutation("cseq", "no-method", lambda t: t.set(cseq, "1"), (400,)),
        Mutation("cseq", "negative", lambda t: t.set(cseq, f"-1 {t.method}"), (400,)),
        Mutation("cseq", "2**32", lambda t: t.set(cseq, f"4294967296 {t.method}"), (400,)),
        Mutation("cseq", "2**31-1", lambda t: t.set(cseq, f"2147483647 {t.method}")),
        Mutation("cseq", "zero", lambda t: t.set(cseq, f"0 {t.method}")),
        Mutation("cseq", "extra-token", lambda t: t.set(cseq, f"1 {t.method} x"), (400,)),
        Mutation("cseq", "spaces", lambda t: t.set(cseq, f"  1   {t.method}  ")),
        Mutation("cseq", "missing", lambda t: t.drop(cseq), (400, None)),
        Mutation("cseq", "twice", lambda t: t.dup(cseq, f"2 {t.method}"), (400,)),
    ]
    mf = "Max-Forwards"
    hop: dict[str, Expect] = {"options": (N,), "cancel": (481, 483)}
    m += [
        Mutation("max-forwards", "zero", _hdr(mf, "0"), (483,), BASES, hop),
        Mutation("max-forwards", "zeros", _hdr(mf, "00"), (483,), BASES, hop),
        Mutation("max-forwards", "one", _hdr(mf, "1"), bases=BASES),
        Mutation("max-forwards", "255", _hdr(mf, "255")),
        Mutation("max-forwards", "256", _hdr(mf, "256"), (400,)),
        Mutation("max-forwards", "negative", _hdr(mf, "-1"), (400,)),
        Mutation("max-forwards", "letters", _hdr(mf, "abc"), (400,)),
        Mutation("max-forwards", "missing", lambda t: t.drop(mf), bases=BASES),
        Mutation("max-forwards", "twice", lambda t: t.dup(mf, "69"), (N, 400)),
    ]
    # The switch reads no Expires in what it serves; RFC 4475 3.1.2.12: a malformed header
    # the element does not need may be ignored.
    m += [
        Mutation("expires", name, _hdr("Expires", value))
        for name, value in (
            ("letters", "abc"),
            ("negative", "-1"),
            ("huge", "9" * 40),
            ("empty", ""),
            ("date", "Thu, 01 Dec 1994 16:00:00 GMT"),
        )
    ]
    ct = "Content-Type"
    inv = ("invite",)
    m += [
        Mutation("content-type", "text-plain", _hdr(ct, "text/plain"), (415,), inv),
        Mutation("content-type", "missing", lambda t: t.drop(ct), (415,), inv),
        Mutation("content-type", "upper-case", _hdr(ct, "application/SDP"), bases=inv),
        Mutation("content-type", "params", _hdr(ct, "application/sdp;charset=utf-8"), bases=inv),
        Mutation("content-type", "no-subtype", _hdr(ct, "application"), (400,), inv),
        Mutation("content-type", "empty", _hdr(ct, ""), (400, 415), inv),
        Mutation("content-type", "multipart", _hdr(ct, "multipart/mixed;boundary=x"), (415,), inv),
        Mutation("content-type", "twice", lambda t: t.dup(ct, "text/plain"), (N, 400, 415), inv),
        Mutation("content-type", "compact", lambda t: t.rename(ct, "c"), bases=inv),
        Mutation(
            "content-type",
            "on-options",
            lambda t: replace(t.set(ct, "text/plain"), body=b"hello"),
            bases=("options",),
        ),
    ]
    cl = "Content-Length"
    stream_waits: Expect = (None,)  # a stream waits for the rest of the body
    m += [
        Mutation("content-length", "too-big", _cl("5000"), (400,), tcp=stream_waits),
        Mutation(
            "content-length",
            "too-small",
            lambda t: t.set(cl, str(len(t.body) // 2)),
            tcp=(N, 400, None),
        ),
        Mutation("content-length", "negative", _cl("-5"), (400,)),
        Mutation("content-length", "letters", _cl("abc"), (400,)),
        Mutation("content-length", "huge", _cl("99999999999"), (400,), tcp=(400, 413)),
        Mutation("content-length", "2**31", _cl("2147483648"), (400,), tcp=(400, 413)),
        Mutation("content-length", "conflicting", lambda t: t.dup(cl, "1"), (400,)),
        Mutation("content-length", "identical-twice", lambda t: t.dup(cl)),
        Mutation("content-length", "missing", lambda t: t.drop(cl), (N,), tcp=(400,)),
        Mutation("content-length", "spaces", lambda t: t.set(cl, " {len} ")),
        Mutation("content-length", "leading-zeros", lambda t: t.set(cl, "000{len}")),
        Mutation("content-length", "compact", lambda t: t.rename(cl, "l")),
    ]
    m += [
        Mutation("accept", name, _hdr("Accept", value))
        for name, value in (
            ("html", "text/html"),
            ("empty", ""),
            ("garbage", "%%%;;;,,,"),
            ("wildcard", "*/*;q=0.1"),
        )
    ]
    m += [Mutation("accept", "many", lambda t: t.add("Accept", ", ".join(["a/b"] * 500)))]
    m += [
        Mutation("crlf", "leading-crlf", _raw(lambda d: b"\r\n\r\n\r\n" + d), bases=BASES),
        Mutation("crlf", "lf-only", lambda t: replace(t, eol=b"\n"), bases=BASES),
        Mutation("crlf", "cr-only", lambda t: replace(t, eol=b"\r"), (400, None), tcp=(400, None)),
        Mutation(
            "crlf",
            "no-blank-line",
            _raw(lambda d: d.replace(b"\r\n\r\n", b"\r\n", 1)),
            (400, N),
            per_base={"invite": (400,)},
            tcp=(None, 400),
        ),
        Mutation(
            "crlf",
            "blank-line-early",
            _raw(lambda d: d.replace(b"\r\n", b"\r\n\r\n", 2)),
            (400, None),
        ),
        Mutation("crlf", "folded-everywhere", _raw(lambda d: _fold(d))),
        Mutation("crlf", "trailing-space", _raw(lambda d: _trailing(d))),
        # RFC 4475 3.1.2.10 (trws): no whitespace after the SIP-Version of a Request-Line.
        Mutation(
            "crlf",
            "trailing-space-request-line",
            _raw(lambda d: d.replace(b"2.0\r\n", b"2.0 \r\n", 1)),
            (400,),
        ),
        Mutation(
            "crlf", "space-before-colon", _raw(lambda d: d.replace(b"Call-ID:", b"Call-ID :"))
        ),
        Mutation("crlf", "tab-after-colon", _raw(lambda d: d.replace(b"CSeq: ", b"CSeq:\t"))),
        Mutation("crlf", "cr-cr-lf", _raw(lambda d: d.replace(b"\r\n", b"\r\r\n", 2)), (400, None)),
        Mutation(
            "crlf",
            "bare-cr-in-via",
            _raw(lambda d: d.replace(b";rport\r\n", b";rport\r\r\n", 1)),
            (400, None),
        ),
        # Found by the random cases: the From echoed in the 400 kept the CR and the serializer
        # raised out of the endpoint instead of answering.
        Mutation(
            "crlf",
            "bare-cr-in-from",
            _raw(lambda d: d.replace(b'"Hostile Peer"', b'"Hostile\rPeer"', 1)),
            (400,),
            bases=BASES,
        ),
        Mutation("crlf", "crlf-after-body", _raw(lambda d: d + b"\r\n\r\n"), udp_only=True),
        Mutation(
            "crlf",
            "nul-in-header",
            _raw(lambda d: d.replace(b"hostile-sip", b"host\x00ile")),
            (N, 400),
        ),
    ]
    m += [
        # Over the cap the parser stops reading at once: nothing recovered to answer with.
        Mutation("headers", "200-headers", _many("X-Pad", 200), (400, None)),
        Mutation("headers", "100-headers", _many("X-Pad", 100)),
        Mutation("headers", "9000-char-line", lambda t: t.add("X-Long", "y" * 9000), (400,)),
        Mutation("headers", "7000-char-line", lambda t: t.add("X-Long", "y" * 7000)),
        Mutation("headers", "bad-name", lambda t: t.add("Bad Name", "x"), (400,)),
        Mutation("headers", "no-colon", _raw(lambda d: d.replace(b"Accept:", b"Accept")), (400,)),
        Mutation("headers", "empty-name", lambda t: t.add("", "x"), (400,)),
        Mutation("headers", "unicode-value", lambda t: t.add("Subject", "こんにちは")),
        Mutation(
            "headers",
            "require-unknown",
            _hdr("Require", "foo, bar"),
            (420,),
            BASES,
            {"cancel": (481,)},
        ),
        Mutation("headers", "require-timer", _hdr("Require", "timer"), bases=BASES),
        Mutation(
            "headers",
            "require-bad-token",
            _hdr("Require", "tim:er"),
            (400,),
            BASES,
            {"cancel": (481,)},
        ),
        Mutation("headers", "proxy-require", _hdr("Proxy-Require", "foo")),
        Mutation("headers", "session-expires-small", _hdr("Session-Expires", "10")),
        Mutation("headers", "session-expires-bad", _hdr("Session-Expires", "x;refresher=y")),
        Mutation("headers", "timestamp-garbage", _hdr("Timestamp", "abc def ghi")),
        Mutation("headers", "route-garbage", _hdr("Route", "<<<>>>")),
        Mutation("headers", "contact-empty-uri", _hdr("Contact", "<sip:>"), (400,)),
        Mutation("headers", "contact-star", _hdr("Contact", "*")),
        Mutation("headers", "contact-many", _hdr("Contact", ", ".join(["<sip:a@b>"] * 100))),
        Mutation(
            "headers", "scanner-agent", _hdr("User-Agent", "friendly-scanner"), (None,), bases=BASES
        ),
    ]
    m += _sdp_mutations()
    m += [
        Mutation("size", "60kB-body", lambda t: replace(t, body=b"x" * 60_000), (N,), ("options",)),
        Mutation(
            "size",
            "300kB-body",
            lambda t: replace(t, body=b"x" * 300_000),
            (413,),
            ("options",),
            tcp_only=True,
        ),
        Mutation(
            "size",
            "70kB-header",
            lambda t: t.add("X-Big", "z" * 70_000),
            (400, None),
            ("options",),
            tcp_only=True,
        ),
    ]
    return m


def _many(name: str, count: int) -> Callable[[Template], Template]:
    def apply(t: Template) -> Template:
        for n in range(count):
            t = t.add(name, str(n))
        return t

    return apply


def _fold(data: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    folded = [lines[0]] + [line.replace(b": ", b":\r\n   ", 1) for line in lines[1:]]
    return b"\r\n".join(folded) + sep + body


def _trailing(data: bytes) -> bytes:
    """Spaces at the end of every header line (LWS: allowed), not of the start line."""
    head, sep, body = data.partition(b"\r\n\r\n")
    first, _, rest = head.partition(b"\r\n")
    return first + b"\r\n" + rest.replace(b"\r\n", b"  \r\n") + b"  " + sep + body


def _sdp_mutations() -> list[Mutation]:
    ring: Expect = (180, 183)
    edits: list[tuple[str, Callable[[Template], Template]]] = [
        ("v=1", _sdp_line("v=", "v=1")),
        ("no-v", _sdp_line("v=", None)),
        ("no-o", _sdp_line("o=", None)),
        ("o-short", _sdp_line("o=", "o=carrier 1")),
        ("o-letters", _sdp_line("o=", "o=x y z IN IP4 h")),
        ("no-s", _sdp_line("s=", None)),
        ("no-c", _sdp_line("c=", None)),
        ("c-ip6", _sdp_line("c=", "c=IN IP6 ::1")),
        ("c-bad-ip4", _sdp_line("c=", "c=IN IP4 999.1.1.1")),
        ("c-other-net", _sdp_line("c=", "c=XX IP4 127.0.0.1")),
        ("c-hold", _sdp_line("c=", "c=IN IP4 0.0.0.0")),
        ("c-hostname", _sdp_line("c=", "c=IN IP4 media.example.com")),
        ("no-t", _sdp_line("t=", None)),
        ("t-letters", _sdp_line("t=", "t=a b")),
        ("no-m", _sdp_line("m=", None)),
        ("m-port-0", _sdp_line("m=", "m=audio 0 RTP/AVP 0")),
        ("m-port-70000", _sdp_line("m=", "m=audio 70000 RTP/AVP 0")),
        ("m-port-letters", _sdp_line("m=", "m=audio abc RTP/AVP 0")),
        ("m-port-count", _sdp_line("m=", "m=audio 40000/2 RTP/AVP 0")),
        ("m-video-only", _sdp_line("m=", "m=video 40000 RTP/AVP 31")),
        ("m-savp", _sdp_line("m=", "m=audio 40000 RTP/SAVP 0")),
        ("m-t38", _sdp_line("m=", "m=image 40000 udptl t38")),
        ("m-no-formats", _sdp_line("m=", "m=audio 40000 RTP/AVP")),
        ("m-short", _sdp_line("m=", "m=audio")),
        ("pt-128", _sdp_line("m=", "m=audio 40000 RTP/AVP 128")),
        ("pt-negative", _sdp_line("m=", "m=audio 40000 RTP/AVP -1")),
        ("pt-letters", _sdp_line("m=", "m=audio 40000 RTP/AVP x y")),
        ("pt-500", _sdp_line("m=", "m=audio 40000 RTP/AVP " + " ".join(["0"] * 500))),
        ("pt-dynamic-no-rtpmap", _sdp_line("m=", "m=audio 40000 RTP/AVP 96")),
        ("rtpmap-short", _sdp_line("a=rtpmap:0", "a=rtpmap:0")),
        ("rtpmap-letters", _sdp_line("a=rtpmap:0", "a=rtpmap:abc PCMU/8000")),
        ("rtpmap-rate-0", _sdp_line("a=rtpmap:101", "a=rtpmap:101 telephone-event/0")),
        ("rtpmap-rate-letters", _sdp_line("a=rtpmap:8", "a=rtpmap:8 PCMA/abc")),
        ("rtpmap-extra", _sdp_line("a=rtpmap:0", "a=rtpmap:0 PCMU/8000/1/2/3")),
        ("rtpmap-te-16k", _sdp_line("a=rtpmap:101", "a=rtpmap:101 telephone-event/16000")),
        ("rtpmap-unlisted-pt", _sdp(lambda s: s + "a=rtpmap:99 opus/48000/2\r\n")),
        ("rtpmap-remap-0", _sdp_line("a=rtpmap:0", "a=rtpmap:0 opus/48000/2")),
        ("fmtp-garbage", _sdp_line("a=fmtp", "a=fmtp:101 \x01\x02;;;")),
        ("sendonly", _sdp_line("a=sendrecv", "a=sendonly")),
        ("inactive", _sdp_line("a=sendrecv", "a=inactive")),
        ("empty-attribute", _sdp(lambda s: s + "a=\r\n")),
        ("ptime-0", _sdp(lambda s: s + "a=ptime:0\r\n")),
        ("bandwidth-negative", _sdp(lambda s: s.replace("t=0 0", "b=AS:-1\r\nt=0 0"))),
        ("100-m-lines", _sdp(lambda s: s + "m=audio 40002 RTP/AVP 0\r\n" * 100)),
        ("long-line", _sdp(lambda s: s + "a=x-long:" + "y" * 10_000 + "\r\n")),
        ("lf-only", _sdp(lambda s: s.replace("\r\n", "\n"))),
        ("no-final-crlf", _sdp(lambda s: s.rstrip("\r\n"))),
        ("twice", _sdp(lambda s: s + s)),
        ("non-utf8", _sdp(lambda s: s.replace("s=-", "s=\udcff\udcfe"))),
        ("binary", lambda t: replace(t, body=bytes(range(256)) * 4)),
        ("empty", lambda t: replace(t, body=b"")),
        ("not-sdp", lambda t: replace(t, body=b"hello world\r\n")),
        (
            "media-c-only",
            _sdp(lambda s: s.replace("c=IN IP4 127.0.0.1\r\n", "") + "c=IN IP4 127.0.0.1\r\n"),
        ),
    ]
    return [Mutation("sdp", name, apply, ring, ("invite",)) for name, apply in edits]


#: Every mutation, by group (the groups the issue names, in its order).
MUTATIONS: tuple[Mutation, ...] = tuple(_mutations())
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(m.group for m in MUTATIONS))


def cases(peer: Peer, *, prefix: str = "c", groups: Sequence[str] = ()) -> Iterator[Case]:
    """Every mutation on each of its bases, for ``peer.transport``."""
    stream = peer.transport != "UDP"
    n = 0
    for mutation in MUTATIONS:
        if groups and mutation.group not in groups:
            continue
        if (stream and mutation.udp_only) or (not stream and mutation.tcp_only):
            continue
        for kind in mutation.bases:
            n += 1
            token = f"{prefix}{n}x"
            changed = mutation.apply(base(kind, peer, token))
            data = changed if isinstance(changed, bytes) else changed.render()
            tokens = mutation.per_base.get(kind, mutation.expect)
            if stream and mutation.tcp is not None:
                tokens = mutation.tcp
            yield Case(mutation.group, mutation.name, kind, data, _expect(tokens, kind), token)


def random_cases(peer: Peer, seed: int, count: int, *, prefix: str = "r") -> Iterator[Case]:
    """``count`` seeded combinations: two or three mutations, then byte-level noise."""
    rng = random.Random(seed)
    stream = peer.transport != "UDP"
    usable = [
        m for m in MUTATIONS if not (stream and m.udp_only) and not (not stream and m.tcp_only)
    ]
    for n in range(count):
        token = f"{prefix}{seed}-{n}x"
        kind = rng.choice(BASES)
        template: Template | bytes = base(kind, peer, token)
        for mutation in rng.sample(usable, rng.randint(1, 3)):
            if isinstance(template, Template) and kind in mutation.bases:
                with contextlib.suppress(StopIteration, ValueError, IndexError):
                    template = mutation.apply(template)
        data = template if isinstance(template, bytes) else template.render()
        data = _noise(rng, data)
        yield Case("random", f"seed{seed}-{n}", kind, data, ANY_ANSWER, token)


def _noise(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.choice((0, 0, 1, 2, 5))):
        if not buf:
            break
        at = rng.randrange(len(buf))
        action = rng.randrange(5)
        if action == 0:
            buf[at] = rng.randrange(256)
        elif action == 1:
            del buf[at : at + rng.randint(1, 16)]
        elif action == 2:
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif action == 3:
            buf[at:at] = rng.choice((b"\r\n", b"\n", b"\r", b":", b";", b"<", b'"', b"%", b" "))
        else:
            end = buf.find(b"\r\n", at)
            if end > 0:
                buf[end:end] = buf[at:end]
    return bytes(buf)


# --- talking to the node ----------------------------------------------------------------------

_STATUS = re.compile(rb"^SIP/2\.0 (\d{3}) ")


@dataclass(slots=True)
class Outcome:
    """What the node did with one case."""

    case: Case
    transport: str
    statuses: list[int]
    alive: bool
    seconds: float

    @property
    def answer(self) -> int | None:
        """The status that counts: the first above 100 (a 100 alone counts as no answer)."""
        return next((s for s in self.statuses if s > 100), None)

    @property
    def ok(self) -> bool:
        return self.alive and self.answer in self.case.expect

    def describe(self) -> str:
        expect = sorted(self.case.expect, key=lambda s: -1 if s is None else s)
        return (
            f"{self.transport} {self.case.id}: got {self.statuses or 'nothing'}, expected one of "
            f"{expect}{'' if self.alive else ' -- NODE DID NOT ANSWER THE OPTIONS AFTERWARDS'}"
            f"\n    sent: {self.case.data[:300]!r}"
        )


class Prober:
    """Sends cases to a node and checks it still answers; see the module docstring.

    ``host`` is the client's address (a loopback address the node allows and exempts from its
    rate limit, or the cases are banned for flooding), ``node`` the node's.
    """

    def __init__(
        self,
        node: tuple[str, int],
        transport: str = "UDP",
        *,
        host: str = "127.0.0.1",
        ring_wait: float = 1.5,
        timeout: float = 3.0,
    ) -> None:
        self.node = node
        self.transport = transport.upper()
        self.host = host
        self.ring_wait = ring_wait
        self.timeout = timeout
        self.probes = 0
        self._awaiting_487 = False
        self._udp = self._udp_socket()
        self._probe_udp = self._udp_socket()
        self.peer = Peer(host, self._udp.getsockname()[1], node[0], node[1], self.transport)

    def close(self) -> None:
        self._udp.close()
        self._probe_udp.close()

    def __enter__(self) -> Prober:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _udp_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((self.host, 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        return sock

    def run(self, case: Case) -> Outcome:
        started = time.monotonic()
        self._awaiting_487 = False
        if self.transport == "UDP":
            statuses, alive = self._run_udp(case)
        else:
            statuses, alive = self._run_tcp(case)
        return Outcome(case, self.transport, statuses, alive, time.monotonic() - started)

    def _done(self, statuses: list[int], started: float) -> bool:
        """A final answer or ringing came (and the 487 of our CANCEL), or there is nothing to
        wait for: only after a 100 may a trigger's 183 still come (its RTP socket opens first)."""
        if any(s >= 180 for s in statuses):
            return not self._awaiting_487 or time.monotonic() >= started + self.ring_wait
        return 100 not in statuses or time.monotonic() >= started + self.ring_wait

    # --- UDP --------------------------------------------------------------------------------

    def _run_udp(self, case: Case) -> tuple[list[int], bool]:
        sock = self._udp
        with contextlib.suppress(OSError):  # over 65,507 bytes (random cases): nothing sent
            sock.sendto(case.data, self.node)
        alive = self._probe()
        statuses: list[int] = []
        started = time.monotonic()
        wait = 0.0
        while True:
            for data in _drain(sock, wait):
                status = self._answered(data, case, None)
                if status is not None:
                    statuses.append(status)
            if self._done(statuses, started):
                return statuses, alive
            wait = 0.05

    def _probe(self) -> bool:
        """A valid OPTIONS from the second socket: True when its 200 comes."""
        self.probes += 1
        sock = self._probe_udp
        token = f"probe{self.probes}x"
        peer = Peer(self.host, sock.getsockname()[1], *self.node, "UDP")
        sock.sendto(base("options", peer, token).render(), self.node)
        deadline = time.monotonic() + self.timeout
        while (left := deadline - time.monotonic()) > 0:
            for data in _drain(sock, left, first_only=True):
                if token.encode() in data and _status(data) == 200:
                    return True
        return False

    def _answered(self, data: bytes, case: Case, conn: socket.socket | None) -> int | None:
        """The status of ``data`` if it answers ``case``; ACK and CANCEL what needs it."""
        status = _status(data)
        if status is None:
            return None
        mine = case.token.encode() in data
        invite = _header(data, b"CSeq").endswith(b"INVITE")
        if invite and status >= 200:
            self._send(_ack(data), conn)
            if mine:
                self._awaiting_487 = False
        elif mine and invite and status in (180, 183) and not self._awaiting_487:
            self._send(_cancel(data, _request_uri(case.data)), conn)
            self._awaiting_487 = True
        elif mine and status >= 300 and _header(data, b"CSeq").endswith(b"CANCEL"):
            # Our CANCEL matched nothing the node could read the same way (a mutated Via or
            # tag): no 487 will come; the INVITE rings until the node's own timers end it.
            self._awaiting_487 = False
        return status if mine else None

    def _send(self, data: bytes, conn: socket.socket | None) -> None:
        with contextlib.suppress(OSError):
            if conn is not None:
                conn.sendall(data)
            else:
                self._udp.sendto(data, self.node)

    # --- TCP --------------------------------------------------------------------------------

    def _run_tcp(self, case: Case) -> tuple[list[int], bool]:
        statuses: list[int] = []
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as conn:
            conn.bind((self.host, 0))
            conn.settimeout(self.timeout)
            conn.connect(self.node)
            with contextlib.suppress(OSError):
                conn.sendall(case.data)
            alive = self._probe()
            started = time.monotonic()
            buf = b""
            conn.settimeout(0.05)  # the answers to the case, if any, are sent by now
            while True:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    if self._done(statuses, started):
                        break
                    continue
                except OSError:  # the node closed it (a framing error)
                    break
                if not chunk:
                    break
                buf += chunk
                while (end := buf.lstrip(b"\r\n").find(b"\r\n\r\n")) >= 0:
                    buf = buf.lstrip(b"\r\n")  # pongs to the double-CRLF pings we sent
                    length = _header(buf[: end + 4], b"Content-Length")
                    size = end + 4 + (int(length) if length.isdigit() else 0)
                    if len(buf) < size:
                        break
                    message, buf = buf[:size], buf[size:]
                    status = self._answered(message, case, conn)
                    if status is not None:
                        statuses.append(status)
                if any(s >= 180 for s in statuses) and self._done(statuses, started):
                    break
            return statuses, alive


def _drain(sock: socket.socket, wait: float, *, first_only: bool = False) -> list[bytes]:
    """The first datagram within ``wait`` seconds (none: only what is queued), then, unless
    ``first_only``, whatever else is already queued."""
    out = []
    try:
        if wait > 0:
            sock.settimeout(wait)
            out.append(sock.recv(65536))
            if first_only:
                return out
        sock.setblocking(False)
        while True:
            out.append(sock.recv(65536))
    except (BlockingIOError, TimeoutError):
        pass
    finally:
        sock.setblocking(True)
    return out


def _status(data: bytes) -> int | None:
    found = _STATUS.match(data)
    return int(found.group(1)) if found else None


def _header(data: bytes, name: bytes) -> bytes:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return b""


def _dialog_headers(response: bytes) -> list[bytes]:
    head = response.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]
    keep = (b"via", b"from", b"to", b"call-id")
    return [line for line in head if line.partition(b":")[0].strip().lower() in keep]


def _ack(response: bytes) -> bytes:
    """The ACK for a final response to an INVITE (RFC 3261 17.1.1.3: its To tag, the INVITE's
    branch and CSeq number); sent to the node whatever the answer."""
    seq = _header(response, b"CSeq").split(b" ")[0]
    lines = [b"ACK sip:ack@127.0.0.1 SIP/2.0", *_dialog_headers(response)]
    lines += [b"CSeq: " + seq + b" ACK", b"Max-Forwards: 70", b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _request_uri(request: bytes) -> bytes:
    parts = request.split(b"\r\n", 1)[0].split(b" ")
    return parts[1] if len(parts) == 3 else b"sip:cancel@127.0.0.1"


def _cancel(response: bytes, uri: bytes) -> bytes:
    """A CANCEL for the ringing INVITE that ``response`` answers: its Request-URI, branch and
    CSeq (RFC 3261 section 9.1; without a magic cookie in the branch the Request-URI is what
    matches it, section 17.2.3)."""
    seq = _header(response, b"CSeq").split(b" ")[0]
    lines = [b"CANCEL " + uri + b" SIP/2.0"]
    for line in _dialog_headers(response):
        if line.lower().startswith(b"to:"):
            line = re.sub(rb";\s*tag=[^;,\s]*", b"", line)
        lines.append(line)
    lines += [b"CSeq: " + seq + b" CANCEL", b"Max-Forwards: 70", b"Content-Length: 0"]
    return b"\r\n".join(lines) + b"\r\n\r\n"
