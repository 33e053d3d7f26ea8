"""Parser, serializer and stream framer: rules, caps, round trips, and fuzzing."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.message import URI, BadMessage, CSeq, NameAddr, Request, Response, Via
from softswitch.sip.parser import (
    MAX_HEADERS,
    MAX_LINE,
    MAX_VIAS,
    StreamFramer,
    parse_message,
)
from softswitch.sip.serializer import serialize

INVITE = (
    b"INVITE sip:+819012345678@carrier.example.net SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Callee" <sip:+819012345678@carrier.example.net>\r\n'
    b"From: <sip:+15551234567@192.0.2.10>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:switch@192.0.2.10:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 4\r\n"
    b"\r\n"
    b"v=0\n"
)


def ok(data: bytes, **kw: bool) -> Request | Response:
    msg = parse_message(data, **kw)
    assert not isinstance(msg, BadMessage), msg
    return msg


def bad(data: bytes, **kw: bool) -> BadMessage:
    msg = parse_message(data, **kw)
    assert isinstance(msg, BadMessage), msg
    return msg


def test_typical_invite() -> None:
    req = ok(INVITE)
    assert isinstance(req, Request)
    assert req.method == "INVITE" and req.uri.user == "+819012345678"
    assert req.vias == (
        Via("UDP", "192.0.2.10", 5060, (("branch", "z9hG4bK776asdhds"), ("rport", None))),
    )
    assert req.to.display_name == "Callee" and req.from_.tag == "1928301774"
    assert req.cseq == CSeq(314159, "INVITE")
    assert req.headers == (
        ("Max-Forwards", "70"),
        ("Contact", "<sip:switch@192.0.2.10:5060>"),
        ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
        ("Content-Type", "application/sdp"),
    )
    assert req.body == b"v=0\n"
    assert req.header_all("allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]


def test_serializer_order_and_content_length() -> None:
    req = ok(INVITE)
    assert isinstance(req, Request)
    out = serialize(req).split(b"\r\n")
    assert out[0] == b"INVITE sip:+819012345678@carrier.example.net SIP/2.0"
    assert [line.split(b":")[0] for line in out[1:12]] == [
        b"Via",
        b"From",
        b"To",
        b"Call-ID",
        b"CSeq",
        b"Max-Forwards",
        b"Contact",
        b"Allow",
        b"Content-Type",
        b"Content-Length",
        b"",
    ]
    assert out[10] == b"Content-Length: 4"
    assert bytes(req) == serialize(req)


def test_serializer_never_writes_a_stored_content_length() -> None:
    req = Request(
        "OPTIONS",
        URI(host="h"),
        (Via("UDP", "h", None, (("branch", "z9hG4bK1"),)),),
        NameAddr(URI(host="a"), params=(("tag", "1"),)),
        NameAddr(URI(host="b")),
        "c1",
        CSeq(1, "OPTIONS"),
        headers=(("Content-Length", "99"),),
        body=b"xyz",
    )
    data = serialize(req)
    assert data.count(b"Content-Length") == 1 and b"Content-Length: 3\r\n\r\nxyz" in data


@pytest.mark.parametrize(
    "headers", [(("X-Evil", "a\r\nVia: x"),), (("X-Evil", "a\nb"),), (("X\r\nY", "a"),)]
)
def test_serializer_refuses_header_injection(headers: tuple[tuple[str, str], ...]) -> None:
    req = ok(INVITE)
    assert isinstance(req, Request)
    bad_req = Request(
        req.method, req.uri, req.vias, req.from_, req.to, req.call_id, req.cseq, headers
    )
    with pytest.raises(ValueError):
        serialize(bad_req)


def test_response_round_trip_and_multiple_vias_one_per_line() -> None:
    resp = Response(
        180,
        "Ringing",
        (
            Via("UDP", "192.0.2.10", 5060, (("branch", "z9hG4bK1"), ("received", "1.2.3.4"))),
            Via("TCP", "2001:db8::1", None, (("branch", "z9hG4bK2"),)),
        ),
        NameAddr(URI(user="a", host="h"), params=(("tag", "1"),)),
        NameAddr(URI(user="b", host="h"), "Bob", (("tag", "2"),)),
        "cid@h",
        CSeq(1, "INVITE"),
        (("Contact", "<sip:b@10.0.0.1>"), ("Record-Route", "<sip:p1;lr>, <sip:p2;lr>")),
    )
    data = serialize(resp)
    assert data.count(b"\r\nVia: ") == 2 and b"Via: SIP/2.0/TCP [2001:db8::1];" in data
    assert parse_message(data) == resp


def test_compact_forms_and_case_insensitive_names() -> None:
    data = (
        b"OPTIONS sip:h SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@h>;tag=1\r\n"
        b"t: <sip:b@h>\r\ni: cid\r\nCSEQ: 1 OPTIONS\r\nk: timer\r\nl: 0\r\n\r\n"
    )
    req = ok(data)
    assert req.call_id == "cid" and req.header("Supported") == "timer"
    assert req.headers == (("Supported", "timer"),)


def test_folding_and_bare_lf() -> None:
    data = (
        b"OPTIONS sip:h SIP/2.0\nVia: SIP/2.0/UDP h\n ;branch=z9hG4bK1\nFrom: <sip:a@h>\n\t;tag=1\n"
        b"To: <sip:b@h>\nCall-ID: cid\nCSeq: 1\n  OPTIONS\nSubject: one\n  two\n\nbody"
    )
    req = ok(data)
    assert req.vias[0].branch == "z9hG4bK1" and req.from_.tag == "1"
    assert req.header("Subject") == "one two" and req.body == b"body"


def test_leading_crlf_is_ignored_and_trailing_octets_dropped() -> None:
    req = ok(b"\r\n\r\n" + INVITE + b"garbage")
    assert req.body == b"v=0\n"


def test_stream_requires_content_length() -> None:
    data = INVITE.replace(b"Content-Length: 4\r\n", b"")
    assert ok(data).body == b"v=0\n"
    result = bad(data, stream=True)
    assert result.status == 400 and "Content-Length" in result.reason
    assert result.request is not None


@pytest.mark.parametrize(
    ("old", "new", "status", "part"),
    [
        (b"SIP/2.0\r\nVia", b"SIP/3.0\r\nVia", 505, "Version"),
        (b"SIP/2.0\r\nVia", b"XIP/2.0\r\nVia", 400, "version"),
        (b"sip:+819012345678@carrier", b"mailto:+819012345678@carrier", 416, "Scheme"),
        (b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE", 400, "CSeq"),
        (b"CSeq: 314159 INVITE", b"CSeq: 99999999999 INVITE", 400, "CSeq"),
        (b"CSeq: 314159 INVITE", b"CSeq: one INVITE", 400, "CSeq"),
        (b"Max-Forwards: 70", b"Max-Forwards: seventy", 400, "Max-Forwards"),
        (b"Content-Length: 4", b"Content-Length: 4x", 400, "Content-Length"),
        (b"Content-Length: 4", b"Content-Length: 99999999999999999999", 400, "Content-Length"),
        (b"Contact: <sip:switch@192.0.2.10:5060>", b"Contact: <sip:sw itch@h>", 400, "Contact"),
        (b"Call-ID: a84b4c76e66710@pc33.example.com", b"Call-ID: a b", 400, "Call-ID"),
        (b"Allow: INVITE", b"Al low: INVITE", 400, "header name"),
        (b"Allow: INVITE", b"Allow INVITE", 400, "header line"),
    ],
)
def test_request_errors_map_to_status(old: bytes, new: bytes, status: int, part: str) -> None:
    data = INVITE.replace(old, new)
    assert data != INVITE
    result = bad(data)
    assert result.status == status, result
    assert part in result.reason
    assert result.request is not None


@pytest.mark.parametrize("missing", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_missing_mandatory_header(missing: bytes) -> None:
    lines = [line for line in INVITE.split(b"\r\n") if not line.startswith(missing + b":")]
    result = bad(b"\r\n".join(lines))
    assert result.status == 400 and missing.decode() in result.reason
    assert result.request is None


def test_extension_methods_parse() -> None:
    data = INVITE.replace(b"INVITE sip", b"FROBNICATE sip").replace(
        b"INVITE\r\n", b"FROBNICATE\r\n"
    )
    req = ok(data)
    assert isinstance(req, Request) and req.method == "FROBNICATE"


def test_bad_responses_are_dropped() -> None:
    good = b"SIP/2.0 200 OK\r\n" + INVITE.split(b"\r\n", 1)[1]
    assert isinstance(ok(good), Response)
    for first in (b"SIP/2.0 2000 OK", b"SIP/2.0 099 Low", b"SIP/3.0 200 OK", b"SIP/2.0 abc OK"):
        assert bad(first + b"\r\n" + INVITE.split(b"\r\n", 1)[1]).status is None
    no_cseq = good.replace(b"CSeq: 314159 INVITE\r\n", b"")
    assert bad(no_cseq).status is None


def test_caps() -> None:
    many = INVITE.replace(b"Allow:", b"X-A: 1\r\n" * (MAX_HEADERS + 1) + b"Allow:")
    assert bad(many).status == 400
    long_line = INVITE.replace(b"Allow: INVITE", b"Allow: " + b"A" * (MAX_LINE + 1))
    assert bad(long_line).status == 400
    vias = b"".join(b"Via: SIP/2.0/UDP h%d\r\n" % i for i in range(MAX_VIAS))
    assert bad(INVITE.replace(b"Max-Forwards", vias + b"Max-Forwards")).status == 400
    assert bad(INVITE + b"x" * 70000).status == 413


def test_empty_and_garbage_datagrams_dropped() -> None:
    assert bad(b"").status is None
    assert bad(b"\r\n\r\n").status is None
    assert bad(b"\x00\xff garbage").request is None


# --- StreamFramer ----------------------------------------------------------------------------


def test_framer_splits_messages_fed_in_pieces() -> None:
    framer = StreamFramer()
    stream = INVITE + b"\r\n" + INVITE.replace(b"314159", b"314160")
    out: list[Request | Response | BadMessage] = []
    for i in range(0, len(stream), 7):
        out.extend(framer.feed(stream[i : i + 7]))
    assert [m.cseq.seq for m in out if isinstance(m, Request)] == [314159, 314160]
    assert framer.buffered == 0 and not framer.failed


def test_framer_counts_pings_and_skips_keepalives() -> None:
    framer = StreamFramer()
    assert framer.feed(b"\r\n\r\n") == []
    assert framer.feed(b"\r\n") == []
    assert framer.pings == 1
    assert framer.feed(b"\r\n") == []
    assert framer.pings == 2
    (msg,) = framer.feed(b"\r\n" + INVITE)
    assert isinstance(msg, Request)
    assert framer.pings == 2


def test_framer_missing_content_length_is_fatal() -> None:
    framer = StreamFramer()
    (msg,) = framer.feed(INVITE.replace(b"Content-Length: 4\r\n", b""))
    assert isinstance(msg, BadMessage) and msg.status == 400 and msg.request is not None
    assert framer.failed and framer.feed(INVITE) == []


def test_framer_caps() -> None:
    framer = StreamFramer(max_message=200)
    (msg,) = framer.feed(INVITE.replace(b"Content-Length: 4", b"Content-Length: 100000"))
    assert isinstance(msg, BadMessage) and msg.status == 413 and framer.failed
    framer = StreamFramer(max_head=100)
    (msg,) = framer.feed(b"X" * 101)
    assert isinstance(msg, BadMessage) and framer.failed


def test_framer_bad_response_framing_is_dropped() -> None:
    framer = StreamFramer()
    resp = b"SIP/2.0 200 OK\r\n" + INVITE.split(b"\r\n", 1)[1]
    (msg,) = framer.feed(resp.replace(b"Content-Length: 4", b"Content-Length: x"))
    assert isinstance(msg, BadMessage) and msg.status is None and framer.failed


# --- Round trips and fuzzing -----------------------------------------------------------------

_tokens = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,12}", fullmatch=True)
_hosts = st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z]{2,4}){0,2}", fullmatch=True)
_EXCLUDED: tuple[Literal["Cs"], Literal["Cc"], Literal["Zl"], Literal["Zp"]] = (
    "Cs",
    "Cc",
    "Zl",
    "Zp",
)
_text = st.text(st.characters(codec="utf-8", exclude_categories=_EXCLUDED))


@st.composite
def messages(draw: st.DrawFn) -> Request | Response:
    vias = tuple(
        Via(
            draw(st.sampled_from(["UDP", "TCP", "TLS"])),
            draw(_hosts),
            draw(st.none() | st.integers(1, 65535)),
            (("branch", "z9hG4bK" + draw(_tokens)),),
        )
        for _ in range(draw(st.integers(1, 3)))
    )
    from_ = NameAddr(URI(user=draw(_tokens), host=draw(_hosts)), draw(st.none() | _text))
    from_ = from_.with_tag(draw(_tokens))
    to = NameAddr(URI(user=draw(_tokens), host=draw(_hosts)))
    headers = tuple(
        (name, draw(_text).strip())
        for name in draw(st.lists(st.sampled_from(["Subject", "X-Custom", "Allow"]), max_size=3))
    )
    body = draw(st.binary(max_size=64))
    method = draw(_tokens)
    if draw(st.booleans()):
        uri = URI(user=draw(st.none() | _tokens), host=draw(_hosts))
        return Request(method, uri, vias, from_, to, draw(_tokens), CSeq(7, method), headers, body)
    return Response(
        draw(st.integers(100, 699)),
        draw(_text).strip(),
        vias,
        from_,
        to,
        draw(_tokens),
        CSeq(draw(st.integers(0, 2**32 - 1)), method),
        headers,
        body,
    )


@settings(max_examples=40, deadline=None)
@given(messages())
def test_parse_serialize_round_trip(msg: Request | Response) -> None:
    assert parse_message(serialize(msg)) == msg
    framer = StreamFramer()
    assert framer.feed(serialize(msg) + serialize(msg)) == [msg, msg]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_never_raise(data: bytes) -> None:
    result = parse_message(data)
    assert isinstance(result, Request | Response | BadMessage)
    StreamFramer().feed(data)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, len(INVITE) - 1), st.binary(max_size=4), st.integers(0, 4)),
        min_size=1,
        max_size=6,
    )
)
def test_mutated_messages_never_raise(edits: list[tuple[int, bytes, int]]) -> None:
    data = bytearray(INVITE)
    for pos, insert, delete in edits:
        data[pos : pos + delete] = insert
    result = parse_message(bytes(data))
    assert isinstance(result, Request | Response | BadMessage)
    if isinstance(result, Request):
        # Whatever was accepted can be written out and read back the same.
        assert parse_message(serialize(result)) == result
    framer = StreamFramer()
    framer.feed(bytes(data[:50]))
    framer.feed(bytes(data[50:]))
