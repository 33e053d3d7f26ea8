"""A hotline account against real peers (guide section 10, SPEC section 7).

A hotline's trigger calls the customer back and, at the same time, dials the one preset
destination; the two are joined when both have answered. The rig is the one of
:mod:`interop.test_callback_audio` (Kamailio carrier, baresip customer speaking a 600 Hz
tone, a SIPp UAS destination answering at once and playing 1800 Hz), with the account made a
hotline to that destination and the phone answering by hand, 1.5 s after it rings.

Evidence, from a capture of the switch's SIP and RTP ports:

* both INVITEs (customer and destination) left the switch within a second of each other,
  and the destination's before the customer answered (it is dialled at once, not after);
* the destination, answered first, heard the switch's ringback (ITU 425 Hz) while the
  customer's phone rang;
* once joined, audio flows both ways: the destination receives the phone's 600 Hz and the
  phone receives the destination's 1800 Hz, each for at least 2 s;
* the CDRs: trigger (487, never answered), callback and destination legs of one call, the
  destination billed from the join (the 30 s minimum).

Needs root (SIPp's ``play_pcap_audio`` and ``dumpcap``); skipped without (failed under CI).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from interop.callback_setup import (
    CUSTOMER,
    DESTINATION,
    FRAME,
    RATE,
    Capture,
    answer_time,
    first_request,
    phone_tone_file,
    ring_trigger,
    rtp_payloads,
    sip_header,
    tone_destination,
    tone_ratio,
)
from interop.conftest import (
    RigFactory,
    SippFactory,
    missing_peer,
    start_capture,
)
from interop.test_callback_e2e import check_cdrs
from media import g711
from softswitch.store.models import AccountKind

pytestmark = pytest.mark.interop

PHONE_HZ = 600.0
DESTINATION_HZ = 1800.0
RINGBACK_HZ = 425.0
RING_S = 1.5  # the customer's phone rings this long before it is answered
TALK_S = 3.0
MIN_TONE_S = 2.0
PURE = 0.8


def seconds(frames: NDArray[np.bool_]) -> float:
    """How long ``frames`` (20 ms each) last."""
    return float(frames.sum()) * FRAME / RATE


def test_hotline_dials_customer_and_destination_at_once_then_joins_them(
    tmp_path: Path,
    start_rig: RigFactory,
    sipp: SippFactory,
) -> None:
    if os.geteuid() != 0:
        missing_peer("SIPp play_pcap_audio needs a raw socket (root)")
    tone_uas = tone_destination(tmp_path, DESTINATION_HZ)
    media_port = tone_uas.media_port
    rig = start_rig(
        destination_scenario=tone_uas.scenario,
        destination_extra=tone_uas.extra,
        audio_file=phone_tone_file(tmp_path, PHONE_HZ),
        kind=AccountKind.HOTLINE,
        hotline_destination=DESTINATION,
        phone_auto_answer=False,
    )
    node, phone = rig.node, rig.phone
    low, high = rig.rtp_ports
    capture = Capture(
        tmp_path, f"udp and (portrange {low}-{high} or port {node.port})", name="hotline"
    )
    try:
        start_capture(capture)
        ring_trigger(sipp, rig.carrier.address)
        phone.wait_event("CALL_INCOMING", 15)
        # The customer's phone rings; the destination is dialled (and answers) meanwhile.
        assert node.wait_for_log("calling " + DESTINATION, timeout=RING_S), rig.node_log()
        time.sleep(RING_S)
        phone.accept()
        phone.wait_for_call_established(10)
        assert node.wait_for_log("-> CONNECTED", timeout=10), rig.node_log()
        time.sleep(TALK_S)
        rig.release()
    finally:
        packets = capture.stop()
        code = node.stop()
    assert code == 0, rig.node_log()
    check_cdrs(rig)

    # Signalling: both legs placed at once, the destination before the customer answered.
    from_switch = [p for p in packets if p.src[1] == node.port]
    to_switch = [p for p in packets if p.dst[1] == node.port]
    customer = first_request(from_switch, "INVITE", CUSTOMER)
    destination = first_request(from_switch, "INVITE", DESTINATION)
    assert abs(destination.time - customer.time) < 1.0, (customer.time, destination.time)
    customer_answered = answer_time(to_switch, sip_header(customer.payload, "Call-ID"))
    destination_answered = answer_time(to_switch, sip_header(destination.payload, "Call-ID"))
    assert customer_answered - customer.time >= RING_S - 0.2, "the phone answered too early"
    assert destination.time < destination_answered < customer_answered, (
        "the destination was not dialled (and answered) while the customer's phone rang"
    )

    switch_ports = range(low, high + 1)
    to_dest = [p for p in packets if p.src[1] in switch_ports and p.dst[1] == media_port]
    heard_by_dest = g711.ulaw_decode(b"".join(rtp_payloads(to_dest, pt=0)))
    ringback = tone_ratio(heard_by_dest, RINGBACK_HZ) > PURE
    assert seconds(ringback) >= 0.5, "the destination heard no ringback while waiting"
    phone_tone = tone_ratio(heard_by_dest, PHONE_HZ) > PURE
    assert seconds(phone_tone) >= MIN_TONE_S, (
        f"the destination heard the phone's {PHONE_HZ:.0f} Hz for {seconds(phone_tone):.2f} s"
    )
    assert np.flatnonzero(ringback)[-1] < np.flatnonzero(phone_tone)[0], "ringback after join"

    phone_ports = range(phone.rtp_base, phone.rtp_base + 20)
    to_phone = [p for p in packets if p.src[1] in switch_ports and p.dst[1] in phone_ports]
    heard_by_phone = g711.ulaw_decode(b"".join(rtp_payloads(to_phone, pt=0)))
    dest_tone = tone_ratio(heard_by_phone, DESTINATION_HZ) > PURE
    assert seconds(dest_tone) >= MIN_TONE_S, (
        f"the phone heard the destination's {DESTINATION_HZ:.0f} Hz for {seconds(dest_tone):.2f} s"
    )
