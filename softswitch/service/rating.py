"""Rating and credit rules: pure functions on integers, no clock, no store.

Theory of operation. Money is an integer count of *minor units* (cents, yen ...); a rate is
minor units per minute and may be an ``int``, a ``Fraction`` or a ``Decimal`` (2.3 cents/min),
so all arithmetic is exact. A destination call is billed from the answer of the destination
leg: nothing if it lasted 0 s, else a ``minimum`` (30 s) and then whole ``increment`` s steps
(:func:`billable_seconds`); fractions of a second count as a whole second, measured to the
millisecond so timestamp noise never adds one. :func:`cost` rounds *up* to the minor unit.

Credit reservation (so two calls can never spend the same credit). When the customer dials,
the runtime asks the store for an atomic reserve of :func:`reservation_for`: the cost of the
longest call the account can afford (capped at ``cap_seconds``, 4 h by default, so one call
does not lock a large balance). The store grants it only if the unreserved credit covers it,
in one transaction; a second concurrent call therefore sees the credit minus the first
reservation. The granted reservation fixes ``max_seconds``; the call is cut there
(:func:`cut_at`) after a warning one minute earlier (:func:`warning_at`). When the leg ends,
:func:`settle` charges the real cost, never more than the reservation (a cut that lands a few
milliseconds late must not bill an increment the customer could not afford), and releases the
rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

__all__ = [
    "DEFAULT_CAP_SECONDS",
    "DEFAULT_INCREMENT",
    "DEFAULT_MINIMUM",
    "WARNING_SECONDS",
    "Rate",
    "Reservation",
    "Settlement",
    "billable_seconds",
    "cost",
    "cut_at",
    "max_talk_seconds",
    "reservation_for",
    "settle",
    "warning_at",
]

Rate = int | Fraction | Decimal

DEFAULT_MINIMUM = 30
DEFAULT_INCREMENT = 6
#: The longest call one reservation covers (the customer may dial again afterwards).
DEFAULT_CAP_SECONDS = 4 * 3600
#: SPEC section 7: warn a minute before the credit runs out.
WARNING_SECONDS = 60


def _check_steps(minimum: int, increment: int) -> None:
    if minimum < 0 or increment < 1:
        raise ValueError(f"need minimum >= 0 and increment >= 1, got {minimum}, {increment}")


def _rate(rate: Rate) -> Fraction:
    value = Fraction(rate)
    if value < 0:
        raise ValueError(f"negative rate {rate}")
    return value


def billable_seconds(
    duration_s: float, minimum: int = DEFAULT_MINIMUM, increment: int = DEFAULT_INCREMENT
) -> int:
    """Seconds billed for a call that lasted ``duration_s``: 0, or ``minimum`` then increments.

    >>> billable_seconds(0), billable_seconds(1), billable_seconds(30), billable_seconds(30.2)
    (0, 30, 30, 36)
    """
    _check_steps(minimum, increment)
    millis = round(duration_s * 1000)
    if millis <= 0:
        return 0
    seconds = -(-millis // 1000)
    if seconds <= minimum:
        return minimum
    return minimum + -(-(seconds - minimum) // increment) * increment


def cost(rate_per_minute: Rate, billed_seconds: int) -> int:
    """Minor units for ``billed_seconds`` at ``rate_per_minute``, rounded up to a whole unit."""
    if billed_seconds < 0:
        raise ValueError(f"negative billed seconds {billed_seconds}")
    return math.ceil(_rate(rate_per_minute) * billed_seconds / 60)


def max_talk_seconds(
    available_credit: int,
    rate_per_minute: Rate,
    minimum: int = DEFAULT_MINIMUM,
    increment: int = DEFAULT_INCREMENT,
    *,
    cap_seconds: int = DEFAULT_CAP_SECONDS,
) -> int:
    """The longest billable talk time whose cost fits ``available_credit`` (0: not even the minimum).

    The result lies on the billing grid (``minimum + k * increment``) and never exceeds
    ``cap_seconds``; a free destination (rate 0) gets ``cap_seconds``.
    """
    _check_steps(minimum, increment)
    rate = _rate(rate_per_minute)
    if available_credit <= 0 and rate > 0:
        return 0
    if rate == 0:
        return cap_seconds
    # cost(s) <= credit  <=>  ceil(rate*s/60) <= credit  <=>  rate*s/60 <= credit (credit is whole)
    affordable = min(math.floor(Fraction(available_credit) * 60 / rate), cap_seconds)
    if affordable < max(minimum, 1):
        return 0
    return minimum + (affordable - minimum) // increment * increment


@dataclass(frozen=True, slots=True)
class Reservation:
    """What to reserve atomically before dialling, and the talk time it buys."""

    amount: int
    max_seconds: int
    rate_per_minute: Rate
    minimum: int
    increment: int


def reservation_for(
    available_credit: int,
    rate_per_minute: Rate,
    minimum: int = DEFAULT_MINIMUM,
    increment: int = DEFAULT_INCREMENT,
    *,
    cap_seconds: int = DEFAULT_CAP_SECONDS,
) -> Reservation:
    """The reservation for a call at this rate from ``available_credit`` (unreserved credit).

    ``amount`` is 0 and ``max_seconds`` 0 when the minimum charge is not affordable: refuse
    the call with ``no_credit``.
    """
    seconds = max_talk_seconds(
        available_credit, rate_per_minute, minimum, increment, cap_seconds=cap_seconds
    )
    return Reservation(
        amount=cost(rate_per_minute, seconds),
        max_seconds=seconds,
        rate_per_minute=rate_per_minute,
        minimum=minimum,
        increment=increment,
    )


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of a finished call against its reservation."""

    billed_seconds: int
    cost: int
    released: int


def settle(reservation: Reservation, duration_s: float) -> Settlement:
    """Charge a call of ``duration_s`` (answer to release) against ``reservation``."""
    billed = min(
        billable_seconds(duration_s, reservation.minimum, reservation.increment),
        reservation.max_seconds,
    )
    charged = min(cost(reservation.rate_per_minute, billed), reservation.amount)
    return Settlement(billed, charged, reservation.amount - charged)


def warning_at(answer_at: float, max_seconds: int, warning_s: int = WARNING_SECONDS) -> float:
    """When to play the one-minute warning: ``warning_s`` before the cut, or at once if sooner."""
    return answer_at + max(0, max_seconds - warning_s)


def cut_at(answer_at: float, max_seconds: int) -> float:
    """When the call must be released because the reserved credit is spent."""
    return answer_at + max_seconds
