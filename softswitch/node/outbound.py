"""Outbound call legs through the trunk (UAC side), sans-IO.

The callback leg and the destination leg are INVITEs the switch sends to the carrier. This
module turns "call this number with this SDP offer" into RFC 3261 signalling: the INVITE in a
client transaction to the trunk proxy, digest answers to 401/407 from the trunk peer only
(CVE-2021-41158), early dialogs from 18x, the ACK for a 2xx (and again for each retransmitted
2xx), CANCEL while ringing, BYE once answered, and the peer's BYE or re-INVITE inside the dialog.
It reports what the service needs as :class:`LegEvent` values: ringing (with early media SDP),
answered (with the answer SDP), failed (with the status) and ended.

States of one leg: CALLING -> RINGING -> ANSWERED -> ENDED, or CALLING/RINGING -> FAILED;
CANCELLING while a CANCEL waits for the INVITE's final response.
"""

from __future__ import annotations

import enum
import heapq
import logging
from collections import deque
from dataclasses import dataclass

from softswitch.config import TrunkConfig
from softswitch.node.testline import next_hop
from softswitch.sip import auth
from softswitch.sip import endpoint as ep
from softswitch.sip import transaction as txl
from softswitch.sip.dialog import Dialog
from softswitch.sip.message import URI, Address, CSeq, NameAddr, Request, Response

log = logging.getLogger("softswitch.outbound")


class LegState(enum.Enum):
    CALLING = "calling"
    RINGING = "ringing"
    CANCELLING = "cancelling"
    ANSWERED = "answered"
    ENDED = "ended"
    FAILED = "failed"


_TRANSITIONS: dict[LegState, frozenset[LegState]] = {
    LegState.CALLING: frozenset(
        {LegState.RINGING, LegState.ANSWERED, LegState.FAILED, LegState.CANCELLING}
    ),
    LegState.RINGING: frozenset(
        {LegState.RINGING, LegState.ANSWERED, LegState.FAILED, LegState.CANCELLING}
    ),
    # A 2xx can cross our CANCEL (RFC 3261 section 9.1): answered, then hung up with BYE.
    LegState.CANCELLING: frozenset({LegState.FAILED, LegState.ANSWERED}),
    LegState.ANSWERED: frozenset({LegState.ENDED}),
    LegState.ENDED: frozenset(),
    LegState.FAILED: frozenset(),
}


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


LegEvent = LegRinging | LegAnswered | LegFailed | LegEnded


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
    cancel_requested: bool = False
    cancel_sent: bool = False
    sdp_offer: bytes = b""


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
        self._by_tx: dict[int, str] = {}
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
        self._by_tx[id(tx)] = leg_id
        if leg.ring_deadline is not None:
            heapq.heappush(self._ring_heap, (leg.ring_deadline, leg_id))
        log.info("leg %s: calling %s (Call-ID %s)", leg_id, number, invite.call_id)

    def hangup(self, leg_id: str, now: float) -> None:
        """CANCEL a ringing leg, BYE an answered one; nothing for a leg already over."""
        leg = self._legs.get(leg_id)
        if leg is None:
            return
        if leg.state in (LegState.CALLING, LegState.RINGING):
            self._cancel(leg, now)
        elif leg.state is LegState.ANSWERED:
            self._bye(leg, now, "hung up by the switch")

    def next_event(self) -> LegEvent | None:
        return self._events.popleft() if self._events else None

    def state(self, leg_id: str) -> LegState | None:
        leg = self._legs.get(leg_id)
        return None if leg is None else leg.state

    # --- timers ---------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        heap = self._ring_heap
        # Lazy deletion: entries of legs that were answered, failed or re-armed are skipped.
        while heap and self._legs.get(heap[0][1]) is None:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def handle_timer(self, now: float) -> None:
        heap = self._ring_heap
        while heap and heap[0][0] <= now:
            deadline, leg_id = heapq.heappop(heap)
            leg = self._legs.get(leg_id)
            if leg is None or leg.ring_deadline != deadline:
                continue
            leg.ring_deadline = None
            if leg.state in (LegState.CALLING, LegState.RINGING):
                log.info("leg %s: no answer, cancelling", leg.leg_id)
                self._cancel(leg, now)

    # --- endpoint events ----------------------------------------------------------------------

    def handle_event(self, event: ep.EndpointEvent, now: float) -> bool:
        """Take the endpoint events that belong to our legs; True if it was ours."""
        if isinstance(event, ep.ResponseReceived):
            leg_id = self._by_tx.get(id(event.tx))
            if leg_id is None:
                return False
            leg = self._legs[leg_id]
            if event.tx is leg.bye_tx:
                if event.response.status >= 200:
                    self._forget(leg)
                return True
            if event.tx.request.method == "INVITE":
                self._invite_response(leg, event.response, event.source, now)
            return True
        if isinstance(event, ep.TransactionTimedOut):
            leg_id = self._by_tx.pop(id(event.tx), None)
            if leg_id is None:
                return False
            timed_out = self._legs.get(leg_id)
            if timed_out is not None:
                if event.tx is timed_out.bye_tx:
                    self._forget(timed_out)
                elif timed_out.state in (LegState.CALLING, LegState.RINGING, LegState.CANCELLING):
                    self._fail(timed_out, 408, "no response from the trunk")
            return True
        if isinstance(event, ep.StrayResponse):
            return self._stray(event.response)
        if isinstance(event, ep.RequestReceived) and event.request.to.tag is not None:
            return self._in_dialog(event.tx, event.request, now)
        return False

    def _invite_response(
        self, leg: _Leg, response: Response, source: Address | None, now: float
    ) -> None:
        status = response.status
        if status < 200:
            if leg.state is LegState.CANCELLING and not leg.cancel_sent:
                self._send_cancel(leg, now)
            if status == 100:
                return
            if response.to.tag and leg.state in (LegState.CALLING, LegState.RINGING):
                sdp = response.body or None
                self._set_state(leg, LegState.RINGING)
                self._events.append(LegRinging(leg.leg_id, status, sdp))
            return
        if status < 300:
            self._answered(leg, response, now)
            return
        if (
            status in (401, 407)
            and self._digest is not None
            and leg.auth_tries < 2
            and leg.state is LegState.CALLING
        ):
            answer = self._digest.answer(leg.invite, response, source or self.proxy)
            if isinstance(answer, auth.AuthHeader):
                leg.auth_tries += 1
                self._resend_with_credentials(leg, answer, now)
                return
            log.warning(
                "leg %s: %d from the trunk not answered: %s",
                leg.leg_id,
                status,
                answer.refusal.value,
            )
        if leg.state is LegState.CANCELLING and status == 487:
            self._fail(leg, 487, "cancelled")
            return
        self._fail(leg, status, response.reason)

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
        self._by_tx[id(tx)] = leg.leg_id

    def _answered(self, leg: _Leg, response: Response, now: float) -> None:
        if leg.ack is not None and leg.ack.cseq.seq == response.cseq.seq:
            # A retransmitted 2xx (RFC 6026: the transaction, in Accepted, passes each one up):
            # our ACK was lost, so send the same ACK again (RFC 3261 section 13.2.2.4).
            self.endpoint.send_ack(leg.ack, next_hop(leg.ack, self.proxy))
            return
        if leg.dialog is None:
            leg.dialog = Dialog.from_uac(
                leg.invite, response, now=now, new_id=self.endpoint.new_tag
            )
        else:
            leg.dialog.receive_response(response, now)
        leg.ack = leg.dialog.create_ack(response)
        self.endpoint.send_ack(leg.ack, next_hop(leg.ack, self.proxy))
        cancelled = leg.state is LegState.CANCELLING or leg.cancel_requested
        self._set_state(leg, LegState.ANSWERED)
        if cancelled:
            # Our CANCEL crossed the 2xx: the call exists, so end it properly (section 15).
            self._bye(leg, now, "answered after CANCEL")
            return
        self._events.append(LegAnswered(leg.leg_id, response.body))

    def _stray(self, response: Response) -> bool:
        """A retransmitted 2xx (our ACK was lost): send the same ACK again (13.2.2.4)."""
        for leg in self._legs.values():
            if (
                leg.ack is not None
                and leg.invite.call_id == response.call_id
                and leg.ack.cseq.seq == response.cseq.seq
            ):
                self.endpoint.send_ack(leg.ack, next_hop(leg.ack, self.proxy))
                return True
        return False

    def _in_dialog(self, tx: txl.ServerTransaction, req: Request, now: float) -> bool:
        for leg in self._legs.values():
            dialog = leg.dialog
            if dialog is None or dialog.call_id != req.call_id or dialog.local_tag != req.to.tag:
                continue
            answer = dialog.receive_request(req, now)
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
            if req.method == "BYE" and leg.state is LegState.ANSWERED:
                self._set_state(leg, LegState.ENDED)
                self._events.append(LegEnded(leg.leg_id, True, "BYE from the far end"))
                self._legs.pop(leg.leg_id, None)
            return True
        return False

    # --- internals ----------------------------------------------------------------------------

    def _cancel(self, leg: _Leg, now: float) -> None:
        leg.cancel_requested = True
        self._set_state(leg, LegState.CANCELLING)
        tx = leg.tx
        if isinstance(tx, txl.InviteClientTransaction) and tx.can_cancel():
            self._send_cancel(leg, now)
        # Otherwise no provisional has arrived yet: RFC 3261 section 9.1 says wait for one;
        # the first 1xx sends the CANCEL (and Timer B ends the INVITE if none ever comes).

    def _send_cancel(self, leg: _Leg, now: float) -> None:
        leg.cancel_sent = True
        cancel_tx = self.endpoint.send_request(txl.make_cancel(leg.invite), self.proxy, now)
        self._by_tx[id(cancel_tx)] = leg.leg_id

    def _bye(self, leg: _Leg, now: float, why: str) -> None:
        assert leg.dialog is not None
        bye = leg.dialog.create_request("BYE", now=now)
        leg.bye_tx = self.endpoint.send_request(bye, next_hop(bye, self.proxy), now)
        self._by_tx[id(leg.bye_tx)] = leg.leg_id
        self._set_state(leg, LegState.ENDED)
        self._events.append(LegEnded(leg.leg_id, False, why))

    def _fail(self, leg: _Leg, status: int, reason: str) -> None:
        if leg.state in (LegState.FAILED, LegState.ENDED):
            return
        self._set_state(leg, LegState.FAILED)
        self._events.append(LegFailed(leg.leg_id, status, reason))
        self._forget(leg)

    def _forget(self, leg: _Leg) -> None:
        if leg.state in (LegState.FAILED, LegState.ENDED):
            self._legs.pop(leg.leg_id, None)

    def _set_state(self, leg: _Leg, new: LegState) -> None:
        if new is leg.state:
            return
        if new not in _TRANSITIONS[leg.state]:
            raise ValueError(f"leg {leg.leg_id}: no transition {leg.state.name} -> {new.name}")
        log.debug("leg %s: %s -> %s", leg.leg_id, leg.state.name, new.name)
        leg.state = new
