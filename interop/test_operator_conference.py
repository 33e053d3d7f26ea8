"""``00`` during a call brings customer service in: three parties, then two again (SPEC 2).

The whole callback call of :mod:`interop.test_callback_audio` (Kamailio carrier, baresip
customer speaking 600 Hz, a SIPp destination answering and playing 1800 Hz), with ``[service]
operator`` set to a number of its own. Customer service is a second SIPp UAS
(``uas_operator.xml``) that registers at the carrier under that number, so Kamailio routes the
switch's INVITE to it by number; it answers at once, plays 1000 Hz for a few seconds and hangs
up. After the bridge the customer presses ``00`` (RFC 2833): the switch calls customer service
and, when it answers, joins the three in a conference (the media mixer); when customer service
hangs up, the customer and the destination are bridged again. ``**`` ends the call.

Evidence, from a capture of the switch's RTP and SIP ports (each party's audio is what the
switch sent it, decoded; a frame "carries" a tone when that tone holds a fair share of the
frame's energy, so a mix of two tones carries both):

* in the conference each party receives the other two at once, for at least 1 s: the
  destination 600 + 1000 Hz, customer service 600 + 1800 Hz, the phone 1800 + 1000 Hz;
* after customer service's BYE the destination receives the phone's 600 Hz alone and the
  phone the destination's 1800 Hz alone, for at least 1 s each;
* the CDRs: the call's trigger, callback and destination legs, plus the operator leg,
  answered, to the operator's number.

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
    DESTINATION,
    FRAME,
    RATE,
    Capture,
    UdpPacket,
    cdrs,
    first_request,
    phone_tone_file,
    register_at_carrier,
    ring_trigger,
    rtp_payloads,
    tone,
    tone_destination,
    tone_ratio,
    write_rtp_pcap,
)
from interop.conftest import (
    RigFactory,
    SippFactory,
    missing_peer,
    start_capture,
)
from interop.kamailio import SCENARIOS as KAMAILIO_SCENARIOS
from interop.peers import free_port
from interop.test_callback_e2e import check_cdrs
from media import g711
from softswitch.store.models import LegKind

pytestmark = pytest.mark.interop

OPERATOR = "815099990000"
PHONE_HZ = 600.0
DESTINATION_HZ = 1800.0
OPERATOR_HZ = 1000.0
PROMPT_WAIT_S = 4.6  # the dial prompt is heard whole (as in test_callback_audio)
TALK_S = 2.0
OPERATOR_TALK_S = 3.5  # customer service's pcap; it hangs up 0.5 s after it ends
MIN_S = 1.0
PURE = 0.8
SHARE = 0.25  # a tone's share of a frame's energy for the frame to carry it in a mix


def heard(packets: list[UdpPacket], since: float = 0.0) -> NDArray[np.int16]:
    """The PCMU audio of ``packets`` captured at or after ``since``, decoded, in order."""
    return g711.ulaw_decode(b"".join(rtp_payloads([p for p in packets if p.time >= since])))


def carries(pcm: NDArray[np.int16], *freqs: float) -> NDArray[np.bool_]:
    """Per 20 ms frame: does it carry every tone of ``freqs`` (each a fair share)?"""
    mask = np.ones(len(pcm) // FRAME, dtype=bool)
    for freq in freqs:
        mask &= tone_ratio(pcm, freq) > SHARE
    return mask


def seconds(frames: NDArray[np.bool_]) -> float:
    """How long ``frames`` (20 ms each) last."""
    return float(frames.sum()) * FRAME / RATE


def test_double_zero_joins_customer_service_then_the_call_goes_on(
    tmp_path: Path,
    start_rig: RigFactory,
    sipp: SippFactory,
) -> None:
    if os.geteuid() != 0:
        missing_peer("SIPp play_pcap_audio needs a raw socket (root)")
    tone_uas = tone_destination(tmp_path, DESTINATION_HZ)
    media_port, operator_media = tone_uas.media_port, free_port()
    write_rtp_pcap(
        tmp_path / "operator_audio.pcap", tone(OPERATOR_HZ, OPERATOR_TALK_S), ssrc=0x5EED0002
    )
    rig = start_rig(
        destination_scenario=tone_uas.scenario,
        destination_extra=tone_uas.extra,
        audio_file=phone_tone_file(tmp_path, PHONE_HZ),
        extra_config=f'\n[service]\noperator = "{OPERATOR}"\n',
    )
    node, phone = rig.node, rig.phone
    operator_port = free_port()
    operator = sipp(
        str(KAMAILIO_SCENARIOS / "uas_operator.xml"),
        local_port=operator_port,
        timeout_s=60,
        extra=("-mp", str(operator_media), "-d", str(int((OPERATOR_TALK_S + 0.5) * 1000))),
    ).start()
    register_at_carrier(sipp, rig.carrier.address, OPERATOR, operator_port)
    low, high = rig.rtp_ports
    capture = Capture(
        tmp_path, f"udp and (portrange {low}-{high} or port {node.port})", name="conference"
    )
    try:
        start_capture(capture)
        ring_trigger(sipp, rig.carrier.address)
        phone.wait_for_call_established(15)
        # The dial prompt started (a loaded machine may take a while), then is heard whole.
        assert node.wait_for_log("dial_prompt.wav", timeout=10), rig.node_log()
        time.sleep(PROMPT_WAIT_S)
        phone.send_dtmf(DESTINATION + "*")
        assert node.wait_for_log("-> CONNECTED", timeout=15), rig.node_log()
        time.sleep(TALK_S)
        phone.send_dtmf("00")
        assert node.wait_for_log("-> CONFERENCE", timeout=10), rig.node_log()
        # Customer service talks, then hangs up: the customer and the destination go on.
        left = operator.wait(OPERATOR_TALK_S + 10)
        assert left.returncode == 0, left.describe()
        assert node.wait_for_log("CONFERENCE -> CONNECTED", timeout=5), rig.node_log()
        time.sleep(TALK_S)
        rig.release()
    finally:
        packets = capture.stop()
        code = node.stop()
    assert code == 0, rig.node_log()
    check_cdrs(rig)
    [operator_cdr] = [r for r in cdrs(rig.db_url) if r.leg is LegKind.OPERATOR]
    assert operator_cdr.to_number == OPERATOR and operator_cdr.answer_at is not None
    assert f"carrier: {OPERATOR} -> registered" in rig.carrier.log()

    switch_ports = range(low, high + 1)
    phone_ports = range(phone.rtp_base, phone.rtp_base + 20)
    from_switch = [p for p in packets if p.src[1] in switch_ports]
    to_dest = [p for p in from_switch if p.dst[1] == media_port]
    to_operator = [p for p in from_switch if p.dst[1] == operator_media]
    to_phone = [p for p in from_switch if p.dst[1] in phone_ports]

    # Three parties: each hears the other two at once.
    for who, got, freqs in (
        ("the destination", to_dest, (PHONE_HZ, OPERATOR_HZ)),
        ("customer service", to_operator, (PHONE_HZ, DESTINATION_HZ)),
        ("the phone", to_phone, (DESTINATION_HZ, OPERATOR_HZ)),
    ):
        both = carries(heard(got), *freqs)
        assert seconds(both) >= MIN_S, (
            f"{who} heard {' + '.join(f'{f:.0f}' for f in freqs)} Hz together for only "
            f"{seconds(both):.2f} s ({len(got)} packets)"
        )

    # Customer service gone: two parties again.
    bye = first_request([p for p in packets if p.dst[1] == node.port], "BYE")
    after = bye.time + 0.2
    dest_after = heard(to_dest, after)
    phone_after = heard(to_phone, after)
    for who, pcm, freq, other in (
        ("the destination", dest_after, PHONE_HZ, OPERATOR_HZ),
        ("the phone", phone_after, DESTINATION_HZ, OPERATOR_HZ),
    ):
        alone = tone_ratio(pcm, freq) > PURE
        assert seconds(alone) >= MIN_S, (
            f"after customer service left, {who} heard {freq:.0f} Hz for {seconds(alone):.2f} s"
        )
        assert not (tone_ratio(pcm, other) > SHARE).any(), f"{who} still hears customer service"
