"""SDP parsing and building (RFC 8866, formerly 4566) and audio offer/answer (RFC 3264).

Theory of operation: ``parse_sdp`` turns untrusted bytes into frozen values or raises
``SdpError``; it checks size and count caps before doing any work and validates every field the
negotiation later relies on (ports, payload types, rtpmap, ptime), so the offer/answer code
never meets malformed data. ``SessionDescription.__bytes__`` serializes in the RFC 8866 line
order. ``make_offer`` builds our audio offer; ``negotiate_answer`` answers a remote offer using
the offerer's payload type numbers and mirrored direction (RFC 3264 section 6.1);
``parse_answer`` reads the answer to our own offer (RFC 3264 section 7). Both return a
``NegotiatedMedia`` that tells the media layer what to send where.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, NamedTuple

MAX_SDP_SIZE = 16 * 1024
MAX_LINES = 512
MAX_MEDIA = 16
MAX_FORMATS = 64
MAX_LINE_LENGTH = 2048

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")

# RFC 3551 section 6, table 4: static audio payload types usable without a=rtpmap.
STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
}
_STATIC_BY_NAME = {
    name: pt for pt, (name, _clock, _ch) in STATIC_PAYLOAD_TYPES.items() if pt in (0, 8, 9, 18)
}

TELEPHONE_EVENT = "TELEPHONE-EVENT"
_PLAIN_RTP = "RTP/AVP"

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ALLOWED_SESSION = set("vosiuepcbtrzkam")
_ALLOWED_MEDIA = set("icbka")


class SdpError(ValueError):
    """Malformed or unacceptable SDP. The only exception ``parse_sdp`` raises."""


class NoCommonCodec(SdpError):
    """Offer and our capabilities share no usable audio codec (the caller answers 488)."""


class Codec(NamedTuple):
    """One payload format of an m-line: ``(pt, NAME, clock_rate, channels, fmtp)``."""

    pt: int
    name: str
    clock_rate: int
    channels: int
    fmtp: str | None


@dataclass(frozen=True, slots=True)
class Origin:
    """The o= line (RFC 8866 section 5.2)."""

    username: str
    session_id: str
    version: int
    address: str
    addr_type: str = "IP4"
    net_type: str = "IN"

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.version} "
            f"{self.net_type} {self.addr_type} {self.address}"
        )


@dataclass(frozen=True, slots=True)
class Connection:
    """A c= line (RFC 8866 section 5.7); ``ttl``/``count`` only for multicast."""

    address: str
    addr_type: str = "IP4"
    net_type: str = "IN"
    ttl: int | None = None
    count: int | None = None

    @property
    def is_hold_address(self) -> bool:
        """RFC 2543 style hold (c=0.0.0.0), still sent by old UAs (RFC 3264 section 8.4)."""
        return self.address in ("0.0.0.0", "::")

    def __str__(self) -> str:
        addr = self.address
        if self.ttl is not None:
            addr += f"/{self.ttl}"
        if self.count is not None:
            addr += f"/{self.count}"
        return f"{self.net_type} {self.addr_type} {addr}"


@dataclass(frozen=True, slots=True)
class Attribute:
    """An a= line: ``a=name`` (flag, ``value`` None) or ``a=name:value``."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(frozen=True, slots=True)
class Timing:
    """A t= line with the r= lines that follow it."""

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One m= section (RFC 8866 section 5.14) with its media-level lines."""

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: Connection | None = None
    attributes: tuple[Attribute, ...] = ()
    port_count: int | None = None
    information: str | None = None
    bandwidths: tuple[tuple[str, int], ...] = ()
    key: str | None = None

    @property
    def is_rtp(self) -> bool:
        return "RTP/" in self.proto.upper()

    def attribute(self, name: str) -> str | None:
        """Value of the first ``a=name`` (``""`` for a flag), or None if absent."""
        low = name.lower()
        for a in self.attributes:
            if a.name.lower() == low:
                return "" if a.value is None else a.value
        return None

    def attribute_values(self, name: str) -> list[str]:
        low = name.lower()
        return [
            "" if a.value is None else a.value for a in self.attributes if a.name.lower() == low
        ]

    @property
    def direction(self) -> Direction | None:
        """Media-level direction attribute, if any (see ``SessionDescription.direction_of``)."""
        return _direction_in(self.attributes)

    @property
    def ptime(self) -> int | None:
        value = self.attribute("ptime")
        return None if value is None else _parse_ptime(value)

    def fmtp(self, fmt: str | int) -> str | None:
        key = str(fmt)
        for value in self.attribute_values("fmtp"):
            pt, _, params = value.partition(" ")
            if pt == key:
                return params.strip()
        return None

    def codecs(self) -> list[Codec]:
        """Formats in offer order as ``Codec``; static PTs need no rtpmap (RFC 3551).

        Dynamic payload types without an rtpmap are unknown and left out.
        """
        if not self.is_rtp:
            return []
        maps: dict[int, tuple[str, int, int]] = {}
        fmtps: dict[str, str] = {}  # what fmtp() gives, read in one pass: the first one wins
        for a in self.attributes:
            low = a.name.lower()
            if low == "rtpmap":
                pt, name, clock, channels = _parse_rtpmap("" if a.value is None else a.value)
                maps.setdefault(pt, (name, clock, channels))
            elif low == "fmtp":
                key, _, params = ("" if a.value is None else a.value).partition(" ")
                fmtps.setdefault(key, params.strip())
        out: list[Codec] = []
        for fmt in self.formats:
            pt = int(fmt)
            entry = maps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
            if entry is not None:
                out.append(Codec(pt, entry[0], entry[1], entry[2], fmtps.get(str(pt))))
        return out

    @property
    def rtcp_port(self) -> int | None:
        """Port from ``a=rtcp`` (RFC 3605), if present."""
        value = self.attribute("rtcp")
        return None if value is None else int(value.split()[0])


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A whole SDP body. Build with ``parse_sdp``, ``make_offer`` or directly."""

    origin: Origin
    session_name: str = "-"
    connection: Connection | None = None
    times: tuple[Timing, ...] = (Timing(),)
    media: tuple[MediaDescription, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    bandwidths: tuple[tuple[str, int], ...] = ()
    time_zones: str | None = None
    key: str | None = None

    def __bytes__(self) -> bytes:
        return build_sdp(self)

    def connection_of(self, m: MediaDescription) -> Connection | None:
        """The c= that applies to ``m``: its own, else the session's (RFC 8866 section 5.7)."""
        return m.connection if m.connection is not None else self.connection

    def direction_of(self, m: MediaDescription) -> Direction:
        """Media-level direction, else session-level, else sendrecv (RFC 3264 section 5.1)."""
        return m.direction or _direction_in(self.attributes) or "sendrecv"

    def next_version(self) -> SessionDescription:
        """Copy with o= version + 1, as every changed re-offer needs (RFC 3264 section 8)."""
        return replace(self, origin=replace(self.origin, version=self.origin.version + 1))


@dataclass(frozen=True, slots=True)
class NegotiatedMedia:
    """Result of offer/answer for the audio stream, from our side's point of view.

    ``payload_type`` and ``telephone_event_pt`` are the numbers to put in RTP we send; on the
    answerer side they are the offerer's numbers. ``direction`` is our direction;
    ``remote_hold`` is True when the peer does not want our media (sendonly/inactive or
    c=0.0.0.0).
    """

    codec: str
    payload_type: int
    clock_rate: int
    remote_address: str
    remote_port: int
    ptime: int
    direction: Direction
    telephone_event_pt: int | None
    remote_hold: bool
    media_index: int
    remote_rtcp_port: int | None = None

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly")

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


@dataclass(frozen=True, slots=True)
class NegotiatedImage:
    """An accepted T.38 (m=image udptl t38) stream, for the fax relay."""

    remote_address: str
    remote_port: int
    media_index: int
    attributes: tuple[Attribute, ...] = ()


@dataclass(frozen=True, slots=True)
class AnswerResult:
    """What ``negotiate_answer`` produced: the SDP to send and the agreed streams.

    ``audio`` is None only when the offer carried no usable audio but an accepted image stream.
    """

    answer: SessionDescription
    audio: NegotiatedMedia | None
    image: NegotiatedImage | None = None


# ---------------------------------------------------------------------------------------------
# Parsing


#: A control character other than HT (not allowed in a value, RFC 8866 section 9).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse an SDP body; raise ``SdpError`` (never anything else) if it is malformed."""
    try:
        return _parse(data)
    except SdpError:
        raise
    except (ValueError, IndexError, OverflowError) as exc:
        # Any parse slip is still the peer's malformed input, never our crash.
        raise SdpError(f"malformed SDP: {exc}") from None


def _parse(data: bytes | str) -> SessionDescription:
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if len(raw) > MAX_SDP_SIZE:
        raise SdpError(f"SDP too large: {len(raw)} bytes > {MAX_SDP_SIZE}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not valid UTF-8") from None
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in text.split("\n")]
    lines = [ln for ln in lines if ln != ""]
    if len(lines) > MAX_LINES:
        raise SdpError(f"SDP has too many lines: {len(lines)} > {MAX_LINES}")
    if not lines:
        raise SdpError("empty SDP")

    parsed: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if len(line) > MAX_LINE_LENGTH:
            raise SdpError(f"line {number}: too long")
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            raise SdpError(f"line {number}: not '<type>=<value>': {line[:40]!r}")
        value = line[2:]
        if _CONTROL.search(value):
            raise SdpError(f"line {number}: control character in value")
        parsed.append((line[0], value))

    if parsed[0] != ("v", "0"):
        raise SdpError("SDP must start with v=0")

    session: dict[str, object] = {}
    origin: Origin | None = None
    session_name: str | None = None
    connection: Connection | None = None
    times: list[Timing] = []
    attributes: list[Attribute] = []
    emails: list[str] = []
    phones: list[str] = []
    bandwidths: list[tuple[str, int]] = []
    media: list[MediaDescription] = []
    current: dict[str, object] | None = None

    def finish_media() -> None:
        if current is not None:
            media.append(_build_media(current))

    for kind, value in parsed[1:]:
        if kind == "m":
            finish_media()
            if len(media) >= MAX_MEDIA:
                raise SdpError(f"too many m= sections (> {MAX_MEDIA})")
            current = _parse_m_line(value)
            continue
        if current is not None:
            if kind not in _ALLOWED_MEDIA:
                raise SdpError(f"'{kind}=' line not allowed in a media section")
            if kind == "a":
                current_attrs = current["attributes"]
                assert isinstance(current_attrs, list)
                current_attrs.append(_parse_attribute(value))
            elif kind == "c":
                if current.get("connection") is not None:
                    raise SdpError("more than one c= in a media section")
                current["connection"] = _parse_connection(value)
            elif kind == "b":
                current_bw = current["bandwidths"]
                assert isinstance(current_bw, list)
                current_bw.append(_parse_bandwidth(value))
            elif kind == "i":
                current["information"] = value
            else:
                current["key"] = value
            continue
        if kind not in _ALLOWED_SESSION or kind == "v":
            raise SdpError(f"unknown or misplaced '{kind}=' line")
        if kind == "o":
            if origin is not None:
                raise SdpError("more than one o= line")
            origin = _parse_origin(value)
        elif kind == "s":
            if session_name is not None:
                raise SdpError("more than one s= line")
            session_name = value
        elif kind == "c":
            if connection is not None:
                raise SdpError("more than one session-level c= line")
            connection = _parse_connection(value)
        elif kind == "t":
            times.append(_parse_timing(value))
        elif kind == "r":
            if not times:
                raise SdpError("r= without a preceding t=")
            times[-1] = replace(times[-1], repeats=(*times[-1].repeats, value))
        elif kind == "a":
            attributes.append(_parse_attribute(value))
        elif kind == "b":
            bandwidths.append(_parse_bandwidth(value))
        elif kind == "e":
            emails.append(value)
        elif kind == "p":
            phones.append(value)
        else:
            session[kind] = value
    finish_media()

    if origin is None:
        raise SdpError("missing o= line")
    info = session.get("i")
    uri = session.get("u")
    zones = session.get("z")
    key = session.get("k")
    return SessionDescription(
        origin=origin,
        session_name="-" if session_name is None else session_name,
        connection=connection,
        # Some UAs omit t=; RFC 8866 makes "t=0 0" the meaning of an unbounded session.
        times=tuple(times) or (Timing(),),
        media=tuple(media),
        attributes=tuple(attributes),
        information=info if isinstance(info, str) else None,
        uri=uri if isinstance(uri, str) else None,
        emails=tuple(emails),
        phones=tuple(phones),
        bandwidths=tuple(bandwidths),
        time_zones=zones if isinstance(zones, str) else None,
        key=key if isinstance(key, str) else None,
    )


def _fields(value: str, count: int, what: str) -> list[str]:
    parts = value.split()
    if len(parts) != count:
        raise SdpError(f"{what}: expected {count} fields, got {len(parts)}: {value[:60]!r}")
    return parts


def _int(text: str, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise SdpError(f"{what}: not a number: {text[:30]!r}")
    number = int(text)
    if not lo <= number <= hi:
        raise SdpError(f"{what}: {number} out of range {lo}..{hi}")
    return number


def _token(text: str, what: str) -> str:
    if not _TOKEN_RE.fullmatch(text):
        raise SdpError(f"{what}: bad token {text[:30]!r}")
    return text


def _parse_origin(value: str) -> Origin:
    user, sess_id, version, net, addr_type, address = _fields(value, 6, "o=")
    _int(sess_id, "o= session id")
    return Origin(
        username=user,
        session_id=sess_id,
        version=_int(version, "o= version"),
        address=address,
        addr_type=_token(addr_type, "o= address type"),
        net_type=_token(net, "o= network type"),
    )


def _parse_connection(value: str) -> Connection:
    net, addr_type, address = _fields(value, 3, "c=")
    host, *rest = address.split("/")
    if not host or len(rest) > 2:
        raise SdpError(f"c=: bad address {address[:60]!r}")
    ttl: int | None = None
    count: int | None = None
    if addr_type.upper() == "IP4" and rest:
        ttl = _int(rest[0], "c= TTL", 0, 255)
        if len(rest) == 2:
            count = _int(rest[1], "c= address count", 1, 65535)
    elif rest:
        # IP6 multicast carries no TTL (RFC 8866 section 5.7).
        if len(rest) == 2:
            raise SdpError("c=: IP6 address takes no TTL")
        count = _int(rest[0], "c= address count", 1, 65535)
    if addr_type.upper() == "IP4" and ":" in host:
        raise SdpError(f"c=: IP6 address {host!r} with address type IP4")
    return Connection(
        address=host,
        addr_type=_token(addr_type, "c= address type"),
        net_type=_token(net, "c= network type"),
        ttl=ttl,
        count=count,
    )


def _parse_timing(value: str) -> Timing:
    start, stop = _fields(value, 2, "t=")
    return Timing(_int(start, "t= start"), _int(stop, "t= stop"))


def _parse_bandwidth(value: str) -> tuple[str, int]:
    kind, sep, amount = value.partition(":")
    if not sep:
        raise SdpError(f"b=: expected <type>:<value>, got {value[:40]!r}")
    return _token(kind, "b= type"), _int(amount, "b= value")


def _parse_attribute(value: str) -> Attribute:
    name, sep, rest = value.partition(":")
    _token(name, "a= name")
    attr = Attribute(name, rest if sep else None)
    low = name.lower()
    # Validate the attributes negotiation depends on here, so later use cannot fail.
    if low == "rtpmap":
        _parse_rtpmap(attr.value or "")
    elif low == "ptime" or low == "maxptime":
        _parse_ptime(attr.value or "")
    elif low == "fmtp":
        fmt, _, _params = (attr.value or "").partition(" ")
        _token(fmt, "a=fmtp format")
    elif low == "rtcp":
        port = (attr.value or "").split()
        if not port:
            raise SdpError("a=rtcp without a port")
        _int(port[0], "a=rtcp port", 0, 65535)
    return attr


def _parse_rtpmap(value: str) -> tuple[int, str, int, int]:
    pt_text, _, encoding = value.partition(" ")
    pt = _int(pt_text, "a=rtpmap payload type", 0, 127)
    parts = encoding.strip().split("/")
    if len(parts) not in (2, 3) or not parts[0]:
        raise SdpError(f"a=rtpmap: expected <pt> <name>/<rate>[/<channels>], got {value[:60]!r}")
    name = _token(parts[0], "a=rtpmap encoding").upper()
    clock = _int(parts[1], "a=rtpmap clock rate", 1, 10_000_000)
    channels = _int(parts[2], "a=rtpmap channels", 1, 255) if len(parts) == 3 else 1
    return pt, name, clock, channels


def _parse_ptime(value: str) -> int:
    text = value.strip()
    whole, dot, frac = text.partition(".")
    if not whole.isascii() or not whole.isdigit() or (dot and not frac.isdigit()):
        raise SdpError(f"a=ptime: not a number: {text[:20]!r}")
    # Some UAs write "20.0"; sub-millisecond packetization is not used for audio here.
    ms = _int(whole, "a=ptime", 1, 10_000)
    return ms


def _parse_m_line(value: str) -> dict[str, object]:
    parts = value.split()
    if len(parts) < 3:
        raise SdpError(f"m=: expected <media> <port> <proto> <fmt>..., got {value[:60]!r}")
    media, port_text, proto, *formats = parts
    port_part, slash, count_text = port_text.partition("/")
    port = _int(port_part, "m= port", 0, 65535)
    port_count = _int(count_text, "m= port count", 1, 65535) if slash else None
    _token(media, "m= media")
    if not re.fullmatch(r"[A-Za-z0-9_\-.]+(/[A-Za-z0-9_\-.]+)*", proto):
        raise SdpError(f"m=: bad protocol {proto[:30]!r}")
    if len(formats) > MAX_FORMATS:
        raise SdpError(f"m=: too many formats ({len(formats)} > {MAX_FORMATS})")
    if not formats and port != 0:
        raise SdpError("m=: no formats")
    if "RTP/" in proto.upper():
        for fmt in formats:
            _int(fmt, "m= RTP payload type", 0, 127)
    else:
        for fmt in formats:
            _token(fmt, "m= format")
    return {
        "media": media,
        "port": port,
        "port_count": port_count,
        "proto": proto,
        "formats": tuple(formats),
        "attributes": [],
        "bandwidths": [],
    }


def _build_media(d: dict[str, object]) -> MediaDescription:
    attrs = d["attributes"]
    bws = d["bandwidths"]
    conn = d.get("connection")
    info = d.get("information")
    key = d.get("key")
    port = d["port"]
    port_count = d["port_count"]
    media_type = d["media"]
    proto = d["proto"]
    formats = d["formats"]
    assert isinstance(attrs, list) and isinstance(bws, list) and isinstance(port, int)
    assert isinstance(media_type, str) and isinstance(proto, str) and isinstance(formats, tuple)
    assert port_count is None or isinstance(port_count, int)
    return MediaDescription(
        media=media_type,
        port=port,
        proto=proto,
        formats=formats,
        connection=conn if isinstance(conn, Connection) else None,
        attributes=tuple(attrs),
        port_count=port_count,
        information=info if isinstance(info, str) else None,
        bandwidths=tuple(bws),
        key=key if isinstance(key, str) else None,
    )


def _direction_in(attributes: Iterable[Attribute]) -> Direction | None:
    for a in attributes:
        low = a.name.lower()
        for d in DIRECTIONS:
            if low == d and a.value is None:
                return d
    return None


# ---------------------------------------------------------------------------------------------
# Building


def build_sdp(sd: SessionDescription) -> bytes:
    """Serialize in the order RFC 8866 section 5 requires, CRLF line ends."""
    out = ["v=0", f"o={sd.origin}", f"s={sd.session_name or '-'}"]
    if sd.information is not None:
        out.append(f"i={sd.information}")
    if sd.uri is not None:
        out.append(f"u={sd.uri}")
    out += [f"e={e}" for e in sd.emails]
    out += [f"p={p}" for p in sd.phones]
    if sd.connection is not None:
        out.append(f"c={sd.connection}")
    out += [f"b={k}:{v}" for k, v in sd.bandwidths]
    for t in sd.times or (Timing(),):
        out.append(f"t={t.start} {t.stop}")
        out += [f"r={r}" for r in t.repeats]
    if sd.time_zones is not None:
        out.append(f"z={sd.time_zones}")
    if sd.key is not None:
        out.append(f"k={sd.key}")
    out += [f"a={a}" for a in sd.attributes]
    for m in sd.media:
        port = f"{m.port}/{m.port_count}" if m.port_count is not None else str(m.port)
        out.append(" ".join(["m=" + m.media, port, m.proto, *m.formats]))
        if m.information is not None:
            out.append(f"i={m.information}")
        if m.connection is not None:
            out.append(f"c={m.connection}")
        out += [f"b={k}:{v}" for k, v in m.bandwidths]
        if m.key is not None:
            out.append(f"k={m.key}")
        out += [f"a={a}" for a in m.attributes]
    return ("\r\n".join(out) + "\r\n").encode("utf-8")


def next_version(sd: SessionDescription) -> SessionDescription:
    """Module-level alias of ``SessionDescription.next_version``."""
    return sd.next_version()


def _addr_type(ip: str) -> str:
    try:
        return "IP6" if ipaddress.ip_address(ip).version == 6 else "IP4"
    except ValueError:
        return "IP6" if ":" in ip else "IP4"


def _check_direction(direction: str) -> Direction:
    for d in DIRECTIONS:
        if d == direction:
            return d
    raise ValueError(f"unknown direction {direction!r}")


def _static_codec(name: str) -> tuple[int, str, int]:
    upper = name.upper()
    pt = _STATIC_BY_NAME.get(upper)
    if pt is None:
        raise ValueError(f"codec {name!r} is not supported (known: {sorted(_STATIC_BY_NAME)})")
    return pt, upper, STATIC_PAYLOAD_TYPES[pt][1]


def make_offer(
    local_ip: str,
    rtp_port: int,
    *,
    session_id: int,
    version: int = 0,
    codecs: Sequence[str] = ("PCMU", "PCMA"),
    dtmf: bool = True,
    dtmf_pt: int = 101,
    ptime: int = 20,
    direction: str = "sendrecv",
    username: str = "-",
    session_name: str = "softswitch",
) -> SessionDescription:
    """Our audio offer (RFC 3264 section 5): codecs in preference order, RFC 4733 events.

    ``local_ip`` is the address peers must send to (the public one behind NAT). Raises
    ``ValueError`` for an unknown codec name or direction (a programming error).
    """
    if not codecs:
        raise ValueError("at least one codec is required")
    if not 96 <= dtmf_pt <= 127:
        raise ValueError("telephone-event needs a dynamic payload type (96..127)")
    addr_type = _addr_type(local_ip)
    formats: list[str] = []
    attrs: list[Attribute] = []
    for name in codecs:
        pt, upper, clock = _static_codec(name)
        formats.append(str(pt))
        attrs.append(Attribute("rtpmap", f"{pt} {upper}/{clock}"))
    if dtmf:
        formats.append(str(dtmf_pt))
        attrs.append(Attribute("rtpmap", f"{dtmf_pt} telephone-event/8000"))
        attrs.append(Attribute("fmtp", f"{dtmf_pt} 0-16"))
    attrs.append(Attribute("ptime", str(ptime)))
    attrs.append(Attribute(_check_direction(direction)))
    audio = MediaDescription(
        media="audio",
        port=rtp_port,
        proto=_PLAIN_RTP,
        formats=tuple(formats),
        attributes=tuple(attrs),
    )
    return SessionDescription(
        origin=Origin(username, str(session_id), version, local_ip, addr_type),
        session_name=session_name,
        connection=Connection(local_ip, addr_type),
        media=(audio,),
    )


# ---------------------------------------------------------------------------------------------
# Offer/answer


def _split(direction: Direction) -> tuple[bool, bool]:
    return direction in ("sendrecv", "sendonly"), direction in ("sendrecv", "recvonly")


def _join(send: bool, recv: bool) -> Direction:
    if send and recv:
        return "sendrecv"
    if send:
        return "sendonly"
    return "recvonly" if recv else "inactive"


def _answer_direction(offered: Direction, wanted: Direction) -> Direction:
    # RFC 3264 section 6.1: we may send only what they receive and receive only what they send.
    their_send, their_recv = _split(offered)
    our_send, our_recv = _split(wanted)
    return _join(our_send and their_recv, our_recv and their_send)


def _telephone_event(codecs: Iterable[Codec], clock_rate: int) -> int | None:
    for c in codecs:
        if c.name == TELEPHONE_EVENT and c.clock_rate == clock_rate:
            return c.pt
    return None


def _remote_address(sd: SessionDescription, m: MediaDescription, index: int) -> Connection:
    conn = sd.connection_of(m)
    if conn is None:
        raise SdpError(f"m= section {index} has no connection address (c=)")
    return conn


def _rejected(m: MediaDescription) -> MediaDescription:
    # RFC 3264 section 6: a rejected stream keeps its m= line with port 0.
    formats = m.formats or ("0",)
    return MediaDescription(media=m.media, port=0, proto=m.proto, formats=formats)


def negotiate_answer(
    offer: SessionDescription,
    local_ip: str,
    rtp_port: int,
    *,
    session_id: int,
    version: int = 0,
    supported: Sequence[str] = ("PCMU", "PCMA"),
    dtmf: bool = True,
    ptime: int = 20,
    direction: str = "sendrecv",
    image_port: int | None = None,
    username: str = "-",
    session_name: str = "softswitch",
) -> AnswerResult:
    """Answer a remote offer (RFC 3264 section 6).

    The first audio stream over RTP/AVP that shares a codec with ``supported`` is accepted; the
    codec is the first of the offer's list (the offerer's preference) that we support, with the
    offerer's payload type numbers. Every other m= line is answered with port 0, except an
    image (T.38) stream when ``image_port`` is given. Raises ``NoCommonCodec`` when nothing can
    be accepted (answer 488), ``SdpError`` when the offer lacks a connection address.
    """
    wanted = _check_direction(direction)
    supported_names = {_static_codec(n)[1]: _static_codec(n)[2] for n in supported}
    addr_type = _addr_type(local_ip)
    answer_media: list[MediaDescription] = []
    audio: NegotiatedMedia | None = None
    image: NegotiatedImage | None = None
    for index, m in enumerate(offer.media):
        if m.port == 0:
            answer_media.append(_rejected(m))
            continue
        if audio is None and m.media.lower() == "audio" and m.proto.upper() == _PLAIN_RTP:
            codecs = m.codecs()
            chosen = next(
                (
                    c
                    for c in codecs
                    if supported_names.get(c.name) == c.clock_rate and c.channels == 1
                ),
                None,
            )
            if chosen is not None:
                conn = _remote_address(offer, m, index)
                offered_dir = offer.direction_of(m)
                remote_hold = conn.is_hold_address or offered_dir in ("sendonly", "inactive")
                if conn.is_hold_address:
                    # RFC 3264 section 8.4: c=0.0.0.0 means "do not send to me".
                    offered_dir = _join(_split(offered_dir)[0], False)
                our_dir = _answer_direction(offered_dir, wanted)
                te_pt = _telephone_event(codecs, chosen.clock_rate) if dtmf else None
                formats = [str(chosen.pt)]
                attrs = [Attribute("rtpmap", f"{chosen.pt} {chosen.name}/{chosen.clock_rate}")]
                if chosen.fmtp is not None:
                    attrs.append(Attribute("fmtp", f"{chosen.pt} {chosen.fmtp}"))
                if te_pt is not None:
                    te_fmtp = m.fmtp(te_pt) or "0-15"
                    formats.append(str(te_pt))
                    attrs.append(
                        Attribute("rtpmap", f"{te_pt} telephone-event/{chosen.clock_rate}")
                    )
                    attrs.append(Attribute("fmtp", f"{te_pt} {te_fmtp}"))
                attrs.append(Attribute("ptime", str(ptime)))
                attrs.append(Attribute(our_dir))
                answer_media.append(
                    MediaDescription(
                        media=m.media,
                        port=rtp_port,
                        proto=m.proto,
                        formats=tuple(formats),
                        attributes=tuple(attrs),
                    )
                )
                audio = NegotiatedMedia(
                    codec=chosen.name,
                    payload_type=chosen.pt,
                    clock_rate=chosen.clock_rate,
                    remote_address=conn.address,
                    remote_port=m.port,
                    ptime=m.ptime or ptime,
                    direction=our_dir,
                    telephone_event_pt=te_pt,
                    remote_hold=remote_hold,
                    media_index=index,
                    remote_rtcp_port=m.rtcp_port,
                )
                continue
        if (
            image is None
            and image_port is not None
            and m.media.lower() == "image"
            and m.proto.lower() == "udptl"
            and any(f.lower() == "t38" for f in m.formats)
        ):
            conn = _remote_address(offer, m, index)
            # T.38 parameters are echoed; an answer may only lower them (ITU-T T.38 Annex D).
            t38_attrs = tuple(a for a in m.attributes if a.name.lower().startswith("t38"))
            answer_media.append(
                MediaDescription(
                    media=m.media,
                    port=image_port,
                    proto=m.proto,
                    formats=("t38",),
                    attributes=t38_attrs,
                )
            )
            image = NegotiatedImage(conn.address, m.port, index, t38_attrs)
            continue
        answer_media.append(_rejected(m))
    if audio is None and image is None:
        raise NoCommonCodec("no acceptable audio codec (or image stream) in the offer")
    answer = SessionDescription(
        origin=Origin(username, str(session_id), version, local_ip, addr_type),
        session_name=session_name,
        connection=Connection(local_ip, addr_type),
        media=tuple(answer_media),
    )
    return AnswerResult(answer=answer, audio=audio, image=image)


def parse_answer(
    offer: SessionDescription,
    answer: SessionDescription,
    *,
    default_ptime: int = 20,
) -> NegotiatedMedia:
    """Read the answer to our offer (RFC 3264 section 7) and return the agreed audio stream.

    The codec is the first one in the answer that we offered; payload types are taken from the
    answer (the numbers the answerer expects to receive). Raises ``SdpError`` if the answer does
    not match the offer's m= lines, ``NoCommonCodec`` if every audio stream was rejected.
    """
    if len(answer.media) != len(offer.media):
        raise SdpError(
            f"answer has {len(answer.media)} m= lines, offer had {len(offer.media)} "
            "(RFC 3264 section 6)"
        )
    for index, (om, am) in enumerate(zip(offer.media, answer.media, strict=True)):
        if om.media.lower() != am.media.lower():
            raise SdpError(f"m= line {index}: answer media {am.media!r} != offer {om.media!r}")
        if am.port == 0 or om.port == 0 or am.media.lower() != "audio":
            continue
        offered = {c.name: c.clock_rate for c in om.codecs() if c.name != TELEPHONE_EVENT}
        answer_codecs = am.codecs()
        chosen = next(
            (c for c in answer_codecs if offered.get(c.name) == c.clock_rate),
            None,
        )
        if chosen is None:
            continue
        conn = _remote_address(answer, am, index)
        answered_dir = answer.direction_of(am)
        if conn.is_hold_address:
            answered_dir = _join(_split(answered_dir)[0], False)
        our_send, our_recv = _split(offer.direction_of(om))
        their_send, their_recv = _split(answered_dir)
        offered_te = _telephone_event(om.codecs(), chosen.clock_rate)
        te_pt = (
            _telephone_event(answer_codecs, chosen.clock_rate) if offered_te is not None else None
        )
        return NegotiatedMedia(
            codec=chosen.name,
            payload_type=chosen.pt,
            clock_rate=chosen.clock_rate,
            remote_address=conn.address,
            remote_port=am.port,
            ptime=am.ptime or default_ptime,
            direction=_join(our_send and their_recv, our_recv and their_send),
            telephone_event_pt=te_pt,
            remote_hold=not their_recv,
            media_index=index,
            remote_rtcp_port=am.rtcp_port,
        )
    raise NoCommonCodec("the answer accepted no audio stream with a codec we offered")


__all__ = [
    "DIRECTIONS",
    "MAX_MEDIA",
    "MAX_SDP_SIZE",
    "STATIC_PAYLOAD_TYPES",
    "AnswerResult",
    "Attribute",
    "Codec",
    "Connection",
    "Direction",
    "MediaDescription",
    "NegotiatedImage",
    "NegotiatedMedia",
    "NoCommonCodec",
    "Origin",
    "SdpError",
    "SessionDescription",
    "Timing",
    "build_sdp",
    "make_offer",
    "negotiate_answer",
    "next_version",
    "parse_answer",
    "parse_sdp",
]
