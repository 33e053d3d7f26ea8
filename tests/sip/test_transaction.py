"""The transaction layer against RFC 3261 section 17 and RFC 6026, on a fake clock."""

from __future__ import annotations

import sys
from dataclasses import replace
from enum import Enum

import pytest

from softswitch.sip import timers
from softswitch.sip.message import URI, Address, CSeq, Message, NameAddr, Request, Response, Via
from softswitch.sip.timers import TimerConfig
from softswitch.sip.transaction import (
    AckReceived,
    CancelReceived,
    Event,
    Input,
    InviteClientState,
    InviteClientTransaction,
    InviteServerState,
    InviteServerTransaction,
    NonInviteClientState,
    NonInviteServerState,
    NonInviteServerTransaction,
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    StrayResponse,
    Transaction,
    TransactionLayer,
    TransactionTerminated,
    TransactionTimeout,
    TransportFailed,
    make_ack_for_non2xx,
    make_cancel,
    make_response,
    server_key,
)

UAC = Address("127.0.0.1", 5060)
UAS = Address("127.0.0.1", 5070)
UAS_TCP = Address("127.0.0.1", 5070, "TCP")
BRANCH = "z9hG4bK-test-1"


def request(
    method: str = "INVITE",
    branch: str = BRANCH,
    *,
    seq: int = 1,
    transport: str = "UDP",
    host: str = "127.0.0.1",
    port: int = 5060,
    headers: tuple[tuple[str, str], ...] = (),
) -> Request:
    return Request(
        method=method,
        uri=URI(user="bob", host="127.0.0.1", port=5070),
        vias=(Via(transport, host, port, (("branch", branch), ("rport", None))),),
        from_=NameAddr(URI(user="alice", host="127.0.0.1"), params=(("tag", "from-1"),)),
        to=NameAddr(URI(user="bob", host="127.0.0.1")),
        call_id="call-1@127.0.0.1",
        cseq=CSeq(seq, method),
        headers=(("Max-Forwards", "70"), ("Route", "<sip:proxy.invalid;lr>"), *headers),
    )


def reply(req: Request, status: int, tag: str | None = "to-1") -> Response:
    return make_response(req, status, to_tag=None if status == 100 else tag)


def events(layer: TransactionLayer) -> list[Event]:
    out = []
    while (ev := layer.next_event()) is not None:
        out.append(ev)
    return out


def sent(layer: TransactionLayer) -> list[Message]:
    return [m for m, _ in layer.messages_to_send()]


def run_timers(layer: TransactionLayer, until: float) -> list[tuple[float, Message]]:
    """Step the fake clock from deadline to deadline; what was sent, with when."""
    log: list[tuple[float, Message]] = []
    while (deadline := layer.get_timer()) is not None and deadline <= until:
        layer.handle_timer(deadline)
        log.extend((deadline, m) for m, _ in layer.messages_to_send())
    return log


def kinds(evs: list[Event]) -> list[type]:
    return [type(e) for e in evs]


def state_of(tx: Transaction) -> Enum:
    # A function call, so mypy does not narrow the state across the steps of a test.
    return tx.state


def assert_empty(layer: TransactionLayer) -> None:
    assert not layer.client_transactions
    assert not layer.server_transactions
    assert layer.get_timer() is None


# --- timers.py --------------------------------------------------------------------------------


def test_timer_values_follow_rfc3261_table_4() -> None:
    cfg = TimerConfig()
    assert (cfg.T1, cfg.T2, cfg.T4) == (0.5, 4.0, 5.0)
    assert timers.timer_b(cfg) == timers.timer_f(cfg) == timers.timer_h(cfg) == 32.0
    assert timers.timer_l(cfg) == timers.timer_m(cfg) == 32.0
    assert timers.timer_d(cfg, False) == 32.0 and timers.timer_d(cfg, True) == 0.0
    assert timers.timer_i(cfg, False) == timers.timer_k(cfg, False) == 5.0
    assert timers.timer_i(cfg, True) == timers.timer_k(cfg, True) == timers.timer_j(cfg, True) == 0
    assert timers.timer_j(cfg, False) == 32.0
    for first in (timers.timer_a, timers.timer_e, timers.timer_g):
        assert first(cfg, False) == 0.5 and first(cfg, True) is None
    assert timers.next_timer_a(16.0) == 32.0
    assert timers.next_timer_e(cfg, 2.0, False) == 4.0 == timers.next_timer_e(cfg, 4.0, False)
    assert timers.next_timer_e(cfg, 0.5, True) == 4.0
    assert timers.next_timer_g(cfg, 4.0) == 4.0
    slow = TimerConfig(T1=1.0, T2=8.0)
    assert timers.timer_b(slow) == 64.0 and timers.timer_d(slow, False) == 64.0


def test_timer_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        TimerConfig(T1=5.0, T2=4.0)
    with pytest.raises(ValueError):
        TimerConfig(T4=0)
    with pytest.raises(ValueError):
        TimerConfig(trying_delay=-1)


# --- INVITE client ----------------------------------------------------------------------------


def test_invite_client_retransmits_doubling_until_timer_b() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), UAS, 0.0)
    assert sent(layer) == [tx.request]
    log = run_timers(layer, 100.0)
    # Timer A: 0.5, 1, 2, 4, 8, 16 s apart, no cap; Timer B at 64*T1 = 32 s ends it.
    assert [t for t, m in log] == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert all(m is tx.request for _, m in log)
    evs = events(layer)
    assert evs == [TransactionTimeout(tx, "B"), TransactionTerminated(tx)]
    assert state_of(tx) is InviteClientState.TERMINATED
    assert_empty(layer)


def test_invite_client_provisional_stops_retransmissions_and_timer_b() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), UAS, 0.0)
    sent(layer)
    run_timers(layer, 0.5)
    layer.receive_response(reply(tx.request, 100), UAS, 0.6)
    assert state_of(tx) is InviteClientState.PROCEEDING
    assert kinds(events(layer)) == [ResponseReceived]
    # Proceeding has no timers at all: the TU decides how long to wait (and CANCELs).
    assert layer.get_timer() is None
    assert isinstance(tx, InviteClientTransaction) and tx.can_cancel()
    layer.receive_response(reply(tx.request, 180), UAS, 1.0)
    assert [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)] == [180]


def test_invite_client_2xx_goes_accepted_until_timer_m() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), UAS, 0.0)
    sent(layer)
    ok = reply(tx.request, 200)
    layer.receive_response(ok, UAS, 0.1)
    assert state_of(tx) is InviteClientState.ACCEPTED
    assert tx.armed_timers == {Input.TIMER_M}
    assert tx.deadline(Input.TIMER_M) == pytest.approx(32.1)
    # The 2xx retransmissions reach the TU (it re-ACKs them); the layer sends no ACK itself.
    layer.receive_response(ok, UAS, 0.6)
    layer.receive_response(reply(tx.request, 180), UAS, 0.7)
    assert [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)] == [
        200,
        200,
    ]
    assert sent(layer) == []
    assert run_timers(layer, 40.0) == []
    assert kinds(events(layer)) == [TransactionTerminated]
    assert_empty(layer)
    # After Timer M, a 2xx is stray: still passed up so the UAC core can ACK it.
    layer.receive_response(ok, UAS, 41.0)
    assert events(layer) == [StrayResponse(ok, UAS)]


def test_invite_client_non2xx_acks_absorbs_retransmissions_until_timer_d() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), UAS, 0.0)
    sent(layer)
    busy = reply(tx.request, 486)
    layer.receive_response(busy, UAS, 1.0)
    assert state_of(tx) is InviteClientState.COMPLETED
    (ack,) = sent(layer)
    assert isinstance(ack, Request)
    assert ack == make_ack_for_non2xx(tx.request, busy)
    assert ack.method == "ACK" and ack.cseq == CSeq(1, "ACK")
    assert ack.vias == tx.request.vias[:1] and ack.uri == tx.request.uri
    assert ack.to.tag == "to-1" and ack.from_ == tx.request.from_
    assert ack.header("Route") == "<sip:proxy.invalid;lr>"
    assert [e.response.status for e in events(layer) if isinstance(e, ResponseReceived)] == [486]
    for t in (1.5, 2.5):
        layer.receive_response(busy, UAS, t)
        assert sent(layer) == [ack]
        assert events(layer) == []
    assert tx.deadline(Input.TIMER_D) == pytest.approx(33.0)
    assert run_timers(layer, 40.0) == []
    assert events(layer) == [TransactionTerminated(tx)]
    assert_empty(layer)


def test_invite_client_late_2xx_from_another_fork_after_487_reaches_tu() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), UAS, 0.0)
    layer.receive_response(reply(tx.request, 487, tag="fork-a"), UAS, 1.0)
    events(layer)
    ok = reply(tx.request, 200, tag="fork-b")
    layer.receive_response(ok, UAS, 1.1)
    assert events(layer) == [ResponseReceived(tx, ok)]
    assert state_of(tx) is InviteClientState.COMPLETED


def test_invite_client_over_tcp_has_no_timer_a_and_no_linger() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(transport="TCP"), UAS_TCP, 0.0)
    assert tx.reliable
    assert tx.armed_timers == {Input.TIMER_B}
    busy = reply(tx.request, 486)
    layer.receive_response(busy, UAS_TCP, 1.0)
    assert [m.method for m in sent(layer) if isinstance(m, Request)] == ["INVITE", "ACK"]
    # Timer D is zero on reliable transports: straight to Terminated.
    assert kinds(events(layer)) == [ResponseReceived, TransactionTerminated]
    assert_empty(layer)


def test_invite_client_tcp_timeout_is_still_timer_b() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(transport="TCP"), UAS_TCP, 0.0)
    sent(layer)
    assert run_timers(layer, 100.0) == []
    assert events(layer) == [TransactionTimeout(tx, "B"), TransactionTerminated(tx)]


def test_layer_wide_reliability_override() -> None:
    layer = TransactionLayer(is_reliable=True)
    tx = layer.send_request(request(), UAS, 0.0)
    assert tx.reliable and tx.armed_timers == {Input.TIMER_B}


# --- non-INVITE client ------------------------------------------------------------------------


def test_non_invite_client_timer_e_capped_at_t2_until_timer_f() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request("OPTIONS"), UAS, 0.0)
    sent(layer)
    log = run_timers(layer, 100.0)
    # 0.5, 1, 2, 4, 4, 4 ... apart (capped at T2), Timer F at 32 s.
    assert [t for t, _ in log] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert events(layer) == [TransactionTimeout(tx, "F"), TransactionTerminated(tx)]
    assert_empty(layer)


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request("BYE"), UAS, 0.0)
    sent(layer)
    assert [t for t, _ in run_timers(layer, 0.6)] == [0.5]
    layer.receive_response(reply(tx.request, 100), UAS, 0.7)
    assert state_of(tx) is NonInviteClientState.PROCEEDING
    # E was armed for 1.5 s; from then on, in Proceeding, it is T2 every time.
    assert [t for t, _ in run_timers(layer, 14.0)] == [1.5, 5.5, 9.5, 13.5]
    layer.receive_response(reply(tx.request, 200), UAS, 14.0)
    assert state_of(tx) is NonInviteClientState.COMPLETED
    assert tx.armed_timers == {Input.TIMER_K}


def test_non_invite_client_completed_absorbs_until_timer_k() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request("BYE"), UAS, 0.0)
    sent(layer)
    ok = reply(tx.request, 200)
    layer.receive_response(ok, UAS, 0.2)
    assert events(layer) == [ResponseReceived(tx, ok)]
    layer.receive_response(ok, UAS, 0.8)
    assert events(layer) == []
    assert sent(layer) == []
    assert tx.deadline(Input.TIMER_K) == pytest.approx(5.2)
    assert run_timers(layer, 10.0) == []
    assert events(layer) == [TransactionTerminated(tx)]
    # Now unmatched and not a 2xx to INVITE: dropped and counted.
    layer.receive_response(ok, UAS, 11.0)
    assert events(layer) == []
    assert layer.stats["dropped_responses"] == 1


def test_non_invite_client_tcp() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request("BYE", transport="TCP"), UAS_TCP, 0.0)
    assert tx.armed_timers == {Input.TIMER_F}
    layer.receive_response(reply(tx.request, 200), UAS_TCP, 0.1)
    assert kinds(events(layer)) == [ResponseReceived, TransactionTerminated]
    assert_empty(layer)


def test_send_request_rejects_ack_missing_branch_and_duplicates() -> None:
    layer = TransactionLayer()
    with pytest.raises(ValueError):
        layer.send_request(request("ACK"), UAS, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(branch=""), UAS, 0.0)
    layer.send_request(request(), UAS, 0.0)
    with pytest.raises(ValueError):
        layer.send_request(request(), UAS, 0.0)
    ack = request("ACK")
    layer.send_ack(ack, UAS)
    assert layer.messages_to_send()[-1] == (ack, UAS)
    assert len(layer.client_transactions) == 1


# --- INVITE server ----------------------------------------------------------------------------


def new_invite_server(
    layer: TransactionLayer, now: float = 0.0, **kw: object
) -> InviteServerTransaction:
    layer.receive_request(request(**kw), UAC, now)  # type: ignore[arg-type]
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived) and isinstance(ev.tx, InviteServerTransaction)
    assert ev.source == UAC
    return ev.tx


def test_invite_server_sends_100_itself_after_200ms_of_silence() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    assert sent(layer) == []
    assert layer.get_timer() == pytest.approx(0.2)
    ((t, trying),) = run_timers(layer, 1.0)
    assert t == pytest.approx(0.2)
    assert isinstance(trying, Response) and trying.status == 100 and trying.to.tag is None
    assert trying.vias == tx.request.vias and trying.cseq == tx.request.cseq
    # A retransmitted INVITE now gets that 100 again.
    layer.receive_request(request(), UAC, 0.5)
    assert sent(layer) == [trying]
    assert events(layer) == []


def test_invite_server_no_auto_100_when_tu_answers_in_time_or_disabled() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    ringing = reply(tx.request, 180)
    layer.send_response(tx, ringing, 0.05)
    assert sent(layer) == [ringing]
    assert run_timers(layer, 10.0) == []
    off = TransactionLayer(TimerConfig(trying_delay=None))
    new_invite_server(off)
    assert off.get_timer() is None
    now = TransactionLayer(TimerConfig(trying_delay=0))
    new_invite_server(now)
    assert [m.status for m in sent(now) if isinstance(m, Response)] == [100]


def test_invite_server_request_retransmission_before_any_provisional_sends_nothing() -> None:
    layer = TransactionLayer(TimerConfig(trying_delay=None))
    tx = new_invite_server(layer)
    layer.receive_request(request(), UAC, 0.1)
    assert sent(layer) == [] and events(layer) == []
    ringing = reply(tx.request, 180)
    layer.send_response(tx, ringing, 0.2)
    sent(layer)
    layer.receive_request(request(), UAC, 0.3)
    assert sent(layer) == [ringing]


def test_invite_server_timer_g_capped_at_t2_until_timer_h() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    busy = reply(tx.request, 486)
    layer.send_response(tx, busy, 0.0)
    assert sent(layer) == [busy]
    assert state_of(tx) is InviteServerState.COMPLETED
    log = run_timers(layer, 100.0)
    assert [t for t, _ in log] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert all(m is busy for _, m in log)
    # Timer H: the ACK never came.
    assert events(layer) == [TransactionTimeout(tx, "H"), TransactionTerminated(tx)]
    assert_empty(layer)


def test_invite_server_ack_confirms_and_timer_i_absorbs() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    busy = reply(tx.request, 486)
    layer.send_response(tx, busy, 0.0)
    sent(layer)
    layer.receive_request(request(), UAC, 0.3)  # INVITE retransmission: the 486 again
    assert sent(layer) == [busy]
    [(t, _)] = run_timers(layer, 0.6)
    assert t == 0.5
    ack = make_ack_for_non2xx(tx.request, busy)
    layer.receive_request(ack, UAC, 1.0)
    assert state_of(tx) is InviteServerState.CONFIRMED
    assert tx.armed_timers == {Input.TIMER_I}
    layer.receive_request(ack, UAC, 1.2)
    layer.receive_request(request(), UAC, 1.3)
    assert sent(layer) == [] and events(layer) == []
    assert run_timers(layer, 10.0) == []
    assert events(layer) == [TransactionTerminated(tx)]
    assert tx.deadline(Input.TIMER_I) is None
    assert_empty(layer)


def test_invite_server_2xx_accepted_absorbs_invite_passes_ack_until_timer_l() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    ok = reply(tx.request, 200)
    layer.send_response(tx, ok, 0.1)
    assert state_of(tx) is InviteServerState.ACCEPTED
    assert tx.armed_timers == {Input.TIMER_L}
    assert not tx.can_send_final()
    # The TU retransmits its 2xx (13.3.1.4): the transaction carries it, adds nothing.
    layer.send_response(tx, ok, 0.6)
    assert sent(layer) == [ok, ok]
    # RFC 6026: an INVITE retransmission is absorbed, not a new request.
    layer.receive_request(request(), UAC, 0.7)
    assert sent(layer) == [] and events(layer) == []
    ack_same_branch = request("ACK")
    layer.receive_request(ack_same_branch, UAC, 0.8)
    ack_new_branch = request("ACK", "z9hG4bK-ack-2")
    layer.receive_request(ack_new_branch, UAC, 0.9)
    assert events(layer) == [AckReceived(ack_same_branch, UAC), AckReceived(ack_new_branch, UAC)]
    assert state_of(tx) is InviteServerState.ACCEPTED
    with pytest.raises(ProtocolError):
        layer.send_response(tx, reply(tx.request, 486), 1.0)
    assert run_timers(layer, 40.0) == []
    assert events(layer) == [TransactionTerminated(tx)]
    assert_empty(layer)


def test_invite_server_tcp_no_timer_g_and_no_timer_i() -> None:
    layer = TransactionLayer()
    layer.receive_request(request(transport="TCP"), UAS_TCP, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    tx = ev.tx
    busy = reply(tx.request, 486)
    layer.send_response(tx, busy, 0.0)
    assert tx.armed_timers == {Input.TIMER_H}
    layer.receive_request(make_ack_for_non2xx(tx.request, busy), UAS_TCP, 0.1)
    assert events(layer) == [TransactionTerminated(tx)]
    assert_empty(layer)


def test_send_response_by_key_and_errors() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    layer.send_response(tx.key, reply(tx.request, 180), 0.0)
    assert tx.last_provisional is not None and tx.last_provisional.status == 180
    layer.send_response(tx.key, reply(tx.request, 404), 0.0)
    with pytest.raises(ProtocolError) as info:
        layer.send_response(tx, reply(tx.request, 500), 0.1)
    assert info.value.state is InviteServerState.COMPLETED
    assert info.value.input is Input.SEND_3XX_6XX
    with pytest.raises(KeyError):
        layer.send_response(("nope",), reply(tx.request, 200), 0.1)


def test_ack_before_any_final_is_a_counted_protocol_error() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    layer.receive_request(request("ACK"), UAC, 0.1)
    assert state_of(tx) is InviteServerState.PROCEEDING
    assert layer.stats["protocol_errors"] == 1
    assert events(layer) == []


# --- non-INVITE server ------------------------------------------------------------------------


def test_non_invite_server_full_life_over_udp() -> None:
    layer = TransactionLayer()
    layer.receive_request(request("BYE"), UAC, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    tx = ev.tx
    assert isinstance(tx, NonInviteServerTransaction)
    assert state_of(tx) is NonInviteServerState.TRYING and layer.get_timer() is None
    layer.receive_request(request("BYE"), UAC, 0.5)  # absorbed in Trying: nothing to resend
    assert sent(layer) == [] and events(layer) == []
    trying = reply(tx.request, 100)
    layer.send_response(tx, trying, 0.6)
    assert state_of(tx) is NonInviteServerState.PROCEEDING
    layer.receive_request(request("BYE"), UAC, 1.5)
    assert sent(layer) == [trying, trying]
    ok = reply(tx.request, 200)
    layer.send_response(tx, ok, 2.0)
    layer.receive_request(request("BYE"), UAC, 3.5)
    assert sent(layer) == [ok, ok]
    assert tx.deadline(Input.TIMER_J) == pytest.approx(34.0)
    assert run_timers(layer, 40.0) == []
    assert events(layer) == [TransactionTerminated(tx)]
    assert_empty(layer)


def test_non_invite_server_tcp_terminates_on_final() -> None:
    layer = TransactionLayer()
    layer.receive_request(request("BYE", transport="TCP"), UAS_TCP, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    layer.send_response(ev.tx, reply(ev.tx.request, 200), 0.1)
    assert events(layer) == [TransactionTerminated(ev.tx)]
    assert_empty(layer)


# --- matching ---------------------------------------------------------------------------------


def test_server_matching_uses_branch_sent_by_and_method() -> None:
    layer = TransactionLayer(TimerConfig(trying_delay=None))
    new_invite_server(layer)
    # Same branch, other sent-by: a different transaction (17.2.3).
    layer.receive_request(request(port=5099), UAC, 0.1)
    # Same branch, other method (not ACK/CANCEL): a different transaction too.
    layer.receive_request(request("INFO"), UAC, 0.2)
    assert kinds(events(layer)) == [RequestReceived, RequestReceived]
    assert len(layer.server_transactions) == 3
    # sent-by is compared case-insensitively, with the default port filled in.
    a = request(host="Example.COM", port=5060)
    b = request(host="example.com")
    b = replace(b, vias=(Via("UDP", "example.com", None, b.vias[0].params),))
    assert server_key(a) == server_key(b)
    assert server_key(request("ACK")) == server_key(request())
    assert server_key(replace(a, vias=())) is None


def test_rfc2543_requests_without_magic_cookie_still_match() -> None:
    layer = TransactionLayer(TimerConfig(trying_delay=None))
    old = request(branch="1234")
    layer.receive_request(old, UAC, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, RequestReceived)
    busy = reply(old, 486)
    layer.send_response(ev.tx, busy, 0.1)
    sent(layer)
    layer.receive_request(old, UAC, 0.2)
    assert sent(layer) == [busy]
    layer.receive_request(make_ack_for_non2xx(old, busy), UAC, 0.3)
    assert state_of(ev.tx) is InviteServerState.CONFIRMED
    # A different CSeq number is a different request.
    layer.receive_request(request(branch="1234", seq=2), UAC, 0.4)
    assert kinds(events(layer)) == [RequestReceived]


def test_responses_match_on_branch_and_cseq_method() -> None:
    layer = TransactionLayer()
    inv = layer.send_request(request(), UAS, 0.0)
    cancel = layer.send_request(make_cancel(inv.request), UAS, 0.1)
    assert cancel.key != inv.key
    layer.receive_response(reply(cancel.request, 200), UAS, 0.2)
    assert events(layer) == [ResponseReceived(cancel, reply(cancel.request, 200))]
    assert state_of(inv) is InviteClientState.CALLING
    other = reply(request(branch="z9hG4bK-other"), 180)
    layer.receive_response(other, UAS, 0.3)
    assert events(layer) == [] and layer.stats["dropped_responses"] == 1


# --- CANCEL (RFC 3261 section 9) ----------------------------------------------------------------


def test_make_cancel_copies_what_section_9_1_requires() -> None:
    inv = request(headers=(("Contact", "<sip:alice@127.0.0.1>"),))
    cancel = make_cancel(inv)
    assert cancel.method == "CANCEL" and cancel.cseq == CSeq(1, "CANCEL")
    assert cancel.uri == inv.uri and cancel.call_id == inv.call_id
    assert cancel.from_ == inv.from_ and cancel.to == inv.to and cancel.to.tag is None
    assert cancel.vias == inv.vias[:1]
    assert cancel.header("Route") == inv.header("Route")
    assert cancel.header("Contact") is None


def test_cancel_while_proceeding_gets_200_and_invite_gets_487() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    layer.send_response(tx, reply(tx.request, 180, tag="uas-tag"), 0.1)
    sent(layer)
    cancel = make_cancel(tx.request)
    layer.receive_request(cancel, UAC, 1.0)
    (ev,) = events(layer)
    assert isinstance(ev, CancelReceived)
    assert ev.invite_tx is tx and ev.request == cancel and ev.source == UAC
    assert isinstance(ev.cancel_tx, NonInviteServerTransaction)
    assert layer.answer_cancel(ev, 1.0) is True
    ok, terminated = sent(layer)
    assert isinstance(ok, Response) and isinstance(terminated, Response)
    assert (ok.status, ok.cseq.method) == (200, "CANCEL")
    assert (terminated.status, terminated.cseq.method) == (487, "INVITE")
    # Section 9.2: the same To tag as the INVITE's responses.
    assert ok.to.tag == terminated.to.tag == "uas-tag"
    assert state_of(tx) is InviteServerState.COMPLETED
    layer.receive_request(make_ack_for_non2xx(tx.request, terminated), UAC, 1.1)
    assert state_of(tx) is InviteServerState.CONFIRMED


def test_cancel_after_final_response_gets_200_but_no_487() -> None:
    layer = TransactionLayer()
    tx = new_invite_server(layer)
    layer.send_response(tx, reply(tx.request, 200), 0.1)
    sent(layer)
    layer.receive_request(make_cancel(tx.request), UAC, 0.2)
    (ev,) = events(layer)
    assert isinstance(ev, CancelReceived) and ev.invite_tx is tx
    assert layer.answer_cancel(ev, 0.2) is False
    (ok,) = sent(layer)
    assert isinstance(ok, Response) and ok.status == 200 and ok.cseq.method == "CANCEL"
    assert ok.to.tag == "to-1"
    assert state_of(tx) is InviteServerState.ACCEPTED


def test_cancel_without_invite_transaction_gets_481() -> None:
    layer = TransactionLayer()
    layer.receive_request(make_cancel(request()), UAC, 0.0)
    (ev,) = events(layer)
    assert isinstance(ev, CancelReceived) and ev.invite_tx is None
    assert layer.answer_cancel(ev, 0.0) is False
    (r,) = sent(layer)
    assert isinstance(r, Response) and r.status == 481 and r.cseq.method == "CANCEL"
    # A retransmitted CANCEL is answered from the transaction, not re-reported.
    layer.receive_request(make_cancel(request()), UAC, 0.5)
    assert sent(layer) == [r] and events(layer) == []


def test_cancel_with_other_sent_by_does_not_match() -> None:
    layer = TransactionLayer()
    new_invite_server(layer)
    layer.receive_request(make_cancel(request(host="10.9.9.9")), UAC, 0.3)
    (ev,) = events(layer)
    assert isinstance(ev, CancelReceived) and ev.invite_tx is None


def pump(src: TransactionLayer, dst: TransactionLayer, now: float) -> None:
    """Deliver everything ``src`` queued to ``dst`` (an in-memory wire)."""
    for msg, _ in src.messages_to_send():
        if isinstance(msg, Request):
            dst.receive_request(msg, UAC, now)
        else:
            dst.receive_response(msg, UAS, now)


def test_cancel_crossing_200_ok_end_to_end() -> None:
    uac, uas = TransactionLayer(), TransactionLayer()
    inv = uac.send_request(request(), UAS, 0.0)
    pump(uac, uas, 0.01)
    (req_ev,) = events(uas)
    assert isinstance(req_ev, RequestReceived)
    uas.send_response(req_ev.tx, reply(req_ev.tx.request, 180), 0.02)
    pump(uas, uac, 0.03)
    events(uac)
    # The UAS answers 200 while the UAC's CANCEL is on the wire.
    cancel_tx = uac.send_request(make_cancel(inv.request), UAS, 0.04)
    uas.send_response(req_ev.tx, reply(req_ev.tx.request, 200), 0.04)
    pump(uas, uac, 0.05)
    pump(uac, uas, 0.05)
    (cancel_ev,) = events(uas)
    assert isinstance(cancel_ev, CancelReceived)
    assert uas.answer_cancel(cancel_ev, 0.05) is False
    pump(uas, uac, 0.06)
    statuses = [
        (e.tx.request.method, e.response.status) for e in events(uac) if isinstance(e, ResponseReceived)
    ]  # fmt: skip
    assert statuses == [("INVITE", 200), ("CANCEL", 200)]
    assert state_of(inv) is InviteClientState.ACCEPTED
    assert state_of(cancel_tx) is NonInviteClientState.COMPLETED
    assert state_of(req_ev.tx) is InviteServerState.ACCEPTED


def test_cancel_then_487_end_to_end_acks_inside_the_transaction() -> None:
    uac, uas = TransactionLayer(), TransactionLayer()
    inv = uac.send_request(request(), UAS, 0.0)
    pump(uac, uas, 0.01)
    uas.handle_timer(0.3)
    pump(uas, uac, 0.3)  # the automatic 100
    assert state_of(inv) is InviteClientState.PROCEEDING
    uac.send_request(make_cancel(inv.request), UAS, 1.0)
    pump(uac, uas, 1.0)
    (_, cancel_ev) = events(uas)
    assert isinstance(cancel_ev, CancelReceived)
    assert uas.answer_cancel(cancel_ev, 1.0) is True
    pump(uas, uac, 1.01)
    assert state_of(inv) is InviteClientState.COMPLETED
    pump(uac, uas, 1.02)  # the ACK for the 487
    assert cancel_ev.invite_tx is not None
    assert state_of(cancel_ev.invite_tx) is InviteServerState.CONFIRMED
    assert [type(e) for e in events(uas)] == []


# --- transport errors ------------------------------------------------------------------------


def test_transport_error_terminates_client_and_server_but_not_accepted() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(request(), UAS, 0.0)
    assert layer.transport_error(tx, 0.1) is True
    assert events(layer) == [TransportFailed(tx), TransactionTerminated(tx)]
    assert layer.transport_error(tx, 0.2) is False
    srv = new_invite_server(layer)
    layer.send_response(srv, reply(srv.request, 200), 0.0)
    # RFC 6026 section 7.1: Accepted survives; Timer L ends it.
    assert layer.transport_error(srv, 0.1) is True
    assert state_of(srv) is InviteServerState.ACCEPTED and events(layer) == []
    srv2 = new_invite_server(layer, branch="z9hG4bK-2")
    assert layer.transport_error(srv2, 0.1) is True
    assert events(layer) == [TransportFailed(srv2), TransactionTerminated(srv2)]


# --- scale and memory -------------------------------------------------------------------------


def test_ten_thousand_transactions_leave_nothing_behind() -> None:
    layer = TransactionLayer()
    n = 10_000
    for i in range(n):
        inv = layer.send_request(request(branch=f"z9hG4bK-{i}"), UAS, i * 1e-4)
        layer.receive_response(reply(inv.request, 100), UAS, i * 1e-4)
        layer.receive_request(request(branch=f"z9hG4bK-s{i}"), UAC, i * 1e-4)
    assert len(layer.client_transactions) == n and len(layer.server_transactions) == n
    # Timers A and B were stopped by the 100s: lazy deletion must not keep them all.
    assert len(layer._heap) <= 2 * n + 1024
    layer.messages_to_send()
    events(layer)
    for srv in list(layer.server_transactions.values()):
        layer.send_response(srv, reply(srv.request, 486), 2.0)
    for cli in list(layer.client_transactions.values()):
        layer.receive_response(reply(cli.request, 486), UAS, 2.0)
    layer.handle_timer(1000.0)
    assert_empty(layer)
    assert layer._heap == []
    assert layer._pending == {}


def test_a_stopped_timer_keeps_no_transaction_alive() -> None:
    """Timer H stopped by the ACK stays in the heap until its deadline (64*T1) behind live
    timers: the INVITE transaction must still go with Timer I (T4), not linger until then."""
    layer = TransactionLayer()
    layer.receive_request(request(), UAC, 0.0)
    (received,) = events(layer)
    assert isinstance(received, RequestReceived)
    tx = received.tx
    del received
    layer.send_response(tx, reply(tx.request, 486), 0.0)
    layer.receive_request(replace(request("ACK"), cseq=CSeq(1, "ACK")), UAC, 0.1)
    assert state_of(tx) is InviteServerState.CONFIRMED
    assert tx.deadline(Input.TIMER_H) is None and tx.deadline(Input.TIMER_I) is not None
    # Another call whose timers run past 6 s keeps the heap's head busy.
    layer.receive_request(request(branch="z9hG4bK-other"), UAC, 5.5)
    (other,) = events(layer)
    assert isinstance(other, RequestReceived)
    layer.send_response(other.tx, reply(other.tx.request, 486), 5.5)
    run_timers(layer, 6.0)
    assert state_of(tx) is InviteServerState.TERMINATED
    events(layer)
    layer.messages_to_send()
    assert sys.getrefcount(tx) == 2  # only `tx` and the call's argument
