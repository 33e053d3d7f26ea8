"""The hot path's shortcuts give exactly what the general code gives.

The parser, the URI and Via readers, the header look-ups and the endpoint take shortcuts for
what peers nearly always send (a plain ``sip:user@host:port``, a ``SIP/2.0/UDP`` Via, header
names in their usual spelling, a Via fixed once per INVITE and reused by its CANCEL and ACK).
Each test here runs the general code next to the shortcut on generated input, near misses
included, and wants the same value, or the same error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from softswitch.sip import headers as hdr
from softswitch.sip import parser as parser_mod
from softswitch.sip import uri as uri_mod
from softswitch.sip.endpoint import Endpoint
from softswitch.sip.message import (
    URI,
    Address,
    CSeq,
    NameAddr,
    Request,
    Via,
    header_value,
    header_values,
    quick_init,
)
from softswitch.sip.parser import parse_message

NEVER = re.compile(r"(?!)")


@contextmanager
def general_path(module: object, name: str) -> Iterator[None]:
    """Switch a shortcut off (its pattern matches nothing) for the duration."""
    saved = getattr(module, name)
    setattr(module, name, NEVER)
    try:
        yield
    finally:
        setattr(module, name, saved)


def outcome(fn: Callable[[], object]) -> object:
    try:
        return fn()
    except ValueError as exc:
        return ("ValueError", type(exc).__name__, str(exc))


_USER = st.text("abcXYZ019-_.!~*'()&=+$,;?/%:@ ", min_size=0, max_size=8)
_HOST = st.text("abcxyz019-.[]:_", min_size=0, max_size=10)
_PORT = st.sampled_from(["", ":", ":5060", ":0", ":65535", ":65536", ":99999", ":123456", ":06"])
_TAIL = st.sampled_from(["", ";transport=UDP", ";lr", "?h=v", ">", " "])


@settings(max_examples=600, deadline=None)
@given(_USER, _HOST, _PORT, _TAIL, st.sampled_from(["sip:", "SIP:", "sips:", "tel:"]))
@example("alice", "example.com", ":5060", "", "sip:")
@example("8150000123", "127.0.0.1", ":99999", "", "sip:")
def test_plain_sip_uri(user: str, host: str, port: str, tail: str, scheme: str) -> None:
    text = f"{scheme}{user}@{host}{port}{tail}"
    fast = outcome(lambda: uri_mod._parse_uri(text, True))
    with general_path(uri_mod, "_PLAIN_SIP_RE"):
        general = outcome(lambda: uri_mod._parse_uri(text, True))
    assert fast == general


_TRANSPORT = st.sampled_from(["UDP", "TCP", "TLS", "udp", "SCTP", "WSS", "XYZ"])
_PARAMS = st.lists(
    st.sampled_from(
        [";branch=z9hG4bK-1", ";rport", ";rport=5", ";received=1.2.3.4", ";x=[::1]", "; y",
         ";=", ";a=", ";q=\"x\"", ";maddr=h:1", ";Branch=Z"]
    ),
    max_size=3,
).map("".join)  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(["SIP/2.0/", "SIP / 2.0 / ", "sip/2.0/", "SIP/3.0/"]),
    _TRANSPORT,
    st.sampled_from([" ", "  "]),
    st.sampled_from(["127.0.0.1", "host.example.com", "a-", "-a", "h", "[::1]", "a..b", "a_b"]),
    _PORT,
    _PARAMS,
    st.sampled_from(["", " ", ",SIP/2.0/UDP h", ","]),
)
@example("SIP/2.0/", "UDP", " ", "127.0.0.1", ":5999", ";branch=z9hG4bK-1;rport", "")
def test_plain_via(
    proto: str, transport: str, sp: str, host: str, port: str, params: str, tail: str
) -> None:
    text = f"{proto}{transport}{sp}{host}{port}{params}{tail}"

    def read() -> object:
        return [(v, v.protocol, v.raw) for v in hdr.parse_via(text)]

    fast = outcome(read)
    with general_path(hdr, "_PLAIN_VIA_RE"):
        general = outcome(read)
    assert fast == general


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([";tag=abc", ";tag=a;x", ";tag=a=b", ";a;b;c", ";x=[::1]:5", ";", ";;"]))
def test_params_fast_split(text: str) -> None:
    fast = outcome(lambda: uri_mod.parse_params(text))
    with general_path(uri_mod, "_PARAMS_FAST_RE"):
        general = outcome(lambda: uri_mod.parse_params(text))
    assert fast == general


def _lower_scan(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    low = name.lower()
    return next((v for k, v in headers if k.lower() == low), None)


_NAMES = st.sampled_from(
    ["Content-Type", "content-type", "CONTENT-TYPE", "c", "Require", "X-Foo", "x-foo", "Via", "To"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_NAMES, st.sampled_from(["1", "2", "a, b", ""])), max_size=6), _NAMES)
def test_header_lookups_are_case_insensitive_in_order(
    headers: list[tuple[str, str]], name: str
) -> None:
    hs = tuple(headers)
    assert header_value(hs, name) == _lower_scan(hs, name)
    low = name.lower()
    expected = [
        item.strip() for k, v in hs if k.lower() == low for item in v.split(",") if item.strip()
    ]
    assert header_values(hs, name) == expected


def _invite(via: str, extra: str = "") -> bytes:
    return (
        f"INVITE sip:815012345678@127.0.0.1:5060 SIP/2.0\r\nVia: {via}\r\n"
        "From: <sip:1@127.0.0.1>;tag=1\r\nTo: <sip:815012345678@127.0.0.1>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("via", "source"),
    [
        ("SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1;rport", Address("127.0.0.1", 5999)),
        ("SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1;rport", Address("127.0.0.1", 6000)),
        ("SIP/2.0/UDP 10.0.0.1:5999;branch=z9hG4bK-1;rport", Address("127.0.0.1", 5999)),
        ("SIP/2.0/UDP 10.0.0.1:5999;branch=z9hG4bK-1", Address("127.0.0.1", 5999)),
        ("SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-1", Address("127.0.0.1", 5999)),
        ("SIP/2.0/UDP 127.0.0.1;rport;branch=z9hG4bK-1;rport", Address("127.0.0.1", 5)),
    ],
)
def test_fixed_via_is_the_same_from_the_cache(via: str, source: Address) -> None:
    """The second request with the same Via from the same place gets the same top Via."""
    endpoint = Endpoint()
    first = parse_message(_invite(via))
    again = parse_message(_invite(via, "Subject: x\r\n"))
    assert isinstance(first, Request) and isinstance(again, Request)
    fixed = endpoint._fix_via(first, source)
    cached = endpoint._fix_via(again, source)
    fresh = Endpoint()._fix_via(again, source)
    assert cached.vias == fresh.vias == fixed.vias
    assert [str(v) for v in cached.vias] == [str(v) for v in fresh.vias]
    assert (cached is again) == (fresh is again)


def test_quick_init_keeps_signature_defaults_and_frozenness() -> None:
    request = Request("OPTIONS", URI(host="h"), (Via("UDP", "h"),), NameAddr(URI(host="a")),
                      NameAddr(URI(host="b")), "c", CSeq(1, "OPTIONS"))  # fmt: skip
    assert request.headers == () and request.body == b"" and request.version == "SIP/2.0"
    assert NameAddr(URI(host="a")).raw is None
    with pytest.raises(AttributeError):
        request.method = "BYE"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Request("OPTIONS")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        quick_init(Endpoint)  # not a dataclass


_CONTACT_PIECES = st.sampled_from(
    ["<sip:", "sip:", "<sips:", "u", "8150000", "@", "127.0.0.1", "host.example", "-", ".",
     ":5999", ":65536", ":99999", ":0", ";transport=UDP", ";lr", ";x=", ";=y", ";%41=b", "[::1]",
     ">", ";tag=1", ";q=0.5", ";expires=[", " ", ",", '"', "?h=v", "'", "(", "&", "$"]
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(_CONTACT_PIECES, min_size=3, max_size=9).map("".join))
@example("<sip:8150000123@127.0.0.1:5999;transport=UDP>")
@example("<sip:8150000123@127.0.0.1:65536;transport=UDP>")
@example("<sip:u@h;a=>")
def test_plain_contact_is_one_the_parser_accepts(value: str) -> None:
    plain = parser_mod._PLAIN_CONTACT_RE.fullmatch(value)
    if plain is not None and (plain.group(1) is None or int(plain.group(1)) <= 65535):
        hdr.parse_contact_list(value)  # must not raise
