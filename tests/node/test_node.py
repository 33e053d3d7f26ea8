"""The node, sans-IO, on a fake clock: what a carrier and a scanner see on the wire."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import pytest

from softswitch.config import Config, TrunkConfig
from softswitch.node.node import Node
from softswitch.service.trigger import TriggerEnded
from softswitch.sip.message import Address, Request, Response
from softswitch.sip.parser import parse_message

NODE = ("127.0.0.1", 5060)
PEER = Address("127.0.0.1", 5999)
TRIGGER = "815012345678"


def make_node(**kwargs: object) -> Node:
    config = Config(trigger_numbers=(TRIGGER,), **kwargs)  # type: ignore[arg-type]
    counter = iter(range(1, 1_000_000))
    return Node(config, token=lambda: f"t{next(counter)}")


def sip(
    method: str,
    user: str = TRIGGER,
    *,
    branch: str = "z9hG4bK-1",
    call_id: str = "c1",
    seq: int = 1,
    extra: str = "",
    body: str = "",
    version: str = "SIP/2.0",
    uri: str | None = None,
    to_tag: str = "",
    cseq_method: str | None = None,
) -> bytes:
    target = uri or f"sip:{user}@127.0.0.1:5060"
    length = len(body.encode())
    return (
        f"{method} {target} {version}\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport\r\n"
        f"From: <sip:815000000001@127.0.0.1>;tag=from1\r\n"
        f"To: <sip:{user}@127.0.0.1>{';tag=' + to_tag if to_tag else ''}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {seq} {cseq_method or method}\r\n"
        f"Max-Forwards: 70\r\n"
        f"{extra}"
        f"Content-Length: {length}\r\n\r\n{body}"
    ).encode()


def responses(node: Node) -> list[tuple[Response, Address]]:
    out = []
    for data, addr in node.datagrams_to_send():
        msg = parse_message(data)
        assert isinstance(msg, Response), msg
        out.append((msg, addr))
    return out


def statuses(node: Node) -> list[int]:
    return [r.status for r, _ in responses(node)]


def ended(node: Node) -> list[TriggerEnded]:
    """The trigger calls that ended since the last look (a node without the service)."""
    out = []
    while (event := node.next_event()) is not None:
        assert isinstance(event, TriggerEnded)
        out.append(event)
    return out


def test_options_gets_200_with_allow() -> None:
    node = make_node()
    node.receive_datagram(sip("OPTIONS", "anyone"), PEER, 0.0)
    [(resp, dest)] = responses(node)
    assert resp.status == 200
    assert "INVITE" in (resp.header("Allow") or "")
    assert "application/sdp" in (resp.header("Accept") or "")
    assert dest == PEER
    assert resp.to.tag  # a final response gets a To tag


@pytest.mark.parametrize(
    ("method", "status"), [("FOOBAR", 501), ("SUBSCRIBE", 405), ("MESSAGE", 405)]
)
def test_unsupported_methods_get_allow(method: str, status: int) -> None:
    node = make_node()
    node.receive_datagram(sip(method), PEER, 0.0)
    [(resp, _)] = responses(node)
    assert resp.status == status
    assert resp.header("Allow") == "INVITE, ACK, CANCEL, BYE, OPTIONS"


def test_invite_to_unknown_number_is_404_and_retransmitted_until_ack() -> None:
    node = make_node()
    node.receive_datagram(sip("INVITE", "4411112222"), PEER, 0.0)
    assert statuses(node) == [404]
    # Timer G: the final response is retransmitted at T1 until the ACK comes.
    node.handle_timer(0.5)
    assert statuses(node) == [404]
    node.receive_datagram(sip("ACK", "4411112222"), PEER, 0.6)
    node.handle_timer(1.5)
    assert statuses(node) == []


def trigger_call(
    node: Node, now: float = 0.0, call_id: str = "c1", branch: str = "z9hG4bK-1"
) -> Response:
    node.receive_datagram(sip("INVITE", call_id=call_id, branch=branch), PEER, now)
    got = responses(node)
    assert [r.status for r, _ in got] == [100, 180]
    ringing = got[1][0]
    assert ringing.to.tag
    return ringing


def test_trigger_rings_and_cancel_schedules_callback() -> None:
    node = make_node()
    ringing = trigger_call(node)
    assert ended(node) == []
    node.receive_datagram(sip("CANCEL"), PEER, 1.0)
    got = responses(node)
    assert [(r.status, r.cseq.method) for r, _ in got] == [(200, "CANCEL"), (487, "INVITE")]
    # The 487 belongs to the same (early) dialog as the 180: same To tag.
    assert got[1][0].to.tag == ringing.to.tag
    [call] = ended(node)
    assert (call.trigger, call.ended_at, call.how, call.callback) == (TRIGGER, 1.0, "CANCEL", True)
    node.receive_datagram(sip("ACK"), PEER, 1.1)
    assert responses(node) == []


def test_trigger_is_never_answered_even_by_retransmission() -> None:
    node = make_node()
    trigger_call(node)
    # SIPp-style retransmission of the INVITE (our 180 was lost): absorbed, 180 resent.
    node.receive_datagram(sip("INVITE"), PEER, 0.5)
    assert statuses(node) == [180]
    assert node.triggers.ringing_count() == 1


def test_second_trigger_while_pending_is_absorbed() -> None:
    node = make_node()
    trigger_call(node, 0.0, "c1", "z9hG4bK-1")
    node.receive_datagram(sip("CANCEL", call_id="c1", branch="z9hG4bK-1"), PEER, 1.0)
    responses(node)
    trigger_call(node, 5.0, "c2", "z9hG4bK-2")
    node.receive_datagram(sip("CANCEL", call_id="c2", branch="z9hG4bK-2"), PEER, 6.0)
    assert statuses(node) == [200, 487]
    assert [c.callback for c in ended(node)] == [True, False]


def test_absorbed_until_the_call_is_over_not_for_a_window() -> None:
    # A customer still on their callback ten minutes later is not rung again by a repeated
    # trigger; once the call is over (the controller says so) a trigger asks again.
    node = make_node()
    trigger_call(node, 0.0, "c1", "z9hG4bK-1")
    node.receive_datagram(sip("CANCEL", call_id="c1", branch="z9hG4bK-1"), PEER, 1.0)
    responses(node)
    trigger_call(node, 600.0, "c2", "z9hG4bK-2")
    node.receive_datagram(sip("CANCEL", call_id="c2", branch="z9hG4bK-2"), PEER, 601.0)
    responses(node)
    assert [c.callback for c in ended(node)] == [True, False]
    node.triggers.callback_done(TRIGGER)
    trigger_call(node, 700.0, "c3", "z9hG4bK-3")
    node.receive_datagram(sip("CANCEL", call_id="c3", branch="z9hG4bK-3"), PEER, 701.0)
    assert [c.callback for c in ended(node)] == [True]


def test_bye_in_the_early_dialog_ends_the_trigger() -> None:
    # RFC 3261 section 15: the caller may send BYE in an early dialog; it gets 200, the
    # INVITE 487, and the trigger counts (it used to get 481 and no callback).
    node = make_node()
    ringing = trigger_call(node)
    bye = sip("BYE", branch="z9hG4bK-bye", seq=2, to_tag=ringing.to.tag or "")
    node.receive_datagram(bye, PEER, 2.0)
    got = responses(node)
    assert sorted((r.status, r.cseq.method) for r, _ in got) == [(200, "BYE"), (487, "INVITE")]
    [call] = ended(node)
    assert (call.how, call.status, call.callback) == ("BYE", 487, True)
    assert node.triggers.ringing_count() == 0


def test_bye_with_a_foreign_to_tag_is_481() -> None:
    node = make_node()
    trigger_call(node)
    node.receive_datagram(sip("BYE", branch="z9hG4bK-bye", seq=2, to_tag="other"), PEER, 2.0)
    assert statuses(node) == [481]
    assert ended(node) == []


def test_trigger_that_rings_too_long_is_released_and_still_counts() -> None:
    node = make_node()
    trigger_call(node)
    timer = node.get_timer()
    assert timer is not None
    now = 0.0
    seen: list[int] = []
    while now < 25.0 and 480 not in seen:
        now = max(now, node.get_timer() or now + 1)
        node.handle_timer(now)
        seen += statuses(node)
    assert 480 in seen
    assert now == pytest.approx(20.0, abs=0.6)
    [call] = ended(node)
    assert (call.trigger, call.how, call.status) == (TRIGGER, "ring timeout", 480)


def test_cancel_for_unknown_invite_is_481() -> None:
    node = make_node()
    node.receive_datagram(sip("CANCEL", branch="z9hG4bK-none"), PEER, 0.0)
    assert statuses(node) == [481]


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (sip("OPTIONS", version="SIP/7.0"), 505),
        (sip("OPTIONS", uri="http://example.com/"), 416),
        (sip("INVITE", cseq_method="OPTIONS"), 400),
        (sip("OPTIONS").replace(b"CSeq: 1 OPTIONS", b"CSeq: one OPTIONS"), 400),
        (sip("INVITE", extra="Require: nonsense\r\n"), 420),
        (sip("INVITE", extra="Content-Type: text/plain\r\n", body="hello"), 415),
        (sip("INVITE").replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), 483),
    ],
)
def test_bad_requests_get_their_rfc_answer_and_the_node_keeps_serving(
    data: bytes, status: int
) -> None:
    node = make_node()
    node.receive_datagram(data, PEER, 0.0)
    got = responses(node)
    assert [r.status for r, _ in got] == [status]
    resp = got[0][0]
    if status == 420:
        assert resp.header("Unsupported") == "nonsense"
    if status == 415:
        assert resp.header("Accept") == "application/sdp"
    node.receive_datagram(sip("OPTIONS", branch="z9hG4bK-after", call_id="after"), PEER, 0.1)
    assert statuses(node) == [200]


def test_garbage_and_bad_responses_are_dropped_silently() -> None:
    node = make_node()
    node.receive_datagram(b"\x00\xff garbage \r\n\r\n", PEER, 0.0)
    node.receive_datagram(b"SIP/2.0 abc Nope\r\n\r\n", PEER, 0.0)
    assert node.datagrams_to_send() == []
    assert node.endpoint.stats["bad"] == 2


def test_sources_outside_allow_from_get_nothing() -> None:
    node = make_node()
    node.receive_datagram(sip("OPTIONS"), Address("192.0.2.1", 5060), 0.0)
    node.receive_datagram(sip("INVITE"), Address("192.0.2.1", 5060), 0.0)
    assert node.datagrams_to_send() == []
    assert node.sources.dropped["acl"] == 2


def test_response_goes_to_via_when_no_rport() -> None:
    node = make_node()
    data = sip("OPTIONS").replace(b";rport", b"").replace(b"127.0.0.1:5999", b"127.0.0.1:6001")
    node.receive_datagram(data, PEER, 0.0)
    [(resp, dest)] = responses(node)
    assert dest == Address("127.0.0.1", 6001)
    assert resp.vias[0].received is None  # same host: no received= needed


# --- the trunk ------------------------------------------------------------------------------

TRUNK = Address("127.0.0.1", 5080)


def trunk_node() -> Node:
    cfg = TrunkConfig(
        proxy=("127.0.0.1", 5080),
        registrar="sip:carrier.test",
        username="alice",
        password="secret",
        expires=600,
        keepalive_interval=0,
    )
    return make_node(trunk=cfg)


def sent_requests(node: Node) -> Iterator[tuple[Request, Address]]:
    for data, addr in node.datagrams_to_send():
        msg = parse_message(data)
        assert isinstance(msg, Request), msg
        yield msg, addr


def answer(req: Request, status: int, extra: str = "") -> bytes:
    via = "".join(f"Via: {v}\r\n" for v in req.vias)
    return (
        f"SIP/2.0 {status} X\r\n{via}From: {req.from_}\r\nTo: {req.to};tag=reg\r\n"
        f"Call-ID: {req.call_id}\r\nCSeq: {req.cseq}\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


def test_trunk_registers_with_digest_and_refreshes() -> None:
    node = trunk_node()
    node.start(0.0)
    [(first, dest)] = list(sent_requests(node))
    assert first.method == "REGISTER" and dest == TRUNK
    assert first.header("Authorization") is None
    challenge = 'Digest realm="carrier.test", nonce="n1", algorithm=MD5, qop="auth"'
    node.receive_datagram(answer(first, 401, f"WWW-Authenticate: {challenge}\r\n"), TRUNK, 0.1)
    [(second, _)] = list(sent_requests(node))
    auth = second.header("Authorization") or ""
    fields = dict(re.findall(r'(\w+)="?([^",]+)"?', auth))
    ha1 = hashlib.md5(b"alice:carrier.test:secret").hexdigest()
    ha2 = hashlib.md5(f"REGISTER:{fields['uri']}".encode()).hexdigest()
    expected = hashlib.md5(
        f"{ha1}:n1:{fields['nc']}:{fields['cnonce']}:auth:{ha2}".encode()
    ).hexdigest()
    assert fields["response"] == expected
    assert second.call_id == first.call_id and second.cseq.seq == first.cseq.seq + 1
    contact = second.header("Contact") or ""
    node.receive_datagram(answer(second, 200, f"Contact: {contact};expires=600\r\n"), TRUNK, 0.2)
    assert node.trunk is not None and node.trunk.registered
    # Step the clock through the transaction timers until the refresh REGISTER leaves.
    now, refresh = 0.2, None
    while refresh is None and now < 700:
        now = node.get_timer() or 700.0
        node.handle_timer(now)
        refresh = next((r for r, _ in sent_requests(node) if r.method == "REGISTER"), None)
    assert refresh is not None and refresh.call_id == first.call_id
    assert 400 < now < 600  # before the 600 s binding expires, not long before


def test_trunk_challenge_from_a_stranger_is_not_answered() -> None:
    node = trunk_node()
    node.start(0.0)
    [(first, _)] = list(sent_requests(node))
    challenge = 'Digest realm="carrier.test", nonce="n1", algorithm=MD5'
    # A response from another port than the trunk's: the transaction still matches (branch),
    # but credentials are never handed to it (CVE-2021-41158).
    node.receive_datagram(
        answer(first, 401, f"WWW-Authenticate: {challenge}\r\n"), Address("127.0.0.1", 6666), 0.1
    )
    assert [r for r, _ in sent_requests(node) if r.header("Authorization")] == []


# --- test lines: the answering path ---------------------------------------------------------

TESTLINE = "815099990000"
OFFER = (
    "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def make_test_line_node(hangup_after: float = 0.0) -> Node:
    return make_node(test_numbers={TESTLINE: hangup_after})


def invite_test_line(node: Node, now: float = 0.0) -> Response:
    extra = "Contact: <sip:caller@127.0.0.1:5999>\r\nContent-Type: application/sdp\r\n"
    node.receive_datagram(sip("INVITE", TESTLINE, extra=extra, body=OFFER), PEER, now)
    got = responses(node)
    assert [r.status for r, _ in got] == [100, 200]
    return got[1][0]


def test_test_line_answers_with_inactive_sdp_and_retransmits_200_until_ack() -> None:
    node = make_test_line_node()
    ok = invite_test_line(node)
    body = ok.body.decode()
    assert "a=inactive" in body and "RTP/AVP 8 101" in body  # the offerer's payload types
    assert ok.header("Contact") is not None and ok.to.tag
    # RFC 3261 13.3.1.4: retransmitted at T1, then 2*T1 later, ... until the ACK.
    seen = []
    for now in (0.5, 1.5):
        assert node.get_timer() == pytest.approx(now)
        node.handle_timer(now)
        seen += statuses(node)
    assert seen == [200, 200]
    node.receive_datagram(sip("ACK", TESTLINE, to_tag=ok.to.tag or ""), PEER, 2.0)
    node.handle_timer(3.5)
    assert statuses(node) == []
    # The caller hangs up: 200 to the BYE, the call is gone.
    node.receive_datagram(
        sip("BYE", TESTLINE, seq=2, to_tag=ok.to.tag or "", branch="z9hG4bK-bye"), PEER, 5.0
    )
    assert statuses(node) == [200]
    assert node.test_lines.active() == 0


def test_test_line_hangs_up_after_the_configured_time() -> None:
    node = make_test_line_node(hangup_after=3.0)
    ok = invite_test_line(node)
    node.receive_datagram(sip("ACK", TESTLINE, to_tag=ok.to.tag or ""), PEER, 0.1)
    now = 0.1
    bye = None
    while bye is None and now < 10:
        now = node.get_timer() or 10.0
        node.handle_timer(now)
        bye = next((r for r, _ in sent_requests(node) if r.method == "BYE"), None)
    assert bye is not None and now == pytest.approx(3.0)
    assert str(bye.uri) == "sip:caller@127.0.0.1:5999"  # the remote target (Contact)
    assert bye.to.tag == "from1" and bye.from_.tag == ok.to.tag


def test_test_line_hangs_up_when_the_ack_never_comes() -> None:
    node = make_test_line_node()
    invite_test_line(node)
    now, bye = 0.0, None
    while bye is None and now < 40:
        now = node.get_timer() or 40.0
        node.handle_timer(now)
        for data, _ in node.datagrams_to_send():
            msg = parse_message(data)
            if isinstance(msg, Request) and msg.method == "BYE":
                bye = msg
    assert bye is not None and now == pytest.approx(32.0)


def test_in_dialog_request_for_unknown_dialog_is_481() -> None:
    node = make_node()
    node.receive_datagram(sip("BYE", to_tag="nope"), PEER, 0.0)
    assert statuses(node) == [481]


def test_trunk_reregisters_as_soon_as_the_keepalive_sees_it_again() -> None:
    cfg = TrunkConfig(
        proxy=("127.0.0.1", 5080),
        registrar="sip:carrier.test",
        username="alice",
        password="secret",
        expires=600,
        keepalive_interval=30,
    )
    node = make_node(trunk=cfg)
    node.start(0.0)
    # The network is down: nothing answers; REGISTER (Timer F) and OPTIONS time out.
    now = 0.0
    while now < 40:
        now = node.get_timer() or 40.0
        node.handle_timer(now)
        node.datagrams_to_send()
    assert node.trunk is not None and node.trunk.registration is not None
    assert node.trunk.registration.state.name == "BACKING_OFF"
    # The next OPTIONS probe is answered: the trunk is back, REGISTER leaves at once.
    options = None
    while options is None and now < 200:
        now = node.get_timer() or 200.0
        node.handle_timer(now)
        options = next((r for r, _ in sent_requests(node) if r.method == "OPTIONS"), None)
    assert options is not None
    assert node.trunk.registration.state.name == "BACKING_OFF"  # still waiting out its back-off
    node.receive_datagram(answer(options, 200), TRUNK, now + 0.01)
    assert [r.method for r, _ in sent_requests(node)] == ["REGISTER"]
    assert node.trunk.registration.state.name == "REGISTERING"


def test_trunk_reregisters_when_it_answers_again_after_being_down() -> None:
    """A carrier that restarted may have forgotten our binding: the keep-alive seeing it back
    after DOWN renews a registration we still count as valid at once (not at its refresh);
    the first answer after start (UNKNOWN -> UP) does not."""
    cfg = TrunkConfig(
        proxy=("127.0.0.1", 5080),
        registrar="sip:carrier.test",
        username="alice",
        password="secret",
        expires=600,
        keepalive_interval=5,
    )
    node = make_node(trunk=cfg)
    node.start(0.0)
    node.handle_timer(node.get_timer() or 0.0)  # the first probe is due at once
    sent = {r.method: r for r, _ in sent_requests(node)}
    register, options = sent["REGISTER"], sent["OPTIONS"]
    node.receive_datagram(answer(options, 200), TRUNK, 0.01)
    contact = register.header("Contact") or ""
    node.receive_datagram(answer(register, 200, f"Contact: {contact};expires=600\r\n"), TRUNK, 0.02)
    assert node.trunk is not None and node.trunk.registration is not None
    assert node.trunk.registered and node.trunk.keepalive is not None
    assert [r.method for r, _ in sent_requests(node)] == []
    # The carrier goes silent: the next probe times out (Timer F) and the trunk is DOWN.
    now = 0.02
    while node.trunk.keepalive.state.name != "DOWN" and now < 60:
        now = node.get_timer() or 60.0
        node.handle_timer(now)
        assert "REGISTER" not in [r.method for r, _ in sent_requests(node)]
    assert node.trunk.keepalive.state.name == "DOWN" and node.trunk.registered
    # It answers the next probe: REGISTER leaves at once, long before the refresh (~540 s).
    probe = None
    while probe is None and now < 120:
        now = node.get_timer() or 120.0
        node.handle_timer(now)
        probe = next((r for r, _ in sent_requests(node) if r.method == "OPTIONS"), None)
    assert probe is not None
    node.receive_datagram(answer(probe, 200), TRUNK, now + 0.01)
    assert [r.method for r, _ in sent_requests(node)] == ["REGISTER"]
    assert node.trunk.registration.state.name == "REGISTERING"


def test_finished_trigger_calls_are_reported_for_their_cdrs() -> None:
    node = make_node()
    trigger_call(node, 0.0, "c1", "z9hG4bK-1")
    node.receive_datagram(sip("CANCEL", call_id="c1", branch="z9hG4bK-1"), PEER, 1.5)
    assert statuses(node) == [200, 487]
    trigger_call(node, 5.0, "c2", "z9hG4bK-2")
    node.receive_datagram(sip("CANCEL", call_id="c2", branch="z9hG4bK-2"), PEER, 6.0)
    first, second = ended(node)
    assert (first.trigger, first.caller, first.status) == (TRIGGER, "815000000001", 487)
    assert (first.started_at, first.ended_at, first.how) == (0.0, 1.5, "CANCEL")
    assert first.callback and not second.callback  # the second was absorbed
