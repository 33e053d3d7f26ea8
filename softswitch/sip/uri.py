"""SIP, SIPS and tel URIs and name-addr values (RFC 3261 sections 19.1, 20.10 and 25.1; RFC 3966).

Parsing splits a URI with ``str.partition``/``find`` and checks each part against one compiled
pattern, so the common case never loops over characters in Python. Parsed URIs are cached
(they repeat: the same carriers, the same contacts), which is safe because ``URI`` is frozen.

Escaping (RFC 3261 section 19.1.2): the model holds *unescaped* user, password, parameter and
header values; :func:`format_uri` escapes exactly the characters each grammar rule does not
allow, so ``sip:%75ser@h`` reads as user ``user`` and is written back as ``sip:user@h``, while
``sip:sips%3Auser%40example.com@example.net`` keeps its escapes (``:`` and ``@`` are not
allowed in a user part). Unescaping is done once, never recursively (RFC 4475 section 3.1.1.3).

Name-addr (RFC 3261 section 20.10): in the addr-spec form (no angle brackets) everything after
the first ``;`` is a *header* parameter, not a URI parameter. Display names are stored without
quotes or quoted-pairs and always written back quoted.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import quote, unquote

from softswitch.sip.message import URI, NameAddr, Params

__all__ = [
    "WILDCARD",
    "UnsupportedScheme",
    "format_name_addr",
    "format_params",
    "format_uri",
    "is_wildcard",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
]

# RFC 3261 section 25.1: token and the character classes of the URI rules.
TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
TOKEN_RE = re.compile(rf"[{TOKEN_CHARS}]+")
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_USER_RE = re.compile(rf"[{_UNRESERVED}%&=+$,;?/]+")
_PASSWORD_RE = re.compile(rf"[{_UNRESERVED}%&=+$,]*")
_PARAMCHARS_RE = re.compile(rf"[{_UNRESERVED}%\[\]/:&+$]+")
_HNV_RE = re.compile(rf"[{_UNRESERVED}%\[\]/?:+$]*")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+")
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Anything that can never appear raw in a URI: whitespace, controls, quotes, angle brackets.
_NOT_URI_RE = re.compile(r'[\x00-\x20\x7f<>"]')
_TEL_RE = re.compile(r"[0-9A-Fa-f*#+\-.()%]+")
# Characters quote() must leave alone in each component (ALPHA, DIGIT and "_.-~" always are).
_SAFE_USER = "!*'()&=+$,;?/"
_SAFE_PASSWORD = "!*'()&=+$,"
_SAFE_PARAM = "!*'()[]/:&+$"
_SAFE_HEADER = "!*'()[]/?:+$"
_PLAIN_USER_RE = re.compile(rf"[{_UNRESERVED}&=+$,;?/]*")
_PLAIN_PASSWORD_RE = re.compile(rf"[{_UNRESERVED}&=+$,]*")
_PLAIN_PARAM_RE = re.compile(rf"[{_UNRESERVED}\[\]/:&+$]*")
_PLAIN_HEADER_RE = re.compile(rf"[{_UNRESERVED}\[\]/?:+$]*")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.DOTALL)
_DISPLAY_TOKENS_RE = re.compile(rf"[{TOKEN_CHARS}]+(?:[ \t]+[{TOKEN_CHARS}]+)*")
_GEN_VALUE_RE = re.compile(rf'[{TOKEN_CHARS}\[\]:]+|"(?:[^"\\]|\\.)*"', re.DOTALL)
_PARAMS_FAST_RE = re.compile(rf"(?:;[{TOKEN_CHARS}]+(?:=[{TOKEN_CHARS}\[\]:]+)?)+")
_MUST_ESCAPE_IN_QUOTES_RE = re.compile(r'["\\\x00-\x08\x0b\x0c\x0e-\x1f\x7f]')

_CACHE_MAX_LEN = 256
# The usual From/To/Contact/Request-URI: a user part of unreserved characters (no escapes, no
# password), a host name or IPv4 address as HOSTNAME_RE reads it, maybe a port; no parameters.
_PLAIN_SIP_RE = re.compile(
    rf"sip:([{_UNRESERVED}&=+$,]+)@([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)(?::([0-9]{{1,5}}))?"
)


class UnsupportedScheme(ValueError):
    """A well-formed URI whose scheme is not sip, sips or tel (answered 416, RFC 3261 8.2.2.1)."""

    def __init__(self, scheme: str) -> None:
        super().__init__(f"unsupported URI scheme {scheme!r}")
        self.scheme = scheme


WILDCARD = NameAddr(uri=URI(scheme="*"))
"""The ``Contact: *`` value of a REGISTER that removes every binding (RFC 3261 section 10.2.2)."""


def is_wildcard(na: NameAddr) -> bool:
    """True for the ``Contact: *`` value returned by the contact list parser."""
    return na.uri.scheme == "*"


def _unescape(text: str) -> str:
    if "%" not in text:
        return text
    if _BAD_ESCAPE_RE.search(text):
        raise ValueError(f"bad escape in {text!r}")
    return unquote(text, errors="surrogateescape")


def _escape(text: str, plain: re.Pattern[str], safe: str) -> str:
    if plain.fullmatch(text):
        return text
    return quote(text, safe=safe, errors="surrogateescape")


def parse_uri(text: str, *, allow_other: bool = False) -> URI:
    """Parse a sip:, sips: or tel: URI.

    Raises ``ValueError`` on bad syntax and :class:`UnsupportedScheme` for a well-formed URI of
    another scheme. With ``allow_other`` (used for From/To/Contact, where RFC 4475 section 3.3.4
    requires any registered scheme to parse) such a URI is returned with its scheme-specific
    part, unparsed, in ``user``.
    """
    if len(text) <= _CACHE_MAX_LEN:
        return _parse_uri_cached(text, allow_other)
    return _parse_uri(text, allow_other)


@lru_cache(maxsize=4096)
def _parse_uri_cached(text: str, allow_other: bool) -> URI:
    return _parse_uri(text, allow_other)


def _parse_uri(text: str, allow_other: bool) -> URI:
    m = _PLAIN_SIP_RE.fullmatch(text)
    if m is not None:
        # sip:user@host[:port] with nothing to unescape: what _parse_sip would make of it.
        user, host, port_text = m.groups()
        if port_text is None:
            return URI("sip", user, None, host)
        port = int(port_text)
        if port <= 65535:
            return URI("sip", user, None, host, port)
    if _NOT_URI_RE.search(text):
        raise ValueError(f"illegal character in URI {text[:64]!r}")
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME_RE.fullmatch(scheme):
        raise ValueError(f"bad URI scheme in {text[:64]!r}")
    low = scheme.lower()
    if low == "sip" or low == "sips":
        return _parse_sip(low, rest)
    if low == "tel":
        return _parse_tel(rest)
    if allow_other and rest:
        return URI(scheme=low, user=rest)
    raise UnsupportedScheme(low)


def _parse_sip(scheme: str, rest: str) -> URI:
    user: str | None = None
    password: str | None = None
    # '@' is not allowed unescaped in user, password, parameters or headers (RFC 3261 25.1),
    # so the first one ends the userinfo even when the user part contains ';' or '?'.
    at = rest.find("@")
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user_text, has_pw, pw_text = userinfo.partition(":")
        if not _USER_RE.fullmatch(user_text):
            raise ValueError(f"bad user part {user_text[:64]!r}")
        user = _unescape(user_text)
        if has_pw:
            if not _PASSWORD_RE.fullmatch(pw_text):
                raise ValueError("bad password part")
            password = _unescape(pw_text)
    headers: tuple[tuple[str, str], ...] = ()
    q = rest.find("?")
    if q >= 0:
        headers = _parse_uri_headers(rest[q + 1 :])
        rest = rest[:q]
    hostport, _, params_text = rest.partition(";")
    host, port = parse_hostport(hostport)
    params = _parse_uri_params(params_text) if params_text else ()
    return URI(scheme, user, password, host, port, params, headers)


def parse_hostport(text: str) -> tuple[str, int | None]:
    """Split ``host[:port]``; IPv6 references lose their brackets. Raises ``ValueError``."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not _IPV6_RE.fullmatch(text[1:end]) or ":" not in text[1:end]:
            raise ValueError(f"bad IPv6 reference {text[:64]!r}")
        host = text[1:end]
        after = text[end + 1 :]
        if not after:
            return host, None
        if after[0] != ":":
            raise ValueError(f"bad host {text[:64]!r}")
        port_text = after[1:]
    else:
        host, sep, port_text = text.partition(":")
        if not HOSTNAME_RE.fullmatch(host):
            raise ValueError(f"bad host {host[:64]!r}")
        if not sep:
            return host, None
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise ValueError(f"bad port {port_text[:16]!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range {port}")
    return host, port


def _parse_uri_params(text: str) -> Params:
    out: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        name, eq, value = item.partition("=")
        if not _PARAMCHARS_RE.fullmatch(name) or (eq and not _PARAMCHARS_RE.fullmatch(value)):
            raise ValueError(f"bad URI parameter {item[:64]!r}")
        out.append((_unescape(name), _unescape(value) if eq else None))
    return tuple(out)


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in text.split("&"):
        name, eq, value = item.partition("=")
        if not eq or not name or not _HNV_RE.fullmatch(name) or not _HNV_RE.fullmatch(value):
            raise ValueError(f"bad URI header {item[:64]!r}")
        out.append((_unescape(name), _unescape(value)))
    return tuple(out)


def _parse_tel(rest: str) -> URI:
    number, _, params_text = rest.partition(";")
    if not _TEL_RE.fullmatch(number):
        raise ValueError(f"bad telephone number {number[:64]!r}")
    params = _parse_uri_params(params_text) if params_text else ()
    return URI(scheme="tel", user=_unescape(number), params=params)


def format_uri(uri: URI) -> str:
    """Write a URI, escaping each component where the RFC 3261 grammar requires it."""
    return _format_uri_cached(uri)


@lru_cache(maxsize=4096)
def _format_uri_cached(uri: URI) -> str:
    scheme = uri.scheme
    if scheme not in ("sip", "sips", "tel"):
        return f"{scheme}:{uri.user or ''}"
    parts = [scheme, ":"]
    if scheme == "tel":
        parts.append(_escape(uri.user or "", _PLAIN_PASSWORD_RE, "+-.()*#"))
    else:
        if uri.user is not None:
            parts.append(_escape(uri.user, _PLAIN_USER_RE, _SAFE_USER))
            if uri.password is not None:
                parts.append(":")
                parts.append(_escape(uri.password, _PLAIN_PASSWORD_RE, _SAFE_PASSWORD))
            parts.append("@")
        parts.append(uri.host_port)
    for name, value in uri.params:
        parts.append(";")
        parts.append(_escape(name, _PLAIN_PARAM_RE, _SAFE_PARAM))
        if value is not None:
            parts.append("=")
            parts.append(_escape(value, _PLAIN_PARAM_RE, _SAFE_PARAM))
    sep = "?"
    for name, value in uri.headers:
        parts.append(sep)
        parts.append(_escape(name, _PLAIN_HEADER_RE, _SAFE_HEADER))
        parts.append("=")
        parts.append(_escape(value, _PLAIN_HEADER_RE, _SAFE_HEADER))
        sep = "&"
    return "".join(parts)


def parse_params(text: str) -> Params:
    """Parse ``*( SEMI generic-param )`` (RFC 3261 section 25.1), as found after a header value.

    ``text`` is empty or starts with ``;``. Whitespace around ``;`` and ``=`` is allowed (SEMI and
    EQUAL include SWS). Quoted values keep their quotes so they are written back unchanged.
    Raises ``ValueError`` on an empty parameter (``;;``) or anything else out of the grammar.
    """
    if _PARAMS_FAST_RE.fullmatch(text):
        # No whitespace, no quotes: the one regex above has checked every name and value.
        fast: list[tuple[str, str | None]] = []
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            fast.append((name, value if eq else None))
        return tuple(fast)
    text = text.strip()
    if not text:
        return ()
    if text[0] != ";":
        raise ValueError(f"expected ';' before parameters in {text[:64]!r}")
    items = text[1:].split(";") if '"' not in text else _split_outside_quotes(text[1:], ";")
    out: list[tuple[str, str | None]] = []
    for item in items:
        name, eq, value = item.partition("=")
        name = name.strip()
        if not TOKEN_RE.fullmatch(name):
            raise ValueError(f"bad parameter {item.strip()[:64]!r}")
        if eq:
            value = value.strip()
            if not _GEN_VALUE_RE.fullmatch(value):
                raise ValueError(f"bad value for parameter {name!r}")
            out.append((name, value))
        else:
            out.append((name, None))
    return tuple(out)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out: list[str] = []
    start = 0
    i = 0
    n = len(text)
    in_quotes = False
    while i < n:
        c = text[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == sep:
            out.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes:
        raise ValueError("unterminated quoted string")
    out.append(text[start:])
    return out


def format_params(params: Params) -> str:
    """Write header parameters as ``;name=value`` (values written as stored)."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def parse_name_addr(text: str) -> NameAddr:
    """Parse ``name-addr / addr-spec`` followed by header parameters (RFC 3261 section 20.10).

    ``"Display" <sip:u@h;uriparam>;hparam`` or ``Display <...>`` or ``sip:u@h;hparam``. In the
    last form the parameters belong to the header, and a URI holding ``,``, ``?`` or ``;`` would
    have had to be in angle brackets. Any registered URI scheme is accepted here (RFC 4475
    section 3.3.4); the application decides whether a tel: or http: URI makes sense.
    Raises ``ValueError``.
    """
    text = text.strip()
    if text.startswith('"'):
        m = _QUOTED_RE.match(text)
        if m is None:
            raise ValueError("unterminated quoted display name")
        gt = text.find(">", m.end())
    else:
        lt = text.find("<")
        if lt < 0:
            return _parse_addr_spec(text)
        gt = text.find(">", lt)
    if gt < 0:
        raise ValueError("missing '>'")
    # The display name and URI repeat (same peers); only the parameters (tags) vary.
    head = text[: gt + 1]
    display, uri = _addr_part_cached(head) if len(head) <= _CACHE_MAX_LEN else _addr_part(head)
    params = parse_params(text[gt + 1 :]) if gt + 1 < len(text) else ()
    return NameAddr(uri, display, params)


@lru_cache(maxsize=4096)
def _addr_part_cached(head: str) -> tuple[str | None, URI]:
    return _addr_part(head)


def _addr_part(head: str) -> tuple[str | None, URI]:
    """``[display-name] "<" URI ">"``, ``head`` ending with the ``>``."""
    display: str | None = None
    if head.startswith('"'):
        m = _QUOTED_RE.match(head)
        assert m is not None  # checked by the caller
        raw = m.group(1)
        display = _QUOTED_PAIR_RE.sub(r"\1", raw) if "\\" in raw else raw
        rest = head[m.end() :].lstrip()
        if not rest.startswith("<"):
            raise ValueError("expected '<' after display name")
    else:
        lt = head.find("<")
        name = head[:lt].strip()
        if name:
            # RFC 4475 section 3.1.1.6: LWS before '<' may be missing; the tokens themselves
            # must still be tokens (3.1.2.15 rejects "Bell, Alexander <...>").
            if not _DISPLAY_TOKENS_RE.fullmatch(name):
                raise ValueError(f"bad display name {name[:64]!r}")
            display = name
        rest = head[lt:]
    return display, parse_uri(rest[1:-1], allow_other=True)


def _parse_addr_spec(text: str) -> NameAddr:
    uri_text, semi, params_text = text.partition(";")
    uri_text = uri_text.rstrip()
    if "?" in uri_text or "," in uri_text:
        raise ValueError("a URI with '?' or ',' must be enclosed in '<>' (RFC 3261 20.10)")
    uri = parse_uri(uri_text, allow_other=True)
    params = parse_params(semi + params_text) if semi else ()
    return NameAddr(uri, None, params)


def format_name_addr(na: NameAddr) -> str:
    """Write ``"Display" <uri>;params``; always the name-addr form, which is always valid.

    A value the parser read whole is written back as it arrived (``NameAddr.raw``).
    """
    if na.raw is not None:
        return na.raw
    if is_wildcard(na):
        return "*"
    uri = format_uri(na.uri)
    params = format_params(na.params) if na.params else ""
    if na.display_name is None:
        return f"<{uri}>{params}"
    name = na.display_name
    if _MUST_ESCAPE_IN_QUOTES_RE.search(name) or "\r" in name or "\n" in name:
        # CR and LF cannot be carried even as quoted-pairs (RFC 3261 25.1): they become SP.
        name = name.replace("\r", " ").replace("\n", " ")
        name = _MUST_ESCAPE_IN_QUOTES_RE.sub(lambda m: "\\" + m.group(0), name)
    return f'"{name}" <{uri}>{params}'
