"""Trigger calls the service takes over: early media, then (sometimes) an answer. Sans-IO.

A trigger call is never answered when the customer hangs up after the first ring: that is
the free signal. But SPEC section 4 lets the customer change their location from the trigger
call itself: the switch sends 183 Session Progress with SDP and plays its own ringback in the
early media, listens there for ``#``, and answers only then (or when the caller has stayed on
the line for about four rings), putting the Location menu on the call. This module is the SIP
side of that: the node hands it the INVITE of a trigger the call controller wants
(:meth:`InboundCalls.offer`); the controller sends the 183 (:meth:`progress`), the 200
(:meth:`answer`) and the BYE (:meth:`hangup`); the 200 is retransmitted until the ACK (RFC 3261
section 13.3.1.4), and the caller's BYE, an ACK that never comes, or our BYE's answer end the
call with :class:`InboundEnded`. :class:`TriggerAnswered` tells the node that the trigger is
a call now (no 487, no callback).

States of one call (:data:`TABLE`): RINGING (183 sent or not yet) -> ANSWERED (200 sent, no
ACK yet) -> CONFIRMED -> HANGING_UP (our BYE sent) -> ENDED; the caller's BYE ends it from
any answered state. Before the answer the INVITE transaction belongs to the node (CANCEL, the
ring limit), which calls :meth:`forget`.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from softswitch import fsm
from softswitch.node.testline import next_hop
from softswitch.sip import endpoint as ep
from softswitch.sip import transaction as txl
from softswitch.sip.dialog import AckTimeout, Dialog, DialogError, DialogState, InviteResponder
from softswitch.sip.message import URI, Address, Request
from softswitch.sip.timers import TimerConfig

__all__ = ["TABLE", "InboundCalls", "InboundEnded", "InboundError", "TriggerAnswered"]

log = logging.getLogger("softswitch.inbound")


class InboundError(fsm.TransitionError):
    """An input an inbound call's state machine has no entry for."""


class InboundState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"  # 200 sent, waiting for the ACK
    CONFIRMED = "confirmed"
    HANGING_UP = "hanging up"  # our BYE sent
    ENDED = "ended"


class _In(enum.Enum):
    PROGRESS = "183 with SDP sent"
    ANSWER = "200 sent"
    ACK = "ACK"
    BYE = "BYE from the caller"
    REQUEST = "other in-dialog request"
    HANGUP = "hang up (BYE)"
    ACK_TIMEOUT = "no ACK in 64*T1"
    BYE_ANSWERED = "our BYE answered or timed out"


@dataclass(frozen=True, slots=True)
class TriggerAnswered:
    """The trigger call ``key`` was answered: for the node, it is no longer ringing."""

    key: str


@dataclass(frozen=True, slots=True)
class InboundEnded:
    """The answered call on ``leg_id`` is over (``by_remote``: the caller's BYE or silence)."""

    leg_id: str
    by_remote: bool
    reason: str


InboundEvent = TriggerAnswered | InboundEnded


@dataclass(slots=True)
class _Call:
    key: str
    tx: txl.ServerTransaction
    request: Request
    source: Address
    to_tag: str
    leg_id: str = ""
    dialog: Dialog | None = None
    responder: InviteResponder | None = None
    bye_tx: txl.ClientTransaction | None = None
    state: InboundState = InboundState.RINGING


class InboundCalls:
    """The trigger calls handed to the call controller; see the module docstring."""

    def __init__(self, endpoint: ep.Endpoint, timers: TimerConfig) -> None:
        self.endpoint = endpoint
        self.timers = timers
        self._ringing: dict[str, _Call] = {}  # trigger key -> call, before the answer
        self._answered: dict[str, _Call] = {}  # leg id -> call
        self._by_dialog: dict[tuple[str, str], _Call] = {}
        self._events: deque[InboundEvent] = deque()

    # --- the node's side ----------------------------------------------------------------------

    def offer(
        self,
        key: str,
        tx: txl.ServerTransaction,
        request: Request,
        source: Address,
        to_tag: str,
    ) -> None:
        """The INVITE of a trigger call the controller takes over (early media, maybe more)."""
        self._ringing[key] = _Call(key, tx, request, source, to_tag)

    def forget(self, key: str) -> None:
        """The trigger ended before any answer (CANCEL, a BYE, the ring limit)."""
        self._ringing.pop(key, None)

    def next_event(self) -> InboundEvent | None:
        return self._events.popleft() if self._events else None

    # --- the controller's side ----------------------------------------------------------------

    def answered_calls(self) -> int:
        """Answered trigger calls held until they end (the ringing ones are the node's)."""
        return len(self._answered)

    def offered(self, key: str) -> Request | None:
        """The INVITE of ringing trigger ``key`` (None once it has ended or been answered)."""
        call = self._ringing.get(key)
        return None if call is None else call.request

    def ring(self, key: str, now: float) -> None:
        """Plain ringing (180) after all: the controller gave up on early media."""
        call = self._ringing.get(key)
        if call is not None and call.tx.can_send_final():
            self.endpoint.respond(call.tx, 180, now=now, to_tag=call.to_tag)

    def progress(self, key: str, sdp_answer: bytes, now: float) -> bool:
        """183 Session Progress with our SDP: the caller hears the switch's early media."""
        call = self._ringing.get(key)
        if call is None or not call.tx.can_send_final():
            return False
        self._fire(call, _In.PROGRESS, now)
        self.endpoint.respond(
            call.tx,
            183,
            headers=(("Content-Type", "application/sdp"),),
            body=sdp_answer,
            now=now,
            to_tag=call.to_tag,
        )
        return True

    def answer(self, key: str, leg_id: str, sdp_answer: bytes, now: float) -> bool:
        """200 OK with our SDP (retransmitted until the ACK): the trigger is a call now."""
        call = self._ringing.get(key)
        if call is None or not call.tx.can_send_final():
            return False
        endpoint = self.endpoint
        local = endpoint.config
        contact = URI(user=call.request.uri.user, host=local.host, port=local.port)
        try:
            dialog = Dialog.from_uas(
                call.request,
                call.to_tag,
                contact,
                local_via=endpoint.local_via(call.source.transport),
                new_id=endpoint.new_tag,
            )
        except (ValueError, DialogError) as exc:
            # DialogError (an INVITE without Contact) used to escape out of the node's timer
            # and leave the trigger ringing for good (issue 11, found by fuzzing).
            log.warning("trigger %s: cannot answer: %s", key, exc)
            return False
        headers = (
            *dialog.response_headers(call.request, 200, now=now),
            ("Content-Type", "application/sdp"),
        )
        response = endpoint.respond(
            call.tx, 200, headers=headers, body=sdp_answer, now=now, to_tag=call.to_tag
        )
        del self._ringing[key]
        call.leg_id = leg_id
        call.dialog = dialog
        call.responder = InviteResponder(response, now, t1=self.timers.T1, t2=self.timers.T2)
        self._answered[leg_id] = call
        self._by_dialog[(dialog.call_id, dialog.local_tag)] = call
        self._fire(call, _In.ANSWER, now)
        self._events.append(TriggerAnswered(key))
        log.info("trigger %s answered (leg %s)", key, leg_id)
        return True

    def hangup(self, leg_id: str, now: float) -> None:
        """End the answered call with BYE (nothing for a call already over)."""
        call = self._answered.get(leg_id)
        if call is not None and call.state in (InboundState.ANSWERED, InboundState.CONFIRMED):
            self._fire(call, _In.HANGUP, now)

    # --- endpoint events ----------------------------------------------------------------------

    def ack(self, req: Request) -> bool:
        call = self._by_dialog.get((req.call_id, req.to.tag or ""))
        if call is None:
            return False
        if call.state is not InboundState.ENDED:
            self._fire(call, _In.ACK, 0.0)
        return True

    def in_dialog(self, tx: txl.ServerTransaction, req: Request, now: float) -> bool:
        """A request inside one of our calls (BYE, re-INVITE ...); True if it was ours."""
        call = self._by_dialog.get((req.call_id, req.to.tag or ""))
        if call is None or call.dialog is None:
            return False
        answer = call.dialog.receive_request(req, now)
        if answer is None:
            # A re-INVITE or UPDATE: the menu's media stays as it is.
            answer = call.dialog.create_response(req, 488, "Not Acceptable Here", now=now)
        self.endpoint.send_response(tx, answer, now)
        if call.state is not InboundState.ENDED:
            self._fire(call, _In.BYE if req.method == "BYE" else _In.REQUEST, now)
        return True

    def handle_event(self, event: ep.EndpointEvent, now: float) -> bool:
        if isinstance(event, ep.ResponseReceived | ep.TransactionTimedOut):
            for call in list(self._answered.values()):
                if call.bye_tx is event.tx:
                    final = (
                        isinstance(event, ep.TransactionTimedOut) or event.response.status >= 200
                    )
                    if final and call.state is InboundState.HANGING_UP:
                        self._fire(call, _In.BYE_ANSWERED, now)
                    return True
        return False

    def get_timer(self) -> float | None:
        timers = [
            t
            for call in self._answered.values()
            if call.responder is not None and (t := call.responder.get_timer()) is not None
        ]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for call in list(self._answered.values()):
            if call.responder is None:
                continue
            for item in call.responder.handle_timer(now):
                if isinstance(item, AckTimeout):
                    if call.state is not InboundState.ENDED:
                        self._fire(call, _In.ACK_TIMEOUT, now)
                else:
                    self.endpoint.send_response(call.tx, item, now)

    # --- the state machine --------------------------------------------------------------------

    def _fire(self, call: _Call, inp: _In, now: float) -> None:
        old = call.state
        transition = TABLE.fire(old, inp, who=call.key)
        handler = transition.handler
        new = transition.target if handler is None else handler(self, call, now)
        call.state = TABLE.move(log, call.key, old, new, transition, inp)
        if new is InboundState.ENDED:
            self._answered.pop(call.leg_id, None)
            if call.dialog is not None:
                self._by_dialog.pop((call.dialog.call_id, call.dialog.local_tag), None)

    def _acked(self, call: _Call, now: float) -> InboundState:
        assert call.responder is not None
        call.responder.ack_received()
        return InboundState.CONFIRMED if call.state is InboundState.ANSWERED else call.state

    def _caller_bye(self, call: _Call, now: float) -> InboundState:
        log.info("trigger %s: the caller hung up", call.key)
        self._events.append(InboundEnded(call.leg_id, True, "BYE from the caller"))
        return InboundState.ENDED

    def _ack_timeout(self, call: _Call, now: float) -> InboundState:
        log.warning("trigger %s: no ACK for our 200; hanging up", call.key)
        self._events.append(InboundEnded(call.leg_id, True, "no ACK"))
        return self._bye(call, now)

    def _bye(self, call: _Call, now: float) -> InboundState:
        dialog = call.dialog
        if dialog is None or dialog.state is DialogState.TERMINATED:
            return InboundState.ENDED
        bye = dialog.create_request("BYE", now=now)
        call.bye_tx = self.endpoint.send_request(bye, next_hop(bye, call.source), now)
        return InboundState.HANGING_UP


_Handler = Callable[[InboundCalls, _Call, float], InboundState]
_I = InboundCalls
_S = InboundState

#: Every entry: (state, input) -> (handler, the states it may lead to).
TABLE: fsm.Table[InboundState, _In, _Handler] = fsm.Table(
    "inbound call",
    {
        (_S.RINGING, _In.PROGRESS): (None, _S.RINGING),
        (_S.RINGING, _In.ANSWER): (None, _S.ANSWERED),
        (_S.ANSWERED, _In.ACK): (_I._acked, _S.CONFIRMED),
        (_S.ANSWERED, _In.BYE): (_I._caller_bye, _S.ENDED),  # the BYE overtook the ACK
        (_S.ANSWERED, _In.REQUEST): (None, _S.ANSWERED),
        (_S.ANSWERED, _In.HANGUP): (_I._bye, {_S.HANGING_UP, _S.ENDED}),
        (_S.ANSWERED, _In.ACK_TIMEOUT): (_I._ack_timeout, {_S.HANGING_UP, _S.ENDED}),
        (_S.CONFIRMED, _In.ACK): (_I._acked, _S.CONFIRMED),
        (_S.CONFIRMED, _In.BYE): (_I._caller_bye, _S.ENDED),
        (_S.CONFIRMED, _In.REQUEST): (None, _S.CONFIRMED),
        (_S.CONFIRMED, _In.HANGUP): (_I._bye, {_S.HANGING_UP, _S.ENDED}),
        # Our BYE is out; the 200 is still retransmitted until the ACK (section 13.3.1.4).
        (_S.HANGING_UP, _In.ACK): (_I._acked, _S.HANGING_UP),
        (_S.HANGING_UP, _In.BYE): (None, _S.ENDED),  # BYEs crossed
        (_S.HANGING_UP, _In.REQUEST): (None, _S.HANGING_UP),
        (_S.HANGING_UP, _In.ACK_TIMEOUT): (None, _S.ENDED),
        (_S.HANGING_UP, _In.BYE_ANSWERED): (None, _S.ENDED),
    },
    initial=_S.RINGING,
    final={_S.ENDED},
    error=InboundError,
)
