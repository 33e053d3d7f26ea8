"""Outbound call legs through the trunk (UAC side), sans-IO.

The callback leg and the destination leg are INVITEs the switch sends to the carrier. This
module turns "call this number with this SDP offer" into RFC 3261 signalling: the INVITE in a
client transaction to the trunk proxy, digest answers to 401/407 from the trunk peer only
(CVE-2021-41158), early dialogs from 18x, the ACK for a 2xx (and again for each retransmitted
2xx), CANCEL while ringing, BYE once answered, and the peer's BYE or re-INVITE inside the dialog.
It reports what the service needs as :class:`LegEvent` values: ringing (with early media SDP),
answered (with the answer SDP), failed (with the status) and ended.

States of one leg: CALLING -> RINGING -> ANSWERED -> ENDED, or CALLING/RINGING -> FAILED;
CANCELLING while a CANCEL waits for the INVITE's final response. :data:`TABLE` says where each
event goes, ``(state, input) -> (handler, next states)``: the INVITE's responses (100,
provisional, 2xx, failure), the transaction timing out, the switch hanging up, the ring timer,
the far end's BYE and other in-dialog requests, and the answer to our own BYE. A leg stays in
ENDED after our BYE until the BYE is answered (a retransmitted 2xx is ACKed again meanwhile).
Events from the network that the table has no entry for are logged and dropped (a peer's
doing); an input the switch itself sends in the wrong state raises :class:`LegError`.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from softswitch import fsm
from softswitch.config import TrunkConfig
from softswitch.node.testline import next_hop
from softswitch.sip import auth
from softswitch.sip import endpoint as ep
from softswitch.sip import transaction as txl
from softswitch.sip.dialog import AckTimeout, Dialog, DialogError, InviteResponder
from softswitch.sip.message import URI, Address, CSeq, NameAddr, Request, Response

log = logging.getLogger("softswitch.outbound")

#: Terminated transactions are swept from the routing table every this many seconds (on the
#: node's timer), and whenever it has grown by this many entries more than twice what the
#: last sweep left.
TX_SWEEP_INTERVAL = 10.0
TX_SWEEP_SLACK = 64


class LegState(enum.Enum):
    CALLING = "calling"
    RINGING = "ringing"
    CANCELLING = "cancelling"
    ANSWERED = "answered"
    ENDED = "ended"
    FAILED = "failed"


class LegError(fsm.TransitionError):
    """An input the outbound leg's state machine has no entry for."""


class LegInput(enum.Enum):
    """What can happen to an outbound leg."""

    PROGRESS = "100 or 1xx without To tag"
    PROVISIONAL = "1xx with To tag"
    ANSWERED = "2xx"
    FAILED = "3xx-6xx"
    TIMED_OUT = "no response (Timer B, the CANCEL's Timer F)"
    HANGUP = "the switch hangs up"
    RING_TIMEOUT = "ring timeout"
    BYE = "BYE from the far end"
    REQUEST = "other in-dialog request"
    BYE_ANSWERED = "our BYE answered or timed out"


@dataclass(frozen=True, slots=True)
class LegRinging:
    leg_id: str
    status: int
    sdp: bytes | None


@dataclass(frozen=True, slots=True)
class LegAnswered:
    leg_id: str
    sdp: bytes


@dataclass(frozen=True, slots=True)
class LegFailed:
    """The INVITE ended without a call; ``status`` is the final response (408 on timeout)."""

    leg_id: str
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class LegEnded:
    leg_id: str
    by_remote: bool
    reason: str


@dataclass(frozen=True, slots=True)
class LegReinvite:
    """The far end of an answered leg offers T.38 (a re-INVITE with an image stream): the
    offer waits for :meth:`OutboundCalls.answer_reinvite` (the other leg's answer, relayed)."""

    leg_id: str
    sdp: bytes


@dataclass(frozen=True, slots=True)
class LegReinviteAnswered:
    """The answer to our re-INVITE on ``leg_id`` (:meth:`OutboundCalls.reinvite`): ``status``
    and its SDP (408 when none came)."""

    leg_id: str
    status: int
    sdp: bytes


LegEvent = LegRinging | LegAnswered | LegFailed | LegEnded | LegReinvite | LegReinviteAnswered


@dataclass(slots=True)
class _Leg:
    leg_id: str
    invite: Request
    tx: txl.ClientTransaction
    state: LegState = LegState.CALLING
    dialog: Dialog | None = None
    ack: Request | None = None
    ring_deadline: float | None = None
    auth_tries: int = 0
    bye_tx: txl.ClientTransaction | None = None
    cancel_sent: bool = False
    sdp_offer: bytes = b""
    #: A re-INVITE from the far end waiting for the answer we relay (T.38), and the
    #: retransmissions of that answer until its ACK (RFC 3261 section 13.3.1.4).
    incoming: tuple[txl.ServerTransaction, Request] | None = None
    responder: InviteResponder | None = None
    responder_tx: txl.ServerTransaction | None = None
    #: Our re-INVITE (a relayed offer) while it waits for its answer, and its ACK.
    outgoing_tx: txl.ClientTransaction | None = None
    reinvite_ack: Request | None = None


class OutboundCalls:
    """Every outbound leg of one node."""

    def __init__(self, endpoint: ep.Endpoint, trunk: TrunkConfig) -> None:
        self.endpoint = endpoint
        self.trunk = trunk
        self.proxy = Address(trunk.proxy[0], trunk.proxy[1], trunk.transport.upper())
        registrar_host = trunk.registrar.split(":", 1)[1] if trunk.registrar else None
        self.domain = (registrar_host or trunk.proxy[0]).split(";", 1)[0]
        self._digest = (
            auth.DigestClient(trunk.username, trunk.password, peers=[self.proxy], realm=trunk.realm)
            if trunk.username and trunk.password
            else None
        )
        self._legs: dict[str, _Leg] = {}
        #: Our client transactions by id(): the transaction is kept with its leg, so its id
        #: cannot be reused while the entry lives; entries of terminated transactions are
        #: swept (amortized, :meth:`_own`), so they do not pile up with every call.
        self._by_tx: dict[int, tuple[txl.ClientTransaction, str]] = {}
        self._by_tx_swept = 0  # entries left by the last sweep
        self._sweep_at = 0.0
        self._events: deque[LegEvent] = deque()
        self._ring_heap: list[tuple[float, str]] = []

    # --- the service's side -------------------------------------------------------------------

    def originate(
        self,
        leg_id: str,
        number: str,
        sdp_offer: bytes,
        now: float,
        *,
        caller_id: str | None = None,
        ring_timeout: float | None = None,
    ) -> None:
        """Call ``number`` (digits, international prefix already applied) through the trunk."""
        endpoint = self.endpoint
        local = endpoint.config
        user = caller_id or self.trunk.caller_id or self.trunk.username or "softswitch"
        target = URI(user=number, host=self.domain)
        invite = Request(
            method="INVITE",
            uri=target,
            vias=(endpoint.local_via(self.proxy.transport),),
            from_=NameAddr(URI(user=user, host=self.domain), params=(("tag", endpoint.new_tag()),)),
            to=NameAddr(target),
            call_id=endpoint.new_call_id(),
            cseq=CSeq(1, "INVITE"),
            headers=(
                ("Max-Forwards", "70"),
                ("Contact", f"<sip:{user}@{URI(host=local.host, port=local.port).host_port}>"),
                ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
                ("Supported", "timer"),
                ("User-Agent", local.user_agent),
                ("Content-Type", "application/sdp"),
            ),
            body=sdp_offer,
        )
        tx = endpoint.send_request(invite, self.proxy, now)
        leg = _Leg(
            leg_id,
            tx.request,
            tx,
            sdp_offer=sdp_offer,
            ring_deadline=None if ring_timeout is None else now + ring_timeout,
        )
        self._legs[leg_id] = leg
        self._own(tx, leg_id)
        if leg.ring_deadline is not None:
            heapq.heappush(self._ring_heap, (leg.ring_deadline, leg_id))
        log.info("leg %s: calling %s (Call-ID %s)", leg_id, number, invite.call_id)

    def hangup(self, leg_id: str, now: float) -> None:
        """CANCEL a ringing leg, BYE an answered one; nothing for a leg already over."""
        leg = self._legs.get(leg_id)
        if leg is not None:
            self._fire(leg, LegInput.HANGUP, now)

    def next_event(self) -> LegEvent | None:
        return self._events.popleft() if self._events else None

    # --- re-INVITEs relayed between legs (T.38, SPEC section 6) --------------------------------

    def reinvite(self, leg_id: str, sdp: bytes, now: float) -> bool:
        """Offer ``sdp`` to the far end of answered ``leg_id`` in a re-INVITE; False if the
        leg cannot take one now (not answered, or an offer already pending)."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.state is not LegState.ANSWERED or leg.dialog is None:
            return False
        if leg.outgoing_tx is not None:
            return False
        try:
            request = leg.dialog.create_request(
                "INVITE", body=sdp, headers=(("Content-Type", "application/sdp"),), now=now
            )
        except DialogError as exc:
            log.info("leg %s: no re-INVITE now: %s", leg_id, exc)
            return False
        tx = self.endpoint.send_request(request, next_hop(request, self.proxy), now)
        leg.outgoing_tx = tx
        self._own(tx, leg_id)
        return True

    def answer_reinvite(self, leg_id: str, status: int, sdp: bytes, now: float) -> None:
        """Answer the far end's pending re-INVITE on ``leg_id`` (a 2xx is retransmitted until
        its ACK; anything else leaves the session as it was)."""
        leg = self._legs.get(leg_id)
        if leg is None or leg.incoming is None or leg.dialog is None:
            return
        tx, request = leg.incoming
        leg.incoming = None
        status = status if 200 <= status < 700 else 500
        headers = leg.dialog.response_headers(request, status, now=now)
        if sdp and status < 300:
            headers = (*headers, ("Content-Type", "application/sdp"))
        reason = "OK" if status < 300 else "Not Acceptable Here" if status == 488 else "Failed"
        response = leg.dialog.create_response(
            request, status, reason, headers=headers, body=sdp if status < 300 else b"", now=now
        )
        self.endpoint.send_response(tx, response, now)
        if status < 300:
            timers = self.endpoint.config.timers
            leg.responder = InviteResponder(response, now, t1=timers.T1, t2=timers.T2)
            leg.responder_tx = tx

    def ack(self, request: Request) -> bool:
        """An ACK in one of our dialogs (for a relayed re-INVITE's 2xx); True if it was ours."""
        for leg in self._legs.values():
            dialog = leg.dialog
            if (
                dialog is not None
                and dialog.call_id == request.call_id
                and dialog.local_tag == request.to.tag
            ):
                if leg.responder is not None:
                    leg.responder.ack_received()
                return True
        return False

    def state(self, leg_id: str) -> LegState | None:
        leg = self._legs.get(leg_id)
        return None if leg is None else leg.state

    # --- timers ---------------------------------------------------------------------------------

    def _responder_timer(self) -> float | None:
        timers = [
            t
            for leg in self._legs.values()
            if leg.responder is not None and (t := leg.responder.get_timer()) is not None
        ]
        return min(timers) if timers else None

    def get_timer(self) -> float | None:
        heap = self._ring_heap
        # Lazy deletion: entries of legs that were answered, failed or re-armed are skipped.
        while heap and self._ring_stale(heap[0]):
            heapq.heappop(heap)
        ring = heap[0][0] if heap else None
        answer = self._responder_timer()
        if ring is None or answer is None:
            return ring if answer is None else answer
        return min(ring, answer)

    def _ring_stale(self, entry: tuple[float, str]) -> bool:
        leg = self._legs.get(entry[1])
        return leg is None or leg.ring_deadline != entry[0]

    def handle_timer(self, now: float) -> None:
        if now >= self._sweep_at:
            self._sweep_at = now + TX_SWEEP_INTERVAL
            self._sweep()
        heap = self._ring_heap
        while heap and heap[0][0] <= now:
            entry = heapq.heappop(heap)
            if self._ring_stale(entry):
                continue
            leg = self._legs[entry[1]]
            leg.ring_deadline = None
            self._fire(leg, LegInput.RING_TIMEOUT, now)
        for leg in list(self._legs.values()):
            if leg.responder is None:
                continue
            for item in leg.responder.handle_timer(now):
                if isinstance(item, AckTimeout):
                    leg.responder = None  # the far end will notice; the call goes on
                elif leg.responder_tx is not None:
                    self.endpoint.send_response(leg.responder_tx, item, now)

    # --- endpoint events ----------------------------------------------------------------------

    def handle_event(self, event: ep.EndpointEvent, now: float) -> bool:
        """Take the endpoint events that belong to our legs; True if it was ours."""
        if isinstance(event, ep.ResponseReceived):
            owned = self._by_tx.get(id(event.tx))
            if owned is None:
                return False
            leg_id = owned[1]
            leg = self._legs.get(leg_id)
            status = event.response.status
            if status >= 300 or (status >= 200 and event.tx.request.method != "INVITE"):
                # Completed: it absorbs retransmissions, nothing more comes up from it. (An
                # INVITE's 2xx may come again, to be ACKed again: that entry waits for a sweep.)
                del self._by_tx[id(event.tx)]
            if leg is None:
                pass  # the leg is over (a 200 to our CANCEL after the 487, a late fork's 2xx)
            elif event.tx is leg.bye_tx:
                if status >= 200:
                    self._network(leg, LegInput.BYE_ANSWERED, now)
            elif event.tx is leg.outgoing_tx:
                self._reinvite_answered(leg, event.response, now)
            elif event.tx.request.method == "INVITE":
                inp = _response_input(event.response)
                self._network(leg, inp, now, event.response, event.source)
            return True
        if isinstance(event, ep.TransactionTimedOut):
            owned = self._by_tx.pop(id(event.tx), None)
            if owned is None:
                return False
            leg_id = owned[1]
            timed_out = self._legs.get(leg_id)
            if timed_out is not None and event.tx is timed_out.outgoing_tx:
                timed_out.outgoing_tx = None
                self._events.append(LegReinviteAnswered(leg_id, 408, b""))
            elif timed_out is not None:
                inp = LegInput.BYE_ANSWERED if event.tx is timed_out.bye_tx else LegInput.TIMED_OUT
                self._network(timed_out, inp, now)
            return True
        if isinstance(event, ep.StrayResponse):
            return self._stray(event.response, now)
        if isinstance(event, ep.RequestReceived) and event.request.to.tag is not None:
            return self._in_dialog(event.tx, event.request, now)
        return False

    def _stray(self, response: Response, now: float) -> bool:
        """A retransmitted 2xx after the INVITE transaction is gone: ACK it again (13.2.2.4)."""
        for leg in self._legs.values():
            ack = leg.reinvite_ack
            if (
                ack is not None
                and leg.invite.call_id == response.call_id
                and ack.cseq.seq == response.cseq.seq
            ):
                self.endpoint.send_ack(ack, next_hop(ack, self.proxy))
                return True
            if (
                leg.ack is not None
                and leg.invite.call_id == response.call_id
                and leg.ack.cseq.seq == response.cseq.seq
            ):
                self._network(leg, LegInput.ANSWERED, now, response)
                return True
        return False

    def _in_dialog(self, tx: txl.ServerTransaction, req: Request, now: float) -> bool:
        for leg in self._legs.values():
            dialog = leg.dialog
            if dialog is None or dialog.call_id != req.call_id or dialog.local_tag != req.to.tag:
                continue
            answer = dialog.receive_request(req, now)
            if (
                answer is None
                and req.method == "INVITE"
                and _offers_t38(req.body)
                and leg.state is LegState.ANSWERED
                and leg.incoming is None
            ):
                # T.38: the other leg must answer it (relayed by the controller), not us.
                leg.incoming = (tx, req)
                self._events.append(LegReinvite(leg.leg_id, req.body))
                return True
            if answer is None:
                if req.method == "INVITE":
                    # A re-INVITE (hold, refresh): keep our session as it is.
                    headers = (
                        *dialog.response_headers(req, 200, now=now),
                        ("Content-Type", "application/sdp"),
                    )
                    answer = dialog.create_response(
                        req, 200, "OK", headers=headers, body=leg.sdp_offer, now=now
                    )
                else:
                    answer = dialog.create_response(req, 200, "OK", now=now)
            self.endpoint.send_response(tx, answer, now)
            self._network(leg, LegInput.BYE if req.method == "BYE" else LegInput.REQUEST, now)
            return True
        return False

    # --- the state machine --------------------------------------------------------------------

    def _network(
        self,
        leg: _Leg,
        inp: LegInput,
        now: float,
        response: Response | None = None,
        source: Address | None = None,
    ) -> None:
        # What the peer sends is the peer's doing: an event the table does not take in this
        # state (a late response after the leg failed, say) is dropped, never a crash.
        if not TABLE.accepts(leg.state, inp):
            log.debug("leg %s: %s dropped in %s", leg.leg_id, inp.value, leg.state.name)
            return
        self._fire(leg, inp, now, response, source)

    def _fire(
        self,
        leg: _Leg,
        inp: LegInput,
        now: float,
        response: Response | None = None,
        source: Address | None = None,
    ) -> None:
        """Run the table's entry for ``inp``; the handler says where the leg ends up."""
        old = leg.state
        transition = TABLE.fire(old, inp, who=leg.leg_id)
        handler = transition.handler
        new = transition.target if handler is None else handler(self, leg, response, source, now)
        leg.state = TABLE.move(log, leg.leg_id, old, new, transition, inp)
        if new not in _RING_TIMER_IN:
            leg.ring_deadline = None

    # --- handlers: one per (state, input) that does more than move ----------------------------

    def _ringing(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        assert response is not None
        self._events.append(LegRinging(leg.leg_id, response.status, response.body or None))
        return LegState.RINGING

    def _cancel_on_provisional(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        # RFC 3261 section 9.1: the CANCEL waited for a provisional response; here it is.
        if not leg.cancel_sent:
            self._send_cancel(leg, now)
        return LegState.CANCELLING

    def _answered(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        assert response is not None
        self._ack(leg, response, now)
        self._events.append(LegAnswered(leg.leg_id, response.body))
        return LegState.ANSWERED

    def _answered_after_cancel(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        # Our CANCEL crossed the 2xx: the call exists, so end it properly (section 15).
        assert response is not None
        self._ack(leg, response, now)
        return self._bye(leg, now, "answered after CANCEL")

    def _ack_again(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        # A retransmitted 2xx (RFC 6026: the transaction, in Accepted, passes each one up, and
        # a stray one comes after it): our ACK was lost, so the same ACK again (13.2.2.4).
        assert leg.ack is not None
        self.endpoint.send_ack(leg.ack, next_hop(leg.ack, self.proxy))
        return leg.state

    def _failed_calling(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        assert response is not None
        status = response.status
        if status in (401, 407) and self._digest is not None and leg.auth_tries < 2:
            answer = self._digest.answer(leg.invite, response, source or self.proxy)
            if isinstance(answer, auth.AuthHeader):
                leg.auth_tries += 1
                self._resend_with_credentials(leg, answer, now)
                return LegState.CALLING
            log.warning(
                "leg %s: %d from the trunk not answered: %s",
                leg.leg_id,
                status,
                answer.refusal.value,
            )
        return self._fail(leg, status, response.reason)

    def _failed(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        assert response is not None
        return self._fail(leg, response.status, response.reason)

    def _failed_cancelling(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        assert response is not None
        if response.status == 487:
            return self._fail(leg, 487, "cancelled")
        return self._fail(leg, response.status, response.reason)

    def _timed_out(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        return self._fail(leg, 408, "no response from the trunk")

    def _hang_up_ringing(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        tx = leg.tx
        if isinstance(tx, txl.InviteClientTransaction) and tx.can_cancel():
            self._send_cancel(leg, now)
        # Otherwise no provisional has arrived yet: RFC 3261 section 9.1 says wait for one;
        # the first 1xx sends the CANCEL (and Timer B ends the INVITE if none ever comes).
        return LegState.CANCELLING

    def _ring_timeout(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        log.info("leg %s: no answer, cancelling", leg.leg_id)
        return self._hang_up_ringing(leg, response, source, now)

    def _hang_up_answered(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        return self._bye(leg, now, "hung up by the switch")

    def _far_end_bye(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        self._events.append(LegEnded(leg.leg_id, True, "BYE from the far end"))
        self._legs.pop(leg.leg_id, None)
        return LegState.ENDED

    def _bye_answered(
        self, leg: _Leg, response: Response | None, source: Address | None, now: float
    ) -> LegState:
        self._legs.pop(leg.leg_id, None)
        return LegState.ENDED

    # --- internals ----------------------------------------------------------------------------

    def _reinvite_answered(self, leg: _Leg, response: Response, now: float) -> None:
        """A response to our relayed re-INVITE: ACK a 2xx, pass the answer on."""
        if response.status < 200:
            return
        leg.outgoing_tx = None
        if leg.dialog is not None:
            leg.dialog.receive_response(response, now)
            if response.status < 300:
                leg.reinvite_ack = leg.dialog.create_ack(response)
                self.endpoint.send_ack(leg.reinvite_ack, next_hop(leg.reinvite_ack, self.proxy))
        self._events.append(LegReinviteAnswered(leg.leg_id, response.status, response.body))

    def _resend_with_credentials(self, leg: _Leg, header: auth.AuthHeader, now: float) -> None:
        old = leg.invite
        headers = (
            *(h for h in old.headers if h[0] != header.name),
            (header.name, header.value),
        )
        invite = Request(
            old.method,
            old.uri,
            (self.endpoint.local_via(self.proxy.transport),),
            old.from_,
            old.to,
            old.call_id,
            CSeq(old.cseq.seq + 1, "INVITE"),
            headers,
            old.body,
            old.version,
        )
        self._by_tx.pop(id(leg.tx), None)
        tx = self.endpoint.send_request(invite, self.proxy, now)
        leg.tx = tx
        leg.invite = tx.request
        self._own(tx, leg.leg_id)

    def _own(self, tx: txl.ClientTransaction, leg_id: str) -> None:
        """Route ``tx``'s responses and timeout to ``leg_id`` (see ``_by_tx``)."""
        if len(self._by_tx) > 2 * self._by_tx_swept + TX_SWEEP_SLACK:
            self._sweep()
        self._by_tx[id(tx)] = (tx, leg_id)

    def _sweep(self) -> None:
        """Forget the transactions that have terminated (an INVITE's, once it stops waiting
        for retransmitted 2xx; any whose final response was lost)."""
        by_tx = self._by_tx
        for key in [key for key, (tx, _) in by_tx.items() if tx.terminated]:
            del by_tx[key]
        self._by_tx_swept = len(by_tx)

    def _ack(self, leg: _Leg, response: Response, now: float) -> None:
        """The dialog of a 2xx (or the early one it confirms) and its ACK."""
        if leg.dialog is None:
            leg.dialog = Dialog.from_uac(
                leg.invite, response, now=now, new_id=self.endpoint.new_tag
            )
        else:
            leg.dialog.receive_response(response, now)
        leg.ack = leg.dialog.create_ack(response)
        self.endpoint.send_ack(leg.ack, next_hop(leg.ack, self.proxy))

    def _send_cancel(self, leg: _Leg, now: float) -> None:
        leg.cancel_sent = True
        cancel_tx = self.endpoint.send_request(txl.make_cancel(leg.invite), self.proxy, now)
        self._own(cancel_tx, leg.leg_id)

    def _bye(self, leg: _Leg, now: float, why: str) -> LegState:
        assert leg.dialog is not None
        bye = leg.dialog.create_request("BYE", now=now)
        leg.bye_tx = self.endpoint.send_request(bye, next_hop(bye, self.proxy), now)
        self._own(leg.bye_tx, leg.leg_id)
        self._events.append(LegEnded(leg.leg_id, False, why))
        return LegState.ENDED

    def _fail(self, leg: _Leg, status: int, reason: str) -> LegState:
        self._events.append(LegFailed(leg.leg_id, status, reason))
        self._legs.pop(leg.leg_id, None)
        return LegState.FAILED


def _offers_t38(body: bytes) -> bool:
    """Whether an SDP body offers a T.38 fax stream (an ``m=image ... t38`` line)."""
    return any(line.startswith(b"m=image") and b"t38" in line.lower() for line in body.splitlines())


def _response_input(response: Response) -> LegInput:
    """The table input of a response to the INVITE."""
    status = response.status
    if status < 200:
        return LegInput.PROVISIONAL if status > 100 and response.to.tag else LegInput.PROGRESS
    return LegInput.ANSWERED if status < 300 else LegInput.FAILED


_Handler = Callable[[OutboundCalls, _Leg, Response | None, Address | None, float], LegState]
_O = OutboundCalls
_L = LegState
_I = LegInput

#: Every entry: (state, input) -> (handler, the states it may leave the leg in). ``None``:
#: the move is the whole effect.
TABLE: fsm.Table[LegState, LegInput, _Handler] = fsm.Table(
    "outbound leg",
    {
        # The INVITE is out; nothing from the far end yet but 100 Trying.
        (_L.CALLING, _I.PROGRESS): (None, _L.CALLING),
        (_L.CALLING, _I.PROVISIONAL): (_O._ringing, _L.RINGING),
        (_L.CALLING, _I.ANSWERED): (_O._answered, _L.ANSWERED),
        # 401/407 from the trunk is answered with credentials (twice at most), else a failure.
        (_L.CALLING, _I.FAILED): (_O._failed_calling, {_L.CALLING, _L.FAILED}),
        (_L.CALLING, _I.TIMED_OUT): (_O._timed_out, _L.FAILED),
        (_L.CALLING, _I.HANGUP): (_O._hang_up_ringing, _L.CANCELLING),
        (_L.CALLING, _I.RING_TIMEOUT): (_O._ring_timeout, _L.CANCELLING),
        # Ringing (18x with a tag: an early dialog, perhaps early media).
        (_L.RINGING, _I.PROGRESS): (None, _L.RINGING),
        (_L.RINGING, _I.PROVISIONAL): (_O._ringing, _L.RINGING),
        (_L.RINGING, _I.ANSWERED): (_O._answered, _L.ANSWERED),
        (_L.RINGING, _I.FAILED): (_O._failed, _L.FAILED),
        (_L.RINGING, _I.TIMED_OUT): (_O._timed_out, _L.FAILED),
        (_L.RINGING, _I.HANGUP): (_O._hang_up_ringing, _L.CANCELLING),
        (_L.RINGING, _I.RING_TIMEOUT): (_O._ring_timeout, _L.CANCELLING),
        # Our CANCEL is out, or waits for the first provisional (RFC 3261 section 9.1).
        (_L.CANCELLING, _I.PROGRESS): (_O._cancel_on_provisional, _L.CANCELLING),
        (_L.CANCELLING, _I.PROVISIONAL): (_O._cancel_on_provisional, _L.CANCELLING),
        # A 2xx can cross our CANCEL (RFC 3261 section 9.1): ACKed, then hung up with BYE.
        (_L.CANCELLING, _I.ANSWERED): (_O._answered_after_cancel, _L.ENDED),
        (_L.CANCELLING, _I.FAILED): (_O._failed_cancelling, _L.FAILED),
        (_L.CANCELLING, _I.TIMED_OUT): (_O._timed_out, _L.FAILED),
        (_L.CANCELLING, _I.HANGUP): (None, _L.CANCELLING),
        # Talking.
        (_L.ANSWERED, _I.ANSWERED): (_O._ack_again, _L.ANSWERED),
        (_L.ANSWERED, _I.HANGUP): (_O._hang_up_answered, _L.ENDED),
        (_L.ANSWERED, _I.BYE): (_O._far_end_bye, _L.ENDED),
        (_L.ANSWERED, _I.REQUEST): (None, _L.ANSWERED),
        # Over for the service; our BYE is out until it is answered.
        (_L.ENDED, _I.ANSWERED): (_O._ack_again, _L.ENDED),
        (_L.ENDED, _I.TIMED_OUT): (None, _L.ENDED),  # the CANCEL of a 2xx that crossed it
        (_L.ENDED, _I.HANGUP): (None, _L.ENDED),
        (_L.ENDED, _I.BYE): (None, _L.ENDED),  # BYEs crossed: the dialog answered 481
        (_L.ENDED, _I.REQUEST): (None, _L.ENDED),  # the dialog answered 481
        (_L.ENDED, _I.BYE_ANSWERED): (_O._bye_answered, _L.ENDED),
    },
    initial=_L.CALLING,
    final={_L.FAILED},
    error=LegError,
)

#: The states the ring timer runs in: leaving them stops it.
_RING_TIMER_IN = TABLE.sources(LegInput.RING_TIMEOUT)
