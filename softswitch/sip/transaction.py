"""The SIP transaction layer (RFC 3261 section 17, updated by RFC 6026), sans-IO.

Four state machines live here and nowhere else: INVITE client (figure 5), non-INVITE client
(figure 6), INVITE server (figure 7) and non-INVITE server (figure 8), with the ``Accepted``
state RFC 6026 adds to both INVITE machines. Each machine is one :class:`softswitch.fsm.Table`
``(state, input) -> (action, next state)`` (``Transaction.TABLE``); an input without an entry is
a :class:`ProtocolError`, and every state change is checked against the entry and logged by
the table. Inputs are messages from the network (``RECV_*``), responses from the TU
(``SEND_*``), timer expiries (``TIMER_*``) and transport errors. On entering a state every timer
that has no entry in that state is stopped, so a timer can only fire where the table expects it.
:func:`mermaid` draws a machine from its table.

:class:`TransactionLayer` owns all transactions: it matches incoming messages to them (sections
17.1.3 and 17.2.3), creates server transactions for new requests, keeps one heap of deadlines
(lazy deletion, compacted when stale entries pile up), and queues what to send
(``messages_to_send()``) and what to tell the TU (``next_event()``). Time is always passed in as
``now`` (seconds); nothing here reads a clock or touches a socket. Responses are queued with the
address the request came from; the transport applies section 18.2.2 (Via received/rport).
Requests whose branch lacks the magic cookie are matched with a simplified RFC 2543 key
(Request-URI, Call-ID, From tag, CSeq number, top Via sent-by; the To tag is not compared).
With ``compact_lingering`` (the endpoint's layer) a server transaction that only absorbs
retransmissions until a timer (non-INVITE Completed, INVITE Confirmed) is replaced by a
:class:`LingeringServer` record holding the key, the final response and its address: a trigger
call leaves two such transactions for 32 s and 5 s.
"""

from __future__ import annotations

import bisect
import heapq
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from softswitch import fsm
from softswitch.sip import timers
from softswitch.sip.ids import random_token
from softswitch.sip.message import (
    Address,
    CSeq,
    HeaderList,
    Message,
    NameAddr,
    Request,
    Response,
    Via,
    quick_init,
    with_raw,
)
from softswitch.sip.timers import TimerConfig

log = logging.getLogger("softswitch.sip.transaction")

#: RFC 3261 section 8.1.1.7: a branch starting with this was made by an RFC 3261 element.
MAGIC_COOKIE = "z9hG4bK"

RELIABLE_TRANSPORTS = frozenset({"TCP", "TLS", "SCTP", "TLS-SCTP", "WS", "WSS"})

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    199: "Early Dialog Terminated",
    200: "OK",
    202: "Accepted",
    204: "No Notification",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    580: "Precondition Failure",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}

_CLASS_REASON = {1: "Provisional", 2: "OK", 3: "Redirection", 4: "Client Error",
                 5: "Server Error", 6: "Global Failure"}  # fmt: skip


class ProtocolError(fsm.TransitionError):
    """An input the transaction's state machine has no entry for (``state``, ``input``)."""


class _FastEnum(Enum):
    # Enum members are singletons compared by identity, so identity hashing is exact; Enum's
    # own __hash__ is Python code hashing the name, and table look-ups are the hot path.
    __hash__ = object.__hash__


class Input(_FastEnum):
    """Everything that can drive a transaction."""

    RECV_1XX = "1xx from transport"
    RECV_2XX = "2xx from transport"
    RECV_3XX_6XX = "300-699 from transport"
    RECV_REQUEST = "request retransmission"
    RECV_ACK = "ACK"
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_3XX_6XX = "300-699 from TU"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TRYING = "200 ms without a provisional"
    TRANSPORT_ERROR = "transport error"

    @property
    def is_timer(self) -> bool:
        return self.name.startswith("TIMER_")


# Enum members cost about 100 ns to look up on Python 3.11 (a class attribute found through
# the metaclass); the per-message code uses these module-level names for the same members.
_RECV_1XX = Input.RECV_1XX
_RECV_2XX = Input.RECV_2XX
_RECV_3XX_6XX = Input.RECV_3XX_6XX
_RECV_REQUEST = Input.RECV_REQUEST
_RECV_ACK = Input.RECV_ACK
_SEND_1XX = Input.SEND_1XX
_SEND_2XX = Input.SEND_2XX
_SEND_3XX_6XX = Input.SEND_3XX_6XX
_TIMER_A = Input.TIMER_A
_TIMER_B = Input.TIMER_B
_TIMER_D = Input.TIMER_D
_TIMER_E = Input.TIMER_E
_TIMER_F = Input.TIMER_F
_TIMER_G = Input.TIMER_G
_TIMER_H = Input.TIMER_H
_TIMER_I = Input.TIMER_I
_TIMER_J = Input.TIMER_J
_TIMER_K = Input.TIMER_K
_TIMER_L = Input.TIMER_L
_TIMER_M = Input.TIMER_M
_TIMER_TRYING = Input.TIMER_TRYING
_TRANSPORT_ERROR = Input.TRANSPORT_ERROR


def _recv_input(status: int) -> Input:
    if status < 200:
        return _RECV_1XX
    return _RECV_2XX if status < 300 else _RECV_3XX_6XX


def _send_input(status: int) -> Input:
    if status < 200:
        return _SEND_1XX
    return _SEND_2XX if status < 300 else _SEND_3XX_6XX


class InviteClientState(_FastEnum):
    CALLING = "Calling"
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


_IC_PROCEEDING = InviteClientState.PROCEEDING


class NonInviteClientState(_FastEnum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


_NIC_PROCEEDING = NonInviteClientState.PROCEEDING


class InviteServerState(_FastEnum):
    PROCEEDING = "Proceeding"
    ACCEPTED = "Accepted"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class NonInviteServerState(_FastEnum):
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    TERMINATED = "Terminated"


# --- events for the TU --------------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request; answer it with :meth:`TransactionLayer.send_response` on ``tx``."""

    tx: ServerTransaction
    request: Request
    source: Address


@quick_init
@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response for a client transaction (retransmissions of final responses are absorbed)."""

    tx: ClientTransaction
    response: Response


@quick_init
@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK outside any transaction: the ACK for a 2xx (RFC 3261 section 17.1.1.3)."""

    request: Request
    source: Address


@quick_init
@dataclass(frozen=True, slots=True)
class CancelReceived:
    """A CANCEL (RFC 3261 section 9.2), with the INVITE transaction it targets, if any.

    Answer with :meth:`TransactionLayer.answer_cancel` (200 to the CANCEL, 487 to the INVITE if
    it has no final response yet, 481 when ``invite_tx`` is ``None``).
    """

    invite_tx: InviteServerTransaction | None
    cancel_tx: NonInviteServerTransaction
    request: Request
    source: Address


@quick_init
@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B, F (no final response) or H (the ACK never came) fired."""

    tx: Transaction
    timer: str


@quick_init
@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported a failure for this transaction (RFC 3261 sections 17.1.4, 17.2.4)."""

    tx: Transaction


@quick_init
@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    """The transaction is gone from the layer; the TU may forget it."""

    tx: Transaction


@quick_init
@dataclass(frozen=True, slots=True)
class StrayResponse:
    """A 2xx to INVITE matching no transaction: a retransmitted or forked 2xx to re-ACK."""

    response: Response
    source: Address


Event = (
    RequestReceived
    | ResponseReceived
    | AckReceived
    | CancelReceived
    | TransactionTimeout
    | TransportFailed
    | TransactionTerminated
    | StrayResponse
)


# --- stateless helpers --------------------------------------------------------------------------


#: (To header text, tag) -> that To with the tag (make_response's own, bounded).
_TAGGED_TO: dict[tuple[str, str], NameAddr] = {}


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: HeaderList = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` per RFC 3261 section 8.2.6.

    Via (all, in order), From, Call-ID and CSeq are copied; To is copied and gets ``to_tag``
    when it has no tag yet. A 100 (Trying) also copies Timestamp (section 8.2.6.1).
    """
    to = request.to
    if to_tag is not None and to.tag is None:
        raw = to.raw
        if raw is None:
            to = NameAddr(to.uri, to.display_name, (*to.params, ("tag", to_tag)))
        else:
            # The 180, the CANCEL's 200 and the 487 of one call carry the same To: share it
            # (they stay alive together for Timer I and J).
            tagged = _TAGGED_TO.get((raw, to_tag))
            if tagged is None:
                tagged = NameAddr(to.uri, to.display_name, (*to.params, ("tag", to_tag)))
                # Header parameters come last in both name-addr and addr-spec forms.
                with_raw(tagged, f"{raw};tag={to_tag}")
                if len(_TAGGED_TO) >= 4096:
                    _TAGGED_TO.clear()
                _TAGGED_TO[(raw, to_tag)] = tagged
            to = tagged
    if reason is None:
        reason = REASON_PHRASES.get(status) or _CLASS_REASON.get(status // 100, "Unknown")
    if status == 100:
        stamp = request.header("Timestamp")
        if stamp is not None:
            headers = (("Timestamp", stamp), *headers)
    return Response(
        status=status,
        reason=reason,
        vias=request.vias,
        from_=request.from_,
        to=to,
        call_id=request.call_id,
        cseq=request.cseq,
        headers=headers,
        body=body,
    )


_COPIED_HEADERS = frozenset({"Route", "Max-Forwards"})


def _copied_headers(request: Request) -> HeaderList:
    # Route must follow the INVITE's (sections 9.1, 17.1.1.3); Max-Forwards is mandatory (8.1.1).
    # Header names are stored in canonical spelling (see message.py), so compare exactly.
    return tuple(h for h in request.headers if h[0] in _COPIED_HEADERS)


def make_ack_for_non2xx(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 section 17.1.1.3).

    Same Request-URI, Call-ID, From, CSeq number and top Via (same branch) as the INVITE; To is
    the response's (with its tag); Route headers copied.
    """
    return Request(
        method="ACK",
        uri=invite.uri,
        vias=invite.vias[:1],
        from_=invite.from_,
        to=response.to,
        call_id=invite.call_id,
        cseq=CSeq(invite.cseq.seq, "ACK"),
        headers=_copied_headers(invite),
    )


def make_cancel(invite: Request) -> Request:
    """A CANCEL for ``invite`` (RFC 3261 section 9.1).

    Request-URI, Call-ID, From, To and the CSeq number are the INVITE's; the single Via is the
    INVITE's top Via, so the branch matches and the UAS finds the transaction; Route copied.
    """
    return Request(
        method="CANCEL",
        uri=invite.uri,
        vias=invite.vias[:1],
        from_=invite.from_,
        to=invite.to,
        call_id=invite.call_id,
        cseq=CSeq(invite.cseq.seq, "CANCEL"),
        headers=_copied_headers(invite),
    )


def new_branch() -> str:
    """A fresh branch parameter with the RFC 3261 magic cookie (section 8.1.1.7)."""
    return MAGIC_COOKIE + random_token()


def _default_port(transport: str) -> int:
    return 5061 if transport.upper() in ("TLS", "WSS", "TLS-SCTP") else 5060


def server_key(request: Request) -> tuple[object, ...] | None:
    """The key matching a request to its server transaction (RFC 3261 section 17.2.3).

    ACK maps to the INVITE's key. ``None`` when the request has no Via.
    """
    if not request.vias:
        return None
    top: Via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    port = top.port or _default_port(top.transport)
    branch = top.branch
    if branch is not None and branch.startswith(MAGIC_COOKIE):
        return (branch, top.host.lower(), port, method)
    # RFC 2543 peers: no usable branch, so match on the dialog-ish fields instead.
    return (
        None,
        request.uri,
        request.call_id,
        request.from_.tag,
        request.cseq.seq,
        top.host.lower(),
        port,
        branch,
        method,
    )


# --- the transactions ---------------------------------------------------------------------------

#: What a table entry runs: ``action(tx, message or None, now)``.
_Action = Callable[[Any, Any, float], None]
_Table = fsm.Table[Any, Input, _Action]
_Transition = fsm.Transition[Any, _Action]


class Transaction:
    """What all four machines share: state, timers, the table-driven ``_input``."""

    __slots__ = (
        "_fire_now",
        "_interval",
        "_layer",
        "_timers",
        "key",
        "last_response",
        "reliable",
        "request",
        "state",
    )

    TABLE: ClassVar[_Table]
    #: TABLE's entries unpacked for ``_input``: (state, input) -> (action, target, entry).
    STEPS: ClassVar[Mapping[tuple[Enum, Input], tuple[_Action, Enum, _Transition]]]
    TIMERS_IN: ClassVar[Mapping[Enum, frozenset[Input]]]
    INITIAL: ClassVar[Enum]
    TERMINATED: ClassVar[Enum]
    #: The state in which all the machine still does is absorb retransmissions until a timer:
    #: a layer made with ``compact_lingering`` swaps the transaction for a
    #: :class:`LingeringServer` there (``None``: the machine has no such state).
    LINGERS_IN: ClassVar[Enum | None] = None

    def __init__(
        self, layer: TransactionLayer, key: tuple[object, ...], request: Request, reliable: bool
    ) -> None:
        self._layer = layer
        self.key = key
        self.request = request
        self.reliable = reliable
        self.state: Enum = self.INITIAL
        self.last_response: Response | None = None
        self._timers: dict[Input, tuple[int, float]] = {}
        self._interval = 0.0
        self._fire_now: Input | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.request.method} {self.key[0]} {self.state.name}>"

    @property
    def config(self) -> TimerConfig:
        return self._layer.config

    @property
    def terminated(self) -> bool:
        return self.state is self.TERMINATED

    @property
    def armed_timers(self) -> frozenset[Input]:
        """The timers currently running (for tests and introspection)."""
        return frozenset(self._timers)

    def deadline(self, timer: Input) -> float | None:
        """When ``timer`` fires, or ``None`` if it is not running."""
        entry = self._timers.get(timer)
        return None if entry is None else entry[1]

    def accepts(self, inp: Input) -> bool:
        """Whether ``inp`` has an entry in the current state."""
        return self.TABLE.accepts(self.state, inp)

    # The one entry point of the state machine, on the hot path (every SIP message): one dict
    # access to the table's entries (as STEPS unpacks them); the table itself only speaks up
    # for a missing pair.
    def _input(self, inp: Input, now: float, msg: Message | None = None) -> None:
        state = self.state
        step = self.STEPS.get((state, inp))
        if step is None:
            self.TABLE.fire(state, inp, who=self)  # raises ProtocolError
            return
        action, new, entry = step
        action(self, msg, now)
        if new is not state:
            self._set_state(new, entry, inp)
        if self._fire_now is not None:
            self._run_immediate(now)

    def _run_immediate(self, now: float) -> None:
        # Zero-length timers (D, I, J, K on reliable transports) fire right after the transition
        # that started them, so the transaction never lingers.
        while self._fire_now is not None:
            inp, self._fire_now = self._fire_now, None
            self._input(inp, now)

    def _set_state(self, new: Enum, transition: fsm.Transition[Any, _Action], inp: Input) -> None:
        # ``new`` is the entry's own target (see STEPS), so the table's check of the move
        # cannot fail: ask it only when the move is logged.
        if log.isEnabledFor(logging.DEBUG):
            self.TABLE.move(log, self, self.state, new, transition, inp)
        self.state = new
        timers = self._timers
        if timers:
            allowed = self.TIMERS_IN[new]
            for timer in [t for t in timers if t not in allowed]:
                self._stop_timer(timer)
        if new is self.TERMINATED:
            self._layer._forget(self)
            self._layer._events.append(TransactionTerminated(self))
        elif new is self.LINGERS_IN and self._fire_now is None and self._layer._compact_lingering:
            # The action left the linger timer unarmed (see _linger_timer): the layer keeps a
            # compact record in this transaction's place from now on.
            self._layer._linger(self)

    def _start_timer(self, timer: Input, delay: float | None, now: float) -> None:
        if delay is None:
            return
        if delay <= 0:
            self._stop_timer(timer)
            self._fire_now = timer
            return
        self._layer._arm(self, timer, now + delay)

    def _stop_timer(self, timer: Input) -> None:
        entry = self._timers.pop(timer, None)
        if entry is not None:
            del self._layer._pending[entry[0]]

    def _send(self, message: Message, dest: Address) -> None:
        self._layer._out.append((message, dest))

    def _linger_timer(self, timer: Input, delay: float, now: float) -> None:
        # Timer J (non-INVITE Completed) or I (INVITE Confirmed). A layer that compacts
        # lingering transactions does not arm it: the record made on entering the state keeps
        # the deadline, held in ``_interval`` (no other timer runs in these states).
        if delay > 0 and self._layer._compact_lingering:
            self._interval = now + delay
        else:
            self._start_timer(timer, delay, now)


class ClientTransaction(Transaction):
    """A client transaction: sends ``request`` to ``dest`` and collects the responses."""

    __slots__ = ("dest",)

    def __init__(
        self,
        layer: TransactionLayer,
        key: tuple[object, ...],
        request: Request,
        dest: Address,
        reliable: bool,
    ) -> None:
        super().__init__(layer, key, request, reliable)
        self.dest = dest

    def _start(self, now: float) -> None:
        raise NotImplementedError


class ServerTransaction(Transaction):
    """A server transaction: answers ``request``, which came from ``source``."""

    __slots__ = ("last_provisional", "source")

    def __init__(
        self,
        layer: TransactionLayer,
        key: tuple[object, ...],
        request: Request,
        source: Address,
        reliable: bool,
    ) -> None:
        # Transaction.__init__ written out: two of these are made for every trigger call.
        self._layer = layer
        self.key = key
        self.request = request
        self.reliable = reliable
        self.state = self.INITIAL
        self.last_response = None
        self._timers = {}
        self._interval = 0.0
        self._fire_now = None
        self.source = source
        self.last_provisional: Response | None = None

    def can_send_final(self) -> bool:
        """True while the TU may still send a final response."""
        return self.TABLE.accepts(self.state, _SEND_3XX_6XX)

    def _start(self, now: float) -> None:
        """Hook run once when the transaction is created."""


# --- actions (shared) ---------------------------------------------------------------------------


def _absorb(tx: Transaction, msg: Message | None, now: float) -> None:
    """A retransmission this state swallows without telling the TU."""


def _no_action(tx: Transaction, msg: Message | None, now: float) -> None:
    """The transition itself is the whole effect."""


def _transport_failed(tx: Transaction, msg: Message | None, now: float) -> None:
    tx._layer._events.append(TransportFailed(tx))


def _pass_response_up(tx: ClientTransaction, msg: Message | None, now: float) -> None:
    assert isinstance(msg, Response)
    tx.last_response = msg
    tx._layer._events.append(ResponseReceived(tx, msg))


def _timeout(timer: str) -> Callable[[Transaction, Message | None, float], None]:
    def action(tx: Transaction, msg: Message | None, now: float) -> None:
        tx._layer._events.append(TransactionTimeout(tx, timer))

    action.__name__ = f"_timeout_{timer.lower()}"
    return action


# --- INVITE client: RFC 3261 figure 5, RFC 6026 section 8.4 -------------------------------------


def _ic_retransmit(tx: InviteClientTransaction, msg: Message | None, now: float) -> None:
    tx._send(tx.request, tx.dest)
    tx._interval = timers.next_timer_a(tx._interval)
    tx._start_timer(_TIMER_A, tx._interval, now)


def _ic_accepted(tx: InviteClientTransaction, msg: Message | None, now: float) -> None:
    # RFC 6026: stay to catch further 2xx (retransmissions, forks) and pass them all up.
    tx._start_timer(_TIMER_M, timers.timer_m(tx.config), now)
    _pass_response_up(tx, msg, now)


def _ic_completed(tx: InviteClientTransaction, msg: Message | None, now: float) -> None:
    assert isinstance(msg, Response)
    tx.ack = make_ack_for_non2xx(tx.request, msg)
    tx._send(tx.ack, tx.dest)
    tx._start_timer(_TIMER_D, timers.timer_d(tx.config, tx.reliable), now)
    _pass_response_up(tx, msg, now)


def _ic_resend_ack(tx: InviteClientTransaction, msg: Message | None, now: float) -> None:
    # Section 17.1.1.2: every retransmitted final response is answered with the same ACK.
    if tx.ack is not None:
        tx._send(tx.ack, tx.dest)


_IC = InviteClientState
_INVITE_CLIENT: fsm.Table[InviteClientState, Input, _Action] = fsm.Table(
    "INVITE client transaction",
    {
        (_IC.CALLING, Input.TIMER_A): (_ic_retransmit, _IC.CALLING),
        (_IC.CALLING, Input.TIMER_B): (_timeout("B"), _IC.TERMINATED),
        (_IC.CALLING, Input.RECV_1XX): (_pass_response_up, _IC.PROCEEDING),
        (_IC.CALLING, Input.RECV_2XX): (_ic_accepted, _IC.ACCEPTED),
        (_IC.CALLING, Input.RECV_3XX_6XX): (_ic_completed, _IC.COMPLETED),
        (_IC.CALLING, Input.TRANSPORT_ERROR): (_transport_failed, _IC.TERMINATED),
        (_IC.PROCEEDING, Input.RECV_1XX): (_pass_response_up, _IC.PROCEEDING),
        (_IC.PROCEEDING, Input.RECV_2XX): (_ic_accepted, _IC.ACCEPTED),
        (_IC.PROCEEDING, Input.RECV_3XX_6XX): (_ic_completed, _IC.COMPLETED),
        (_IC.PROCEEDING, Input.TRANSPORT_ERROR): (_transport_failed, _IC.TERMINATED),
        (_IC.ACCEPTED, Input.RECV_2XX): (_pass_response_up, _IC.ACCEPTED),
        # A provisional overtaken by a final response (UDP reorders, forks answer late): harmless.
        (_IC.ACCEPTED, Input.RECV_1XX): (_absorb, _IC.ACCEPTED),
        (_IC.ACCEPTED, Input.TIMER_M): (_no_action, _IC.TERMINATED),
        (_IC.COMPLETED, Input.RECV_3XX_6XX): (_ic_resend_ack, _IC.COMPLETED),
        (_IC.COMPLETED, Input.RECV_1XX): (_absorb, _IC.COMPLETED),
        # A 2xx from another fork after a non-2xx: the UAC core must ACK (and BYE) it (13.2.2.4).
        (_IC.COMPLETED, Input.RECV_2XX): (_pass_response_up, _IC.COMPLETED),
        (_IC.COMPLETED, Input.TIMER_D): (_no_action, _IC.TERMINATED),
        (_IC.COMPLETED, Input.TRANSPORT_ERROR): (_transport_failed, _IC.TERMINATED),
    },
    initial=_IC.CALLING,
    final={_IC.TERMINATED},
    error=ProtocolError,
)


# --- non-INVITE client: RFC 3261 figure 6 -------------------------------------------------------


def _nic_retransmit(tx: NonInviteClientTransaction, msg: Message | None, now: float) -> None:
    tx._send(tx.request, tx.dest)
    proceeding = tx.state is _NIC_PROCEEDING
    tx._interval = timers.next_timer_e(tx.config, tx._interval, proceeding)
    tx._start_timer(_TIMER_E, tx._interval, now)


def _nic_completed(tx: NonInviteClientTransaction, msg: Message | None, now: float) -> None:
    tx._start_timer(_TIMER_K, timers.timer_k(tx.config, tx.reliable), now)
    _pass_response_up(tx, msg, now)


_NIC = NonInviteClientState
_NON_INVITE_CLIENT: fsm.Table[NonInviteClientState, Input, _Action] = fsm.Table(
    "non-INVITE client transaction",
    {
        (_NIC.TRYING, Input.TIMER_E): (_nic_retransmit, _NIC.TRYING),
        (_NIC.TRYING, Input.TIMER_F): (_timeout("F"), _NIC.TERMINATED),
        (_NIC.TRYING, Input.RECV_1XX): (_pass_response_up, _NIC.PROCEEDING),
        (_NIC.TRYING, Input.RECV_2XX): (_nic_completed, _NIC.COMPLETED),
        (_NIC.TRYING, Input.RECV_3XX_6XX): (_nic_completed, _NIC.COMPLETED),
        (_NIC.TRYING, Input.TRANSPORT_ERROR): (_transport_failed, _NIC.TERMINATED),
        (_NIC.PROCEEDING, Input.TIMER_E): (_nic_retransmit, _NIC.PROCEEDING),
        (_NIC.PROCEEDING, Input.TIMER_F): (_timeout("F"), _NIC.TERMINATED),
        (_NIC.PROCEEDING, Input.RECV_1XX): (_pass_response_up, _NIC.PROCEEDING),
        (_NIC.PROCEEDING, Input.RECV_2XX): (_nic_completed, _NIC.COMPLETED),
        (_NIC.PROCEEDING, Input.RECV_3XX_6XX): (_nic_completed, _NIC.COMPLETED),
        (_NIC.PROCEEDING, Input.TRANSPORT_ERROR): (_transport_failed, _NIC.TERMINATED),
        (_NIC.COMPLETED, Input.RECV_1XX): (_absorb, _NIC.COMPLETED),
        (_NIC.COMPLETED, Input.RECV_2XX): (_absorb, _NIC.COMPLETED),
        (_NIC.COMPLETED, Input.RECV_3XX_6XX): (_absorb, _NIC.COMPLETED),
        (_NIC.COMPLETED, Input.TIMER_K): (_no_action, _NIC.TERMINATED),
        (_NIC.COMPLETED, Input.TRANSPORT_ERROR): (_transport_failed, _NIC.TERMINATED),
    },
    initial=_NIC.TRYING,
    final={_NIC.TERMINATED},
    error=ProtocolError,
)


# --- INVITE server: RFC 3261 figure 7, RFC 6026 section 8.7 -------------------------------------


def _is_auto_trying(tx: InviteServerTransaction, msg: Message | None, now: float) -> None:
    # Section 17.2.1: the TU was silent for 200 ms, so quench the client's retransmissions.
    trying = make_response(tx.request, 100)
    tx.last_provisional = trying
    tx._send(trying, tx.source)


def _send_provisional(tx: ServerTransaction, msg: Message | None, now: float) -> None:
    assert isinstance(msg, Response)
    tx.last_provisional = msg
    tx._send(msg, tx.source)


def _is_send_provisional(tx: InviteServerTransaction, msg: Message | None, now: float) -> None:
    # Any provisional from the TU makes the automatic 100 unnecessary.
    tx._stop_timer(_TIMER_TRYING)
    _send_provisional(tx, msg, now)


def _resend_provisional(tx: ServerTransaction, msg: Message | None, now: float) -> None:
    # Sections 17.2.1 and 17.2.2: a retransmitted request gets the latest provisional again.
    if tx.last_provisional is not None:
        tx._send(tx.last_provisional, tx.source)


def _resend_final(tx: ServerTransaction, msg: Message | None, now: float) -> None:
    assert tx.last_response is not None
    tx._send(tx.last_response, tx.source)


def _is_send_2xx(tx: InviteServerTransaction, msg: Message | None, now: float) -> None:
    assert isinstance(msg, Response)
    tx.last_response = msg
    tx._send(msg, tx.source)
    # RFC 6026: wait in Accepted so INVITE retransmissions are absorbed, not seen as new.
    tx._start_timer(_TIMER_L, timers.timer_l(tx.config), now)


def _is_resend_2xx(tx: InviteServerTransaction, msg: Message | None, now: float) -> None:
    # The TU retransmits its 2xx (section 13.3.1.4); the transaction only carries it.
    assert isinstance(msg, Response)
    tx.last_response = msg
    tx._send(msg, tx.source)


def _is_send_final(tx: InviteServerTransaction, msg: Message | None, now: float) -> None:
    assert isinstance(msg, Response)
    tx.last_response = msg
    tx._send(msg, tx.source)
    tx._interval = tx.config.T1
    tx._start_timer(_TIMER_G, timers.timer_g(tx.config, tx.reliable), now)
    tx._start_timer(_TIMER_H, timers.timer_h(tx.config), now)


def _is_retransmit_final(tx: InviteServerTransaction, msg: Message | None, now: float) -> None:
    _resend_final(tx, msg, now)
    tx._interval = timers.next_timer_g(tx.config, tx._interval)
    tx._start_timer(_TIMER_G, tx._interval, now)


def _is_confirmed(tx: InviteServerTransaction, msg: Message | None, now: float) -> None:
    tx._linger_timer(_TIMER_I, timers.timer_i(tx.config, tx.reliable), now)


def _is_ack_for_2xx(tx: InviteServerTransaction, msg: Message | None, now: float) -> None:
    # RFC 6026 section 8.7: an ACK matching an Accepted transaction goes to the TU.
    assert isinstance(msg, Request)
    tx._layer._events.append(AckReceived(msg, tx.source))


_IS = InviteServerState
_INVITE_SERVER: fsm.Table[InviteServerState, Input, _Action] = fsm.Table(
    "INVITE server transaction",
    {
        (_IS.PROCEEDING, Input.TIMER_TRYING): (_is_auto_trying, _IS.PROCEEDING),
        (_IS.PROCEEDING, Input.RECV_REQUEST): (_resend_provisional, _IS.PROCEEDING),
        (_IS.PROCEEDING, Input.SEND_1XX): (_is_send_provisional, _IS.PROCEEDING),
        (_IS.PROCEEDING, Input.SEND_2XX): (_is_send_2xx, _IS.ACCEPTED),
        (_IS.PROCEEDING, Input.SEND_3XX_6XX): (_is_send_final, _IS.COMPLETED),
        (_IS.PROCEEDING, Input.TRANSPORT_ERROR): (_transport_failed, _IS.TERMINATED),
        (_IS.ACCEPTED, Input.SEND_2XX): (_is_resend_2xx, _IS.ACCEPTED),
        (_IS.ACCEPTED, Input.RECV_REQUEST): (_absorb, _IS.ACCEPTED),
        (_IS.ACCEPTED, Input.RECV_ACK): (_is_ack_for_2xx, _IS.ACCEPTED),
        (_IS.ACCEPTED, Input.TIMER_L): (_no_action, _IS.TERMINATED),
        # RFC 6026 section 7.1: a failed 2xx send does not end the transaction; Timer L will.
        (_IS.ACCEPTED, Input.TRANSPORT_ERROR): (_absorb, _IS.ACCEPTED),
        (_IS.COMPLETED, Input.TIMER_G): (_is_retransmit_final, _IS.COMPLETED),
        (_IS.COMPLETED, Input.TIMER_H): (_timeout("H"), _IS.TERMINATED),
        (_IS.COMPLETED, Input.RECV_REQUEST): (_resend_final, _IS.COMPLETED),
        (_IS.COMPLETED, Input.RECV_ACK): (_is_confirmed, _IS.CONFIRMED),
        (_IS.COMPLETED, Input.TRANSPORT_ERROR): (_transport_failed, _IS.TERMINATED),
        (_IS.CONFIRMED, Input.RECV_ACK): (_absorb, _IS.CONFIRMED),
        # A late INVITE retransmission overtaken by its ACK: the client has our answer already.
        (_IS.CONFIRMED, Input.RECV_REQUEST): (_absorb, _IS.CONFIRMED),
        (_IS.CONFIRMED, Input.TIMER_I): (_no_action, _IS.TERMINATED),
    },
    initial=_IS.PROCEEDING,
    final={_IS.TERMINATED},
    error=ProtocolError,
)


# --- non-INVITE server: RFC 3261 figure 8 -------------------------------------------------------


def _nis_send_final(tx: NonInviteServerTransaction, msg: Message | None, now: float) -> None:
    assert isinstance(msg, Response)
    tx.last_response = msg
    tx._send(msg, tx.source)
    tx._linger_timer(_TIMER_J, timers.timer_j(tx.config, tx.reliable), now)


_NIS = NonInviteServerState
_NON_INVITE_SERVER: fsm.Table[NonInviteServerState, Input, _Action] = fsm.Table(
    "non-INVITE server transaction",
    {
        # Section 17.2.2: retransmissions in Trying are discarded (nothing to resend yet).
        (_NIS.TRYING, Input.RECV_REQUEST): (_absorb, _NIS.TRYING),
        (_NIS.TRYING, Input.SEND_1XX): (_send_provisional, _NIS.PROCEEDING),
        (_NIS.TRYING, Input.SEND_2XX): (_nis_send_final, _NIS.COMPLETED),
        (_NIS.TRYING, Input.SEND_3XX_6XX): (_nis_send_final, _NIS.COMPLETED),
        (_NIS.TRYING, Input.TRANSPORT_ERROR): (_transport_failed, _NIS.TERMINATED),
        (_NIS.PROCEEDING, Input.RECV_REQUEST): (_resend_provisional, _NIS.PROCEEDING),
        (_NIS.PROCEEDING, Input.SEND_1XX): (_send_provisional, _NIS.PROCEEDING),
        (_NIS.PROCEEDING, Input.SEND_2XX): (_nis_send_final, _NIS.COMPLETED),
        (_NIS.PROCEEDING, Input.SEND_3XX_6XX): (_nis_send_final, _NIS.COMPLETED),
        (_NIS.PROCEEDING, Input.TRANSPORT_ERROR): (_transport_failed, _NIS.TERMINATED),
        (_NIS.COMPLETED, Input.RECV_REQUEST): (_resend_final, _NIS.COMPLETED),
        (_NIS.COMPLETED, Input.TIMER_J): (_no_action, _NIS.TERMINATED),
        (_NIS.COMPLETED, Input.TRANSPORT_ERROR): (_transport_failed, _NIS.TERMINATED),
    },
    initial=_NIS.TRYING,
    final={_NIS.TERMINATED},
    error=ProtocolError,
)


def _steps(table: _Table) -> dict[tuple[Enum, Input], tuple[_Action, Enum, _Transition]]:
    """Each entry as (action, its one target, the entry): the transaction tables have one
    target per entry and an action in every entry."""
    out: dict[tuple[Enum, Input], tuple[_Action, Enum, _Transition]] = {}
    for key, entry in table:
        if entry.handler is None:
            raise ValueError(f"{table.name}: {key[0].name} on {key[1].name} has no action")
        out[key] = (entry.handler, entry.target, entry)
    return out


def _timers_in(table: _Table, states: type[Enum]) -> dict[Any, frozenset[Input]]:
    return {
        state: frozenset(inp for inp in Input if inp.is_timer and table.accepts(state, inp))
        for state in states
    }


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 section 17.1.1 with RFC 6026's Accepted state."""

    __slots__ = ("ack",)

    State = InviteClientState
    TABLE: ClassVar[_Table] = _INVITE_CLIENT
    TIMERS_IN = _timers_in(_INVITE_CLIENT, InviteClientState)
    STEPS = _steps(_INVITE_CLIENT)
    INITIAL = InviteClientState.CALLING
    TERMINATED = InviteClientState.TERMINATED

    def __init__(
        self,
        layer: TransactionLayer,
        key: tuple[object, ...],
        request: Request,
        dest: Address,
        reliable: bool,
    ) -> None:
        super().__init__(layer, key, request, dest, reliable)
        self.ack: Request | None = None

    def can_cancel(self) -> bool:
        """RFC 3261 section 9.1: CANCEL only after a provisional response, before a final one."""
        return self.state is _IC_PROCEEDING

    def _start(self, now: float) -> None:
        cfg = self.config
        self._send(self.request, self.dest)
        first = timers.timer_a(cfg, self.reliable)
        if first is not None:
            self._interval = first
            self._start_timer(_TIMER_A, first, now)
        self._start_timer(_TIMER_B, timers.timer_b(cfg), now)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 section 17.1.2."""

    __slots__ = ()

    State = NonInviteClientState
    TABLE: ClassVar[_Table] = _NON_INVITE_CLIENT
    TIMERS_IN = _timers_in(_NON_INVITE_CLIENT, NonInviteClientState)
    STEPS = _steps(_NON_INVITE_CLIENT)
    INITIAL = NonInviteClientState.TRYING
    TERMINATED = NonInviteClientState.TERMINATED

    def _start(self, now: float) -> None:
        cfg = self.config
        self._send(self.request, self.dest)
        first = timers.timer_e(cfg, self.reliable)
        if first is not None:
            self._interval = first
            self._start_timer(_TIMER_E, first, now)
        self._start_timer(_TIMER_F, timers.timer_f(cfg), now)


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 section 17.2.1 with RFC 6026's Accepted state."""

    __slots__ = ()

    State = InviteServerState
    TABLE: ClassVar[_Table] = _INVITE_SERVER
    TIMERS_IN = _timers_in(_INVITE_SERVER, InviteServerState)
    STEPS = _steps(_INVITE_SERVER)
    INITIAL = InviteServerState.PROCEEDING
    TERMINATED = InviteServerState.TERMINATED
    LINGERS_IN = InviteServerState.CONFIRMED

    def _start(self, now: float) -> None:
        delay = self.config.trying_delay
        if delay is not None:
            self._start_timer(_TIMER_TRYING, delay, now)
            self._run_immediate(now)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 section 17.2.2."""

    __slots__ = ()

    State = NonInviteServerState
    TABLE: ClassVar[_Table] = _NON_INVITE_SERVER
    TIMERS_IN = _timers_in(_NON_INVITE_SERVER, NonInviteServerState)
    STEPS = _steps(_NON_INVITE_SERVER)
    INITIAL = NonInviteServerState.TRYING
    TERMINATED = NonInviteServerState.TERMINATED
    LINGERS_IN = NonInviteServerState.COMPLETED


ALL_MACHINES: tuple[type[Transaction], ...] = (
    InviteClientTransaction,
    NonInviteClientTransaction,
    InviteServerTransaction,
    NonInviteServerTransaction,
)


def mermaid(machine: type[Transaction]) -> str:
    """The machine's transition table as a Mermaid state diagram (for the docs)."""
    return machine.TABLE.mermaid()


# --- what is left of a lingering server transaction -----------------------------------------


class LingeringServer:
    """A server transaction that only absorbs retransmissions now, kept small.

    What RFC 3261 section 17.2 still needs of a non-INVITE server transaction in Completed
    (until Timer J) or an INVITE server transaction in Confirmed (until Timer I): its key (to
    match), the final response to send again for each retransmitted request (non-INVITE only;
    ``None`` for an INVITE, which absorbs ACKs and INVITEs silently), where that goes, and when
    the record ends. The response is kept in wire form, with the address the transport sends
    it to, when the layer was given ``encode``: bytes are one object, a parsed response is
    about ten. ``to_tag`` is the To tag the INVITE's responses carried, for the 200 to a
    CANCEL that arrives this late (section 9.2). The request, the provisional responses and
    the timer bookkeeping of the transaction are gone; so is the transaction object, which
    reported :class:`TransactionTerminated` when the record replaced it.
    """

    __slots__ = ("deadline", "dest", "key", "response", "to_tag")

    def __init__(
        self,
        key: tuple[object, ...],
        response: Response | bytes | None,
        dest: Address,
        to_tag: str | None,
        deadline: float,
    ) -> None:
        self.key = key
        self.response = response
        self.dest = dest
        self.to_tag = to_tag
        self.deadline = deadline

    def __repr__(self) -> str:
        return f"<LingeringServer {self.key[-1]} {self.key[0]} until {self.deadline}>"


# --- the layer ----------------------------------------------------------------------------------

#: (deadline, sequence number): what the heap orders; the armed timer it stands for, if it is
#: still armed, is ``TransactionLayer._pending[sequence number]``.
_HeapEntry = tuple[float, int]


class TransactionLayer:
    """All transactions of one SIP element, matched, timed and drained from one place.

    ``is_reliable`` forces every transaction onto reliable (True) or unreliable (False) timer
    rules; ``None`` decides per message from :attr:`Address.transport`.

    ``compact_lingering`` replaces each server transaction that reaches non-INVITE Completed
    or INVITE Confirmed over an unreliable transport by a :class:`LingeringServer` (see
    :attr:`lingering_servers`): on the wire nothing changes, but the transaction object is
    Terminated (and reported so) when it is replaced, not at Timer J or I. A CANCEL for an
    INVITE whose record lingers is answered 200 by the layer itself, with no event: the INVITE
    has its final response, so the CANCEL has no effect (section 9.2). ``encode`` (the TU's
    serializer: a response and the address it was queued with -> its bytes and where they go)
    lets records keep the final response in wire form; what a record then sends comes out of
    :meth:`wire_to_send`, not :meth:`messages_to_send`.
    """

    def __init__(
        self,
        timer_config: TimerConfig | None = None,
        *,
        is_reliable: bool | None = None,
        compact_lingering: bool = False,
        encode: Callable[[Response, Address], tuple[bytes, Address]] | None = None,
    ) -> None:
        self.config = timer_config or TimerConfig()
        self._is_reliable = is_reliable
        self._compact_lingering = compact_lingering
        self._encode = encode
        self._wire: list[tuple[bytes, Address]] = []
        self._lingering: dict[tuple[object, ...], LingeringServer] = {}
        #: Records by deadline, one queue per timer: each timer has one length (64*T1 or T4)
        #: for a layer, so appending keeps a queue in deadline order (see _enqueue).
        self._linger_j: deque[LingeringServer] = deque()
        self._linger_i: deque[LingeringServer] = deque()
        self._clients: dict[tuple[object, ...], ClientTransaction] = {}
        self._servers: dict[tuple[object, ...], ServerTransaction] = {}
        self._heap: list[_HeapEntry] = []
        self._seq = 0
        #: Armed timers by sequence number. The heap itself holds numbers only, so a stopped
        #: timer's entry (left in the heap until its deadline: Timer H after the ACK, Timer B
        #: after a provisional) keeps no transaction, request or response alive.
        self._pending: dict[int, tuple[Transaction, Input]] = {}
        self._out: list[tuple[Message, Address]] = []
        self._events: deque[Event] = deque()
        self.stats = {"protocol_errors": 0, "dropped_responses": 0, "stray_responses": 0}

    # --- introspection ---

    @property
    def client_transactions(self) -> Mapping[tuple[object, ...], ClientTransaction]:
        return self._clients

    @property
    def server_transactions(self) -> Mapping[tuple[object, ...], ServerTransaction]:
        return self._servers

    @property
    def lingering_servers(self) -> Mapping[tuple[object, ...], LingeringServer]:
        """The compact records of server transactions waiting out Timer J or I."""
        return self._lingering

    def find_server(self, request: Request) -> ServerTransaction | LingeringServer | None:
        """The server transaction ``request`` belongs to (ACK finds its INVITE's), or the
        record left of it while it lingers."""
        key = server_key(request)
        if key is None:
            return None
        tx = self._servers.get(key)
        return tx if tx is not None else self._lingering.get(key)

    def is_reliable(self, address: Address) -> bool:
        if self._is_reliable is not None:
            return self._is_reliable
        transport = address.transport
        return transport != "UDP" and transport.upper() in RELIABLE_TRANSPORTS

    # --- the TU's side ---

    def send_request(self, request: Request, dest: Address, now: float) -> ClientTransaction:
        """Start a client transaction for ``request`` (top Via must carry a branch)."""
        if request.method == "ACK":
            raise ValueError("ACK is not sent through a transaction: use send_ack()")
        branch = request.vias[0].branch if request.vias else None
        if not branch:
            raise ValueError("the request's top Via needs a branch parameter")
        # Section 17.1.3: branch + CSeq method (a CANCEL shares its INVITE's branch).
        key: tuple[object, ...] = (branch, request.cseq.method)
        if key in self._clients:
            raise ValueError(f"a client transaction with branch {branch} already exists")
        reliable = self.is_reliable(dest)
        tx: ClientTransaction
        if request.method == "INVITE":
            tx = InviteClientTransaction(self, key, request, dest, reliable)
        else:
            tx = NonInviteClientTransaction(self, key, request, dest, reliable)
        self._clients[key] = tx
        tx._start(now)
        return tx

    def send_ack(self, ack: Request, dest: Address) -> None:
        """Queue an ACK for a 2xx: it is its own transaction-less message (section 13.2.2.4)."""
        self._out.append((ack, dest))

    def send_response(
        self,
        tx: ServerTransaction | tuple[object, ...],
        response: Response,
        now: float,
    ) -> None:
        """Send ``response`` on a server transaction (object or key).

        Raises :class:`ProtocolError` when the transaction's state allows no such response
        (e.g. a second final response), ``KeyError`` for an unknown key.
        """
        if not isinstance(tx, ServerTransaction):
            tx = self._servers[tx]
        tx._input(_send_input(response.status), now, response)

    def answer_cancel(
        self, event: CancelReceived, now: float, *, to_tag: str | None = None
    ) -> bool:
        """Answer a CANCEL per RFC 3261 section 9.2; True if the INVITE got its 487.

        200 goes to the CANCEL, and 487 to the INVITE when it has no final response yet; with
        no INVITE transaction the CANCEL gets 481. Both responses carry the same To tag: the
        one the INVITE's provisional used, else ``to_tag``, else a new one.
        """
        invite_tx = event.invite_tx
        if invite_tx is None:
            self.send_response(event.cancel_tx, make_response(event.request, 481), now)
            return False
        if event.request.to.tag is None:
            sent = invite_tx.last_provisional or invite_tx.last_response
            tag = (sent.to.tag if sent is not None else None) or to_tag or random_token()
        else:
            tag = None
        self.send_response(event.cancel_tx, make_response(event.request, 200, to_tag=tag), now)
        if not invite_tx.can_send_final():
            return False
        self.send_response(invite_tx, make_response(invite_tx.request, 487, to_tag=tag), now)
        return True

    def transport_error(self, tx: Transaction, now: float) -> bool:
        """The transport could not deliver for ``tx`` (sections 17.1.4, 17.2.4; RFC 6026 7.1).

        Returns False, with a debug log, when the transaction's state takes no such input
        (already terminated, or Confirmed where nothing is sent).
        """
        if not tx.accepts(_TRANSPORT_ERROR):
            log.debug("%r: transport error ignored in %s", tx, tx.state.name)
            return False
        tx._input(_TRANSPORT_ERROR, now)
        return True

    # --- the network's side ---

    def receive_request(self, request: Request, source: Address, now: float) -> None:
        """A request from the network: match it (section 17.2.3) or start a server transaction."""
        key = server_key(request)
        if key is None:
            log.debug("dropped a %s without Via from %s", request.method, source)
            return
        tx = self._servers.get(key)
        if request.method == "ACK":
            if isinstance(tx, InviteServerTransaction):
                self._feed(tx, _RECV_ACK, now, request)
            elif tx is None and key in self._lingering:
                pass  # Confirmed: an ACK retransmission, absorbed
            else:
                # No transaction: the ACK for a 2xx, which belongs to the dialog (17.1.1.3).
                self._events.append(AckReceived(request, source))
            return
        if tx is not None:
            self._feed(tx, _RECV_REQUEST, now, request)
            return
        if self._lingering:
            record = self._lingering.get(key)
            if record is not None:
                # Non-INVITE Completed: the final response again; INVITE Confirmed: absorbed.
                response = record.response
                if type(response) is bytes:
                    self._wire.append((response, record.dest))
                elif response is not None:
                    assert isinstance(response, Response)
                    self._out.append((response, record.dest))
                return
        reliable = self.is_reliable(source)
        new: ServerTransaction
        if request.method == "INVITE":
            new = InviteServerTransaction(self, key, request, source, reliable)
        else:
            new = NonInviteServerTransaction(self, key, request, source, reliable)
        self._servers[key] = new
        if request.method == "CANCEL":
            assert isinstance(new, NonInviteServerTransaction)
            # Section 9.2: the CANCEL matches the INVITE exactly as 17.2.3 would, method aside.
            invite_key = (*key[:-1], "INVITE")
            target = self._servers.get(invite_key)
            invite_tx = target if isinstance(target, InviteServerTransaction) else None
            lingering = self._lingering.get(invite_key) if invite_tx is None else None
            if lingering is not None:
                # Confirmed, compacted: what answer_cancel does for an INVITE that has its
                # final response (200 with the INVITE's To tag, no 487), done here.
                new._start(now)
                tag = (lingering.to_tag or random_token()) if request.to.tag is None else None
                self.send_response(new, make_response(request, 200, to_tag=tag), now)
                return
            self._events.append(CancelReceived(invite_tx, new, request, source))
        else:
            self._events.append(RequestReceived(new, request, source))
        new._start(now)

    def receive_response(self, response: Response, source: Address, now: float) -> None:
        """A response from the network: match it to a client transaction (section 17.1.3)."""
        branch = response.vias[0].branch if response.vias else None
        tx = self._clients.get((branch, response.cseq.method))
        if tx is None:
            if response.cseq.method == "INVITE" and 200 <= response.status < 300:
                self.stats["stray_responses"] += 1
                self._events.append(StrayResponse(response, source))
            else:
                self.stats["dropped_responses"] += 1
                log.debug("dropped a %d %s with no transaction", response.status,
                          response.cseq.method)  # fmt: skip
            return
        self._feed(tx, _recv_input(response.status), now, response)

    def _feed(self, tx: Transaction, inp: Input, now: float, msg: Message) -> None:
        try:
            tx._input(inp, now, msg)
        except ProtocolError as exc:
            # The peer's doing (a late 1xx, an ACK before any final): drop it, count it.
            self.stats["protocol_errors"] += 1
            log.debug("dropped: %s", exc)

    # --- timers and output ---

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction (or lingering record), or ``None``."""
        heap = self._heap
        pending = self._pending
        best: float | None = None
        while heap:
            deadline, seq = heap[0]
            if seq in pending:
                best = deadline
                break
            heapq.heappop(heap)
        for queue in (self._linger_j, self._linger_i):
            if queue and (best is None or queue[0].deadline < best):
                best = queue[0].deadline
        return best

    def handle_timer(self, now: float) -> None:
        """Fire every timer due at ``now``."""
        heap = self._heap
        pending = self._pending
        while heap and heap[0][0] <= now:
            armed = pending.pop(heapq.heappop(heap)[1], None)
            if armed is None:
                continue  # stopped or re-armed since
            tx, timer = armed
            del tx._timers[timer]
            tx._input(timer, now)
        # Timer J and I of the records: the record goes, nothing else happens (the transaction
        # it replaced reported TransactionTerminated already).
        lingering = self._lingering
        for queue in (self._linger_j, self._linger_i):
            while queue and queue[0].deadline <= now:
                record = queue.popleft()
                if lingering.get(record.key) is record:
                    del lingering[record.key]

    def messages_to_send(self) -> list[tuple[Message, Address]]:
        """Drain the queued messages, in order, each with where it goes."""
        out, self._out = self._out, []
        return out

    def wire_to_send(self) -> list[tuple[bytes, Address]]:
        """Drain what lingering records sent in wire form (only with ``encode``), in order."""
        out, self._wire = self._wire, []
        return out

    def next_event(self) -> Event | None:
        """The next event for the TU, or ``None``."""
        return self._events.popleft() if self._events else None

    # --- internals ---

    def _arm(self, tx: Transaction, timer: Input, deadline: float) -> None:
        self._seq = seq = self._seq + 1
        old = tx._timers.get(timer)
        if old is not None:
            del self._pending[old[0]]
        tx._timers[timer] = (seq, deadline)
        self._pending[seq] = (tx, timer)
        heapq.heappush(self._heap, (deadline, seq))
        if len(self._heap) > 2 * len(self._pending) + 1024:
            self._compact()

    def _compact(self) -> None:
        # Lazy deletion leaves stopped timers in the heap until their deadline; under load
        # (Timer H stopped by every ACK) that is most of it, so sweep them out.
        pending = self._pending
        self._heap = [e for e in self._heap if e[1] in pending]
        heapq.heapify(self._heap)

    def _linger(self, tx: Transaction) -> None:
        """Replace ``tx`` (entering its LINGERS_IN state, linger timer unarmed) by a record."""
        assert isinstance(tx, ServerTransaction) and not tx._timers
        deadline = tx._interval
        if isinstance(tx, InviteServerTransaction):
            sent = tx.last_provisional
            tag = sent.to.tag if sent is not None else None
            if tag is None and tx.last_response is not None:
                tag = tx.last_response.to.tag
            record = LingeringServer(tx.key, None, tx.source, tag, deadline)
            self._enqueue(self._linger_i, record)
        else:
            final = tx.last_response
            assert final is not None
            encode = self._encode
            if encode is None:
                record = LingeringServer(tx.key, final, tx.source, None, deadline)
            else:
                data, dest = encode(final, tx.source)
                record = LingeringServer(tx.key, data, dest, None, deadline)
            self._enqueue(self._linger_j, record)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r: lingers as a compact record until %.3f", tx, deadline)
        self._lingering[tx.key] = record
        tx.state = tx.TERMINATED
        self._forget(tx)
        self._events.append(TransactionTerminated(tx))

    @staticmethod
    def _enqueue(queue: deque[LingeringServer], record: LingeringServer) -> None:
        if queue and queue[-1].deadline > record.deadline:
            # Only if ``now`` went backwards: keep the queue in deadline order.
            bisect.insort(queue, record, key=_deadline)
        else:
            queue.append(record)

    def _forget(self, tx: Transaction) -> None:
        table: dict[tuple[object, ...], Any] = (
            self._clients if isinstance(tx, ClientTransaction) else self._servers
        )
        if table.get(tx.key) is tx:
            del table[tx.key]


def _deadline(record: LingeringServer) -> float:
    return record.deadline


__all__ = [
    "ALL_MACHINES",
    "MAGIC_COOKIE",
    "REASON_PHRASES",
    "AckReceived",
    "CancelReceived",
    "ClientTransaction",
    "Event",
    "Input",
    "InviteClientState",
    "InviteClientTransaction",
    "InviteServerState",
    "InviteServerTransaction",
    "LingeringServer",
    "NonInviteClientState",
    "NonInviteClientTransaction",
    "NonInviteServerState",
    "NonInviteServerTransaction",
    "ProtocolError",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "StrayResponse",
    "TimerConfig",
    "Transaction",
    "TransactionLayer",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransportFailed",
    "make_ack_for_non2xx",
    "make_cancel",
    "make_response",
    "new_branch",
    "server_key",
]
