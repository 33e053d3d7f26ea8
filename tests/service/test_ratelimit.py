"""The trigger limits (web, e-mail and phone) and the outbound cap on a fake clock: windows,
bans, and nothing told away."""

from __future__ import annotations

import pytest

from softswitch.config import LimitsConfig
from softswitch.service import ratelimit
from softswitch.service.ratelimit import OutboundLimit, TriggerLimits


def test_a_source_over_its_limit_is_banned_for_the_ban_time() -> None:
    limits = TriggerLimits(LimitsConfig(per_source=3, per_trigger=100, window=60, ban=600))
    assert [limits.check("198.51.100.1", f"8150000000{i}", 0.0).allowed for i in range(3)] == [
        True
    ] * 3
    over = limits.check("198.51.100.1", "815000000009", 1.0)
    assert (over.allowed, over.reason, over.retry_after) == (False, "source", 600)
    assert limits.banned("198.51.100.1", 2.0)
    # Still banned after the window has passed: the ban, not the window, decides.
    assert limits.check("198.51.100.1", "815000000009", 100.0).reason == "banned"
    assert limits.check("198.51.100.2", "815000000009", 100.0).allowed  # others are not
    assert limits.check("198.51.100.1", "815000000009", 601.5).allowed


def test_a_request_counts_for_every_key_and_each_must_be_under_the_limit() -> None:
    """A mail counts for its client's address and its sender: rotating senders from one
    address is limited by the address, one sender from many addresses by the sender."""
    limits = TriggerLimits(LimitsConfig(per_source=2, per_trigger=100, window=60, ban=600))
    ip = "198.51.100.1"
    assert limits.check((ip, "mail:a@example.org"), "815000000001", 0.0).allowed
    assert limits.check((ip, "mail:b@example.org"), "815000000002", 1.0).allowed
    over = limits.check((ip, "mail:c@example.org"), "815000000003", 2.0)
    assert (over.allowed, over.reason, over.retry_after) == (False, "source", 600)
    assert limits.banned(ip, 3.0) and not limits.banned("mail:c@example.org", 3.0)
    # A refused request counts for none of its keys: c may still ask twice from elsewhere.
    other = "198.51.100.2"
    assert limits.check((other, "mail:c@example.org"), "815000000003", 4.0).allowed
    assert limits.check(("198.51.100.3", "mail:c@example.org"), "815000000004", 5.0).allowed
    refused = limits.check(("198.51.100.4", "mail:c@example.org"), "815000000005", 6.0)
    assert refused.reason == "source" and limits.banned("mail:c@example.org", 7.0)
    assert not limits.banned("198.51.100.4", 7.0)
    # One banned key refuses the request, whatever the others.
    assert limits.check(("198.51.100.9", "mail:c@example.org"), "1", 8.0).reason == "banned"
    assert limits.check((ip, "mail:new@example.org"), "1", 8.0).reason == "banned"
    assert limits.check("198.51.100.9", "1", 9.0).allowed  # a single key, as the web's


def test_the_retry_time_is_when_every_key_is_under_its_limit_again() -> None:
    limits = TriggerLimits(LimitsConfig(per_source=1, per_trigger=100, window=10, ban=0))
    assert limits.check(("a", "b"), "1", 0.0).allowed
    assert limits.check("c", "1", 3.0).allowed
    refused = limits.check(("a", "c"), "2", 4.0)
    assert (refused.reason, refused.retry_after) == ("source", 9.0)  # c's hit leaves at 13


def test_a_trigger_number_over_its_limit_is_refused_without_banning() -> None:
    limits = TriggerLimits(LimitsConfig(per_source=100, per_trigger=2, window=60, ban=600))
    assert limits.check("a", "815012345678", 0.0).allowed
    assert limits.check("b", "815012345678", 10.0).allowed
    refused = limits.check("c", "815012345678", 20.0)
    assert (refused.allowed, refused.reason, refused.retry_after) == (False, "trigger", 40.0)
    assert not limits.banned("c", 21.0)
    # The window slides: the first request leaves it at 60 s.
    assert limits.check("c", "815012345678", 60.5).allowed


def test_unknown_and_known_numbers_count_alike() -> None:
    """The limiter knows no accounts: it cannot tell (or be made to tell) which exist."""
    limits = TriggerLimits(LimitsConfig(per_source=100, per_trigger=1, window=60))
    assert limits.check("a", "1", 0.0).allowed
    assert limits.check("a", "1", 1.0).reason == "trigger"


def test_no_ban_means_the_window_alone_limits() -> None:
    limits = TriggerLimits(LimitsConfig(per_source=1, per_trigger=100, window=10, ban=0))
    assert limits.check("a", "1", 0.0).allowed
    refused = limits.check("a", "2", 4.0)
    assert (refused.reason, refused.retry_after) == ("source", 6.0)
    assert not limits.banned("a", 4.0)
    assert limits.check("a", "2", 10.5).allowed


def test_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "MAX_KEYS", 10)
    limits = TriggerLimits(LimitsConfig(per_source=5, per_trigger=5, window=3600))
    for i in range(50):
        limits.check(f"10.0.0.{i}", f"8150000{i:05d}", float(i))
    assert len(limits._sources.hits) <= 11 and len(limits._triggers.hits) <= 11
    # Keys whose window has passed go as the clock moves on.
    limits.check("x", "y", 10_000.0)
    assert len(limits._sources.hits) == 1


def test_phone_triggers_share_the_per_number_window_and_ban_nobody() -> None:
    limits = TriggerLimits(LimitsConfig(per_source=100, per_trigger=2, window=60, ban=600))
    assert limits.check_trigger("815012345678", 0.0).allowed
    assert limits.check("198.51.100.7", "815012345678", 1.0).allowed  # the web's use counts
    refused = limits.check_trigger("815012345678", 2.0)
    assert not refused.allowed and refused.reason == "trigger"
    assert refused.retry_after == pytest.approx(58.0)
    assert limits.check_trigger("815099999999", 2.0).allowed  # another number is not held
    assert limits.check_trigger("815012345678", 61.0).allowed  # the window moved on


def test_the_outbound_limit_caps_attempts_in_any_minute() -> None:
    limit = OutboundLimit(3)
    assert [limit.allow(t) for t in (0.0, 10.0, 20.0, 30.0)] == [True, True, True, False]
    assert limit.refused == 1
    assert limit.allow(60.5)  # the first attempt left the window
    assert not limit.allow(61.0)
    off = OutboundLimit(0)
    assert all(off.allow(0.0) for _ in range(10_000))
