"""The whole callback call against real peers: Kamailio (the carrier), baresip (the customer's
phone), SIPp (the trigger caller and the destination).

Kamailio registers the switch with digest auth and routes by number: the trigger number to the
switch, the customer's number to baresip (registered with Kamailio), anything else to a SIPp
UAS playing the destination. The customer rings the trigger and hangs up; the switch calls
baresip back, plays the dial prompt, collects the digits baresip sends as RFC 2833 events,
dials the destination through Kamailio, bridges, and ``**`` releases both legs. The CDRs in
the switch's store are the evidence. The set-up is shared with the other callback tests
(:mod:`interop.callback_setup`).
"""

from __future__ import annotations

import time

import pytest

from interop.callback_setup import (
    DESTINATION,
    CallbackRig,
    cdrs,
    ring_trigger,
)
from interop.conftest import RigFactory, SippFactory
from softswitch.store.models import LegKind

pytestmark = pytest.mark.interop


def check_cdrs(rig: CallbackRig) -> None:
    """The trigger, callback and destination legs of one call, the destination billed 30 s."""
    records = cdrs(rig.db_url)
    legs = {r.leg: r for r in records}
    assert set(legs) >= {LegKind.TRIGGER, LegKind.CALLBACK, LegKind.DESTINATION}, records
    trigger = legs[LegKind.TRIGGER]
    assert trigger.answer_at is None and trigger.cost == 0 and trigger.cause_code == 487
    # One customer call: the three legs share its call_uuid.
    assert len({r.call_uuid for r in records}) == 1, records
    callback = legs[LegKind.CALLBACK]
    assert callback.answer_at is not None, records
    dest = legs[LegKind.DESTINATION]
    assert dest.to_number == DESTINATION
    assert dest.answer_at is not None
    assert dest.billed_seconds == 30 and dest.cost == 10, dest


def test_whole_callback_call_with_rfc2833_digits(
    start_rig: RigFactory,
    sipp: SippFactory,
) -> None:
    rig = start_rig()
    node, phone = rig.node, rig.phone
    try:
        ring_trigger(sipp, rig.carrier.address)
        phone.wait_for_call_established(15)
        time.sleep(1.5)  # the dial prompt is playing; digits barge in
        phone.send_dtmf(DESTINATION + "*")
        assert node.wait_for_log("calling " + DESTINATION, timeout=10), rig.node_log()
        assert node.wait_for_log("session", timeout=1)
        time.sleep(3.0)  # ring, answer, bridge, talk
        rig.release()
    finally:
        code = node.stop()
    assert code == 0, rig.node_log()
    check_cdrs(rig)
