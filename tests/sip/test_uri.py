"""URIs and name-addr values: parsing, escaping, formatting (RFC 3261 19.1, 20.10, 25.1)."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.sip.headers import (
    canonical_name,
    parse_contact_list,
    parse_content_type,
    parse_cseq,
    parse_expires,
    parse_max_forwards,
    parse_route_list,
    parse_token_list,
    parse_via,
    split_comma_list,
)
from softswitch.sip.message import URI, CSeq, NameAddr
from softswitch.sip.uri import (
    UnsupportedScheme,
    format_name_addr,
    format_uri,
    is_wildcard,
    parse_name_addr,
    parse_params,
    parse_uri,
)


def test_full_sip_uri() -> None:
    uri = parse_uri("sips:alice:secret@Example.COM:5061;transport=tcp;lr?Subject=hi&X=a%20b")
    assert uri == URI(
        scheme="sips",
        user="alice",
        password="secret",
        host="Example.COM",
        port=5061,
        params=(("transport", "tcp"), ("lr", None)),
        headers=(("Subject", "hi"), ("X", "a b")),
    )
    assert uri.param("TRANSPORT") == "tcp"
    assert (
        format_uri(uri) == "sips:alice:secret@Example.COM:5061;transport=tcp;lr?Subject=hi&X=a%20b"
    )


def test_scheme_is_case_insensitive_and_stored_lower() -> None:
    assert parse_uri("SIP:bob@h").scheme == "sip"


def test_ipv6_host_is_stored_without_brackets() -> None:
    uri = parse_uri("sip:[2001:db8::10]:5070;maddr=[2001:db8::1]")
    assert uri.host == "2001:db8::10" and uri.port == 5070
    assert uri.host_port == "[2001:db8::10]:5070"
    assert format_uri(uri) == "sip:[2001:db8::10]:5070;maddr=[2001:db8::1]"


def test_ipv6_without_port() -> None:
    assert parse_uri("sip:alice@[::1]").host == "::1"


@pytest.mark.parametrize(
    "text",
    [
        "sip:",
        "sip:alice@",
        "sip:@host",
        "sip:host:99999",
        "sip:host:5x",
        "sip:[2001:db8::1",
        "sip:[zz]",
        "sip:ho st",
        "<sip:host>",
        "sip:host;;lr",
        "sip:host;=x",
        "sip:host?noequals",
        "sip:a%zzb@host",
        "sip:a@b@host",
        "sip:-host-",
        "1sip:host",
        "sip:host\x00",
    ],
)
def test_bad_uris_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_uri(text)


def test_unknown_scheme_raises_unsupported_scheme() -> None:
    with pytest.raises(UnsupportedScheme) as info:
        parse_uri("http://example.com/")
    assert info.value.scheme == "http"
    assert isinstance(info.value, ValueError)


def test_other_schemes_kept_opaque_when_allowed() -> None:
    uri = parse_uri("urn:service:sos", allow_other=True)
    assert (uri.scheme, uri.user, uri.host) == ("urn", "service:sos", "")
    assert format_uri(uri) == "urn:service:sos"


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert (uri.scheme, uri.user, uri.host) == ("tel", "+1-201-555-0123", "")
    assert uri.param("phone-context") == "example.com"
    assert format_uri(uri) == "tel:+1-201-555-0123;phone-context=example.com"


def test_escapes_are_decoded_once_and_re_escaped_only_where_needed() -> None:
    uri = parse_uri("sip:%61lice%3Ax%40y@h;n%61me=v%2541")
    assert uri.user == "alice:x@y"
    assert uri.params == (("name", "v%41"),)
    assert format_uri(uri) == "sip:alice%3Ax%40y@h;name=v%2541"


def test_user_unreserved_characters_are_not_escaped() -> None:
    uri = URI(user="+81&=$,;?/x", host="h")
    assert format_uri(uri) == "sip:+81&=$,;?/x@h"


def test_non_ascii_and_controls_are_escaped_in_user() -> None:
    uri = URI(user="é\x00 ", host="h")
    text = format_uri(uri)
    assert text == "sip:%C3%A9%00%20@h"
    assert parse_uri(text) == uri


def test_str_of_uri_uses_format_uri() -> None:
    assert str(URI(user="bob", host="10.0.0.1", port=5060)) == "sip:bob@10.0.0.1:5060"


def test_name_addr_forms() -> None:
    na = parse_name_addr(' "Alice \\"A\\" Smith" <sip:alice@h;lr> ;tag=abc ; x = "y z" ')
    assert na.display_name == 'Alice "A" Smith'
    assert na.uri.params == (("lr", None),)
    assert na.params == (("tag", "abc"), ("x", '"y z"'))
    assert na.tag == "abc"
    assert format_name_addr(na) == '"Alice \\"A\\" Smith" <sip:alice@h;lr>;tag=abc;x="y z"'


def test_token_display_name_and_no_display_name() -> None:
    assert parse_name_addr("Bob Smith <sip:b@h>").display_name == "Bob Smith"
    assert parse_name_addr("<sip:b@h>").display_name is None
    assert parse_name_addr('"" <sip:b@h>').display_name == ""


def test_addr_spec_params_belong_to_the_header() -> None:
    na = parse_name_addr("sip:b@h;tag=1;user=phone")
    assert na.uri.params == ()
    assert na.params == (("tag", "1"), ("user", "phone"))
    assert format_name_addr(na) == "<sip:b@h>;tag=1;user=phone"


@pytest.mark.parametrize(
    "text",
    [
        '"unterminated <sip:a@h>',
        '"Name" sip:a@h',
        "<sip:a@h",
        "Bell, Alexander <sip:a@h>",
        "sip:a@h?x=y",
        "<sip:a@h>;;tag=1",
        "<sip:a@h> junk",
        "< sip:a@h >",
    ],
)
def test_bad_name_addrs(text: str) -> None:
    with pytest.raises(ValueError):
        parse_name_addr(text)


def test_display_name_escaping_round_trips_controls_and_quotes() -> None:
    na = NameAddr(URI(host="h"), display_name='a\\b"c\x07\x00')
    text = format_name_addr(na)
    assert text == '"a\\\\b\\"c\\\x07\\\x00" <sip:h>'
    assert parse_name_addr(text) == na


def test_display_name_line_breaks_cannot_escape() -> None:
    text = format_name_addr(NameAddr(URI(host="h"), display_name="x\r\nVia: evil"))
    assert "\r" not in text and "\n" not in text


def test_with_tag() -> None:
    na = parse_name_addr("<sip:a@h>;tag=1").with_tag("2")
    assert format_name_addr(na) == "<sip:a@h>;tag=2"


def test_parse_params_rejects_empty_and_accepts_sws() -> None:
    assert parse_params(" ; a = 1 ;b") == (("a", "1"), ("b", None))
    assert parse_params('; q="a;b"') == (("q", '"a;b"'),)
    for bad in (";", ";a=", "a=1", ';a="open'):
        with pytest.raises(ValueError):
            parse_params(bad)


# --- headers.py helpers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("i", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("cseq", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("m", "Contact"),
        ("x", "Session-Expires"),
        ("r", "Refer-To"),
        ("j", "Reject-Contact"),
        ("X-Custom", "X-Custom"),
    ],
)
def test_canonical_names(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


def test_split_comma_list_respects_quotes_and_angles() -> None:
    value = '"Doe, J" <sip:a@h;x=1,2>;p=1 , <sip:b@h> ,, c'
    assert split_comma_list(value) == ['"Doe, J" <sip:a@h;x=1,2>;p=1', "<sip:b@h>", "c"]
    assert split_comma_list("a, b,c") == ["a", "b", "c"]


def test_parse_via_full() -> None:
    (via,) = parse_via("SIP/2.0/udp [2001:db8::1]:5062;branch=z9hG4bK1;rport;received=::1")
    assert (via.transport, via.host, via.port) == ("UDP", "2001:db8::1", 5062)
    assert via.branch == "z9hG4bK1" and via.rport == "" and via.received == "::1"
    assert str(via) == "SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bK1;rport;received=::1"


@pytest.mark.parametrize(
    "value", ["", "SIP/2.0/UDP", "SIP/2.0 UDP h", "SIP/2.0/UDP h;;", "SIP/2.0/UDP h,", "x h"]
)
def test_parse_via_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        parse_via(value)


def test_parse_cseq() -> None:
    assert parse_cseq(" 0042   INVITE ") == CSeq(42, "INVITE")
    for bad in ("1", "x INVITE", "4294967296 INVITE", "1 INV ITE", "-1 ACK", "1 IN<VITE"):
        with pytest.raises(ValueError):
            parse_cseq(bad)


def test_contact_list_and_wildcard() -> None:
    contacts = parse_contact_list('"A" <sip:a@h>;expires=60, sip:b@h;q=0.5')
    assert [c.uri.user for c in contacts] == ["a", "b"]
    assert contacts[1].param("q") == "0.5"
    (star,) = parse_contact_list(" * ")
    assert is_wildcard(star) and format_name_addr(star) == "*"
    with pytest.raises(ValueError):
        parse_contact_list("<sip:a@h>,")


def test_route_list_requires_angle_brackets() -> None:
    routes = parse_route_list("<sip:p1;lr>, <sip:p2;lr>")
    assert [r.uri.host for r in routes] == ["p1", "p2"]
    with pytest.raises(ValueError):
        parse_route_list("sip:p1;lr")


def test_token_lists_and_scalars() -> None:
    assert parse_token_list("100rel, timer") == ["100rel", "timer"]
    assert parse_token_list("  ") == []
    with pytest.raises(ValueError):
        parse_token_list("a b")
    assert parse_max_forwards("070") == 70
    assert parse_expires("4294967295") == 2**32 - 1
    for bad in ("256", "-1", "x", ""):
        with pytest.raises(ValueError):
            parse_max_forwards(bad)
    with pytest.raises(ValueError):
        parse_expires("4294967296")


def test_content_type() -> None:
    assert parse_content_type("Application/SDP ; charset=UTF-8") == (
        "application/sdp",
        (("charset", "UTF-8"),),
    )
    with pytest.raises(ValueError):
        parse_content_type("sdp")


_NO_SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
_chars = st.characters(codec="utf-8", exclude_categories=_NO_SURROGATES)
_users = st.text(alphabet=_chars, min_size=1)
_hosts = st.from_regex(
    r"[a-z](?:[a-z0-9\-]{0,9}[a-z0-9])?(\.[a-z][a-z0-9]{0,5}){0,3}", fullmatch=True
)
_param_texts = st.text(alphabet=_chars, min_size=1, max_size=8)


@given(
    user=st.none() | _users,
    host=_hosts,
    port=st.none() | st.integers(0, 65535),
    params=st.lists(st.tuples(_param_texts, st.none() | _param_texts), max_size=3),
    display=st.none() | st.text(_chars),
)
def test_any_uri_and_name_addr_round_trip(
    user: str | None,
    host: str,
    port: int | None,
    params: list[tuple[str, str | None]],
    display: str | None,
) -> None:
    uri = URI(user=user, host=host, port=port, params=tuple(params))
    assert parse_uri(format_uri(uri)) == uri
    if display is not None and ("\r" in display or "\n" in display):
        display = display.replace("\r", " ").replace("\n", " ")
    na = NameAddr(uri, display, (("tag", "x1"),))
    assert parse_name_addr(format_name_addr(na)) == na
