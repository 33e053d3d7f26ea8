"""Hostile sources and caps, sans-IO on a fake clock (issue 11, "Hostile SIP").

The trunk's proxy is 127.0.0.1 and always exempt; strangers are other loopback addresses,
inside ``allow_from`` (the default, loopback) but not in ``exempt_from`` (emptied here).
"""

from __future__ import annotations

import logging

import pytest

from softswitch.config import Config, SipLimits, TrunkConfig
from softswitch.logs import recent_security_events
from softswitch.node import sources
from softswitch.node.node import Node
from softswitch.node.sources import CapLog, SourcePolicy
from softswitch.sip.message import Address, Response
from softswitch.sip.parser import parse_message
from tests.node.test_node import TRIGGER, sip

TRUNK = Address("127.0.0.1", 5999)
STRANGER = Address("127.0.0.2", 5999)


def make_node(**limits: object) -> Node:
    config = Config(
        trigger_numbers=(TRIGGER,),
        trunk=TrunkConfig(proxy=("127.0.0.1", 5999), ip_auth=True, keepalive_interval=0),
        sip_limits=SipLimits(**{"exempt_from": (), **limits}),  # type: ignore[arg-type]
    )
    counter = iter(range(1, 1_000_000))
    return Node(config, token=lambda: f"t{next(counter)}")


def answers(node: Node) -> list[tuple[int, str, Address]]:
    out = []
    for data, addr in node.datagrams_to_send():
        msg = parse_message(data)
        if isinstance(msg, Response):
            out.append((msg.status, msg.header("Retry-After") or "", addr))
    return out


def statuses(node: Node) -> list[int]:
    return [status for status, _, _ in answers(node)]


def options(n: int) -> bytes:
    return sip("OPTIONS", branch=f"z9hG4bK-o{n}", call_id=f"o{n}")


def invite(n: int, user: str = TRIGGER) -> bytes:
    return sip("INVITE", user, branch=f"z9hG4bK-i{n}", call_id=f"i{n}")


def cancel(n: int) -> bytes:
    return sip("CANCEL", branch=f"z9hG4bK-i{n}", call_id=f"i{n}")


# --- the per-source limiter and its ban table ---------------------------------------------------


def test_a_source_over_its_rate_is_banned_then_forgiven_and_the_trunk_never_is() -> None:
    node = make_node(rate_per_source=5, source_ban=60)
    for n in range(5):
        node.receive_datagram(options(n), STRANGER, 0.0)
        node.receive_datagram(options(100 + n), TRUNK, 0.0)
    assert statuses(node) == [200] * 10
    for n in range(5, 50):  # the sixth request in the second bans; the rest are dropped
        node.receive_datagram(options(n), STRANGER, 0.1)
    for n in range(105, 150):  # the trunk sends as much and is never limited
        node.receive_datagram(options(n), TRUNK, 0.1)
    got = answers(node)
    assert [a for a in got if a[2] == STRANGER] == []
    assert len([a for a in got if a[2] == TRUNK]) == 45
    assert node.sources.banned("127.0.0.2", 59.0)
    kinds = [(e.kind, e.src) for e in recent_security_events(3)]
    assert ("rate_limited", "127.0.0.2") in kinds and ("banned", "127.0.0.2") in kinds
    assert node.held(1.0)["banned_sources"] == 1
    node.receive_datagram(options(60), STRANGER, 60.5)  # the ban is over
    assert statuses(node) == [200]
    assert node.held(61.0)["banned_sources"] == 0


def test_the_ban_table_and_the_counters_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "MAX_BANS", 100)
    policy = SourcePolicy(SipLimits(rate_per_source=1, exempt_from=()), ["10.0.0.0/8"])
    data = options(1)
    for n in range(1000):  # a flood from 500 spoofed addresses, two requests each
        host = f"10.0.{n // 250}.{n % 250}"
        policy.admit_datagram(host, data, 0.5)
        policy.admit_datagram(host, data, 0.5)
    assert policy.stats(0.5).bans == 100  # the newest bans
    assert policy.banned("10.0.3.249", 1.0) and not policy.banned("10.0.0.0", 1.0)
    assert len(policy._counts) <= 1000
    policy.admit_datagram("10.9.9.9", data, 2.0)  # a new second: the counters start over
    assert len(policy._counts) == 1


def test_scanners_get_nothing_and_their_source_is_banned() -> None:
    node = make_node()
    scan = sip("OPTIONS", extra="User-Agent: friendly-scanner\r\n")
    node.receive_datagram(scan, STRANGER, 0.0)
    node.receive_datagram(options(1), STRANGER, 0.1)  # banned: even a clean OPTIONS
    # From the trunk's address: dropped too (no capabilities for a scanner), but not banned.
    node.receive_datagram(scan.replace(b"-1;", b"-2;"), TRUNK, 0.2)
    node.receive_datagram(options(2), TRUNK, 0.3)
    assert answers(node) == [(200, "", TRUNK)]
    assert node.sources.dropped["scanner"] == 2
    assert node.sources.banned("127.0.0.2", 1.0) and not node.sources.banned("127.0.0.1", 1.0)
    scanner = [e for e in recent_security_events(10) if e.kind == "scanner"]
    assert {e.src for e in scanner} == {"127.0.0.1", "127.0.0.2"}
    assert scanner[0].fields["user_agent"] == "friendly-scanner"


def test_security_events_are_rate_limited_per_source_and_kind() -> None:
    node = make_node(rate_per_source=1, source_ban=3600)
    before = len([e for e in recent_security_events(200) if e.src == "127.0.0.3"])
    for n in range(2000):  # 10 s of a 200/s flood
        node.receive_datagram(options(n), Address("127.0.0.3", 5), n / 200)
    logged = [e for e in recent_security_events(200) if e.src == "127.0.0.3"]
    # One rate_limited, then one banned line every EVENT_INTERVAL seconds: fail2ban sees it.
    assert 4 <= len(logged) - before <= 10 / sources.EVENT_INTERVAL + 2


def test_scanner_user_agent_on_a_parsed_message() -> None:
    policy = SourcePolicy(SipLimits(exempt_from=()), ["127.0.0.0/8"])
    assert policy.admit_message("127.0.0.2", "OPTIONS", "Linphone/5.0", 0.0)
    assert not policy.admit_message("127.0.0.2", "OPTIONS", "sipvicious 0.3", 0.0)
    assert not policy.admit_message("127.0.0.2", "OPTIONS", "Linphone/5.0", 0.1)  # banned
    assert not policy.admit_message("192.0.2.1", "OPTIONS", None, 0.0)  # outside allow_from


# --- only the trunk may send INVITEs ----------------------------------------------------------


def test_invite_from_narrows_who_may_call_before_the_body_is_read() -> None:
    node = make_node(invite_from=("127.0.0.5",))
    node.receive_datagram(invite(1), STRANGER, 0.0)  # allowed to talk SIP, not to call
    node.receive_datagram(options(1), STRANGER, 0.0)
    node.receive_datagram(invite(2), Address("127.0.0.5", 5999), 0.0)
    node.receive_datagram(invite(3), TRUNK, 0.0)  # the trunk's proxy always may
    got = answers(node)
    assert [(s, a.host) for s, _, a in got] == [
        (403, "127.0.0.2"),
        (200, "127.0.0.2"),
        (100, "127.0.0.5"),
        (180, "127.0.0.5"),
        (100, "127.0.0.1"),
        (180, "127.0.0.1"),
    ]
    assert node.endpoint.server_transaction_count == 3  # the 403 held nothing
    assert node.sources.dropped["invite"] == 1


# --- caps: what a stranger can make the node hold ---------------------------------------------


def test_over_max_transactions_new_requests_get_a_stateless_503() -> None:
    node = make_node(max_transactions=3)
    node.receive_datagram(invite(1), TRUNK, 0.0)
    node.receive_datagram(options(1), STRANGER, 0.0)
    node.receive_datagram(options(2), STRANGER, 0.0)
    assert statuses(node) == [100, 180, 200, 200]
    node.receive_datagram(options(3), STRANGER, 0.1)
    node.receive_datagram(invite(2), STRANGER, 0.1)
    assert answers(node) == [(503, "30", STRANGER), (503, "30", STRANGER)]
    assert node.endpoint.server_transaction_count == 3
    node.receive_datagram(options(2), STRANGER, 0.2)  # a retransmission: its tx answers
    assert statuses(node) == [200]
    node.receive_datagram(cancel(1), TRUNK, 0.3)  # a CANCEL that ends a call still gets in
    assert statuses(node) == [200, 487]
    node.receive_datagram(sip("ACK", branch="z9hG4bK-i1", call_id="i1"), TRUNK, 0.4)
    node.handle_timer(40.0)  # Timers J and I: the transactions end, the cap lets work in
    node.receive_datagram(options(4), STRANGER, 40.0)
    assert statuses(node) == [200]


def test_the_trunk_has_as_much_again_in_reserve_over_the_caps() -> None:
    # Found by scripts/bench_flood.py --unlimited: strangers filled max_transactions and the
    # trunk's trigger calls got 503.
    node = make_node(max_transactions=3, max_dialogs=2)
    for n in range(3):
        node.receive_datagram(options(n), STRANGER, 0.0)
    node.receive_datagram(options(9), STRANGER, 0.0)
    assert statuses(node) == [200, 200, 200, 503]
    node.receive_datagram(invite(1), TRUNK, 0.1)
    node.receive_datagram(invite(2), TRUNK, 0.1)
    node.receive_datagram(options(10), TRUNK, 0.1)
    assert statuses(node) == [100, 180, 100, 180, 200]
    node.receive_datagram(options(11), TRUNK, 0.1)  # twice the cap: the trunk too
    assert answers(node) == [(503, "30", TRUNK)]
    node = make_node(max_dialogs=2)
    for n in range(3):
        node.receive_datagram(invite(n), STRANGER, 0.0)
    for n in range(10, 13):
        node.receive_datagram(invite(n), TRUNK, 0.0)  # the third: four dialogs held
    got = answers(node)
    assert [s for s, _, a in got if a == STRANGER] == [100, 180, 100, 180, 503]
    assert [s for s, _, a in got if a == TRUNK] == [100, 180, 100, 180, 503]


def test_over_max_dialogs_new_invites_get_503_with_retry_after() -> None:
    node = make_node(max_dialogs=2)
    for n in range(3):
        node.receive_datagram(invite(n), STRANGER, 0.0)
    assert statuses(node) == [100, 180, 100, 180, 503]
    assert node.held(0.0)["dialogs"] == 2
    node.receive_datagram(cancel(0), STRANGER, 1.0)
    node.receive_datagram(invite(9), STRANGER, 1.0)
    assert statuses(node) == [200, 487, 100, 180]


def test_early_dialogs_per_source_are_capped_but_not_for_the_trunk() -> None:
    node = make_node(max_early_per_source=2)
    for n in range(3):
        node.receive_datagram(invite(n), STRANGER, 0.0)
    for n in range(10, 15):
        node.receive_datagram(invite(n), TRUNK, 0.0)
    got = answers(node)
    assert [s for s, _, a in got if a == STRANGER] == [100, 180, 100, 180, 503]
    assert [s for s, _, a in got if a == TRUNK] == [100, 180] * 5
    node.receive_datagram(cancel(0), STRANGER, 1.0)
    node.receive_datagram(invite(3), STRANGER, 1.0)
    assert statuses(node) == [200, 487, 100, 180]
    # The ring limit releases them all; nothing is counted any more.
    node.handle_timer(100.0)
    assert node._early_by_source == {} and node.held(100.0)["ringing_triggers"] == 0


def test_the_cap_warning_is_rate_limited_and_says_what_to_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caps = CapLog(interval=10.0)
    with caplog.at_level(logging.WARNING, logger="softswitch.sources"):
        for n in range(100):
            caps.refused("max_dialogs", 10_000, 10_000, "new INVITEs", n * 0.2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "over [sip] max_dialogs (10000 held, limit 10000)" in lines[0]
    assert "503 Retry-After 30 (1 refused" in lines[0]
    assert "(50 refused since the last such line); raise max_dialogs" in lines[1]
