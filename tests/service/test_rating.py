"""Rating rules: minimum and increments, rounding up to the minor unit, credit limits."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softswitch.service.rating import (
    Reservation,
    billable_seconds,
    cost,
    cut_at,
    max_talk_seconds,
    reservation_for,
    settle,
    warning_at,
)


@pytest.mark.parametrize(
    ("duration", "billed"),
    [
        (0, 0),
        (0.0004, 0),  # rounds to 0 ms: no answer worth billing
        (0.2, 30),
        (1, 30),
        (29.999, 30),
        (30, 30),
        (30.0000001, 30),  # timestamp noise below a millisecond adds nothing
        (30.001, 36),
        (36, 36),
        (36.5, 42),
        (95, 96),
        (3600, 3600),
    ],
)
def test_billable_seconds_minimum_30_then_6s(duration: float, billed: int) -> None:
    assert billable_seconds(duration, minimum=30, increment=6) == billed


def test_billable_seconds_other_plans() -> None:
    assert billable_seconds(61, minimum=60, increment=60) == 120
    assert billable_seconds(1, minimum=0, increment=1) == 1
    assert billable_seconds(7, minimum=0, increment=6) == 12
    assert billable_seconds(31, minimum=30, increment=1) == 31
    with pytest.raises(ValueError):
        billable_seconds(10, minimum=30, increment=0)


def test_cost_rounds_up_to_the_minor_unit() -> None:
    assert cost(12, 96) == 20  # 19.2 -> 20
    assert cost(12, 30) == 6
    assert cost(10, 30) == 5
    assert cost(7, 30) == 4  # 3.5 -> 4
    assert cost(0, 600) == 0
    assert cost(12, 0) == 0
    assert cost(Fraction(23, 10), 60) == 3  # 2.3 -> 3
    assert cost(Decimal("2.3"), 600) == 23
    with pytest.raises(ValueError):
        cost(-1, 30)


def test_max_talk_seconds() -> None:
    # 100 units at 12/min buys 500 s; on the 30 + 6k grid that is 498 s.
    assert max_talk_seconds(100, 12, 30, 6) == 498
    assert cost(12, 498) <= 100 < cost(12, 504)
    assert max_talk_seconds(6, 12, 30, 6) == 30  # exactly the minimum charge
    assert max_talk_seconds(5, 12, 30, 6) == 0  # not even the minimum
    assert max_talk_seconds(0, 12) == 0
    assert max_talk_seconds(-5, 12) == 0
    assert max_talk_seconds(0, 0, cap_seconds=600) == 600  # free destination
    assert max_talk_seconds(10**9, 1, cap_seconds=3600) == 3600


@given(
    credit=st.integers(min_value=0, max_value=10**7),
    rate=st.integers(min_value=1, max_value=5000),
    minimum=st.sampled_from([0, 1, 30, 60]),
    increment=st.sampled_from([1, 6, 30, 60]),
)
def test_max_talk_seconds_is_the_largest_affordable(
    credit: int, rate: int, minimum: int, increment: int
) -> None:
    seconds = max_talk_seconds(credit, rate, minimum, increment, cap_seconds=10**9)
    assert cost(rate, seconds) <= credit
    if seconds:
        assert billable_seconds(seconds, minimum, increment) == seconds
        assert cost(rate, seconds + increment) > credit
    elif minimum:
        assert cost(rate, minimum) > credit


def test_reservation_and_settlement() -> None:
    reservation = reservation_for(100, 12, 30, 6)
    assert reservation == Reservation(
        amount=100, max_seconds=498, rate_per_minute=12, minimum=30, increment=6
    )
    done = settle(reservation, 95)
    assert (done.billed_seconds, done.cost, done.released) == (96, 20, 80)
    # A cut that lands a few ms late never bills beyond the reservation.
    late = settle(reservation, 498.2)
    assert (late.billed_seconds, late.cost, late.released) == (498, 100, 0)
    assert reservation_for(5, 12).amount == 0
    assert reservation_for(5, 12).max_seconds == 0


def test_two_reservations_cannot_share_credit() -> None:
    credit = 100
    first = reservation_for(credit, 12)
    second = reservation_for(credit - first.amount, 12)
    assert first.amount + second.amount <= credit
    assert second.max_seconds == 0


def test_warning_and_cut_times() -> None:
    assert warning_at(1000.0, 498) == 1438.0
    assert cut_at(1000.0, 498) == 1498.0
    assert warning_at(1000.0, 30) == 1000.0  # less than a minute: warn at once
    assert warning_at(1000.0, 120, warning_s=30) == 1090.0
