"""Header names and the parsers for header values (RFC 3261 sections 7.3 and 20).

Header names are case-insensitive and many have a one-letter compact form (RFC 3261 section
7.3.3 plus later extensions); :func:`canonical_name` maps every known spelling to one long
name with its conventional capitalisation, and leaves unknown names as they came. The value
parsers each take the text of one header (folded lines already joined, the message parser does
that) and raise ``ValueError`` with a short reason when it is outside the grammar.
"""

from __future__ import annotations

import re

from softswitch.sip.message import CSeq, NameAddr, Params, Via
from softswitch.sip.uri import (
    HOSTNAME_RE,
    TOKEN_CHARS,
    TOKEN_RE,
    WILDCARD,
    parse_hostport,
    parse_name_addr,
    parse_params,
)

__all__ = [
    "COMPACT_FORMS",
    "canonical_name",
    "parse_contact_list",
    "parse_content_type",
    "parse_cseq",
    "parse_expires",
    "parse_max_forwards",
    "parse_name_addr_list",
    "parse_params",
    "parse_route_list",
    "parse_token_list",
    "parse_via",
    "split_comma_list",
]

MAX_CSEQ = 2**32 - 1
"""RFC 3261 section 8.1.1.5: the CSeq number is a 32-bit unsigned integer."""

COMPACT_FORMS: dict[str, str] = {
    "a": "Accept-Contact",  # RFC 3841
    "b": "Referred-By",  # RFC 3892
    "c": "Content-Type",
    "d": "Request-Disposition",  # RFC 3841
    "e": "Content-Encoding",
    "f": "From",
    "i": "Call-ID",
    "j": "Reject-Contact",  # RFC 3841
    "k": "Supported",
    "l": "Content-Length",
    "m": "Contact",
    "n": "Identity-Info",  # RFC 4474
    "o": "Event",  # RFC 6665
    "r": "Refer-To",  # RFC 3515
    "s": "Subject",
    "t": "To",
    "u": "Allow-Events",  # RFC 6665
    "v": "Via",
    "x": "Session-Expires",  # RFC 4028
    "y": "Identity",  # RFC 8224
}

_LONG_NAMES = (
    "Accept",
    "Accept-Contact",
    "Accept-Encoding",
    "Accept-Language",
    "Alert-Info",
    "Allow",
    "Allow-Events",
    "Authentication-Info",
    "Authorization",
    "Call-ID",
    "Call-Info",
    "Contact",
    "Content-Disposition",
    "Content-Encoding",
    "Content-Language",
    "Content-Length",
    "Content-Type",
    "CSeq",
    "Date",
    "Diversion",
    "Error-Info",
    "Event",
    "Expires",
    "From",
    "History-Info",
    "Identity",
    "Identity-Info",
    "In-Reply-To",
    "Max-Forwards",
    "MIME-Version",
    "Min-Expires",
    "Min-SE",
    "Organization",
    "P-Asserted-Identity",
    "P-Preferred-Identity",
    "Path",
    "Priority",
    "Privacy",
    "Proxy-Authenticate",
    "Proxy-Authorization",
    "Proxy-Require",
    "RAck",
    "Reason",
    "Record-Route",
    "Refer-To",
    "Referred-By",
    "Reject-Contact",
    "Remote-Party-ID",
    "Replaces",
    "Reply-To",
    "Request-Disposition",
    "Require",
    "Retry-After",
    "Route",
    "RSeq",
    "Server",
    "Service-Route",
    "Session-Expires",
    "SIP-ETag",
    "SIP-If-Match",
    "Subject",
    "Subscription-State",
    "Supported",
    "Timestamp",
    "To",
    "Unsupported",
    "User-Agent",
    "Via",
    "Warning",
    "WWW-Authenticate",
)

CANONICAL: dict[str, str] = {name.lower(): name for name in _LONG_NAMES}
CANONICAL.update(COMPACT_FORMS)


def canonical_name(name: str) -> str:
    """Long form with conventional capitalisation (``"i"`` -> ``"Call-ID"``); unknown names as given."""
    name = name.strip()
    return CANONICAL.get(name.lower(), name)


def split_comma_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and ``<>``.

    Elements are stripped; empty elements are dropped (use the value parsers below for headers
    where an empty element is an error).
    """
    return [item for item in _split_commas(value) if item]


def _split_commas(value: str) -> list[str]:
    if "," not in value:
        return [value.strip()]
    if '"' not in value and "<" not in value:
        return [item.strip() for item in value.split(",")]
    out: list[str] = []
    start = 0
    depth = 0
    in_quotes = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if in_quotes:
            if c == "\\":
                i += 1
            elif c == '"':
                in_quotes = False
        elif c == '"':
            in_quotes = True
        elif c == "<":
            depth += 1
        elif c == ">":
            depth = max(0, depth - 1)
        elif c == "," and depth == 0:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return out


def _split_strict(value: str, what: str) -> list[str]:
    items = _split_commas(value)
    if "" in items:
        raise ValueError(f"empty element in {what} list")
    return items


# sent-protocol = protocol-name SLASH protocol-version SLASH transport; SLASH = SWS "/" SWS.
_VIA_RE = re.compile(
    r"([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)\s*/\s*([A-Za-z0-9\-.!%*_+`'~]+)"
    r"\s+(\[[^\]\s]*\]|[^\s:;\[\]]+)(?:\s*:\s*([0-9]+))?\s*(;.*)?",
    re.DOTALL,
)


# One entry as nearly every peer writes it: SIP/2.0, an upper-case transport, a host name or
# IPv4 address as HOSTNAME_RE reads it, maybe a port, parameters without spaces or quotes.
_PLAIN_VIA_RE = re.compile(
    r"SIP/2\.0/(UDP|TCP|TLS|SCTP|WS|WSS) ([A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?)"
    rf"(?::([0-9]{{1,5}}))?((?:;[{TOKEN_CHARS}]+(?:=[{TOKEN_CHARS}\[\]:]+)?)*)"
)


def parse_via(value: str) -> list[Via]:
    """Parse one Via header value, which may hold several comma-separated entries (20.42)."""
    m = _PLAIN_VIA_RE.fullmatch(value)
    if m is not None:
        # What the general path below makes of it, without its separate checks.
        transport, host, port_text, params_text = m.groups()
        number = None if port_text is None else int(port_text)
        if number is None or number <= 65535:
            plain: list[tuple[str, str | None]] = []
            if params_text:
                for item in params_text[1:].split(";"):
                    name, eq, param = item.partition("=")
                    plain.append((name, param if eq else None))
            return [Via(transport, host, number, tuple(plain))]
    out: list[Via] = []
    for item in _split_strict(value, "Via"):
        m = _VIA_RE.fullmatch(item)
        if m is None:
            raise ValueError(f"bad Via entry {item[:64]!r}")
        name, version, transport, host, port_text, params_text = m.groups()
        port: int | None = None
        if host[0] == "[":
            host, port = parse_hostport(host if port_text is None else f"{host}:{port_text}")
        else:
            if not HOSTNAME_RE.fullmatch(host):
                raise ValueError(f"bad Via host {host[:64]!r}")
            if port_text is not None:
                port = int(port_text)
                if port > 65535 or len(port_text) > 5:
                    raise ValueError("Via port out of range")
        params = parse_params(params_text) if params_text else ()
        protocol = "SIP/2.0" if name == "SIP" and version == "2.0" else f"{name.upper()}/{version}"
        out.append(Via(transport.upper(), host, port, params, protocol))
    return out


_CSEQ_RE = re.compile(rf"\s*0*([0-9]{{1,10}})\s+([{TOKEN_CHARS}]+)\s*")


def parse_cseq(value: str) -> CSeq:
    """``CSeq: 1*DIGIT LWS Method`` with the number at most 2**32-1 (RFC 3261 8.1.1.5)."""
    m = _CSEQ_RE.fullmatch(value)
    if m is None:
        raise ValueError(f"expected a number and a method in {value[:32]!r}")
    seq = int(m.group(1))
    if seq > MAX_CSEQ:
        raise ValueError("sequence number out of range")
    return CSeq(seq, m.group(2))


def parse_name_addr_list(value: str) -> list[NameAddr]:
    """A comma-separated list of name-addr / addr-spec values (Route, Record-Route, Path...)."""
    return [parse_name_addr(item) for item in _split_strict(value, "address")]


def parse_route_list(value: str) -> list[NameAddr]:
    """Route / Record-Route / Path / Service-Route: name-addr only (RFC 3261 section 20.34)."""
    out: list[NameAddr] = []
    for item in _split_strict(value, "route"):
        if "<" not in item:
            raise ValueError("route entries must be in angle brackets")
        out.append(parse_name_addr(item))
    return out


def parse_contact_list(value: str) -> list[NameAddr]:
    """Contact values (RFC 3261 section 20.10); ``*`` gives ``[WILDCARD]`` (see ``is_wildcard``)."""
    if value.strip() == "*":
        return [WILDCARD]
    return parse_name_addr_list(value)


def parse_token_list(value: str) -> list[str]:
    """Require, Supported, Proxy-Require, Unsupported, Allow: tokens; an empty header is ``[]``."""
    if not value.strip():
        return []
    items = _split_strict(value, "token")
    for item in items:
        if not TOKEN_RE.fullmatch(item):
            raise ValueError(f"bad token {item[:32]!r}")
    return items


def _parse_uint(value: str, what: str, limit: int) -> int:
    value = value.strip()
    # Leading zeros are legal (RFC 4475 section 3.1.1.1); the length check bounds int().
    if not (value.isascii() and value.isdigit()) or len(value.lstrip("0")) > len(str(limit)):
        raise ValueError(f"bad {what} {value[:16]!r}")
    number = int(value)
    if number > limit:
        raise ValueError(f"{what} out of range")
    return number


def parse_max_forwards(value: str) -> int:
    """Max-Forwards: 0..255 (RFC 3261 section 20.22)."""
    return _parse_uint(value, "Max-Forwards", 255)


def parse_expires(value: str) -> int:
    """Expires / expires param: delta-seconds up to 2**32-1 (RFC 3261 section 20.19).

    An out-of-range value raises; RFC 4475 section 3.1.2.4 lets the caller use its default.
    """
    return _parse_uint(value, "Expires", 2**32 - 1)


def parse_content_type(value: str) -> tuple[str, Params]:
    """``type/subtype;params`` -> (``"type/subtype"`` in lower case, parameters) (20.15)."""
    media, semi, rest = value.partition(";")
    typ, slash, sub = media.strip().partition("/")
    typ = typ.strip()
    sub = sub.strip()
    if not slash or not TOKEN_RE.fullmatch(typ) or not TOKEN_RE.fullmatch(sub):
        raise ValueError(f"bad media type {media.strip()[:64]!r}")
    params = parse_params(semi + rest) if semi else ()
    return f"{typ.lower()}/{sub.lower()}", params
