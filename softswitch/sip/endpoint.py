"""The SIP endpoint: bytes in, bytes out, events for the application (aioquic's shape).

``receive_datagram(data, addr, now)`` parses, applies the transport rules of RFC 3261 section 18
(Via ``received``/``rport``, RFC 3581), answers what a UA must answer by itself (stateless 400 /
505 / 416 for bad requests, 501 / 405 with Allow, 420 with Unsupported, 415 with Accept, 483,
OPTIONS 200, CANCEL 200 + 487) and hands the transaction layer everything else. The application
sees only :class:`EndpointEvent` values from ``next_event()`` and answers with ``respond()`` or
starts requests with ``send_request()``. Time is always passed in; nothing here reads a clock or
touches a socket.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import lru_cache

from softswitch.sip import transaction as txl
from softswitch.sip.headers import (
    CANONICAL,
    parse_content_type,
    parse_max_forwards,
    parse_token_list,
    split_comma_list,
)
from softswitch.sip.ids import random_token
from softswitch.sip.message import (
    Address,
    BadMessage,
    HeaderList,
    Request,
    Response,
    Via,
    quick_init,
    set_param,
    with_raw,
)
from softswitch.sip.parser import parse_message
from softswitch.sip.serializer import serialize
from softswitch.sip.timers import TimerConfig

log = logging.getLogger("softswitch.sip")

#: Methods whose syntax we know (RFC 3261 and extensions). A known method we do not serve gets
#: 405, an unknown one 501 (RFC 3261 section 8.2.1).
KNOWN_METHODS = frozenset(
    (
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    )
)
MAGIC_COOKIE = "z9hG4bK"
#: Header names in the parser's canonical spelling; any other spelling is compared in lower case.
_CANONICAL_NAMES = frozenset(CANONICAL.values())
_POLICY_HEADERS = {"require": "Require", "max-forwards": "Max-Forwards",
                   "content-type": "Content-Type"}  # fmt: skip
_BARE_RPORT = re.compile(r";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """What the endpoint needs to know about itself."""

    host: str = "127.0.0.1"
    port: int = 5060
    allow: tuple[str, ...] = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")
    supported: tuple[str, ...] = ("timer",)
    accept: tuple[str, ...] = ("application/sdp",)
    user_agent: str = "softswitch"
    allow_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    timers: TimerConfig = field(default_factory=TimerConfig)


# --- events for the application -------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request the application must answer with :meth:`Endpoint.respond`."""

    tx: txl.ServerTransaction
    request: Request
    source: Address


@quick_init
@dataclass(frozen=True, slots=True)
class RequestCancelled:
    """A CANCEL matched a pending INVITE; the endpoint has sent 200 (CANCEL) and 487 (INVITE)."""

    tx: txl.ServerTransaction
    request: Request
    cancel: Request


@quick_init
@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK for a 2xx (outside any transaction, RFC 3261 section 17.1.1.3)."""

    request: Request
    source: Address


@quick_init
@dataclass(frozen=True, slots=True)
class ResponseReceived:
    tx: txl.ClientTransaction
    response: Response
    source: Address | None


@quick_init
@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A response with no transaction: a retransmitted 2xx to INVITE the UAC must re-ACK."""

    response: Response
    source: Address


@quick_init
@dataclass(frozen=True, slots=True)
class TransactionTimedOut:
    """Timer B/F (client) or H (server: the ACK never came) fired, or the transport failed."""

    tx: txl.Transaction


EndpointEvent = (
    RequestReceived
    | RequestCancelled
    | AckReceived
    | ResponseReceived
    | StrayResponse
    | TransactionTimedOut
)


_random_token = random_token


class Endpoint:
    """One SIP user agent on one address; all transports share it."""

    def __init__(
        self,
        config: EndpointConfig | None = None,
        *,
        token: Callable[[], str] = _random_token,
    ) -> None:
        self.config = config or EndpointConfig()
        self._token = token
        # Answered transactions waiting out Timer J or I are kept as small records: a trigger
        # call leaves two of them, held 32 s and 5 s (see TransactionLayer).
        self._layer = txl.TransactionLayer(
            self.config.timers, compact_lingering=True, encode=self._encode_final
        )
        #: The last final response a record encoded, with its bytes: _pump sends those bytes
        #: when it meets the same response (queued just before), not a second serialization.
        self._encoded: tuple[Response, bytes] | None = None
        #: One Address object per peer for the records' destinations (each datagram brings its
        #: own): a record then holds one object of its own, itself. Bounded like _fixed_vias.
        self._record_dests: dict[Address, Address] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._events: deque[EndpointEvent] = deque()
        self._to_tags: dict[int, str] = {}
        self._acl = tuple(ipaddress.ip_network(n, strict=False) for n in self.config.allow_from)
        self._acl_cache: dict[str, bool] = {}
        self._allow_header = ", ".join(self.config.allow)
        self._server_header: HeaderList = (("Server", self.config.user_agent),)
        #: (top Via text, source host, source port) -> that Via with received/rport set (or
        #: as it was, when it needs neither): a CANCEL and an ACK repeat their INVITE's Via
        #: from the same address.
        self._fixed_vias: dict[tuple[str, str, int], Via] = {}
        self._source: Address | None = None
        self.stats = {"received": 0, "dropped_acl": 0, "bad": 0, "sent": 0}

    # --- the sans-IO interface ----------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Handle one UDP datagram (or one framed TCP message) from ``addr``."""
        self.stats["received"] += 1
        allowed = self._acl_cache.get(addr.host)
        if not (self._allowed(addr.host) if allowed is None else allowed):
            # Scanners are not told we exist: no answer, one debug line.
            self.stats["dropped_acl"] += 1
            log.debug("dropped %d bytes from %s: source not in allow_from", len(data), addr)
            return
        msg = parse_message(data, stream=addr.transport != "UDP")
        self.receive_message(msg, addr, now)

    def receive_message(
        self, msg: Request | Response | BadMessage, addr: Address, now: float
    ) -> None:
        """Handle an already-parsed message (the TCP framer parses for us)."""
        if isinstance(msg, BadMessage):
            self._bad_message(msg, addr)
        elif isinstance(msg, Request):
            self._receive_request(msg, addr, now)
        else:
            # The layer's events do not say where a response came from; the trunk's digest
            # client must know (CVE-2021-41158), so remember it while the events are pumped.
            self._source = addr
            self._layer.receive_response(msg, addr, now)
        self._pump(now)
        self._source = None

    def handle_timer(self, now: float) -> None:
        self._layer.handle_timer(now)
        self._pump(now)

    def get_timer(self) -> float | None:
        return self._layer.get_timer()

    def datagrams_to_send(self) -> list[tuple[bytes, Address]]:
        out, self._out = self._out, []
        self.stats["sent"] += len(out)
        return out

    def next_event(self) -> EndpointEvent | None:
        return self._events.popleft() if self._events else None

    # --- the application's side ---------------------------------------------------------------

    def respond(
        self,
        tx: txl.ServerTransaction,
        status: int,
        reason: str | None = None,
        *,
        headers: HeaderList = (),
        body: bytes = b"",
        now: float,
        to_tag: str | None = None,
    ) -> Response:
        """Answer ``tx``. Responses above 100 carry one To tag per transaction (RFC 3261 8.2.6.2).

        ``to_tag`` fixes that tag (a dialog that chose its local tag); by default one is made.
        """
        request = tx.request
        if to_tag is not None:
            self._to_tags[id(tx)] = to_tag
        if status > 100 and request.to.tag is None:
            to_tag = self._to_tags.get(id(tx))
            if to_tag is None:
                to_tag = self._to_tags[id(tx)] = self._token()
        else:
            to_tag = None
        extra = self._server_header
        if status in (405, 501) or (request.method == "OPTIONS" and 200 <= status < 300):
            extra += (("Allow", self._allow_header),)
        response = txl.make_response(
            request, status, reason, to_tag=to_tag, headers=extra + tuple(headers), body=body
        )
        self._layer.send_response(tx, response, now)
        self._pump(now)
        return response

    def send_response(self, tx: txl.ServerTransaction, response: Response, now: float) -> None:
        """Send a response built elsewhere (a dialog's, or a 2xx retransmission, 13.3.1.4).

        Once the transaction is gone (a 2xx retransmission after Timer L) it goes statelessly
        to where the request came from, as the RFC's UAS core would.
        """
        if tx.terminated:
            self._out.append((serialize(response), self._response_dest(response.vias, tx.source)))
        else:
            self._layer.send_response(tx, response, now)
            self._pump(now)

    def send_request(self, request: Request, dest: Address, now: float) -> txl.ClientTransaction:
        """Start a client transaction; the top Via is ours and gets a fresh branch if it has none."""
        request = self.stamp_via(request, dest.transport)
        tx = self._layer.send_request(request, dest, now)
        self._pump(now)
        return tx

    def send_ack(self, ack: Request, dest: Address) -> None:
        """Send an ACK for a 2xx (not a transaction: RFC 3261 section 13.2.2.4)."""
        ack = self.stamp_via(ack, dest.transport)
        self._out.append((serialize(ack), dest))

    def new_branch(self) -> str:
        return MAGIC_COOKIE + self._token()

    def new_tag(self) -> str:
        return self._token()

    def new_call_id(self) -> str:
        return f"{self._token()}{self._token()}@{self.config.host}"

    def local_via(self, transport: str = "UDP") -> Via:
        return Via(
            transport=transport.upper(),
            host=self.config.host,
            port=self.config.port,
            params=(("branch", self.new_branch()), ("rport", None)),
        )

    def stamp_via(self, request: Request, transport: str = "UDP") -> Request:
        if request.vias and request.vias[0].branch:
            return request
        return replace(request, vias=(self.local_via(transport), *request.vias))

    def forget(self, tx: txl.ServerTransaction) -> None:
        self._to_tags.pop(id(tx), None)

    # --- what the node's caps need (softswitch.node.sources) ----------------------------------

    @property
    def server_transaction_count(self) -> int:
        """Live server transactions, answered ones included (they wait out Timer H/J/I, the
        last two as the layer's compact records)."""
        layer = self._layer
        return len(layer.server_transactions) + len(layer.lingering_servers)

    def find_server(self, request: Request) -> txl.ServerTransaction | txl.LingeringServer | None:
        """The live server transaction ``request`` belongs to (a retransmission), if any, or
        the compact record left of it while it waits out Timer J or I."""
        return self._layer.find_server(request)

    def allowed(self, host: str) -> bool:
        """Whether ``host`` is inside ``allow_from``."""
        return self._allowed(host)

    def reject(
        self, request: Request, status: int, addr: Address, *, headers: HeaderList = ()
    ) -> None:
        """Answer ``request`` statelessly, holding nothing (RFC 3261 section 8.2.7): the 503
        with Retry-After of a node over a cap (section 21.5.4). Never for an ACK."""
        if request.method == "ACK":
            return
        req = self._fix_via(request, addr)
        to_tag = self._token() if req.to.tag is None and status > 100 else None
        response = txl.make_response(
            req, status, to_tag=to_tag, headers=(*self._server_header, *headers)
        )
        self._out.append((serialize(response), self._response_dest(req.vias, addr)))

    # --- internals ----------------------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        cached = self._acl_cache.get(host)
        if cached is None:
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                cached = False
            else:
                cached = any(ip in net for net in self._acl)
            if len(self._acl_cache) > 4096:
                self._acl_cache.clear()
            self._acl_cache[host] = cached
        return cached

    def _bad_message(self, bad: BadMessage, addr: Address) -> None:
        self.stats["bad"] += 1
        req = bad.request
        if bad.status is None or req is None or req.method == "ACK":
            log.info("dropped a malformed message from %s: %s", addr, bad.reason)
            return
        log.info(
            "answering %d to a malformed %s from %s: %s", bad.status, req.method, addr, bad.reason
        )
        req = self._fix_via(req, addr)
        headers: HeaderList = (("Server", self.config.user_agent), *bad.extra_headers)
        if bad.status == 501:
            headers += (("Allow", self._allow_header),)
        # RFC 3261 section 8.2.6: a stateless answer, so a To tag is added for >100.
        to_tag = self._token() if req.to.tag is None else None
        response = txl.make_response(
            req, bad.status, _reason_for(bad), to_tag=to_tag, headers=headers
        )
        self._out.append((serialize(response), self._response_dest(req.vias, addr)))

    def _receive_request(self, req: Request, addr: Address, now: float) -> None:
        req = self._fix_via(req, addr)
        self._layer.receive_request(req, addr, now)

    def _fix_via(self, req: Request, addr: Address) -> Request:
        """RFC 3261 section 18.2.1 (received) and RFC 3581 (rport) on the top Via."""
        top = req.vias[0]
        raw = top.raw
        if raw is None:
            via = _fixed_via(top, addr)
        else:
            key = (raw, addr.host, addr.port)
            cached = self._fixed_vias.get(key)
            if cached is None:
                cached = _fixed_via(top, addr)
                if len(self._fixed_vias) >= 4096:
                    self._fixed_vias.clear()
                self._fixed_vias[key] = cached
            # The same text parses to an equal Via: unchanged then is unchanged now.
            via = top if cached.raw == raw else cached
        if via is top:
            return req
        return Request(
            req.method,
            req.uri,
            (via, *req.vias[1:]),
            req.from_,
            req.to,
            req.call_id,
            req.cseq,
            req.headers,
            req.body,
            req.version,
        )

    @staticmethod
    def _response_dest(vias: tuple[Via, ...], addr: Address) -> Address:
        """RFC 3261 section 18.2.2 with RFC 3581: where a response goes.

        ``vias`` are the request's (after ``_fix_via``); ``addr`` is where the request came from.
        """
        if addr.transport != "UDP" or not vias:
            return addr
        top = vias[0]
        rport = top.rport
        if rport and rport.isdigit() and 0 < int(rport) < 65536:
            return Address(top.received or addr.host, int(rport), "UDP")
        port = top.port or 5060
        if not 0 < port < 65536:
            # The sent-by of a malformed request, recovered to answer its 400: answer the
            # source (a port out of range made asyncio close the node's UDP socket).
            return addr
        return Address(top.received or top.host, port, "UDP")

    def _pump(self, now: float) -> None:
        """Move the transaction layer's output and events to ours, applying the UA's policy."""
        layer = self._layer
        while True:
            event = layer.next_event()
            if event is None:
                break
            self._dispatch(event, now)
        for message, dest in layer.messages_to_send():
            if isinstance(message, Response):
                dest = self._response_dest(message.vias, dest)
                encoded = self._encoded
                if encoded is not None and encoded[0] is message:
                    self._encoded = None
                    self._out.append((encoded[1], dest))
                    continue
            self._out.append((serialize(message), dest))
        self._out.extend(layer.wire_to_send())

    def _encode_final(self, response: Response, source: Address) -> tuple[bytes, Address]:
        """A final response as a lingering record keeps it: bytes, and where they go."""
        data = serialize(response)
        self._encoded = (response, data)
        dest = self._response_dest(response.vias, source)
        shared = self._record_dests.get(dest)
        if shared is None:
            if len(self._record_dests) >= 4096:
                self._record_dests.clear()
            shared = self._record_dests[dest] = dest
        return data, shared

    def _dispatch(self, event: txl.Event, now: float) -> None:
        # Most events are new requests and terminated transactions: test those first.
        if type(event) is txl.RequestReceived:
            self._new_request(event.tx, event.request, event.source, now)
        elif type(event) is txl.TransactionTerminated:
            if isinstance(event.tx, txl.ServerTransaction):
                self._to_tags.pop(id(event.tx), None)
        elif isinstance(event, txl.CancelReceived):
            self._cancel(event, now)
        elif isinstance(event, txl.AckReceived):
            self._events.append(AckReceived(event.request, event.source))
        elif isinstance(event, txl.ResponseReceived):
            source = self._source if self._source is not None else event.tx.dest
            self._events.append(ResponseReceived(event.tx, event.response, source))
        elif isinstance(event, txl.StrayResponse):
            self._events.append(StrayResponse(event.response, event.source))
        elif isinstance(event, (txl.TransactionTimeout, txl.TransportFailed)):
            self._events.append(TransactionTimedOut(event.tx))

    def _new_request(
        self, tx: txl.ServerTransaction, req: Request, source: Address, now: float
    ) -> None:
        method = req.method
        if method not in self.config.allow:
            status = 405 if method in KNOWN_METHODS else 501
            self.respond(tx, status, now=now)
            return
        # One pass for the three headers the policy reads (header() would scan once each).
        require: list[str] = []
        max_forwards: str | None = None
        ctype: str | None = None
        for name, value in req.headers:
            if name not in _CANONICAL_NAMES:
                # Unknown, or a known name spelled otherwise: compare as header() does.
                name = _POLICY_HEADERS.get(name.lower(), "")
            if name == "Require":
                require.append(value)
            elif name == "Max-Forwards":
                if max_forwards is None:
                    max_forwards = value
            elif name == "Content-Type" and ctype is None:
                ctype = value
        if require and method not in ("ACK", "CANCEL"):
            try:
                required = [
                    t
                    for v in require
                    for item in split_comma_list(v)
                    for t in parse_token_list(item)
                ]
            except ValueError:
                # Not tokens (RFC 3261 section 20.32): it used to raise out of the endpoint
                # and leave the request's server transaction in Trying for good.
                self.respond(tx, 400, "Bad Require", now=now)
                return
            unsupported = [t for t in required if t not in self.config.supported]
            if unsupported:
                # RFC 3261 section 8.2.2.3
                self.respond(tx, 420, headers=(("Unsupported", ", ".join(unsupported)),), now=now)
                return
        if (
            max_forwards is not None
            and method != "OPTIONS"
            and "0" in max_forwards  # the parser has read it; a zero has a 0 in it
            and _is_zero(max_forwards)
        ):
            self.respond(tx, 483, now=now)
            return
        if method == "INVITE" and req.body:
            media_type = _media_type(ctype) if ctype else ""
            if media_type is None:
                # Unreadable (RFC 3261 section 21.4.1); it used to raise out of the endpoint
                # and leave the INVITE's transaction in Proceeding for good.
                self.respond(tx, 400, "Bad Content-Type", now=now)
                return
            if media_type not in self.config.accept:
                # RFC 3261 section 8.2.3
                self.respond(tx, 415, headers=(("Accept", ", ".join(self.config.accept)),), now=now)
                return
        if method == "OPTIONS":
            self.respond(
                tx,
                200,
                headers=(
                    ("Accept", ", ".join(self.config.accept)),
                    ("Supported", ", ".join(self.config.supported)),
                ),
                now=now,
            )
            return
        self._events.append(RequestReceived(tx, req, source))

    def _cancel(self, event: txl.CancelReceived, now: float) -> None:
        # RFC 3261 section 9.2: 200 to the CANCEL; 487 to the INVITE if still unanswered; 481
        # when nothing matches. The 200 and 487 carry the To tag our provisional used.
        invite_tx = event.invite_tx
        tag = self._to_tags.get(id(invite_tx)) if invite_tx is not None else None
        if self._layer.answer_cancel(event, now, to_tag=tag) and invite_tx is not None:
            self._events.append(RequestCancelled(invite_tx, invite_tx.request, event.request))


def _fixed_via(top: Via, addr: Address) -> Via:
    """``top`` with received and rport set as ``addr`` requires (itself when nothing is)."""
    params = top.params
    rport = top.rport == ""
    # A received the sender wrote itself would send our answers to any host it names (a
    # reflection): the source address replaces it (RFC 3581 section 4 always sets it). So
    # does an rport value it wrote (a client sends rport empty): it named any port, 99999 too.
    forged = top.received is not None and top.received != addr.host
    forged_rport = top.rport not in (None, "", str(addr.port))
    if top.host != addr.host or forged:
        params = set_param(params, "received", addr.host)
    if rport or forged_rport:
        params = set_param(params, "rport", str(addr.port))
    if params is top.params:
        return top
    # Direct construction: dataclasses.replace() costs several times more on this path.
    via = Via(top.transport, top.host, top.port, params, top.protocol)
    raw = top.raw
    if raw is not None:
        # Keep echoing the text as received (RFC 3261 8.2.6.2), with our two additions.
        if rport:
            raw, count = _BARE_RPORT.subn(f";rport={addr.port}", raw)
            if count != 1:
                raw = None
        if forged or forged_rport:
            raw = None  # the text would keep the forged value: serialize the parameters
        elif raw is not None and top.host != addr.host:
            raw = f"{raw};received={addr.host}"
        if raw is not None:
            with_raw(via, raw)
    return via


@lru_cache(maxsize=256)
def _media_type(content_type: str) -> str | None:
    """``type/subtype`` of a Content-Type value (the same few come again and again), or
    ``None`` when it is not one."""
    try:
        return parse_content_type(content_type)[0]
    except ValueError:
        return None


def _is_zero(value: str) -> bool:
    try:
        return parse_max_forwards(value) == 0
    except ValueError:
        return False


def _reason_for(bad: BadMessage) -> str:
    default = txl.REASON_PHRASES.get(bad.status or 400, "Bad Request")
    # A short, safe reason phrase: the parser's detail, without CR/LF.
    detail = bad.reason.replace("\r", " ").replace("\n", " ")[:80]
    return f"{default} ({detail})" if detail and detail != default else default
