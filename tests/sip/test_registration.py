"""REGISTER client (RFC 3261 section 10) and the trunk OPTIONS keep-alive, on a fake clock."""

from __future__ import annotations

import itertools
import logging
import random
import re
from collections.abc import Callable
from dataclasses import replace

import pytest

from softswitch import fsm
from softswitch.sip.auth import digest_response
from softswitch.sip.message import Address, Request, Response, Via
from softswitch.sip.registration import (
    KEEPALIVE_TABLE,
    TABLE,
    KeepAlive,
    KeepAliveError,
    Registration,
    RegistrationConfig,
    RegistrationError,
    RegState,
    TrunkState,
    _In,
    _Probe,
)
from softswitch.sip.transaction import make_response
from softswitch.sip.uri import parse_uri

PROXY = Address("203.0.113.1", 5060)
STRANGER = Address("198.51.100.66", 5060)
VIA = Via("UDP", "192.0.2.10", 5060, (("rport", None),))


class ZeroRandom(random.Random):
    """No jitter: back-off delays are exact."""

    def random(self) -> float:
        return 0.0


def id_gen() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"id{next(counter)}"


def config(**kwargs: object) -> RegistrationConfig:
    base = RegistrationConfig(
        registrar=parse_uri("sip:trunk.example.com"),
        aor=parse_uri("sip:alice@trunk.example.com"),
        contact=parse_uri("sip:alice@192.0.2.10:5060"),
        proxy=PROXY,
        local_via=VIA,
        username="alice",
        password="secret",
    )
    return replace(base, **kwargs)  # type: ignore[arg-type]


def registration(**kwargs: object) -> Registration:
    return Registration(config(**kwargs), new_id=id_gen(), rng=ZeroRandom())


def reply(request: Request, status: int, *headers: tuple[str, str]) -> Response:
    return make_response(request, status, to_tag="regtag", headers=headers)


def ok(request: Request, expires: int = 3600) -> Response:
    return reply(
        request,
        200,
        ("Contact", "<sip:other@10.9.9.9>;expires=60"),
        ("Contact", f"<sip:alice@192.0.2.10:5060>;expires={expires}"),
    )


CHALLENGE = ("WWW-Authenticate", 'Digest realm="trunk", nonce="n1", qop="auth", algorithm=MD5')


def auth_params(value: str) -> dict[str, str]:
    assert value.startswith("Digest ")
    return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value)}


def registered(reg: Registration, now: float = 0.0) -> Request:
    first = reg.start(now)
    assert reg.receive_response(ok(first), PROXY, now + 0.1) is None
    assert reg.state is RegState.REGISTERED
    return first


def state_of(reg: Registration) -> RegState:
    return reg.state


# --------------------------------------------------------------------------- REGISTER


def test_register_and_refresh_before_expiry(caplog: pytest.LogCaptureFixture) -> None:
    reg = registration()
    first = reg.start(0.0)
    assert reg.state is RegState.REGISTERING
    assert first.method == "REGISTER" and str(first.uri) == "sip:trunk.example.com"
    assert str(first.to.uri) == "sip:alice@trunk.example.com" and first.to.tag is None
    assert first.from_.uri == first.to.uri and first.from_.tag
    assert first.header("Contact") == "<sip:alice@192.0.2.10:5060>"
    assert first.header("Expires") == "3600"
    assert first.header("Max-Forwards") == "70"
    assert first.vias[0].branch and first.vias[0].branch.startswith("z9hG4bK")
    assert first.cseq.seq == 1
    with caplog.at_level(logging.INFO, logger="softswitch.sip.registration"):
        assert reg.receive_response(ok(first), PROXY, 0.2) is None
    assert state_of(reg) is RegState.REGISTERED
    assert "registered to sip:trunk.example.com as alice, expires in 3600 s" in caplog.text
    # 10 % of 3600 s before expiry.
    assert reg.get_timer() == pytest.approx(0.2 + 3240)
    assert reg.handle_timer(3000.0) is None
    refresh = reg.handle_timer(3240.2)
    assert refresh is not None
    assert state_of(reg) is RegState.REGISTERING
    # RFC 3261 section 10.2.4: same Call-ID, CSeq + 1.
    assert refresh.call_id == first.call_id
    assert refresh.cseq.seq == 2
    assert refresh.vias[0].branch != first.vias[0].branch
    assert reg.receive_response(ok(refresh, expires=120), PROXY, 3241.0) is None
    # Short grant: refreshed 32 s (Timer F) before it ends, never later than half-way.
    assert reg.get_timer() == pytest.approx(3241.0 + 120 - 32)


def test_granted_expires_from_expires_header_when_contact_has_none() -> None:
    reg = registration()
    first = reg.start(0.0)
    response = reply(first, 200, ("Contact", "<sip:alice@192.0.2.10>"), ("Expires", "40"))
    reg.receive_response(response, PROXY, 0.0)
    assert reg.expires_at == 40
    assert reg.get_timer() == 20  # half of a short interval


def test_digest_challenge_answered_once() -> None:
    reg = registration()
    first = reg.start(0.0)
    again = reg.receive_response(reply(first, 401, CHALLENGE), PROXY, 0.1)
    assert again is not None
    assert again.call_id == first.call_id and again.cseq.seq == 2
    params = auth_params(again.header("Authorization") or "")
    assert params["username"] == "alice" and params["uri"] == "sip:trunk.example.com"
    expected = digest_response(
        algorithm="MD5",
        username="alice",
        realm="trunk",
        password="secret",
        method="REGISTER",
        uri="sip:trunk.example.com",
        nonce="n1",
        nc=int(params["nc"], 16),
        cnonce=params["cnonce"],
        qop="auth",
    )
    assert params["response"] == expected
    assert reg.state is RegState.REGISTERING
    reg.receive_response(ok(again), PROXY, 0.2)
    assert state_of(reg) is RegState.REGISTERED


def test_rejected_credentials_back_off_without_retrying(caplog: pytest.LogCaptureFixture) -> None:
    reg = registration()
    first = reg.start(0.0)
    again = reg.receive_response(reply(first, 401, CHALLENGE), PROXY, 0.1)
    assert again is not None
    with caplog.at_level(logging.WARNING, logger="softswitch.sip.registration"):
        assert reg.receive_response(reply(again, 401, CHALLENGE), PROXY, 0.2) is None
    assert reg.state is RegState.BACKING_OFF
    assert "check username and password" in caplog.text
    deadline = reg.get_timer()
    assert deadline is not None and deadline >= 0.2 + 300


def test_stale_nonce_is_answered_again() -> None:
    reg = registration()
    first = reg.start(0.0)
    again = reg.receive_response(reply(first, 401, CHALLENGE), PROXY, 0.1)
    assert again is not None
    stale = ("WWW-Authenticate", 'Digest realm="trunk", nonce="n2", qop="auth", stale=true')
    third = reg.receive_response(reply(again, 401, stale), PROXY, 0.2)
    assert third is not None and third.cseq.seq == 3
    assert auth_params(third.header("Authorization") or "")["nonce"] == "n2"
    assert reg.state is RegState.REGISTERING


def test_proxy_challenge_uses_proxy_authorization() -> None:
    reg = registration()
    first = reg.start(0.0)
    challenge = ("Proxy-Authenticate", 'Digest realm="trunk", nonce="p1"')
    again = reg.receive_response(reply(first, 407, challenge), PROXY, 0.1)
    assert again is not None
    assert again.header("Proxy-Authorization") is not None
    assert again.header("Authorization") is None


def test_challenge_from_another_source_gets_no_credentials() -> None:
    reg = registration()
    first = reg.start(0.0)
    assert reg.receive_response(reply(first, 401, CHALLENGE), STRANGER, 0.1) is None
    assert reg.state is RegState.BACKING_OFF
    assert reg.last_error is not None and "peer" in reg.last_error


def test_no_credentials_configured_is_a_failure() -> None:
    reg = registration(username=None, password=None)
    first = reg.start(0.0)
    assert reg.receive_response(reply(first, 401, CHALLENGE), PROXY, 0.1) is None
    assert reg.state is RegState.BACKING_OFF


def test_423_retries_with_min_expires() -> None:
    reg = registration(expires=60)
    first = reg.start(0.0)
    again = reg.receive_response(reply(first, 423, ("Min-Expires", "1800")), PROXY, 0.1)
    assert again is not None and again.header("Expires") == "1800"
    assert again.cseq.seq == 2 and reg.state is RegState.REGISTERING
    reg.receive_response(ok(again, 1800), PROXY, 0.2)
    refresh = reg.handle_timer(10_000.0)
    assert refresh is not None and refresh.header("Expires") == "1800"
    # A 423 that does not raise the interval would loop: it is a failure instead.
    assert reg.receive_response(reply(refresh, 423, ("Min-Expires", "600")), PROXY, 0.0) is None
    assert state_of(reg) is RegState.BACKING_OFF


def test_exponential_back_off_on_timeouts_capped_at_30_minutes() -> None:
    reg = registration()
    now = 0.0
    reg.start(now)
    delays = []
    for _ in range(9):
        now += 32.0
        reg.on_timeout(now)
        assert reg.state is RegState.BACKING_OFF
        deadline = reg.get_timer()
        assert deadline is not None
        delays.append(deadline - now)
        assert reg.handle_timer(deadline - 1) is None
        now = deadline
        assert reg.handle_timer(now) is not None
    assert delays == [30, 60, 120, 240, 480, 960, 1800, 1800, 1800]


def test_back_off_jitter_and_reset_after_success() -> None:
    class Half(random.Random):
        def random(self) -> float:
            return 0.5

    reg = Registration(config(), new_id=id_gen(), rng=Half())
    req = reg.start(0.0)
    reg.on_timeout(32.0)
    assert reg.get_timer() == pytest.approx(32.0 + 30 * 1.05)
    req = reg.handle_timer(100.0) or req
    reg.on_timeout(132.0)
    assert reg.get_timer() == pytest.approx(132.0 + 60 * 1.05)
    req = reg.handle_timer(1000.0) or req
    reg.receive_response(ok(req), PROXY, 1000.0)
    refresh = reg.handle_timer(10_000.0)
    assert refresh is not None
    reg.on_timeout(10_032.0)
    assert reg.get_timer() == pytest.approx(10_032.0 + 30 * 1.05)


def test_403_backs_off_long_and_tells_the_admin(caplog: pytest.LogCaptureFixture) -> None:
    reg = registration()
    first = reg.start(0.0)
    with caplog.at_level(logging.WARNING, logger="softswitch.sip.registration"):
        reg.receive_response(reply(first, 403), PROXY, 1.0)
    assert reg.state is RegState.BACKING_OFF
    assert reg.get_timer() == 301.0
    assert "403 Forbidden from the registrar: check the account and credentials" in caplog.text
    assert "retry in 300 s" in caplog.text


def test_retry_after_is_honoured() -> None:
    reg = registration()
    first = reg.start(0.0)
    reg.receive_response(reply(first, 503, ("Retry-After", "900 (maintenance)")), PROXY, 1.0)
    assert reg.get_timer() == 901.0
    second = reg.handle_timer(901.0)
    assert second is not None
    reg.receive_response(reply(second, 500, ("Retry-After", "5")), PROXY, 902.0)
    assert reg.get_timer() == 902.0 + 60  # back-off wins over a shorter Retry-After


def test_network_up_registers_at_once_and_resets_back_off() -> None:
    reg = registration()
    reg.start(0.0)
    for t in (32.0, 100.0, 200.0):
        reg.on_timeout(t)
        reg.handle_timer(reg.get_timer() or 0.0)
    reg.on_timeout(400.0)
    assert reg.get_timer() == 400.0 + 240
    again = reg.network_up(401.0)
    assert again is not None and reg.state is RegState.REGISTERING
    reg.on_timeout(433.0)
    assert reg.get_timer() == 433.0 + 30
    registered_reg = registration()
    first = registered(registered_reg)
    up = registered_reg.network_up(50.0)
    assert up is not None and up.cseq.seq == first.cseq.seq + 1
    # The superseded REGISTER's late answer and timeout are ignored.
    assert registered_reg.receive_response(ok(first), PROXY, 50.1) is None
    registered_reg.on_timeout(82.0, first)
    assert registered_reg.state is RegState.REGISTERING
    stopped = registration()
    assert stopped.network_up(0.0) is None


def test_stop_unregisters() -> None:
    reg = registration()
    registered(reg)
    bye = reg.stop(100.0)
    assert bye is not None and reg.state is RegState.UNREGISTERING
    assert bye.header("Expires") == "0"
    assert bye.header("Contact") == "<sip:alice@192.0.2.10:5060>;expires=0"
    assert reg.get_timer() is None
    again = reg.receive_response(reply(bye, 401, CHALLENGE), PROXY, 100.1)
    assert again is not None and again.header("Expires") == "0"
    reg.receive_response(reply(again, 200), PROXY, 100.2)
    assert state_of(reg) is RegState.UNREGISTERED
    assert reg.stop(101.0) is None


def test_unregister_failure_gives_up() -> None:
    reg = registration()
    registered(reg)
    bye = reg.stop(100.0)
    assert bye is not None
    reg.on_timeout(132.0)
    assert reg.state is RegState.UNREGISTERED and reg.get_timer() is None


def test_provisional_and_stale_responses_are_ignored() -> None:
    reg = registration()
    first = reg.start(0.0)
    assert reg.receive_response(reply(first, 100), PROXY, 0.1) is None
    other = replace(reply(first, 200), call_id="someone-else")
    assert reg.receive_response(other, PROXY, 0.1) is None
    assert reg.state is RegState.REGISTERING


def test_start_twice_is_a_protocol_error() -> None:
    reg = registration()
    reg.start(0.0)
    with pytest.raises(RegistrationError):
        reg.start(1.0)


def test_every_missing_transition_is_a_protocol_error() -> None:
    for state in RegState:
        for event in _In:
            reg = registration()
            reg.state = state
            if TABLE.accepts(state, event):
                assert reg._fire(event) is TABLE.fire(state, event).target
            else:
                with pytest.raises(RegistrationError) as info:
                    reg._fire(event)
                assert info.value.state is state and info.value.input is event
                assert reg.state is state


def test_tables_reach_every_state() -> None:
    assert TABLE.reachable() == TABLE.states() == frozenset(RegState)
    assert KEEPALIVE_TABLE.reachable() == KEEPALIVE_TABLE.states() == frozenset(TrunkState)
    assert issubclass(RegistrationError, fsm.TransitionError)
    assert issubclass(KeepAliveError, fsm.TransitionError)
    # Every probe outcome has an entry in every state: the keep-alive never refuses one.
    assert len(KEEPALIVE_TABLE) == len(TrunkState) * len(_Probe)


def test_registration_moves_are_logged_for_the_operator(caplog: pytest.LogCaptureFixture) -> None:
    reg = registration()
    with caplog.at_level(logging.INFO, logger="softswitch.sip.registration"):
        reg.start(0.0)
    assert "UNREGISTERED -> REGISTERING (start)" in caplog.text


# --------------------------------------------------------------------------- OPTIONS keep-alive


def test_keepalive_marks_trunk_up_and_down(caplog: pytest.LogCaptureFixture) -> None:
    ka = KeepAlive(
        parse_uri("sip:trunk.example.com"),
        parse_uri("sip:switch@192.0.2.10"),
        VIA,
        interval=30.0,
        new_id=id_gen(),
    )
    assert ka.state is TrunkState.UNKNOWN
    assert ka.get_timer() == 0.0
    probe = ka.handle_timer(0.0)
    assert probe is not None and probe.method == "OPTIONS"
    assert str(probe.uri) == "sip:trunk.example.com"
    assert ka.get_timer() is None  # one probe in flight at a time
    assert ka.handle_timer(40.0) is None
    ka.receive_response(reply(probe, 200), 0.05)
    assert ka.is_up and ka.get_timer() == 30.0
    probe2 = ka.handle_timer(30.0)
    assert probe2 is not None and probe2.cseq.seq == 2 and probe2.call_id == probe.call_id
    with caplog.at_level(logging.WARNING, logger="softswitch.sip.registration"):
        ka.on_timeout(62.0)
    assert ka.is_up is False and ka.state.name == "DOWN"
    assert "UP -> DOWN (no response to OPTIONS)" in caplog.text
    # Timer F outlasts the interval: the next probe goes at once.
    assert ka.get_timer() == 62.0
    probe3 = ka.handle_timer(62.0)
    assert probe3 is not None
    ka.receive_response(reply(probe2, 200), 62.1)  # late answer to an old probe: ignored
    assert ka.state is TrunkState.DOWN
    ka.receive_response(reply(probe3, 404), 62.2)  # any answer proves the trunk reachable
    assert ka.is_up
    probe4 = ka.handle_timer(92.0)
    assert probe4 is not None
    ka.receive_response(reply(probe4, 503), 92.1)
    assert ka.state is TrunkState.DOWN


def test_state_diagram_lists_every_transition() -> None:
    from softswitch.sip.registration import state_diagram

    text = state_diagram()
    assert text == TABLE.mermaid() and text.startswith("stateDiagram-v2")
    edges = dict(line.strip().split(": ", 1) for line in text.splitlines() if ": " in line)
    for (old, event), entry in TABLE:
        assert event.value in edges[f"{old.name} --> {entry.target.name}"]
    for state in RegState:
        assert state.name in text
