"""Test lines: numbers the switch answers itself, for checking a trunk end to end.

Carriers and sysadmins call a test number to see that signalling works both ways: the switch
answers 200 with an SDP answer whose stream is ``inactive`` (no media is promised: the media
engine is not involved), retransmits the 200 until the ACK arrives (RFC 3261 section 13.3.1.4),
and hangs up with BYE after ``hangup_after`` seconds, or when the caller sends BYE first. An ACK
that never comes ends the dialog with BYE after 64*T1, as the RFC asks. Sans-IO: the node feeds
it endpoint events and ``now``.

States of one test call (:data:`TABLE`): ANSWERED (200 sent, waiting for the ACK) -> CONFIRMED
-> HANGING_UP (our BYE sent) -> ENDED; the caller's BYE ends it from any of them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from softswitch import fsm
from softswitch.sip import endpoint as ep
from softswitch.sip import sdp
from softswitch.sip import transaction as txl
from softswitch.sip.dialog import AckTimeout, Dialog, DialogState, InviteResponder
from softswitch.sip.message import URI, Address, Request, Response
from softswitch.sip.timers import TimerConfig

log = logging.getLogger("softswitch.testline")

#: The discard port: an inactive stream needs a port, and nothing is sent to or from it.
INACTIVE_PORT = 9


class LineCallError(fsm.TransitionError):
    """An input the test call's state machine has no entry for."""


class LineCallState(enum.Enum):
    ANSWERED = "answered"  # 200 sent, waiting for the ACK
    CONFIRMED = "confirmed"
    HANGING_UP = "hanging up"  # our BYE sent
    ENDED = "ended"


class LineCallInput(enum.Enum):
    ACK = "ACK"
    BYE = "BYE from the caller"
    REQUEST = "other in-dialog request"
    HANGUP_DUE = "hang-up time"
    ACK_TIMEOUT = "no ACK in 64*T1"
    BYE_ANSWERED = "our BYE answered or timed out"


@dataclass(slots=True)
class _Call:
    dialog: Dialog
    invite_tx: txl.ServerTransaction
    responder: InviteResponder
    remote: Address
    hangup_at: float | None
    bye_tx: txl.ClientTransaction | None = None
    state: LineCallState = LineCallState.ANSWERED


def next_hop(request: Request, fallback: Address) -> Address:
    """Where an in-dialog request goes: the first Route if loose routing, else the target.

    Hostnames cannot be resolved here (sans-IO); a target that is not an IP address falls
    back to where the dialog's requests came from, which is what symmetric signalling wants.
    """
    uri: URI = request.uri
    route = request.header("Route")
    if route is not None:
        from softswitch.sip.headers import parse_route_list

        try:
            uri = parse_route_list(route)[0].uri
        except (ValueError, IndexError):
            return fallback
    transport = (uri.param("transport") or fallback.transport).upper()
    host = uri.host
    if not host or not (host.replace(".", "").isdigit() or ":" in host):
        return fallback
    return Address(host, uri.port or 5060, transport)


class TestLines:
    """The answering side of every configured test number."""

    def __init__(
        self, endpoint: ep.Endpoint, numbers: dict[str, float], timers: TimerConfig
    ) -> None:
        self.endpoint = endpoint
        self.numbers = numbers
        self.timers = timers
        self._calls: dict[tuple[str, str], _Call] = {}
        self._session = 0

    def wants(self, number: str) -> bool:
        return number in self.numbers

    def invite(
        self, tx: txl.ServerTransaction, req: Request, source: Address, number: str, now: float
    ) -> None:
        endpoint = self.endpoint
        local = endpoint.config
        self._session += 1
        try:
            if req.body:
                answer = sdp.negotiate_answer(
                    sdp.parse_sdp(req.body),
                    local.host,
                    INACTIVE_PORT,
                    session_id=self._session,
                    direction="inactive",
                )
                body = bytes(answer.answer)
            else:
                # No offer in the INVITE: ours goes in the 200, the answer comes in the ACK.
                body = bytes(
                    sdp.make_offer(
                        local.host, INACTIVE_PORT, session_id=self._session, direction="inactive"
                    )
                )
        except sdp.NoCommonCodec:
            endpoint.respond(tx, 488, now=now)
            return
        except sdp.SdpError as exc:
            log.info("test line %s: bad SDP from %s: %s", number, source, exc)
            endpoint.respond(tx, 400, "Bad SDP", now=now)
            return
        contact = URI(user=number, host=local.host, port=local.port)
        tag = endpoint.new_tag()
        try:
            dialog = Dialog.from_uas(
                req,
                tag,
                contact,
                local_via=endpoint.local_via(source.transport),
                new_id=endpoint.new_tag,
            )
        except ValueError as exc:
            endpoint.respond(tx, 400, str(exc)[:60], now=now)
            return
        endpoint.respond(tx, 100, now=now)
        headers = (*dialog.response_headers(req, 200, now=now), ("Content-Type", "application/sdp"))
        response = endpoint.respond(tx, 200, headers=headers, body=body, now=now, to_tag=tag)
        responder = InviteResponder(response, now, t1=self.timers.T1, t2=self.timers.T2)
        hangup = self.numbers[number]
        self._calls[(req.call_id, tag)] = _Call(
            dialog, tx, responder, source, now + hangup if hangup > 0 else None
        )
        log.info("test line %s answered a call from %s", number, req.from_.uri)

    def _find(self, req: Request | Response) -> _Call | None:
        tag = req.to.tag if isinstance(req, Request) else req.from_.tag
        return self._calls.get((req.call_id, tag or ""))

    def ack(self, req: Request) -> bool:
        call = self._find(req)
        if call is None:
            return False
        self._fire(call, LineCallInput.ACK, 0.0)
        return True

    def in_dialog(self, tx: txl.ServerTransaction, req: Request, now: float) -> bool:
        """A request inside one of our dialogs (BYE, re-INVITE ...); True if it was ours."""
        call = self._find(req)
        if call is None:
            return False
        answer = call.dialog.receive_request(req, now)
        if answer is None:
            # A re-INVITE or UPDATE to an inactive test call: nothing to renegotiate.
            answer = call.dialog.create_response(req, 488, "Not Acceptable Here", now=now)
        self.endpoint.send_response(tx, answer, now)
        inp = LineCallInput.BYE if req.method == "BYE" else LineCallInput.REQUEST
        self._fire(call, inp, now)
        return True

    def handle_event(self, event: ep.EndpointEvent, now: float) -> bool:
        if isinstance(event, ep.ResponseReceived | ep.TransactionTimedOut):
            for call in list(self._calls.values()):
                if call.bye_tx is event.tx:
                    if isinstance(event, ep.TransactionTimedOut) or event.response.status >= 200:
                        self._fire(call, LineCallInput.BYE_ANSWERED, now)
                    return True
        return False

    def get_timer(self) -> float | None:
        timers = []
        for call in self._calls.values():
            t = call.responder.get_timer()
            if t is not None:
                timers.append(t)
            if call.hangup_at is not None:
                timers.append(call.hangup_at)
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for call in list(self._calls.values()):
            for item in call.responder.handle_timer(now):
                if isinstance(item, AckTimeout):
                    self._fire(call, LineCallInput.ACK_TIMEOUT, now)
                else:
                    self.endpoint.send_response(call.invite_tx, item, now)
            if call.hangup_at is not None and now >= call.hangup_at:
                self._fire(call, LineCallInput.HANGUP_DUE, now)

    def active(self) -> int:
        return len(self._calls)

    # --- the state machine --------------------------------------------------------------------

    def _fire(self, call: _Call, inp: LineCallInput, now: float) -> None:
        old = call.state
        transition = TABLE.fire(old, inp, who=call.dialog.call_id)
        handler = transition.handler
        new = transition.target if handler is None else handler(self, call, now)
        call.state = TABLE.move(log, call.dialog.call_id, old, new, transition, inp)
        if new not in _HANGUP_TIMER_IN:
            call.hangup_at = None
        if new is LineCallState.ENDED:
            self._calls.pop((call.dialog.call_id, call.dialog.local_tag), None)

    def _acked(self, call: _Call, now: float) -> LineCallState:
        call.responder.ack_received()
        return LineCallState.CONFIRMED

    def _ack_again(self, call: _Call, now: float) -> LineCallState:
        # A retransmitted ACK, or the first one after our BYE: the 200 needs no more sending.
        call.responder.ack_received()
        return call.state

    def _caller_bye(self, call: _Call, now: float) -> LineCallState:
        log.info("test line call %s ended by the caller", call.dialog.call_id)
        return LineCallState.ENDED

    def _ack_timeout(self, call: _Call, now: float) -> LineCallState:
        log.warning("test line call %s: no ACK for our 200; hanging up", call.dialog.call_id)
        return self._bye(call, now)

    def _bye(self, call: _Call, now: float) -> LineCallState:
        if call.dialog.state is DialogState.TERMINATED:
            return LineCallState.ENDED
        bye = call.dialog.create_request("BYE", now=now)
        call.bye_tx = self.endpoint.send_request(bye, next_hop(bye, call.remote), now)
        return LineCallState.HANGING_UP


_Handler = Callable[[TestLines, _Call, float], LineCallState]
_T = TestLines
_S = LineCallState
_I = LineCallInput

#: Every entry: (state, input) -> (handler, the states it may lead to).
TABLE: fsm.Table[LineCallState, LineCallInput, _Handler] = fsm.Table(
    "test line call",
    {
        (_S.ANSWERED, _I.ACK): (_T._acked, _S.CONFIRMED),
        (_S.ANSWERED, _I.BYE): (_T._caller_bye, _S.ENDED),  # the BYE overtook the ACK
        (_S.ANSWERED, _I.REQUEST): (None, _S.ANSWERED),
        (_S.ANSWERED, _I.HANGUP_DUE): (_T._bye, {_S.HANGING_UP, _S.ENDED}),
        (_S.ANSWERED, _I.ACK_TIMEOUT): (_T._ack_timeout, {_S.HANGING_UP, _S.ENDED}),
        (_S.CONFIRMED, _I.ACK): (_T._ack_again, _S.CONFIRMED),
        (_S.CONFIRMED, _I.BYE): (_T._caller_bye, _S.ENDED),
        (_S.CONFIRMED, _I.REQUEST): (None, _S.CONFIRMED),
        (_S.CONFIRMED, _I.HANGUP_DUE): (_T._bye, {_S.HANGING_UP, _S.ENDED}),
        # Our BYE is out; the 200 is still retransmitted until the ACK (section 13.3.1.4).
        (_S.HANGING_UP, _I.ACK): (_T._ack_again, _S.HANGING_UP),
        (_S.HANGING_UP, _I.BYE): (_T._caller_bye, _S.ENDED),  # BYEs crossed
        (_S.HANGING_UP, _I.REQUEST): (None, _S.HANGING_UP),  # the dialog answered 481
        (_S.HANGING_UP, _I.ACK_TIMEOUT): (None, _S.ENDED),
        (_S.HANGING_UP, _I.BYE_ANSWERED): (None, _S.ENDED),
    },
    initial=_S.ANSWERED,
    final={_S.ENDED},
    error=LineCallError,
)

#: The states the hang-up timer runs in: leaving them stops it.
_HANGUP_TIMER_IN = TABLE.sources(LineCallInput.HANGUP_DUE)
