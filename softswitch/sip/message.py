"""SIP message model (RFC 3261 sections 7, 20 and 25).

Messages are frozen values. The headers every transaction and dialog needs (Via, From, To,
Call-ID, CSeq) are parsed once, when the message is read, into typed fields; every other header
stays as text in ``headers`` (canonical long names, original order) and is parsed on demand by
the helpers in :mod:`softswitch.sip.headers`. Content-Length is never stored: the serializer
writes it from ``body``.

Parsing lives in :mod:`softswitch.sip.parser`; it never raises, it returns a ``BadMessage`` that
carries the status code to answer (400, 505, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import TypeVar

Params = tuple[tuple[str, str | None], ...]
_Raw = TypeVar("_Raw", "NameAddr", "Via")
_T = TypeVar("_T")
HeaderList = tuple[tuple[str, str], ...]


def quick_init(cls: type[_T]) -> type[_T]:
    """Give a frozen, slotted dataclass an ``__init__`` that costs about half as much.

    The ``__init__`` dataclasses writes for a frozen class stores each field through
    ``object.__setattr__`` (the class's own ``__setattr__`` refuses), and messages, their
    parts and the events about them are built a few dozen times per SIP transaction. This one
    stores through the slots' descriptors directly: same signature, same defaults, fields with
    ``init=False`` set to their default, and instances as frozen as before.
    """
    names: dict[str, object] = {}
    args: list[str] = []
    body: list[str] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not dataclasses.MISSING or f.kw_only:
            raise TypeError(f"{cls.__name__}.{f.name}: quick_init takes plain defaults only")
        names[f"_set_{f.name}"] = cls.__dict__[f.name].__set__
        value = f.name
        if f.default is not dataclasses.MISSING:
            names[f"_default_{f.name}"] = f.default
            if f.init:
                args.append(f"{f.name}=_default_{f.name}")
            else:
                value = f"_default_{f.name}"
        elif f.init:
            args.append(f.name)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: a field outside __init__ needs a default")
        body.append(f"    _set_{f.name}(self, {value})")
    source = f"def __init__(self, {', '.join(args)}) -> None:\n" + "\n".join(body or ["    pass"])
    exec(source, names)  # the way dataclasses itself builds __init__
    init = names["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"  # type: ignore[attr-defined]
    type.__setattr__(cls, "__init__", init)
    return cls


def _params_str(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def get_param(params: Params, name: str) -> str | None:
    """Value of parameter ``name`` (case-insensitive); ``""`` for a flag; ``None`` if absent."""
    name = name.lower()
    for k, v in params:
        # Parameters are nearly always written in lower case: compare as-is before lowering.
        if k == name or k.lower() == name:
            return "" if v is None else v
    return None


def set_param(params: Params, name: str, value: str | None) -> Params:
    """Return ``params`` with ``name`` set to ``value`` (replacing an existing one)."""
    low = name.lower()
    out = [(k, v) for k, v in params if k.lower() != low]
    out.append((name, value))
    return tuple(out)


@quick_init
@dataclass(frozen=True, slots=True)
class URI:
    """A sip:, sips: or tel: URI (RFC 3261 section 19.1, RFC 3966).

    ``user`` and ``host`` hold the *unescaped* values; ``__str__`` escapes them again where the
    grammar requires. For tel: URIs the number is in ``user`` and ``host`` is empty.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: Params = ()
    headers: HeaderList = ()

    def __str__(self) -> str:
        from softswitch.sip.uri import format_uri

        return format_uri(self)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    @property
    def host_port(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return host if self.port is None else f"{host}:{self.port}"


@quick_init
@dataclass(frozen=True, slots=True)
class NameAddr:
    """From/To/Contact/Route value: optional display name, a URI, header parameters."""

    uri: URI
    display_name: str | None = None
    params: Params = ()
    #: The header text this value was parsed from, echoed as-is in responses (RFC 3261 8.2.6.2
    #: copies From/To; writing them again costs more than the rest of a response). Not an init
    #: field, so ``dataclasses.replace`` and every constructor start without it: only the
    #: parser sets it, through :func:`with_raw`, on values it read whole.
    raw: str | None = field(default=None, init=False, compare=False, repr=False)

    @property
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        return replace(self, params=set_param(self.params, "tag", tag))

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def __str__(self) -> str:
        from softswitch.sip.uri import format_name_addr

        return format_name_addr(self)


@quick_init
@dataclass(frozen=True, slots=True)
class Via:
    """One Via entry (RFC 3261 section 20.42); ``transport`` is upper case (``UDP``, ``TCP``)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol: str = "SIP/2.0"
    #: The header text this entry was parsed from (see ``NameAddr.raw``).
    raw: str | None = field(default=None, init=False, compare=False, repr=False)
    #: branch, received and rport, read from ``params`` on first use: every transaction
    #: match and every response's destination asks for them, and parsed Vias are shared.
    _known: tuple[str | None, str | None, str | None] | None = field(
        default=None, init=False, compare=False, repr=False
    )

    def _read_known(self) -> tuple[str | None, str | None, str | None]:
        params = self.params
        known = (get_param(params, "branch"), get_param(params, "received"),
                 get_param(params, "rport"))  # fmt: skip
        object.__setattr__(self, "_known", known)
        return known

    @property
    def branch(self) -> str | None:
        return (self._known or self._read_known())[0]

    @property
    def received(self) -> str | None:
        return (self._known or self._read_known())[1]

    @property
    def rport(self) -> str | None:
        return (self._known or self._read_known())[2]

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def __str__(self) -> str:
        if self.raw is not None:
            return self.raw
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"{self.protocol}/{self.transport} {host}{port}{_params_str(self.params)}"


@quick_init
@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


class _HeaderAccess:
    """What requests and responses share: header look-ups and the wire form."""

    __slots__ = ()
    headers: HeaderList

    def header(self, name: str) -> str | None:
        """First value of header ``name`` (long name, case-insensitive), or ``None``."""
        return header_value(self.headers, name)

    def header_all(self, name: str) -> list[str]:
        """Every value of ``name``, comma-separated lists split."""
        return header_values(self.headers, name)

    def __bytes__(self) -> bytes:
        from softswitch.sip.serializer import serialize

        return serialize(self)  # type: ignore[arg-type]


@quick_init
@dataclass(frozen=True, slots=True)
class Request(_HeaderAccess):
    method: str
    uri: URI
    vias: tuple[Via, ...]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: CSeq
    headers: HeaderList = ()
    body: bytes = b""
    version: str = "SIP/2.0"


@quick_init
@dataclass(frozen=True, slots=True)
class Response(_HeaderAccess):
    status: int
    reason: str
    vias: tuple[Via, ...]
    from_: NameAddr
    to: NameAddr
    call_id: str
    cseq: CSeq
    headers: HeaderList = ()
    body: bytes = b""
    version: str = "SIP/2.0"


Message = Request | Response


@quick_init
@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message that could not be accepted, and what to answer.

    ``status`` is the response code the RFC asks for (400, 505, 501, 416, 420, 415, 413 ...),
    or ``None`` when the right action is to drop it silently (a bad response, garbage).
    ``request`` holds whatever could be recovered to build that answer (Via, From, To, Call-ID,
    CSeq): when it is ``None`` no answer can be addressed and the datagram is dropped.
    ``extra_headers`` go into the answer (Allow for 501, Unsupported for 420, Accept for 415).
    """

    reason: str
    status: int | None = 400
    request: Request | None = None
    extra_headers: HeaderList = ()


def with_raw(value: _Raw, text: str) -> _Raw:
    """Remember the text ``value`` was parsed from (the parser's use only)."""
    object.__setattr__(value, "raw", text)
    return value


#: Every known header's canonical spelling (set from softswitch.sip.headers on first use).
#: Two of them never match each other case-insensitively, so a header stored under one of
#: them (as the parser stores every known header) needs no lower-casing to be compared.
_known_names: frozenset[str] = frozenset()


def _load_known_names() -> frozenset[str]:
    global _known_names
    from softswitch.sip.headers import CANONICAL

    _known_names = frozenset(CANONICAL.values())
    return _known_names


def header_value(headers: HeaderList, name: str) -> str | None:
    """First value of header ``name`` (canonical long name, case-insensitive)."""
    low = name.lower()
    known = _known_names or _load_known_names()
    if name in known:
        for k, v in headers:
            if k == name or (k not in known and k.lower() == low):
                return v
        return None
    for k, v in headers:
        if k.lower() == low:
            return v
    return None


def header_values(headers: HeaderList, name: str) -> list[str]:
    """All values of ``name``, in order, with comma-separated lists already split."""
    from softswitch.sip.headers import split_comma_list

    low = name.lower()
    known = _known_names or _load_known_names()
    exact = name in known
    out: list[str] = []
    for k, v in headers:
        if k == name if exact and k in known else k.lower() == low:
            out.extend(split_comma_list(v))
    return out


@quick_init
@dataclass(frozen=True, slots=True)
class Address:
    """A transport address: where a datagram came from or goes to."""

    host: str
    port: int
    transport: str = "UDP"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"


__all__ = [
    "URI",
    "Address",
    "BadMessage",
    "CSeq",
    "HeaderList",
    "Message",
    "NameAddr",
    "Params",
    "Request",
    "Response",
    "Via",
    "get_param",
    "header_value",
    "header_values",
    "quick_init",
    "set_param",
    "with_raw",
]
