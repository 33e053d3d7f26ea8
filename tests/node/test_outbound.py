"""Outbound legs through the trunk (callback and destination legs), on a fake clock."""

from __future__ import annotations

import pytest

from softswitch import fsm
from softswitch.config import Config, TrunkConfig
from softswitch.node.node import Node
from softswitch.node.outbound import (
    TABLE,
    LegAnswered,
    LegEnded,
    LegError,
    LegEvent,
    LegFailed,
    LegInput,
    LegRinging,
    LegState,
    OutboundCalls,
)
from softswitch.sip.message import Address, Request
from softswitch.sip.parser import parse_message

TRUNK = Address("127.0.0.1", 5080)
PHONE = Address("127.0.0.1", 5090)
OFFER = b"v=0\r\no=- 1 0 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16384 RTP/AVP 0\r\n"


def make_node() -> tuple[Node, OutboundCalls]:
    trunk = TrunkConfig(
        proxy=("127.0.0.1", 5080),
        ip_auth=True,
        username="alice",
        password="secret",
        keepalive_interval=0,
        caller_id="81300000000",
    )
    counter = iter(range(1, 1_000_000))
    node = Node(Config(trunk=trunk), token=lambda: f"t{next(counter)}")
    assert node.outbound is not None
    return node, node.outbound


def sent(node: Node) -> list[tuple[Request, Address]]:
    out = []
    for data, addr in node.datagrams_to_send():
        msg = parse_message(data)
        if isinstance(msg, Request):
            out.append((msg, addr))
    return out


def reply(
    req: Request, status: int, *, tag: str = "far", extra: str = "", body: bytes = b""
) -> bytes:
    via = "".join(f"Via: {v}\r\n" for v in req.vias)
    ctype = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"SIP/2.0 {status} X\r\n{via}From: {req.from_}\r\nTo: {req.to}"
        f"{';tag=' + tag if tag else ''}\r\nCall-ID: {req.call_id}\r\nCSeq: {req.cseq}\r\n"
        f"{extra}{ctype}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def events(outbound: OutboundCalls) -> list[LegEvent]:
    out: list[LegEvent] = []
    while (event := outbound.next_event()) is not None:
        out.append(event)
    return out


def start_call(
    node: Node, outbound: OutboundCalls, *, ring_timeout: float | None = None
) -> Request:
    outbound.originate("cb", "815011110000", OFFER, 0.0, ring_timeout=ring_timeout)
    [(invite, dest)] = sent(node)
    assert dest == TRUNK and invite.method == "INVITE"
    assert invite.uri.user == "815011110000" and invite.body == OFFER
    assert invite.from_.uri.user == "81300000000" and invite.from_.tag
    return invite


def test_answered_call_is_acked_and_hung_up_with_bye() -> None:
    node, outbound = make_node()
    invite = start_call(node, outbound)
    node.receive_datagram(reply(invite, 100, tag=""), TRUNK, 0.05)
    node.receive_datagram(reply(invite, 180), TRUNK, 0.1)
    assert events(outbound) == [LegRinging("cb", 180, None)]
    contact = "Contact: <sip:phone@127.0.0.1:5090>\r\n"
    node.receive_datagram(reply(invite, 200, extra=contact, body=OFFER), TRUNK, 1.0)
    assert events(outbound) == [LegAnswered("cb", OFFER)]
    [(ack, dest)] = sent(node)
    assert ack.method == "ACK" and ack.cseq.seq == invite.cseq.seq
    assert str(ack.uri) == "sip:phone@127.0.0.1:5090" and dest == PHONE
    # The 200 again (our ACK was lost): the very same ACK again.
    node.receive_datagram(reply(invite, 200, extra=contact, body=OFFER), TRUNK, 1.5)
    [(again, _)] = sent(node)
    assert again == ack
    outbound.hangup("cb", 5.0)
    [(bye, dest)] = sent(node)
    assert bye.method == "BYE" and dest == PHONE and bye.cseq.seq == invite.cseq.seq + 1
    assert events(outbound) == [LegEnded("cb", False, "hung up by the switch")]


def test_trunk_challenge_is_answered_once() -> None:
    node, outbound = make_node()
    invite = start_call(node, outbound)
    challenge = 'Proxy-Authenticate: Digest realm="carrier.test", nonce="n1", qop="auth"\r\n'
    node.receive_datagram(reply(invite, 407, extra=challenge), TRUNK, 0.1)
    requests = sent(node)
    # The transaction ACKs the 407 itself; then the INVITE goes again with credentials.
    assert [r.method for r, _ in requests] == ["ACK", "INVITE"]
    retry = requests[1][0]
    assert retry.cseq.seq == invite.cseq.seq + 1 and retry.call_id == invite.call_id
    assert 'username="alice"' in (retry.header("Proxy-Authorization") or "")
    node.receive_datagram(reply(retry, 407, extra=challenge), TRUNK, 0.2)
    assert [e for e in events(outbound) if isinstance(e, LegFailed)] == [LegFailed("cb", 407, "X")]


def test_busy_fails_the_leg() -> None:
    node, outbound = make_node()
    invite = start_call(node, outbound)
    node.receive_datagram(reply(invite, 486), TRUNK, 0.1)
    assert events(outbound) == [LegFailed("cb", 486, "X")]
    assert [r.method for r, _ in sent(node)] == ["ACK"]


def test_ring_timeout_cancels() -> None:
    node, outbound = make_node()
    invite = start_call(node, outbound, ring_timeout=45.0)
    node.receive_datagram(reply(invite, 180), TRUNK, 0.1)
    events(outbound)
    now = 0.1
    cancel = None
    while cancel is None and now < 50:
        now = node.get_timer() or 50.0
        node.handle_timer(now)
        cancel = next((r for r, _ in sent(node) if r.method == "CANCEL"), None)
    assert cancel is not None and now == pytest.approx(45.0)
    assert cancel.vias[0].branch == invite.vias[0].branch
    node.receive_datagram(reply(cancel, 200), TRUNK, now + 0.01)
    node.receive_datagram(reply(invite, 487), TRUNK, now + 0.02)
    assert events(outbound) == [LegFailed("cb", 487, "cancelled")]


def test_cancel_before_any_provisional_waits_for_one() -> None:
    node, outbound = make_node()
    invite = start_call(node, outbound)
    outbound.hangup("cb", 0.01)
    assert sent(node) == []  # RFC 3261 9.1: no CANCEL before a provisional response
    node.receive_datagram(reply(invite, 100, tag=""), TRUNK, 0.05)
    assert [r.method for r, _ in sent(node)] == ["CANCEL"]


def test_far_end_bye_ends_the_leg() -> None:
    node, outbound = make_node()
    invite = start_call(node, outbound)
    contact = "Contact: <sip:phone@127.0.0.1:5090>\r\n"
    node.receive_datagram(reply(invite, 200, extra=contact, body=OFFER), TRUNK, 1.0)
    events(outbound)
    sent(node)
    bye = (
        f"BYE sip:81300000000@127.0.0.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5090;branch=z9hG4bK-bye1\r\n"
        f"From: {invite.to};tag=far\r\nTo: {invite.from_}\r\nCall-ID: {invite.call_id}\r\n"
        f"CSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    node.receive_datagram(bye, PHONE, 3.0)
    assert events(outbound) == [LegEnded("cb", True, "BYE from the far end")]
    [(data, dest)] = node.datagrams_to_send()
    assert data.startswith(b"SIP/2.0 200") and dest == PHONE


def test_answer_to_our_cancel_after_the_487_is_dropped() -> None:
    """UDP reorders: the 487 ends the leg, then the 200 to the CANCEL comes (no crash)."""
    node, outbound = make_node()
    invite = start_call(node, outbound)
    node.receive_datagram(reply(invite, 180), TRUNK, 0.1)
    outbound.hangup("cb", 1.0)
    [(cancel, _)] = sent(node)
    assert cancel.method == "CANCEL"
    node.receive_datagram(reply(invite, 487), TRUNK, 1.1)
    node.receive_datagram(reply(cancel, 200), TRUNK, 1.2)
    assert events(outbound) == [LegRinging("cb", 180, None), LegFailed("cb", 487, "cancelled")]
    assert outbound.state("cb") is None


def test_hangup_while_cancelling_or_ended_sends_nothing_more() -> None:
    node, outbound = make_node()
    invite = start_call(node, outbound)
    node.receive_datagram(reply(invite, 180), TRUNK, 0.1)
    outbound.hangup("cb", 1.0)
    assert [r.method for r, _ in sent(node)] == ["CANCEL"]
    outbound.hangup("cb", 1.5)
    assert sent(node) == [] and outbound.state("cb") is LegState.CANCELLING
    # The 2xx crossed our CANCEL: ACK and BYE it; the leg ends without ever being answered.
    contact = "Contact: <sip:phone@127.0.0.1:5090>\r\n"
    node.receive_datagram(reply(invite, 200, extra=contact, body=OFFER), TRUNK, 2.0)
    assert [r.method for r, _ in sent(node)] == ["ACK", "BYE"]
    outbound.hangup("cb", 2.5)
    assert sent(node) == [] and outbound.state("cb") is LegState.ENDED
    assert events(outbound)[1:] == [LegEnded("cb", False, "answered after CANCEL")]


def test_every_missing_pair_is_a_leg_error() -> None:
    node, outbound = make_node()
    start_call(node, outbound)
    leg = outbound._legs["cb"]
    missing = 0
    for state in LegState:
        for inp in LegInput:
            if TABLE.accepts(state, inp):
                continue
            leg.state = state
            with pytest.raises(LegError) as info:
                outbound._fire(leg, inp, 1.0)
            assert info.value.state is state and info.value.input is inp
            assert leg.state is state and sent(node) == [] and events(outbound) == []
            missing += 1
    assert missing == len(LegState) * len(LegInput) - len(TABLE)


def test_table_reaches_every_state_and_the_diagram_names_them() -> None:
    assert TABLE.reachable() == TABLE.states() == frozenset(LegState)
    assert issubclass(LegError, fsm.TransitionError) and TABLE.error is LegError
    text = TABLE.mermaid()
    for state in LegState:
        assert state.name in text
