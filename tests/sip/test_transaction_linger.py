"""Compact records for lingering server transactions (``compact_lingering``).

A trigger call (INVITE, 180, CANCEL, 200, 487, ACK) leaves the CANCEL's transaction in
non-INVITE Completed until Timer J (32 s) and the INVITE's in Confirmed until Timer I (5 s).
A layer made with ``compact_lingering`` keeps only a :class:`LingeringServer` for them. These
tests check, on the fake clock, that the wire and the TU see what the plain machines give
them (a differential test drives both layers with the same random inputs), and that the
records hold neither requests nor provisional responses.
"""

from __future__ import annotations

import gc
import types
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.sip.endpoint import Endpoint, EndpointConfig
from softswitch.sip.message import URI, Address, CSeq, Message, NameAddr, Request, Response, Via
from softswitch.sip.parser import parse_message
from softswitch.sip.serializer import serialize
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    AckReceived,
    CancelReceived,
    Event,
    Input,
    InviteServerState,
    InviteServerTransaction,
    LingeringServer,
    NonInviteServerState,
    NonInviteServerTransaction,
    ProtocolError,
    RequestReceived,
    ServerTransaction,
    TransactionLayer,
    TransactionTerminated,
    make_ack_for_non2xx,
    make_cancel,
    make_response,
)

UAC = Address("127.0.0.1", 5060)
UAC_TCP = Address("127.0.0.1", 5060, "TCP")
T1, T4 = 0.5, 5.0


def request(method: str = "INVITE", transport: str = "UDP", branch: str = "z9hG4bK-l1") -> Request:
    return Request(
        method=method,
        uri=URI(user="bob", host="127.0.0.1", port=5070),
        vias=(Via(transport, "127.0.0.1", 5060, (("branch", branch), ("rport", None))),),
        from_=NameAddr(URI(user="alice", host="127.0.0.1"), params=(("tag", "from-1"),)),
        to=NameAddr(URI(user="bob", host="127.0.0.1")),
        call_id="linger-1@127.0.0.1",
        cseq=CSeq(1, method),
        headers=(("Max-Forwards", "70"),),
    )


def events(layer: TransactionLayer) -> list[Event]:
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def sent(layer: TransactionLayer) -> list[tuple[Message, Address]]:
    return layer.messages_to_send()


def reachable(root: object) -> list[object]:
    """Every object reachable from ``root`` (classes, modules and functions not entered)."""
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen[id(obj)] = obj
        if isinstance(obj, (type, types.ModuleType, types.FunctionType, types.MethodType)):
            continue
        todo.extend(gc.get_referents(obj))
    return list(seen.values())


class Trigger:
    """A trigger call on one layer, up to the 487's ACK: INVITE, 180, CANCEL, 200, 487, ACK."""

    def __init__(self, layer: TransactionLayer, transport: str = "UDP") -> None:
        self.layer = layer
        self.source = UAC if transport == "UDP" else UAC_TCP
        self.invite = request("INVITE", transport)
        layer.receive_request(self.invite, self.source, 0.0)
        (ev,) = events(layer)
        assert isinstance(ev, RequestReceived) and isinstance(ev.tx, InviteServerTransaction)
        self.invite_tx: InviteServerTransaction = ev.tx
        self.ringing = make_response(self.invite, 180, to_tag="uas-1")
        layer.send_response(self.invite_tx, self.ringing, 0.1)
        self.cancel = make_cancel(self.invite)
        layer.receive_request(self.cancel, self.source, 1.0)
        (ev,) = events(layer)
        assert isinstance(ev, CancelReceived) and ev.invite_tx is self.invite_tx
        self.cancel_tx = ev.cancel_tx
        assert layer.answer_cancel(ev, 1.0) is True
        self.wire = sent(layer)
        (_, (self.ok, _), (self.terminated, _)) = self.wire
        assert isinstance(self.ok, Response) and isinstance(self.terminated, Response)
        assert (self.ok.status, self.terminated.status) == (200, 487)
        self.ack = make_ack_for_non2xx(self.invite, self.terminated)


def test_cancel_transaction_becomes_a_record_that_resends_the_200_until_timer_j() -> None:
    layer = TransactionLayer(compact_lingering=True)
    call = Trigger(layer)
    # The CANCEL's transaction left the layer (and said so) when it sent its 200.
    assert events(layer) == [TransactionTerminated(call.cancel_tx)]
    assert call.cancel_tx.terminated
    assert call.cancel_tx.key not in layer.server_transactions
    record = layer.lingering_servers[call.cancel_tx.key]
    assert record.response is call.ok and record.dest == UAC
    assert record.deadline == 1.0 + 64 * T1
    assert layer.find_server(call.cancel) is record
    # Retransmitted CANCELs get the same 200, each time, and the TU hears nothing.
    for t in (1.5, 2.5, 20.0):
        layer.receive_request(call.cancel, UAC, t)
        assert sent(layer) == [(call.ok, UAC)]
        assert events(layer) == []
    # The INVITE, meanwhile, is in Completed as ever: Timer G, then the ACK.
    assert call.invite_tx.state is InviteServerState.COMPLETED
    layer.handle_timer(1.5)
    assert sent(layer) == [(call.terminated, UAC)]
    layer.receive_request(call.ack, UAC, 1.6)
    assert events(layer) == [TransactionTerminated(call.invite_tx)]
    # Timer I ends the INVITE's record at 6.6; Timer J the CANCEL's at 33.0, not before.
    layer.handle_timer(33.0 - 1e-6)
    assert call.cancel_tx.key in layer.lingering_servers
    assert layer.get_timer() == 33.0
    layer.handle_timer(33.0)
    assert not layer.lingering_servers and not layer.server_transactions
    assert layer.get_timer() is None and sent(layer) == [] and events(layer) == []
    # After Timer J the same CANCEL is new to the layer (and finds no INVITE any more).
    layer.receive_request(call.cancel, UAC, 34.0)
    (ev,) = events(layer)
    assert isinstance(ev, CancelReceived) and ev.invite_tx is None


def test_invite_becomes_a_record_on_the_ack_that_absorbs_acks_until_timer_i() -> None:
    layer = TransactionLayer(compact_lingering=True)
    call = Trigger(layer)
    events(layer)
    layer.receive_request(call.ack, UAC, 1.2)
    assert events(layer) == [TransactionTerminated(call.invite_tx)]
    assert call.invite_tx.terminated
    record = layer.lingering_servers[call.invite_tx.key]
    assert record.response is None and record.to_tag == "uas-1"
    assert record.deadline == 1.2 + T4
    # ACK retransmissions are absorbed: not passed up as the ACK of a 2xx; so is a late INVITE.
    for t in (1.3, 2.0, 6.1):
        layer.receive_request(call.ack, UAC, t)
        layer.receive_request(call.invite, UAC, t)
        assert sent(layer) == [] and events(layer) == []
    # The TU can no longer answer the INVITE (the plain machine refuses it in Confirmed too).
    try:
        layer.send_response(call.invite_tx, make_response(call.invite, 200, to_tag="x"), 2.0)
    except ProtocolError:
        pass
    else:
        raise AssertionError("a response was taken after the ACK")
    assert sent(layer) == []
    layer.handle_timer(1.2 + T4 - 1e-6)
    assert call.invite_tx.key in layer.lingering_servers
    layer.handle_timer(1.2 + T4)
    assert call.invite_tx.key not in layer.lingering_servers
    # After Timer I an ACK matches nothing: the layer hands it up, as it does without records.
    layer.receive_request(call.ack, UAC, 7.0)
    assert events(layer) == [AckReceived(call.ack, UAC)]


def cancel_after_confirmed(layer: TransactionLayer) -> tuple[Request, Response, list[Event]]:
    """INVITE, 180, 486 from the TU, its ACK, then a CANCEL that crossed them (section 9.2)."""
    invite = request()
    layer.receive_request(invite, UAC, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(ev.tx, make_response(invite, 180, to_tag="uas-1"), 0.1)
    busy = make_response(invite, 486, to_tag="uas-1")
    layer.send_response(ev.tx, busy, 0.2)
    layer.receive_request(make_ack_for_non2xx(invite, busy), UAC, 0.3)
    events(layer)
    sent(layer)
    cancel = make_cancel(invite)
    layer.receive_request(cancel, UAC, 0.4)
    return cancel, busy, events(layer)


def test_cancel_for_a_confirmed_invite_record_gets_200_with_its_tag_and_no_487() -> None:
    layer = TransactionLayer(compact_lingering=True)
    cancel, busy, evs = cancel_after_confirmed(layer)
    ((ok, dest),) = sent(layer)
    assert isinstance(ok, Response) and dest == UAC
    assert (ok.status, ok.cseq.method, ok.to.tag) == (200, "CANCEL", busy.to.tag)
    # No CancelReceived (the INVITE has its final response: nothing for the TU to do); the
    # CANCEL's own transaction lingers as a record that answers its retransmissions.
    assert [type(e) for e in evs] == [TransactionTerminated]
    assert layer.find_server(cancel) is not None
    layer.receive_request(cancel, UAC, 0.9)
    assert sent(layer) == [(ok, UAC)] and events(layer) == []
    # The plain layer, with the TU answering as the endpoint does, sends the same.
    plain = TransactionLayer()
    _, _, evs = cancel_after_confirmed(plain)
    (ev,) = evs
    assert isinstance(ev, CancelReceived) and ev.invite_tx is not None
    assert ev.invite_tx.state is InviteServerState.CONFIRMED
    assert plain.answer_cancel(ev, 0.4) is False
    assert sent(plain) == [(ok, UAC)]


def test_records_hold_no_request_and_no_provisional() -> None:
    layer = TransactionLayer(compact_lingering=True)
    call = Trigger(layer)
    layer.receive_request(call.ack, UAC, 1.2)
    events(layer)
    assert len(layer.lingering_servers) == 2 and not layer.server_transactions
    held = reachable(layer)
    assert not [o for o in held if isinstance(o, (Request, ServerTransaction))]
    responses = [o for o in held if isinstance(o, Response)]
    assert responses == [call.ok]  # the CANCEL's 200: not the 180, not the 487
    # Without compaction the same layer state holds both requests and the 180.
    plain = TransactionLayer()
    call2 = Trigger(plain)
    plain.receive_request(call2.ack, UAC, 1.2)
    held = reachable(plain)
    assert call2.invite in held and call2.cancel in held and call2.ringing in held


def test_with_encode_records_keep_wire_form_and_resend_it_on_the_wire_queue() -> None:
    calls: list[tuple[Response, Address]] = []

    def encode(response: Response, source: Address) -> tuple[bytes, Address]:
        calls.append((response, source))
        return f"{response.status} {response.cseq.method}".encode(), Address("192.0.2.1", 9)

    layer = TransactionLayer(compact_lingering=True, encode=encode)
    call = Trigger(layer)
    layer.receive_request(call.ack, UAC, 1.2)
    events(layer)
    assert calls == [(call.ok, UAC)]  # the CANCEL's 200 only: the INVITE's record sends nothing
    record = layer.lingering_servers[call.cancel_tx.key]
    assert record.response == b"200 CANCEL" and record.dest == Address("192.0.2.1", 9)
    layer.receive_request(call.cancel, UAC, 2.0)
    assert sent(layer) == []
    assert layer.wire_to_send() == [(b"200 CANCEL", Address("192.0.2.1", 9))]
    assert layer.wire_to_send() == []
    held = reachable(layer)
    assert not [o for o in held if isinstance(o, (Request, Response, ServerTransaction))]


def test_reliable_transport_lingers_not_at_all() -> None:
    layer = TransactionLayer(compact_lingering=True)
    call = Trigger(layer, "TCP")
    layer.receive_request(call.ack, UAC_TCP, 1.2)
    assert not layer.lingering_servers and not layer.server_transactions
    assert events(layer) == [
        TransactionTerminated(call.cancel_tx),
        TransactionTerminated(call.invite_tx),
    ]
    assert layer.get_timer() is None


def test_records_expire_in_deadline_order_even_if_the_clock_steps_back() -> None:
    layer = TransactionLayer(compact_lingering=True)
    for i, now in enumerate((5.0, 3.0, 4.0)):
        bye = request("BYE", branch=f"z9hG4bK-b{i}")
        layer.receive_request(bye, UAC, now)
        (ev,) = events(layer)
        assert isinstance(ev, RequestReceived)
        layer.send_response(ev.tx, make_response(bye, 200, to_tag="t"), now)
        assert events(layer) == [TransactionTerminated(ev.tx)]
    deadlines = []
    while (t := layer.get_timer()) is not None:
        deadlines.append(t)
        layer.handle_timer(t)
    assert deadlines == [3.0 + 32, 4.0 + 32, 5.0 + 32]
    assert not layer.lingering_servers


def test_endpoint_counts_and_finds_records() -> None:
    ep = Endpoint(EndpointConfig())
    bye = (
        b"OPTIONS sip:100@127.0.0.1 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.9:5070;branch=z9hG4bK-o1;rport\r\n"
        b"From: <sip:200@127.0.0.1>;tag=f\r\nTo: <sip:100@127.0.0.1>\r\n"
        b"Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    msg = parse_message(bye)
    assert isinstance(msg, Request)
    ep.receive_message(msg, Address("10.0.0.9", 5070), 0.0)
    ((first, dest),) = ep.datagrams_to_send()  # the endpoint answers OPTIONS itself: 200
    assert ep.server_transaction_count == 1  # the record, held until Timer J
    assert isinstance(ep.find_server(msg), LingeringServer)
    ep.receive_message(msg, Address("10.0.0.9", 5070), 1.0)
    ((again, dest_again),) = ep.datagrams_to_send()
    # The record's bytes are the ones first sent: the 200 was serialized once.
    assert again is first and dest_again == dest == Address("10.0.0.9", 5070)
    while (t := ep.get_timer()) is not None:
        ep.handle_timer(t)
    assert ep.server_transaction_count == 0 and ep.find_server(msg) is None


# --- differential: the same inputs on a plain and a compacting layer --------------------------

#: What the random TU and network may do; each applies to both layers.
ACTIONS = [
    "invite",  # the INVITE (new or retransmitted)
    "cancel",  # the CANCEL (new or retransmitted), answered by the TU at once
    "ack",  # the ACK for a non-2xx final response
    "bye",  # a non-INVITE request (new or retransmitted), answered on "answer_bye"
    "answer_bye",
    "ring",
    "final_487",
    "final_200",
    "wait_short",  # 0.3 s
    "wait_long",  # 7 s
    "wait_end",  # 40 s
]


def comparable(event: Event) -> tuple[Any, ...]:
    """An event without the transaction objects (they differ between the layers)."""
    if isinstance(event, RequestReceived):
        return ("request", event.request, event.source)
    if isinstance(event, CancelReceived):
        return ("cancel", event.invite_tx is not None, event.request, event.source)
    if isinstance(event, AckReceived):
        return ("ack", event.request, event.source)
    return (type(event).__name__,)


def encode(response: Response, source: Address) -> tuple[bytes, Address]:
    return serialize(response), source


class Both:
    def __init__(self, transport: str, wire_form: bool = False) -> None:
        compact = TransactionLayer(compact_lingering=True, encode=encode if wire_form else None)
        self.layers = (TransactionLayer(), compact)
        self.source = UAC if transport == "UDP" else UAC_TCP
        self.invite = request("INVITE", transport)
        self.bye = request("BYE", transport, branch="z9hG4bK-bye")
        self.cancel = make_cancel(self.invite)
        self.invite_tx: list[ServerTransaction | None] = [None, None]
        self.bye_tx: list[ServerTransaction | None] = [None, None]
        self.now = 0.0

    def step(self, action: str) -> None:
        results = [self._apply(i, layer, action) for i, layer in enumerate(self.layers)]
        plain, compact = results
        assert plain[0] == compact[0], f"{action}: wire differs"
        # TransactionTerminated comes earlier from the compacting layer: compare the rest.
        assert [e for e in plain[1] if e[0] != "TransactionTerminated"] == [
            e for e in compact[1] if e[0] != "TransactionTerminated"
        ], f"{action}: events differ"
        assert plain[2] == compact[2], f"{action}: refused by one layer only"

    def _apply(self, i: int, layer: TransactionLayer, action: str) -> tuple[Any, Any, bool]:
        now = self.now
        refused = False
        if action in ("invite", "bye", "cancel"):
            req = {"invite": self.invite, "bye": self.bye, "cancel": self.cancel}[action]
            layer.receive_request(req, self.source, now)
        elif action == "ack":
            final = make_response(self.invite, 487, to_tag="uas")
            layer.receive_request(make_ack_for_non2xx(self.invite, final), self.source, now)
        elif action in ("ring", "final_487", "final_200", "answer_bye"):
            tx = self.bye_tx[i] if action == "answer_bye" else self.invite_tx[i]
            status = {"ring": 180, "final_487": 487, "final_200": 200, "answer_bye": 200}[action]
            if tx is None:
                refused = True
            else:
                try:
                    layer.send_response(tx, make_response(tx.request, status, to_tag="uas"), now)
                except ProtocolError:
                    refused = True
        else:
            step = {"wait_short": 0.3, "wait_long": 7.0, "wait_end": 40.0}[action]
            until = now + step
            wire: list[Any] = []
            while (t := layer.get_timer()) is not None and t <= until:
                layer.handle_timer(t)
                wire.extend(layer.messages_to_send())
            layer.handle_timer(until)
        evs = events(layer)
        for ev in evs:
            if isinstance(ev, RequestReceived):
                if ev.request.method == "INVITE":
                    self.invite_tx[i] = ev.tx
                else:
                    self.bye_tx[i] = ev.tx
            elif isinstance(ev, CancelReceived):
                layer.answer_cancel(ev, now, to_tag="uas")
                if ev.invite_tx is not None and ev.invite_tx.request is not self.invite:
                    raise AssertionError("the CANCEL matched another INVITE")
        out = layer.messages_to_send()
        if i == 0:
            # The one difference meant: a CANCEL for a Confirmed INVITE is answered by the
            # compacting layer itself (200, no 487: what answer_cancel does), with no event.
            evs = [
                e
                for e in evs
                if not (
                    isinstance(e, CancelReceived)
                    and e.invite_tx is not None
                    and e.invite_tx.state is InviteServerState.CONFIRMED
                    and not e.invite_tx.reliable
                )
            ]
        if action.startswith("wait"):
            out = wire + out
        # Compared as bytes: records made with ``encode`` send theirs on the wire queue.
        data = [(serialize(m), d) for m, d in out] + layer.wire_to_send()
        return data, [comparable(e) for e in evs], refused

    def advance(self, action: str) -> None:
        self.step(action)
        if action.startswith("wait"):
            self.now += {"wait_short": 0.3, "wait_long": 7.0, "wait_end": 40.0}[action]
        else:
            self.now += 0.01


@settings(max_examples=300, deadline=None)
@given(
    actions=st.lists(st.sampled_from(ACTIONS), max_size=30),
    transport=st.sampled_from(["UDP", "TCP"]),
    wire_form=st.booleans(),
)
def test_compacting_layer_sends_and_reports_what_the_plain_one_does(
    actions: list[str], transport: str, wire_form: bool
) -> None:
    both = Both(transport, wire_form)
    for action in [*actions, "wait_end", "wait_end"]:
        both.advance(action)
    plain, compact = both.layers
    # 80 s on, only transactions waiting for the TU are left, the same in both.
    assert set(plain.server_transactions) == set(compact.server_transactions)
    assert not compact.lingering_servers
    assert plain.get_timer() == compact.get_timer()


def test_differential_walks_the_lingering_states() -> None:
    # The scripted trigger call of the module docstring, with every retransmission in the
    # lingering states, through the differential driver (the random test may miss it).
    both = Both("UDP", wire_form=True)
    script = ["invite", "ring", "cancel", "cancel", "wait_short", "invite", "ack", "ack",
              "invite", "cancel", "bye", "answer_bye", "bye", "wait_long", "cancel", "bye",
              "ack", "wait_end", "cancel", "ack"]  # fmt: skip
    compact = both.layers[1]
    lingered = 0
    for action in script:
        both.advance(action)
        lingered = max(lingered, len(compact.lingering_servers))
    assert lingered == 3  # the INVITE's, the CANCEL's and the BYE's


def test_the_records_stand_for_the_absorbing_states_and_only_when_asked() -> None:
    # The states replaced are exactly the table's absorbing ones, with the timer that ends them.
    assert InviteServerTransaction.LINGERS_IN is InviteServerState.CONFIRMED
    assert InviteServerTransaction.TIMERS_IN[InviteServerState.CONFIRMED] == {Input.TIMER_I}
    assert NonInviteServerTransaction.LINGERS_IN is NonInviteServerState.COMPLETED
    assert NonInviteServerTransaction.TIMERS_IN[NonInviteServerState.COMPLETED] == {Input.TIMER_J}
    layer = TransactionLayer(TimerConfig(), compact_lingering=False)
    bye = request("BYE")
    layer.receive_request(bye, UAC, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(ev.tx, make_response(bye, 200, to_tag="t"), 0.0)
    assert ev.tx.state is NonInviteServerState.COMPLETED and not layer.lingering_servers
