"""Read SIP messages from datagrams and byte streams (RFC 3261 sections 7, 18.3 and 20).

:func:`parse_message` never raises. A message it cannot accept becomes a :class:`BadMessage`
carrying the status to answer (400, 413, 416, 505) and, for a request, whatever could be
recovered to address that answer (Via, From, To, Call-ID, CSeq); a bad response is dropped
(``status=None``). Errors do not stop the parse: the first one decides the status, and the
rest of the header section is still read, leniently, so the answer can be built.

The common case is a few ``bytes.find``/``str.split`` calls and one dict lookup per header
line; character-level work (quoted strings, escapes, folding) happens only when the text
holds the character that needs it. Only Via, From, To, Call-ID, CSeq, Content-Length,
Max-Forwards and (on requests) Contact are examined; every other header stays as text.

Rules that are policy, not syntax, are left to the endpoint: 501 for an unknown method (the
method is parsed as any token), 420 for an unknown Require, 415 for an unknown body type.

:class:`StreamFramer` cuts a TCP/TLS byte stream into messages using Content-Length, which is
mandatory there (RFC 3261 section 18.3); a framing error is fatal to the connection.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from softswitch.sip.headers import (
    CANONICAL,
    parse_contact_list,
    parse_cseq,
    parse_max_forwards,
    parse_via,
)
from softswitch.sip.message import (
    URI,
    BadMessage,
    CSeq,
    NameAddr,
    Request,
    Response,
    Via,
    with_raw,
)
from softswitch.sip.uri import TOKEN_RE, UnsupportedScheme, parse_name_addr, parse_uri

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE",
    "MAX_STREAM_MESSAGE",
    "MAX_UDP_MESSAGE",
    "MAX_VIAS",
    "StreamFramer",
    "parse_message",
]

log = logging.getLogger(__name__)

MAX_UDP_MESSAGE = 65535
"""Largest datagram accepted (the UDP length field's limit)."""
MAX_STREAM_MESSAGE = 262144
"""Default cap on one message (header section + body) read from a stream."""
MAX_HEADERS = 128
"""Most header lines (after unfolding) in one message."""
MAX_LINE = 8192
"""Longest header line (after unfolding)."""
MAX_VIAS = 70
"""Most Via entries; RFC 4475 section 3.1.1.7 (longreq) carries 34 and must parse."""

_FOLD_RE = re.compile(r"\n[ \t]+")
_VERSION_RE = re.compile(r"SIP/[0-9]+\.[0-9]+", re.IGNORECASE)
# callid = word [ "@" word ] (RFC 3261 section 25.1)
_WORD = r"[A-Za-z0-9\-.!%*_+`'~()<>:\\\"/\[\]?{}]+"
_CALLID_RE = re.compile(rf"{_WORD}(?:@{_WORD})?")
_LAX_ANGLE_RE = re.compile(r"<\s*([^<>\s]+)\s*>")
_LAX_TAG_RE = re.compile(r";\s*tag\s*=\s*([^;,\s]+)", re.IGNORECASE)
_LAX_VIA_RE = re.compile(
    r"\s*SIP\s*/\s*2\.0\s*/\s*([A-Za-z]+)\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)"
    r"(?:\s*:\s*([0-9]{1,5}))?",
    re.IGNORECASE,
)
_LAX_CSEQ_RE = re.compile(r"\s*([0-9]{1,40})\s+(\S+)")
_CL_STREAM_RE = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")
_FOLD_BYTES_RE = re.compile(rb"\r?\n[ \t]+")

# Header kinds the parser handles itself; everything else goes to ``headers`` as text.
_VIA, _FROM, _TO, _CALL_ID, _CSEQ, _CONTENT_LENGTH, _MAX_FORWARDS, _CONTACT = range(8)
_SPECIAL = {
    "Via": _VIA,
    "From": _FROM,
    "To": _TO,
    "Call-ID": _CALL_ID,
    "CSeq": _CSEQ,
    "Content-Length": _CONTENT_LENGTH,
    "Max-Forwards": _MAX_FORWARDS,
    "Contact": _CONTACT,
}
_SINGLE_NAMES = {_FROM: "From", _TO: "To", _CALL_ID: "Call-ID", _CSEQ: "CSeq"}
#: Header name as written -> (canonical name, kind or None), for the spellings peers use: the
#: canonical one, all lower case, all upper case, and the compact forms. Any other spelling
#: takes the general path (strip, lower case, CANONICAL), with the same result.
_EXACT_NAMES: dict[str, tuple[str, int | None]] = {}
for _low, _canon in CANONICAL.items():
    for _spelling in (_canon, _low, _low.upper()):
        _EXACT_NAMES[_spelling] = (_canon, _SPECIAL.get(_canon))
#: Methods that are tokens (the request line check), without the regular expression.
_TOKEN_METHODS = frozenset(
    ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
     "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE")
)  # fmt: skip


def parse_message(
    data: bytes, *, stream: bool = False, max_size: int = MAX_UDP_MESSAGE
) -> Request | Response | BadMessage:
    """Parse one message: a whole datagram, or one frame cut by :class:`StreamFramer`.

    Datagram rules (``stream=False``, RFC 3261 section 18.3): without Content-Length the body
    is the rest of the datagram; octets after Content-Length bytes of body are ignored (RFC
    4475 section 3.1.1.8); a Content-Length beyond the datagram is a 400. With ``stream=True``
    Content-Length is required. Never raises.
    """
    try:
        return _parse(data, stream, max_size)
    except Exception:  # a parser bug must cost one message, never the transport
        log.exception("SIP parser failed on a %d-byte message", len(data))
        return BadMessage("Unparsable message", status=None)


class _Errors:
    """The first error decides the answer; later ones only go to the log."""

    __slots__ = ("reason", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.reason: str | None = None

    def add(self, status: int, reason: str) -> None:
        if self.reason is None:
            self.status = status
            self.reason = reason
        else:
            log.debug("further SIP parse error: %s", reason)


def _parse(data: bytes, stream: bool, max_size: int) -> Request | Response | BadMessage:
    errors = _Errors()
    n = len(data)
    # RFC 3261 section 7.5: CRLFs before the start line are ignored.
    start = 0
    while start < n and data[start] in (13, 10):
        start += 1
    if start == n:
        return BadMessage("Empty message", status=None)
    if n > max_size:
        errors.add(413, "Message Too Large")

    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start, crlf if crlf >= 0 else n)
    if lf >= 0:
        head_end, body_start = lf, lf + 2
    elif crlf >= 0:
        head_end, body_start = crlf, crlf + 4
    elif stream:
        return BadMessage("Incomplete header section", status=None)
    else:
        # RFC 3261 7.5 wants the empty line; a datagram is complete anyway, so be lenient.
        head_end = body_start = n

    head = data[start:head_end].decode("utf-8", "surrogateescape")
    if "\r" in head:
        head = head.replace("\r\n", "\n")
        if "\r" in head:
            errors.add(400, "Bad line ending (bare CR)")
            # Not kept in what is recovered for the 400: the serializer refuses a CR in a
            # value, and raised out of the endpoint instead of answering (issue 11, fuzzing).
            head = head.replace("\r", " ")
    if "\n " in head or "\n\t" in head:
        # RFC 3261 section 7.3.1: a line starting with SP or HT continues the previous one.
        head = _FOLD_RE.sub(" ", head)
    lines = head.split("\n")
    if len(lines) > MAX_HEADERS + 1:
        return BadMessage(f"Too many header fields (more than {MAX_HEADERS})", status=400)
    if len(head) > MAX_LINE and max(map(len, lines)) > MAX_LINE:
        errors.add(400, f"Header line longer than {MAX_LINE} characters")

    first = lines[0]
    is_response = first[:4].upper() == "SIP/"
    method = ""
    uri = _NO_URI
    version = "SIP/2.0"
    status = 0
    reason = ""
    if is_response:
        parts = first.split(" ", 2)
        code = parts[1] if len(parts) > 1 else ""
        if parts[0].upper() != "SIP/2.0":
            return BadMessage(f"Bad status line version {parts[0][:16]!r}", status=None)
        if (
            len(code) != 3
            or not code.isascii()
            or not code.isdigit()
            or not 100 <= int(code) <= 699
        ):
            return BadMessage(f"Bad status code {code[:16]!r}", status=None)
        status = int(code)
        reason = parts[2] if len(parts) > 2 else ""
    else:
        method, uri, version = _request_line(first, errors)

    vias_raw: list[str] = []
    single: dict[int, str] = {}
    cl_raw: str | None = None
    contacts: list[str] = []
    max_forwards: list[str] = []
    headers: list[tuple[str, str]] = []
    exact_get = _EXACT_NAMES.get
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            errors.add(400, f"Bad header line {line[:40]!r}")
            continue
        known = exact_get(name)
        if known is None:
            name = name.rstrip(" \t")
            canon = CANONICAL.get(name.lower())
            if canon is None:
                if not TOKEN_RE.fullmatch(name):
                    errors.add(400, f"Bad header name {name[:40]!r}")
                    continue
                canon = name
            kind = _SPECIAL.get(canon)
        else:
            canon, kind = known
        value = value.strip(" \t")
        if kind is None:
            headers.append((canon, value))
        elif kind == _VIA:
            vias_raw.append(value)
        elif kind in _SINGLE_NAMES:
            if kind in single:
                errors.add(400, f"Multiple {canon} headers")
            else:
                single[kind] = value
        elif kind == _CONTENT_LENGTH:
            if cl_raw is None:
                cl_raw = value
            elif value != cl_raw:
                errors.add(400, "Conflicting Content-Length headers")
        else:
            if kind == _MAX_FORWARDS:
                max_forwards.append(value)
            elif not is_response:
                contacts.append(value)
            headers.append((canon, value))

    vias = _vias(vias_raw, errors)
    from_ = _address(single.get(_FROM), "From", errors)
    to = _address(single.get(_TO), "To", errors)
    call_id = _call_id(single.get(_CALL_ID), errors)
    cseq = _cseq(single.get(_CSEQ), errors, method)
    if cseq is not None and not is_response and cseq.method != method and method:
        errors.add(400, "CSeq method does not match the request method")
    for value in max_forwards:
        if len(value) < 3 and value.isdigit() and value.isascii():
            continue  # 0..99: the usual 70, without the call
        try:
            parse_max_forwards(value)
        except ValueError as exc:
            errors.add(400, f"Bad Max-Forwards header: {exc}")
    for value in contacts:
        plain = _PLAIN_CONTACT_RE.fullmatch(value)
        if plain is not None and (plain.group(1) is None or int(plain.group(1)) <= 65535):
            continue  # a form parse_contact_list always accepts
        try:
            _check_contact(value)
        except ValueError as exc:
            errors.add(400, f"Bad Contact header: {exc}")

    body = _body(data, body_start, cl_raw, stream, errors)

    if is_response:
        if errors.reason is not None:
            return BadMessage(errors.reason, status=None)
        assert vias and from_ and to and call_id and cseq  # missing ones were errors
        return Response(status, reason, vias, from_, to, call_id, cseq, tuple(headers), body)
    request = None
    if vias and from_ is not None and to is not None and call_id and cseq is not None:
        request = Request(
            method, uri, vias, from_, to, call_id, cseq, tuple(headers), body, version
        )
    if errors.reason is not None:
        return BadMessage(errors.reason, status=errors.status, request=request)
    assert request is not None
    return request


#: The Contact of nearly every request: <sip:user@host[:port];uri-params>;params, each part
#: drawn from characters the general parser accepts there without unescaping (a subset of
#: its grammar, so a match is a Contact it would accept); the port is checked by the caller.
_PLAIN_CONTACT_RE = re.compile(
    r"<sip:[A-Za-z0-9\-_.!~*'()&=+$,]+@[A-Za-z0-9](?:[A-Za-z0-9\-.]*[A-Za-z0-9.])?"
    r"(?::([0-9]{1,5}))?(?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+)?)*>"
    r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~\[\]:]+)?)*"
)


@lru_cache(maxsize=1024)
def _check_contact(value: str) -> None:
    """Contacts repeat (one per peer): remember the good ones; bad ones raise every time."""
    parse_contact_list(value)


_NO_URI = URI(host="")
"""Stands in for a Request-URI that could not be read, so the 400/416 can still be built."""


def _request_line(line: str, errors: _Errors) -> tuple[str, URI, str]:
    """Method, URI and version; problems are recorded in ``errors``."""
    if len(line) <= _CACHED_LEN:
        clean = _clean_request_line(line)
        if clean is not None:
            return clean
    return _read_request_line(line, errors)


@lru_cache(maxsize=4096)
def _clean_request_line(line: str) -> tuple[str, URI, str] | None:
    """A request line that reads without error, shared (the same numbers ring again and
    again); ``None`` when it has an error, which the caller then reads again to record."""
    errors = _Errors()
    parsed = _read_request_line(line, errors)
    return parsed if errors.reason is None else None


def _read_request_line(line: str, errors: _Errors) -> tuple[str, URI, str]:
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        # Extra or trailing SP (RFC 4475 3.1.2.9, 3.1.2.10) or LWS in the URI (3.1.2.8).
        errors.add(400, "Bad request line")
        parts = line.split()
        if len(parts) != 3:
            return (parts[0] if parts else ""), _NO_URI, "SIP/2.0"
    method, uri_text, version = parts
    if method not in _TOKEN_METHODS and not TOKEN_RE.fullmatch(method):
        errors.add(400, "Bad method in request line")
    if version != "SIP/2.0":
        if version.upper() == "SIP/2.0":
            version = "SIP/2.0"
        elif _VERSION_RE.fullmatch(version):
            errors.add(505, "Version Not Supported")
        else:
            errors.add(400, "Bad SIP version in request line")
    try:
        uri = parse_uri(uri_text)
    except UnsupportedScheme as exc:
        errors.add(416, f"Unsupported URI Scheme {exc.scheme[:32]!r}")
        uri = _NO_URI
    except ValueError as exc:
        errors.add(400, f"Bad Request-URI: {exc}")
        uri = _NO_URI
    else:
        if uri.headers:
            # RFC 3261 section 19.1.1: headers are not allowed in a Request-URI (RFC 4475 3.1.2.11).
            errors.add(400, "Bad Request-URI: header components are not allowed")
    return method, uri, version


def _vias(values: list[str], errors: _Errors) -> tuple[Via, ...]:
    if not values:
        errors.add(400, "Missing Via header")
        return ()
    if len(values) > MAX_VIAS:
        errors.add(400, "Too many Via headers")
        values = values[:MAX_VIAS]
    out: list[Via] = []
    for value in values:
        try:
            out.extend(_cached_via(value) if len(value) <= _CACHED_LEN else _via(value))
        except ValueError as exc:
            errors.add(400, f"Bad Via header: {exc}")
            out.extend(_lax_via(value))
    if len(out) > MAX_VIAS:
        errors.add(400, "Too many Via headers")
        del out[MAX_VIAS:]
    return tuple(out)


#: Header values up to this length are parse-cached (8192 each): bounded memory whatever
#: a peer sends (at most a few MB), and real From/To/Via values are far shorter.
_CACHED_LEN = 256


def _via(value: str) -> tuple[Via, ...]:
    parsed = tuple(parse_via(value))
    if len(parsed) == 1:
        with_raw(parsed[0], value)
    return parsed


@lru_cache(maxsize=8192)
def _cached_via(value: str) -> tuple[Via, ...]:
    """Parsed Via values, shared: a CANCEL and an ACK repeat their INVITE's Via word for word.

    The values are frozen, so sharing one between messages is safe; errors are not cached.
    """
    return _via(value)


@lru_cache(maxsize=8192)
def _cached_name_addr(value: str) -> NameAddr:
    """From/To values, shared like :func:`_cached_via` (the CANCEL repeats both)."""
    return with_raw(parse_name_addr(value), value)


@lru_cache(maxsize=8192)
def _cached_cseq(value: str) -> CSeq:
    """CSeq values, shared like :func:`_cached_via` (``1 INVITE``, and its CANCEL and ACK)."""
    return parse_cseq(value)


def _lax_via(value: str) -> list[Via]:
    """Best effort on a broken Via, only to address the 400 (RFC 3261 section 18.2.2)."""
    first = value.split(",", 1)[0]
    m = _LAX_VIA_RE.match(first)
    if m is None:
        return []
    transport, host, port = m.groups()
    params: list[tuple[str, str | None]] = []
    for item in first[m.end() :].split(";"):
        name, eq, val = item.partition("=")
        name = name.strip()
        val = val.strip()
        if TOKEN_RE.fullmatch(name) and (not eq or TOKEN_RE.fullmatch(val)):
            params.append((name, val if eq else None))
    return [Via(transport.upper(), host.strip("[]"), int(port) if port else None, tuple(params))]


def _address(value: str | None, name: str, errors: _Errors) -> NameAddr | None:
    if value is None:
        errors.add(400, f"Missing {name} header")
        return None
    try:
        if len(value) <= _CACHED_LEN:
            return _cached_name_addr(value)
        return with_raw(parse_name_addr(value), value)
    except ValueError as exc:
        errors.add(400, f"Bad {name} header: {exc}")
    # Recovery only: find something URI-shaped, keep the tag (the answer must echo it).
    m = _LAX_ANGLE_RE.search(value)
    candidate = m.group(1) if m else value.split(";", 1)[0].strip()
    try:
        uri = parse_uri(candidate, allow_other=True)
    except ValueError:
        return None
    tag = _LAX_TAG_RE.search(value[m.end() :] if m else value)
    return NameAddr(uri, None, (("tag", tag.group(1)),) if tag else ())


def _call_id(value: str | None, errors: _Errors) -> str:
    if value is None:
        errors.add(400, "Missing Call-ID header")
        return ""
    if not _CALLID_RE.fullmatch(value):
        errors.add(400, "Bad Call-ID header")
        # Echo it anyway when printable: the answer must carry the Call-ID as sent.
        return value if value.isprintable() else ""
    return value


def _cseq(value: str | None, errors: _Errors, method: str) -> CSeq | None:
    if value is None:
        errors.add(400, "Missing CSeq header")
        return None
    try:
        return _cached_cseq(value) if len(value) <= _CACHED_LEN else parse_cseq(value)
    except ValueError as exc:
        errors.add(400, f"Bad CSeq header: {exc}")
    # RFC 4475 3.1.2.4: the 400 answers an out-of-range CSeq, so echo the number as sent.
    m = _LAX_CSEQ_RE.match(value)
    if m is not None and TOKEN_RE.fullmatch(m.group(2)):
        return CSeq(int(m.group(1)), m.group(2))
    # No usable number: the client matches the answer on branch and CSeq method (RFC 3261
    # section 17.1.3), so a 0 with the right method still reaches its transaction.
    words = value.split()
    last = words[-1] if words else ""
    fallback = last if TOKEN_RE.fullmatch(last) and not last.isdigit() else method
    return CSeq(0, fallback) if fallback else None


def _body(data: bytes, body_start: int, cl_raw: str | None, stream: bool, errors: _Errors) -> bytes:
    available = len(data) - body_start
    if cl_raw is None:
        if stream:
            errors.add(400, "Missing Content-Length header (required on streams, RFC 3261 18.3)")
            return b""
        return data[body_start:]
    if not (cl_raw.isascii() and cl_raw.isdigit()) or len(cl_raw.lstrip("0")) > 10:
        errors.add(400, "Bad Content-Length header")
        return b""
    length = int(cl_raw)
    if length > available:
        errors.add(400, "Content-Length larger than the message body")
        return b""
    return data[body_start : body_start + length]


class StreamFramer:
    """Cut a TCP/TLS byte stream into SIP messages (RFC 3261 section 18.3).

    ``feed`` returns the messages completed by the new bytes. CRLF keep-alives between
    messages are skipped; each double-CRLF ping (RFC 5626 section 3.5.1) adds one to ``pings``
    and the caller answers it with a single CRLF. A framing error (no or bad Content-Length,
    a header section or message over the caps) yields one ``BadMessage`` and sets ``failed``:
    the position of the next message is unknown, so the caller closes the connection.
    """

    def __init__(self, *, max_message: int = MAX_STREAM_MESSAGE, max_head: int = 65535) -> None:
        self.max_message = max_message
        self.max_head = max_head
        self.pings = 0
        self.failed = False
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Response | BadMessage]:
        """Add received bytes; return every message they complete, in order."""
        if self.failed:
            return []
        buf = self._buf
        buf += data
        out: list[Request | Response | BadMessage] = []
        while buf:
            if buf[0] in (13, 10):
                if buf[:4] == b"\r\n\r\n":
                    self.pings += 1
                    del buf[:4]
                    continue
                if len(buf) < 4 and b"\r\n\r\n".startswith(bytes(buf)):
                    break  # maybe the start of a ping
                del buf[: 2 if buf[:2] == b"\r\n" else 1]
                continue
            end = buf.find(b"\r\n\r\n")
            sep_len = 4
            lf = buf.find(b"\n\n", 0, end if end >= 0 else len(buf))
            if lf >= 0:
                end, sep_len = lf, 2
            if end < 0:
                if len(buf) > self.max_head:
                    out.append(self._fail(BadMessage("Header section too large", status=400)))
                break
            if end > self.max_head:
                out.append(self._fail(self._head_error(end, sep_len, 400, "Header too large")))
                break
            head = bytes(buf[:end])
            if b"\n " in head or b"\n\t" in head:
                # A folded Content-Length (RFC 3261 7.3.1) is still the length.
                head = _FOLD_BYTES_RE.sub(b" ", head)
            lengths = {v.strip() for v in _CL_STREAM_RE.findall(head)}
            if len(lengths) != 1:
                out.append(self._fail(self._head_error(end, sep_len, 400, "")))
                break
            cl_text = lengths.pop()
            if not cl_text.isdigit() or len(cl_text) > 10:
                out.append(self._fail(self._head_error(end, sep_len, 400, "")))
                break
            total = end + sep_len + int(cl_text)
            if total > self.max_message:
                out.append(self._fail(self._head_error(end, sep_len, 413, "Message Too Large")))
                break
            if len(buf) < total:
                break
            frame = bytes(buf[:total])
            del buf[:total]
            out.append(parse_message(frame, stream=True, max_size=self.max_message))
        return out

    def _head_error(self, end: int, sep_len: int, status: int, reason: str) -> BadMessage:
        """Parse the header section alone so the error answer can be addressed."""
        parsed = parse_message(bytes(self._buf[: end + sep_len]), stream=True)
        if isinstance(parsed, Response) or (
            isinstance(parsed, BadMessage) and parsed.status is None
        ):
            return BadMessage(reason or "Bad Content-Length", status=None)
        request = parsed if isinstance(parsed, Request) else parsed.request
        if not reason:
            reason = parsed.reason if isinstance(parsed, BadMessage) else "Bad Content-Length"
        return BadMessage(reason, status=status, request=request)

    def _fail(self, bad: BadMessage) -> BadMessage:
        self.failed = True
        self._buf.clear()
        return bad
