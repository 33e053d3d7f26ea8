"""How a finished customer call settles its queue row (softswitch/service/callbacks.py)."""

from __future__ import annotations

import pytest

from softswitch.service.callbacks import CALLBACK_LEASE, LEASE_RENEWAL, Settlement, settlement


@pytest.mark.parametrize(
    ("reason", "answered", "retry_at", "expected"),
    [
        ("callback_retry", False, 120.0, Settlement("reschedule", "callback_retry", 120.0)),
        ("node_stopping", False, None, Settlement("reschedule", "node_stopping")),
        ("node_stopping", True, None, Settlement("complete")),
        ("callback_busy", False, None, Settlement("fail", "callback_busy")),
        ("callback_rejected", False, None, Settlement("fail", "callback_rejected")),
        ("customer_release", True, None, Settlement("complete")),
        ("location_changed", True, None, Settlement("complete")),
    ],
)
def test_settlement(
    reason: str, answered: bool, retry_at: float | None, expected: Settlement
) -> None:
    assert settlement(reason, answered=answered, retry_at=retry_at) == expected


def test_leases_are_renewed_well_inside_their_length() -> None:
    assert LEASE_RENEWAL * 3 <= CALLBACK_LEASE
