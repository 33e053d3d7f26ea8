"""Dialogs (RFC 3261 sections 12-15), session timers (RFC 4028) and 2xx retransmission."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from softswitch import fsm
from softswitch.sip.dialog import (
    T1,
    T2,
    TABLE,
    AckTimeout,
    Dialog,
    DialogError,
    DialogState,
    DialogTerminated,
    InviteResponder,
    RetryRequest,
    SessionExpired,
    SessionRefreshDue,
    SessionTimerConfig,
    _Input,
    build_response,
    parse_session_expires,
    reject_small_session_interval,
)
from softswitch.sip.message import Request, Response, Via
from softswitch.sip.parser import parse_message
from softswitch.sip.uri import parse_name_addr, parse_uri


def parse(text: str) -> Request | Response:
    head, _, body = text.strip("\n").partition("\n\n")
    raw = head.replace("\n", "\r\n") + f"\r\nContent-Length: {len(body)}\r\n\r\n" + body
    msg = parse_message(raw.encode())
    assert isinstance(msg, Request | Response), msg
    return msg


def req(text: str) -> Request:
    msg = parse(text)
    assert isinstance(msg, Request)
    return msg


def resp(text: str) -> Response:
    msg = parse(text)
    assert isinstance(msg, Response)
    return msg


def state_of(d: Dialog) -> DialogState:
    """The state, read through a call so mypy does not narrow it across mutations."""
    return d.state


def id_gen() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


OUR_INVITE = req(
    """
INVITE sip:+15551234@carrier.example SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv1;rport
Max-Forwards: 70
From: "Callback" <sip:switch@192.0.2.10>;tag=ourtag
To: <sip:+15551234@carrier.example>
Call-ID: call-1@192.0.2.10
CSeq: 10 INVITE
Contact: <sip:switch@192.0.2.10:5060>
Proxy-Authorization: Digest username="u", realm="r", nonce="n", uri="sip:x", response="0"
"""
)


def answer(status: int, reason: str, *, extra: str = "", invite: Request = OUR_INVITE) -> Response:
    to = f"<{invite.to.uri}>;tag=theirtag"
    text = (
        f"SIP/2.0 {status} {reason}\n"
        f"Via: {invite.vias[0]}\n"
        f"From: {invite.from_}\n"
        f"To: {to}\n"
        f"Call-ID: {invite.call_id}\n"
        f"CSeq: {invite.cseq}\n"
        "Contact: <sip:peer@198.51.100.7:5080>\n"
        "Record-Route: <sip:p2.carrier.example;lr>, <sip:p1.carrier.example;lr>\n"
        f"{extra}"
    )
    return resp(text)


def uac_dialog(**kwargs: object) -> Dialog:
    kwargs.setdefault("new_id", id_gen())
    return Dialog.from_uac(OUR_INVITE, answer(200, "OK"), now=0.0, **kwargs)  # type: ignore[arg-type]


THEIR_INVITE = req(
    """
INVITE sip:switch@192.0.2.10:5060 SIP/2.0
Via: SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bKtheirs1
Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKorig
Max-Forwards: 69
From: <sip:+15550000@carrier.example>;tag=theirtag
To: <sip:switch@192.0.2.10>
Call-ID: their-call@carrier
CSeq: 100 INVITE
Contact: <sip:peer@198.51.100.7:5080>
Record-Route: <sip:p1.carrier.example;lr>, <sip:p2.carrier.example;lr>
"""
)
LOCAL_VIA = Via("UDP", "192.0.2.10", 5060, (("rport", None),))


def uas_dialog(invite: Request = THEIR_INVITE, **kwargs: object) -> Dialog:
    kwargs.setdefault("new_id", id_gen())
    return Dialog.from_uas(
        invite,
        "ourtag",
        parse_uri("sip:switch@192.0.2.10:5060"),
        local_via=LOCAL_VIA,
        **kwargs,  # type: ignore[arg-type]
    )


def in_dialog(
    method: str, seq: int, *, extra: str = "", contact: str = "sip:peer@198.51.100.7:5080"
) -> Request:
    """A request from the carrier inside the UAS dialog of ``uas_dialog()``."""
    return req(
        f"{method} sip:switch@192.0.2.10:5060 SIP/2.0\n"
        f"Via: SIP/2.0/UDP 198.51.100.7:5080;branch=z9hG4bK{method}{seq}\n"
        "From: <sip:+15550000@carrier.example>;tag=theirtag\n"
        "To: <sip:switch@192.0.2.10>;tag=ourtag\n"
        "Call-ID: their-call@carrier\n"
        f"CSeq: {seq} {method}\n"
        f"Contact: <{contact}>\n"
        f"{extra}"
    )


def reply(request: Request, status: int, reason: str = "OK", extra: str = "") -> Response:
    headers = tuple(tuple(line.split(": ", 1)) for line in extra.strip("\n").split("\n") if line)
    return build_response(
        request,
        status,
        reason,
        to_tag=None,
        headers=headers,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- creation


def test_uac_dialog_from_2xx_reverses_record_route() -> None:
    d = uac_dialog()
    assert d.state is DialogState.CONFIRMED
    assert (d.id.call_id, d.id.local_tag, d.id.remote_tag) == (
        "call-1@192.0.2.10",
        "ourtag",
        "theirtag",
    )
    assert [str(r.uri) for r in d.route_set] == [
        "sip:p1.carrier.example;lr",
        "sip:p2.carrier.example;lr",
    ]
    assert str(d.remote_target) == "sip:peer@198.51.100.7:5080"
    assert d.local_seq == 10 and d.remote_seq is None
    assert d.is_uac and not d.secure
    assert d.local_uri.tag is None and d.remote_uri.tag is None


def test_uac_early_dialog_confirmed_by_2xx_recomputes_route_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ringing = answer(180, "Ringing")
    d = Dialog.from_uac(OUR_INVITE, ringing, new_id=id_gen())
    assert d.state is DialogState.EARLY
    assert [str(r.uri.host) for r in d.route_set] == ["p1.carrier.example", "p2.carrier.example"]
    assert not d.can_send("INVITE")  # the initial INVITE is still pending
    ok = replace(
        answer(200, "OK"),
        headers=(
            ("Contact", "<sip:peer@198.51.100.9>"),
            ("Record-Route", "<sip:only.carrier.example;lr>"),
        ),
    )
    with caplog.at_level(logging.DEBUG, logger="softswitch.sip.dialog"):
        assert d.receive_response(ok, 1.0) == []
    assert state_of(d) is DialogState.CONFIRMED
    assert "EARLY -> CONFIRMED" in caplog.text
    assert [str(r.uri) for r in d.route_set] == ["sip:only.carrier.example;lr"]
    assert str(d.remote_target) == "sip:peer@198.51.100.9"
    assert d.can_send("INVITE")


def test_early_dialog_ends_on_failure_response() -> None:
    d = Dialog.from_uac(OUR_INVITE, answer(183, "Session Progress"), new_id=id_gen())
    events = d.receive_response(answer(486, "Busy Here"), 2.0)
    assert d.state is DialogState.TERMINATED
    assert events == [DialogTerminated("486 Busy Here to the INVITE")]


def test_response_without_tag_creates_no_dialog() -> None:
    bad = replace(answer(180, "Ringing"), to=OUR_INVITE.to)
    with pytest.raises(DialogError):
        Dialog.from_uac(OUR_INVITE, bad)


def test_uas_dialog_keeps_record_route_order_and_confirms_on_2xx() -> None:
    d = uas_dialog()
    assert d.state is DialogState.EARLY
    assert [str(r.uri) for r in d.route_set] == [
        "sip:p1.carrier.example;lr",
        "sip:p2.carrier.example;lr",
    ]
    assert d.remote_seq == 100 and d.local_seq is None and not d.is_uac
    ringing = d.create_response(THEIR_INVITE, 180, "Ringing", now=0.0)
    assert ringing.to.tag == "ourtag"
    assert d.state is DialogState.EARLY
    ok = d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    assert state_of(d) is DialogState.CONFIRMED
    assert ok.header_all("Record-Route") == [
        "<sip:p1.carrier.example;lr>",
        "<sip:p2.carrier.example;lr>",
    ]
    assert ok.header("Contact") == "<sip:switch@192.0.2.10:5060>"
    assert ok.vias == THEIR_INVITE.vias


def test_uas_rejecting_initial_invite_ends_dialog() -> None:
    d = uas_dialog()
    d.create_response(THEIR_INVITE, 603, "Decline", now=0.0)
    assert d.state is DialogState.TERMINATED


# --------------------------------------------------------------------------- requests


def test_in_dialog_request_loose_routing() -> None:
    d = uac_dialog()
    info = d.create_request("INFO", body=b"x", headers=(("Content-Type", "text/plain"),), now=1.0)
    assert str(info.uri) == "sip:peer@198.51.100.7:5080"
    assert info.header_all("Route") == [
        "<sip:p1.carrier.example;lr>",
        "<sip:p2.carrier.example;lr>",
    ]
    assert info.cseq.seq == 11 and info.cseq.method == "INFO"
    assert info.from_.tag == "ourtag" and info.to.tag == "theirtag"
    assert info.from_.display_name == "Callback"
    assert info.call_id == OUR_INVITE.call_id
    assert info.vias[0].host == "192.0.2.10" and info.vias[0].branch == "z9hG4bKid1"
    assert info.header("Content-Type") == "text/plain" and info.body == b"x"
    bye = d.create_request("BYE", now=2.0)
    assert bye.cseq.seq == 12
    assert bye.vias[0].branch == "z9hG4bKid2"
    assert d.state is DialogState.TERMINATED


def test_in_dialog_request_strict_routing() -> None:
    strict = replace(
        answer(200, "OK"),
        headers=(
            ("Contact", "<sip:peer@198.51.100.7:5080>"),
            ("Record-Route", "<sip:p2.carrier.example;lr>, <sip:p1.carrier.example;method=INVITE>"),
        ),
    )
    d = Dialog.from_uac(OUR_INVITE, strict, new_id=id_gen())
    bye = d.create_request("BYE", now=0.0)
    # RFC 3261 12.2.1.1: the strict router goes into the Request-URI (method param stripped),
    # the remote target becomes the last Route.
    assert str(bye.uri) == "sip:p1.carrier.example"
    assert bye.header_all("Route") == [
        "<sip:p2.carrier.example;lr>",
        "<sip:peer@198.51.100.7:5080>",
    ]


def test_no_route_set_no_route_header() -> None:
    plain = replace(answer(200, "OK"), headers=(("Contact", "<sip:peer@198.51.100.7>"),))
    d = Dialog.from_uac(OUR_INVITE, plain, new_id=id_gen())
    bye = d.create_request("BYE", now=0.0)
    assert bye.header("Route") is None
    assert str(bye.uri) == "sip:peer@198.51.100.7"


def test_uas_side_request_uses_dialog_roles_and_starts_cseq() -> None:
    d = uas_dialog()
    d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    bye = d.create_request("BYE", now=5.0)
    assert bye.cseq.seq == 1  # local sequence number was empty (12.2.1.1)
    assert str(bye.from_.uri) == "sip:switch@192.0.2.10" and bye.from_.tag == "ourtag"
    assert str(bye.to.uri) == "sip:+15550000@carrier.example" and bye.to.tag == "theirtag"
    assert bye.vias[0].host == "192.0.2.10" and bye.vias[0].rport == ""
    assert bye.header_all("Route") == ["<sip:p1.carrier.example;lr>", "<sip:p2.carrier.example;lr>"]


def test_callee_may_not_bye_an_early_dialog_and_dead_dialog_sends_nothing() -> None:
    d = uas_dialog()
    with pytest.raises(DialogError):
        d.create_request("BYE", now=0.0)
    d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    d.create_request("BYE", now=0.0)
    with pytest.raises(DialogError):
        d.create_request("INFO", now=0.0)
    with pytest.raises(DialogError):
        d.create_request("ACK", now=0.0)


def test_reinvite_carries_contact_and_second_one_is_refused() -> None:
    d = uac_dialog()
    reinvite = d.create_request("INVITE", body=b"v=0\r\n", now=1.0)
    assert reinvite.header("Contact") == "<sip:switch@192.0.2.10:5060>"
    assert "timer" in reinvite.header_all("Supported")
    assert not d.can_send("INVITE")
    with pytest.raises(DialogError):
        d.create_request("INVITE", now=1.0)


# --------------------------------------------------------------------------- ACK


def test_ack_for_2xx_and_retransmitted_2xx_gets_same_ack() -> None:
    ok = answer(200, "OK")
    d = Dialog.from_uac(OUR_INVITE, ok, new_id=id_gen())
    ack = d.create_ack(ok)
    assert ack.method == "ACK" and ack.cseq.seq == 10 and ack.cseq.method == "ACK"
    assert str(ack.uri) == "sip:peer@198.51.100.7:5080"
    assert ack.header_all("Route") == ["<sip:p1.carrier.example;lr>", "<sip:p2.carrier.example;lr>"]
    assert ack.vias[0].branch != OUR_INVITE.vias[0].branch
    # RFC 3261 13.2.2.4: the ACK carries the INVITE's credentials.
    assert ack.header("Proxy-Authorization") == OUR_INVITE.header("Proxy-Authorization")
    assert ack.to.tag == "theirtag"
    assert d.create_ack(ok) is ack
    assert d.local_seq == 10  # ACK does not consume a CSeq number


def test_ack_for_reinvite_uses_its_cseq() -> None:
    d = uac_dialog()
    reinvite = d.create_request("INVITE", now=1.0)
    ok = reply(reinvite, 200, extra="Contact: <sip:peer@198.51.100.8>")
    ok = replace(ok, to=ok.to.with_tag("theirtag"))
    assert d.receive_response(ok, 1.1) == []
    assert str(d.remote_target) == "sip:peer@198.51.100.8"  # UAC target refresh
    ack = d.create_ack(ok)
    assert ack.cseq.seq == reinvite.cseq.seq
    assert str(ack.uri) == "sip:peer@198.51.100.8"
    with pytest.raises(DialogError):
        d.create_ack(replace(ok, cseq=replace(ok.cseq, seq=99)))


# --------------------------------------------------------------------------- UAS checks


def test_out_of_order_request_gets_500_and_in_order_updates_remote_cseq() -> None:
    d = uas_dialog()
    d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    assert d.receive_request(in_dialog("INFO", 101), 1.0) is None
    assert d.remote_seq == 101
    late = d.receive_request(in_dialog("INFO", 99), 1.0)
    assert late is not None and late.status == 500 and late.to.tag == "ourtag"
    assert d.remote_seq == 101
    # ACK and CANCEL are not sequenced against the remote CSeq.
    assert d.receive_request(in_dialog("ACK", 100), 1.0) is None


def test_reinvite_from_peer_refreshes_remote_target() -> None:
    d = uas_dialog()
    d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    reinvite = in_dialog("INVITE", 101, contact="sip:peer@203.0.113.5:5060")
    assert d.receive_request(reinvite, 1.0) is None
    assert str(d.remote_target) == "sip:peer@203.0.113.5:5060"
    ok = d.create_response(reinvite, 200, "OK", now=1.0)
    assert ok.header("Contact") == "<sip:switch@192.0.2.10:5060>"
    assert d.can_send("INVITE")


def test_bye_from_peer_terminates_and_later_requests_get_481() -> None:
    d = uas_dialog()
    d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    ok = d.receive_request(in_dialog("BYE", 101), 3.0)
    assert ok is not None and ok.status == 200
    assert d.state is DialogState.TERMINATED
    after = d.receive_request(in_dialog("INFO", 102), 3.0)
    assert after is not None and after.status == 481


def test_glare_peer_reinvite_while_ours_pending_gets_491() -> None:
    d = uas_dialog()
    d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    d.create_request("INVITE", now=1.0)
    answer_ = d.receive_request(in_dialog("INVITE", 101), 1.0)
    assert answer_ is not None and answer_.status == 491
    # An UPDATE with an offer crosses our re-INVITE too (RFC 3311 section 5.2); one without
    # a body (a session refresh) does not.
    offer = replace(in_dialog("UPDATE", 102), body=b"v=0\r\n")
    crossed = d.receive_request(offer, 1.0)
    assert crossed is not None and crossed.status == 491
    assert d.receive_request(in_dialog("UPDATE", 103), 1.0) is None


def test_overlapping_incoming_invite_gets_500_with_retry_after() -> None:
    d = uas_dialog(rng=random.Random(7))
    d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    assert d.receive_request(in_dialog("INVITE", 101), 1.0) is None
    second = d.receive_request(in_dialog("INVITE", 102), 1.0)
    assert second is not None and second.status == 500
    retry_after = second.header("Retry-After")
    assert retry_after is not None and 0 <= int(retry_after) <= 10


@pytest.mark.parametrize(("as_uac", "low", "high"), [(True, 2.1, 4.0), (False, 0.0, 2.0)])
def test_491_retry_delay_depends_on_call_id_owner(as_uac: bool, low: float, high: float) -> None:
    delays = []
    for seed in range(40):
        d = uac_dialog(rng=random.Random(seed)) if as_uac else uas_dialog(rng=random.Random(seed))
        if not as_uac:
            d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
        reinvite = d.create_request("INVITE", now=10.0)
        assert d.receive_response(reply(reinvite, 491, "Request Pending"), 10.0) == []
        deadline = d.get_timer()
        assert deadline is not None
        delays.append(deadline - 10.0)
        assert d.handle_timer(deadline - 0.001) == []
        assert d.handle_timer(deadline) == [RetryRequest("INVITE", "491 back-off elapsed")]
        assert d.get_timer() is None
        assert d.can_send("INVITE")
    assert all(low <= x <= high for x in delays)
    assert max(delays) - min(delays) > (high - low) / 3  # really random, not a constant


def test_481_and_timeout_end_the_dialog() -> None:
    d = uac_dialog()
    info = d.create_request("INFO", now=0.0)
    events = d.receive_response(reply(info, 481, "Call/Transaction Does Not Exist"), 0.1)
    assert d.state is DialogState.TERMINATED
    assert events == [DialogTerminated("481 Call/Transaction Does Not Exist to INFO")]
    d2 = uac_dialog()
    reinvite = d2.create_request("INVITE", now=0.0)
    assert d2.request_timed_out(reinvite, 32.0) == [DialogTerminated("no response to INVITE")]
    assert d2.state is DialogState.TERMINATED


def test_failed_reinvite_keeps_the_dialog() -> None:
    d = uac_dialog()
    reinvite = d.create_request("INVITE", now=0.0)
    assert d.receive_response(reply(reinvite, 488, "Not Acceptable Here"), 0.1) == []
    assert d.state is DialogState.CONFIRMED
    assert d.can_send("INVITE")


def test_every_missing_transition_is_a_protocol_error() -> None:
    for state in DialogState:
        for event in _Input:
            d = uac_dialog()
            d.state = state
            if TABLE.accepts(state, event):
                d._fire(event)
                assert d.state is TABLE.fire(state, event).target
            else:
                with pytest.raises(DialogError) as info:
                    d._fire(event)
                assert info.value.state is state and info.value.input is event
                assert d.state is state


def test_table_reaches_every_state() -> None:
    assert TABLE.reachable() == TABLE.states() == frozenset(DialogState)
    assert issubclass(DialogError, fsm.TransitionError) and TABLE.error is DialogError


# --------------------------------------------------------------------------- session timers


def test_parse_session_expires() -> None:
    assert parse_session_expires("1800;refresher=UAS") == (1800, "uas")
    assert parse_session_expires(" 90 ") == (90, None)
    with pytest.raises(ValueError):
        parse_session_expires("90;refresher=proxy")
    with pytest.raises(ValueError):
        parse_session_expires("soon")


def test_small_session_interval_gets_422_with_min_se() -> None:
    small = replace(THEIR_INVITE, headers=(*THEIR_INVITE.headers, ("Session-Expires", "60")))
    r = reject_small_session_interval(small, min_se=30, to_tag="t")
    assert r is not None and r.status == 422 and r.header("Min-SE") == "90"
    fine = replace(THEIR_INVITE, headers=(*THEIR_INVITE.headers, ("Session-Expires", "90")))
    assert reject_small_session_interval(fine, min_se=90, to_tag="t") is None
    d = uas_dialog(session=SessionTimerConfig(min_se=300))
    d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    r2 = d.receive_request(in_dialog("INVITE", 101, extra="Session-Expires: 120\n"), 1.0)
    assert r2 is not None and r2.status == 422 and r2.header("Min-SE") == "300"
    assert d.can_send("INVITE")


def test_peer_refresher_expiry_and_refresh_restart() -> None:
    invite = replace(
        THEIR_INVITE,
        headers=(*THEIR_INVITE.headers, ("Session-Expires", "1800"), ("Supported", "timer")),
    )
    d = uas_dialog(invite)
    ok = d.create_response(invite, 200, "OK", now=0.0)
    # RFC 4028 section 9: the UAC supports timers, so we let it refresh and require it.
    assert ok.header("Session-Expires") == "1800;refresher=uac"
    assert ok.header("Require") == "timer"
    assert d.get_timer() == 1800 - 32
    refresh = in_dialog("INVITE", 101, extra="Session-Expires: 1800;refresher=uac\n")
    assert d.receive_request(refresh, 900.0) is None
    d.create_response(refresh, 200, "OK", now=900.0)
    assert d.get_timer() == 900 + 1800 - 32
    assert d.handle_timer(2667.0) == []
    assert d.handle_timer(2668.0) == [SessionExpired(1800)]
    assert d.get_timer() is None


def test_we_refresh_when_peer_does_not_support_timers() -> None:
    invite = replace(THEIR_INVITE, headers=(*THEIR_INVITE.headers, ("Session-Expires", "600")))
    d = uas_dialog(invite)
    ok = d.create_response(invite, 200, "OK", now=0.0)
    assert ok.header("Session-Expires") == "600;refresher=uas"
    assert ok.header("Require") is None
    assert d.get_timer() == 300
    assert d.handle_timer(300.0) == [SessionRefreshDue(600)]
    refresh = d.create_request("UPDATE", now=300.0)
    assert refresh.header("Session-Expires") == "600;refresher=uac"
    assert refresh.header("Min-SE") == "90"
    ok2 = replace(
        reply(refresh, 200, extra="Session-Expires: 600;refresher=uac"),
        to=refresh.to,
    )
    assert d.receive_response(ok2, 300.2) == []
    assert d.get_timer() == pytest.approx(600.2)


def test_uac_session_timer_from_2xx() -> None:
    ok = answer(200, "OK", extra="Session-Expires: 120;refresher=uas\nRequire: timer\n")
    d = Dialog.from_uac(OUR_INVITE, ok, now=5.0, new_id=id_gen())
    assert not d.we_refresh
    # Expiry minus min(32, 120/3) = 32 s.
    assert d.get_timer() == 5 + 120 - 32
    ok90 = answer(200, "OK", extra="Session-Expires: 90;refresher=uac\n")
    d2 = Dialog.from_uac(OUR_INVITE, ok90, now=0.0, new_id=id_gen())
    assert d2.we_refresh and d2.get_timer() == 45
    assert d2.handle_timer(45.0) == [SessionRefreshDue(90)]
    # Refresh due but nothing done: the session still expires at 90 - 30.
    assert d2.get_timer() == 60
    assert d2.handle_timer(60.0) == [SessionExpired(90)]


def test_no_session_expires_in_2xx_means_no_timer() -> None:
    d = uac_dialog(session=SessionTimerConfig(request_timer=True, session_expires=1800))
    assert d.get_timer() is None
    reinvite = d.create_request("INVITE", now=0.0)
    assert reinvite.header("Session-Expires") == "1800;refresher=uac"


def test_422_to_our_reinvite_asks_for_retry_with_larger_interval() -> None:
    d = uac_dialog(session=SessionTimerConfig(request_timer=True, session_expires=100))
    reinvite = d.create_request("INVITE", now=0.0)
    events = d.receive_response(
        reply(reinvite, 422, "Session Interval Too Small", "Min-SE: 600"), 0.1
    )
    assert events == [RetryRequest("INVITE", "422: peer's Min-SE is 600")]
    again = d.create_request("INVITE", now=0.1)
    assert again.header("Session-Expires") == "600;refresher=uac"
    assert again.header("Min-SE") == "600"


# --------------------------------------------------------------------------- 2xx retransmission


def test_invite_responder_retransmits_until_ack() -> None:
    d = uas_dialog()
    ok = d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    r = InviteResponder(ok, 0.0)
    sent_at = []
    now = 0.0
    while (deadline := r.get_timer()) is not None and deadline < 20:
        now = deadline
        out = r.handle_timer(now)
        assert out == [ok]
        sent_at.append(now)
    # T1, then doubling, capped at T2 (RFC 3261 section 13.3.1.4).
    assert sent_at[:6] == [T1, 3 * T1, 7 * T1, 15 * T1, 15 * T1 + T2, 15 * T1 + 2 * T2]
    r.ack_received()
    assert r.get_timer() is None and r.acked
    assert r.handle_timer(100.0) == []


def test_invite_responder_gives_up_after_64_t1() -> None:
    d = uas_dialog()
    ok = d.create_response(THEIR_INVITE, 200, "OK", now=0.0)
    r = InviteResponder(ok, 0.0)
    events: list[object] = []
    count = 0
    while (deadline := r.get_timer()) is not None:
        out = r.handle_timer(deadline)
        count += sum(isinstance(x, Response) for x in out)
        events.extend(x for x in out if isinstance(x, AckTimeout))
    assert events == [AckTimeout("their-call@carrier", 100)]
    assert deadline is None
    assert 8 <= count <= 11  # 0.5,1.5,3.5,7.5 then every 4 s until 32 s
    with pytest.raises(ValueError):
        InviteResponder(replace(ok, status=486), 0.0)


def test_route_header_values_parse_back() -> None:
    d = uac_dialog()
    bye = d.create_request("BYE", now=0.0)
    assert [parse_name_addr(v).uri.param("lr") for v in bye.header_all("Route")] == ["", ""]


def test_state_diagram_lists_every_transition() -> None:
    from softswitch.sip.dialog import state_diagram

    text = state_diagram()
    assert text == TABLE.mermaid() and text.startswith("stateDiagram-v2")
    edges = dict(line.strip().split(": ", 1) for line in text.splitlines() if ": " in line)
    for (old, event), entry in TABLE:
        assert event.value in edges[f"{old.name} --> {entry.target.name}"]
    for state in DialogState:
        assert state.name in text
