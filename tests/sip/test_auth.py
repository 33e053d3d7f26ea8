"""Digest authentication, client side: RFC vectors, stale handling, the peer rule."""

from __future__ import annotations

import contextlib
import hashlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.auth import (
    AuthError,
    AuthHeader,
    AuthRefused,
    DigestChallenge,
    DigestClient,
    Refusal,
    challenges_in,
    choose_challenge,
    digest_response,
    parse_challenge,
)
from softswitch.sip.message import URI, Address, CSeq, NameAddr, Request, Response, Via

TRUNK = Address("198.51.100.10", 5060)
STRANGER = Address("203.0.113.66", 5060)

# RFC 7616 section 3.9.1.
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def params_of(header_value: str) -> dict[str, str]:
    assert header_value.startswith("Digest ")
    return {
        m.group(1): m.group(2) if m.group(2) is not None else m.group(3)
        for m in re.finditer(r'(\w+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))', header_value[7:])
    }


class Counter:
    """Deterministic cnonce source: c0, c1, c2 ... per call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"c{self.calls - 1}"


def make_request(headers: tuple[tuple[str, str], ...] = (), body: bytes = b"") -> Request:
    return Request(
        method="INVITE",
        uri=URI(user="15551234567", host="trunk.example.net"),
        vias=(Via("UDP", "192.0.2.1", 5060, (("branch", "z9hG4bK1"),)),),
        from_=NameAddr(URI(user="us", host="example.org"), params=(("tag", "a"),)),
        to=NameAddr(URI(user="15551234567", host="trunk.example.net")),
        call_id="c1",
        cseq=CSeq(1, "INVITE"),
        headers=headers,
        body=body,
    )


def make_response(status: int, *challenges: str) -> Response:
    name = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
    req = make_request()
    return Response(
        status=status,
        reason="Unauthorized",
        vias=req.vias,
        from_=req.from_,
        to=req.to.with_tag("b"),
        call_id=req.call_id,
        cseq=req.cseq,
        headers=tuple((name, c) for c in challenges),
    )


URI_TEXT = "sip:15551234567@trunk.example.net"


# --- known answers ------------------------------------------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.algorithm == "MD5"
    client = DigestClient("Mufasa", "Circle Of Life", peers=[TRUNK], new_cnonce=lambda: "0a4f113b")
    header = client.authorize(challenge, TRUNK, method="GET", uri="/dir/index.html")
    assert isinstance(header, AuthHeader)
    assert header.name == "Authorization"
    p = params_of(header.value)
    assert p["cnonce"] == "0a4f113b"
    assert p["nc"] == "00000001"
    assert p["qop"] == "auth"
    assert p["response"] == "6629fae49393a05397450978507c4ef1"
    assert p["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    assert (
        digest_response(
            algorithm=algorithm,
            username="Mufasa",
            realm="http-auth@example.org",
            password="Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce=RFC7616_NONCE,
            nc=1,
            cnonce=RFC7616_CNONCE,
            qop="auth",
        )
        == expected
    )
    challenge = parse_challenge(
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        f'nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}"'
    )
    client = DigestClient(
        "Mufasa", "Circle of Life", peers=[TRUNK], new_cnonce=lambda: RFC7616_CNONCE
    )
    header = client.authorize(challenge, TRUNK, method="GET", uri="/dir/index.html")
    assert isinstance(header, AuthHeader)
    # Every parameter of the RFC's Authorization header, as the RFC prints it.
    assert params_of(header.value) == {
        "username": "Mufasa",
        "realm": "http-auth@example.org",
        "uri": "/dir/index.html",
        "algorithm": algorithm,
        "nonce": RFC7616_NONCE,
        "nc": "00000001",
        "cnonce": RFC7616_CNONCE,
        "qop": "auth",
        "response": expected,
        "opaque": RFC7616_OPAQUE,
    }


def test_rfc2069_form_without_qop_and_auth_int() -> None:
    client = DigestClient("bob", "zanzibar", peers=[TRUNK], new_cnonce=Counter())
    no_qop = parse_challenge('Digest realm="biloxi.com", nonce="n1"')
    header = client.authorize(no_qop, TRUNK, method="INVITE", uri="sip:bob@biloxi.com")
    assert isinstance(header, AuthHeader)
    p = params_of(header.value)
    assert "qop" not in p and "cnonce" not in p and "nc" not in p

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1, ha2 = md5("bob:biloxi.com:zanzibar"), md5("INVITE:sip:bob@biloxi.com")
    assert p["response"] == md5(f"{ha1}:n1:{ha2}")

    auth_int = parse_challenge('Digest realm="biloxi.com", nonce="n2", qop="auth-int"')
    body = b"v=0\r\n"
    header = client.authorize(auth_int, TRUNK, method="INVITE", uri="sip:b@b", body=body)
    assert isinstance(header, AuthHeader)
    p = params_of(header.value)
    assert p["qop"] == "auth-int"
    ha2 = md5(f"INVITE:sip:b@b:{hashlib.md5(body).hexdigest()}")
    assert p["response"] == md5(f"{ha1}:n2:00000001:{p['cnonce']}:auth-int:{ha2}")


def test_sess_algorithm_fixes_ha1_with_first_cnonce() -> None:
    client = DigestClient("u", "p", peers=[TRUNK], new_cnonce=Counter())
    challenge = parse_challenge('Digest realm="r", nonce="N", qop="auth", algorithm=SHA-256-sess')
    first = client.authorize(challenge, TRUNK, method="REGISTER", uri="sip:r")
    second = client.authorize(challenge, TRUNK, method="REGISTER", uri="sip:r")
    assert isinstance(first, AuthHeader) and isinstance(second, AuthHeader)
    p1, p2 = params_of(first.value), params_of(second.value)
    assert p1["algorithm"] == "SHA-256-sess"
    assert (p1["nc"], p2["nc"]) == ("00000001", "00000002")
    assert p1["cnonce"] != p2["cnonce"]

    def sha(s: str) -> str:
        return hashlib.sha256(s.encode()).hexdigest()

    ha1 = sha(f"{sha('u:r:p')}:N:{p1['cnonce']}")
    ha2 = sha("REGISTER:sip:r")
    assert p2["response"] == sha(f"{ha1}:N:00000002:{p2['cnonce']}:auth:{ha2}")


# --- parsing challenges -------------------------------------------------------------------------


def test_parse_challenge_quoting_stale_unknown_params() -> None:
    c = parse_challenge(
        'digest  realm="a \\"quoted\\" realm, with comma",nonce="abc", stale=TRUE,'
        ' algorithm="sha-256", foo=bar, domain="sip:x sip:y", opaque="o"',
        proxy=True,
    )
    assert c.realm == 'a "quoted" realm, with comma'
    assert c.nonce == "abc"
    assert c.stale is True
    assert c.algorithm == "SHA-256"
    assert c.opaque == "o"
    assert c.proxy and c.credentials_header == "Proxy-Authorization"
    plain = parse_challenge('Digest\trealm="r",\r\n nonce=n')
    assert (plain.realm, plain.nonce, plain.stale, plain.qop) == ("r", "n", False, ())


@pytest.mark.parametrize(
    "text",
    [
        'Basic realm="r"',
        'Digest nonce="n"',
        'Digest realm="r"',
        'Digest realm="r, nonce="n"',
        "Digest realm",
        'Digest realm="r" nonce="n"',
        "",
        "Digest " + "x" * 5000,
    ],
)
def test_malformed_challenges(text: str) -> None:
    with pytest.raises(AuthError):
        parse_challenge(text)


def test_choose_prefers_sha256_and_skips_unsupported() -> None:
    response = make_response(
        401,
        'Digest realm="r", nonce="1", algorithm=MD5, qop="auth"',
        'Basic realm="r"',
        'Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth"',
        'Digest realm="r", nonce="3", algorithm=SHA-999, qop="auth"',
        'Digest realm="r", nonce="4", qop="auth-conf"',
    )
    challenges = challenges_in(response)
    assert [c.nonce for c in challenges] == ["1", "2", "3", "4"]
    chosen = choose_challenge(challenges)
    assert chosen is not None and chosen.nonce == "2"
    assert choose_challenge(challenges[2:]) is None
    assert not DigestChallenge("r", "n", algorithm="MD5-sess").supported
    # 407 challenges live in Proxy-Authenticate.
    assert challenges_in(make_response(407, 'Digest realm="p", nonce="x"'))[0].proxy


# --- the client's decisions ---------------------------------------------------------------------


def test_challenge_from_another_source_is_refused() -> None:
    """CVE-2021-41158: a stranger's challenge must not get a hash of our password."""
    client = DigestClient("acct", "secret", peers=[TRUNK], new_cnonce=Counter())
    challenge = parse_challenge('Digest realm="carrier", nonce="n"')
    assert client.may_answer(challenge, TRUNK)
    assert client.may_answer(challenge, ("198.51.100.10", 5060))
    assert not client.may_answer(challenge, STRANGER)
    assert not client.may_answer(challenge, Address("198.51.100.10", 5070))
    refused = client.authorize(challenge, STRANGER, method="INVITE", uri=URI_TEXT)
    assert refused == AuthRefused(Refusal.WRONG_PEER, f"challenge from {STRANGER}")
    response = make_response(401, 'Digest realm="carrier", nonce="n"')
    result = client.answer(make_request(), response, STRANGER, uri=URI_TEXT)
    assert isinstance(result, AuthRefused) and result.refusal is Refusal.WRONG_PEER
    assert "secret" not in repr(client)


def test_realm_is_checked_when_configured_and_ipv6_peers_match() -> None:
    client = DigestClient(
        "acct", "secret", peers=[("[2001:DB8::0:1]", 5060)], realm="carrier", new_cnonce=Counter()
    )
    source = Address("2001:db8::1", 5060)
    assert client.may_answer(parse_challenge('Digest realm="carrier", nonce="n"'), source)
    assert not client.may_answer(parse_challenge('Digest realm="evil", nonce="n"'), source)
    response = make_response(401, 'Digest realm="evil", nonce="n"')
    result = client.answer(make_request(), response, source, uri=URI_TEXT)
    assert isinstance(result, AuthRefused) and result.refusal is Refusal.WRONG_REALM
    with pytest.raises(ValueError, match="at least one peer"):
        DigestClient("a", "b", peers=[])


def test_nc_increments_per_nonce() -> None:
    client = DigestClient("acct", "secret", peers=[TRUNK], new_cnonce=Counter())
    a = parse_challenge('Digest realm="r", nonce="A", qop="auth"')
    b = parse_challenge('Digest realm="r", nonce="B", qop="auth"')
    ncs = []
    for challenge in (a, a, b, a):
        header = client.authorize(challenge, TRUNK, method="REGISTER", uri="sip:r")
        assert isinstance(header, AuthHeader)
        ncs.append(params_of(header.value)["nc"])
    assert ncs == ["00000001", "00000002", "00000001", "00000003"]


def test_answer_retry_flow_stale_then_rejection() -> None:
    client = DigestClient("acct", "secret", peers=[TRUNK], new_cnonce=Counter())
    first = make_response(407, 'Digest realm="carrier", nonce="n1", qop="auth"')
    # Without ``uri=`` the digest-uri is the request's Request-URI (RFC 3261 section 22.4).
    header = client.answer(make_request(), first, TRUNK)
    assert isinstance(header, AuthHeader)
    assert header.name == "Proxy-Authorization" and header.realm == "carrier"
    p = params_of(header.value)
    assert (p["username"], p["uri"], p["nonce"]) == ("acct", URI_TEXT, "n1")
    retried = make_request(headers=((header.name, header.value),))

    # stale=true: the nonce expired, our password was fine -> answer again with the new nonce.
    stale = make_response(407, 'Digest realm="carrier", nonce="n2", qop="auth", stale=true')
    again = client.answer(retried, stale, TRUNK, uri=URI_TEXT)
    assert isinstance(again, AuthHeader)
    assert params_of(again.value)["nonce"] == "n2"
    retried = make_request(headers=((again.name, again.value),))

    # A fresh challenge without stale after our credentials: they were rejected; stop.
    rejected = make_response(407, 'Digest realm="carrier", nonce="n3", qop="auth"')
    result = client.answer(retried, rejected, TRUNK, uri=URI_TEXT)
    assert result == AuthRefused(Refusal.REJECTED, "realm 'carrier'")


def test_credentials_for_another_realm_do_not_count_as_rejection() -> None:
    client = DigestClient("acct", "secret", peers=[TRUNK], new_cnonce=Counter())
    request = make_request(
        headers=(("Proxy-Authorization", 'Digest username="acct", realm="proxy"'),)
    )
    response = make_response(407, 'Digest realm="carrier", nonce="n"')
    assert isinstance(client.answer(request, response, TRUNK, uri=URI_TEXT), AuthHeader)
    response_401 = make_response(401, 'Digest realm="proxy", nonce="n"')
    # A 401 answers in Authorization; a Proxy-Authorization for that realm is not the same.
    assert isinstance(client.answer(request, response_401, TRUNK, uri=URI_TEXT), AuthHeader)


def test_answer_without_usable_challenge() -> None:
    client = DigestClient("acct", "secret", peers=[TRUNK], new_cnonce=Counter())
    none = client.answer(make_request(), make_response(401, 'Basic realm="x"'), TRUNK, uri="x")
    assert isinstance(none, AuthRefused) and none.refusal is Refusal.NO_CHALLENGE
    odd = make_response(401, 'Digest realm="x", nonce="n", algorithm=SHA-999')
    result = client.answer(make_request(), odd, TRUNK, uri="x")
    assert isinstance(result, AuthRefused) and result.refusal is Refusal.UNSUPPORTED


def test_header_value_escapes_quotes_and_roundtrips() -> None:
    client = DigestClient('we"ird\\user', "pw", peers=[TRUNK], new_cnonce=Counter())
    challenge = parse_challenge('Digest realm="r", nonce="n", qop="auth", opaque="op"')
    header = client.authorize(challenge, TRUNK, method="BYE", uri="sip:x")
    assert isinstance(header, AuthHeader)
    assert 'username="we\\"ird\\\\user"' in header.value
    # Our own header parses back with the same realm/username (used for rejection detection).
    request = make_request(headers=((header.name, header.value),))
    rejected = make_response(401, 'Digest realm="r", nonce="n9", qop="auth"')
    result = client.answer(request, rejected, TRUNK, uri="sip:x")
    assert isinstance(result, AuthRefused) and result.refusal is Refusal.REJECTED


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='Digst realmnoc="\\, =\t-aq', max_size=80))
def test_challenge_parser_raises_only_auth_error(text: str) -> None:
    # Garbage may parse or raise AuthError; any other exception fails the test.
    with contextlib.suppress(AuthError):
        parse_challenge(text)
