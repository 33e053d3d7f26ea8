"""Audio both ways through the whole callback call, checked by what each end really got.

The same call as :mod:`interop.test_callback_e2e`, with sound: baresip's microphone is a steady
600 Hz tone for the whole call; the SIPp destination (``uas_destination_audio.xml``) answers
and replays an RTP stream of an 1800 Hz tone (a pcap written here, played by SIPp's
``play_pcap_audio`` from its media port). Digits go as RFC 2833 after the dial prompt has
ended, so the prompt is heard whole.

Evidence, with margins against scheduling noise:

* a capture of the switch's RTP ports: the destination received RTP from the switch while
  connected (at least 2 s of packets) and its PCMU payload decodes to the phone's 600 Hz tone,
  and the destination's own stream reached the switch;
* baresip's recording of what it heard: first the dial prompt (non-silent, about as long as
  the prompt file), then, after the bridge, the destination's 1800 Hz tone for at least 2 s.

Needs root (or capture rights) twice: SIPp replays pcaps through a raw socket, and ``dumpcap``
captures on lo; without them the test is skipped (failed under ``CI``).
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from interop.callback_setup import (
    DESTINATION,
    FRAME,
    RATE,
    Capture,
    active_frames,
    phone_tone_file,
    ring_trigger,
    rtp_payloads,
    spans,
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
from media.tools import read_audio
from softswitch.prompts import prompt_path

pytestmark = pytest.mark.interop

PHONE_HZ = 600.0
DESTINATION_HZ = 1800.0
PROMPT_WAIT_S = 4.6  # the English dial prompt lasts 3.95 s; digits after it do not barge in
TALK_S = 3.0
MIN_TONE_S = 2.0
PURE = 0.8  # share of a frame's energy at the tone's frequency for the frame to count as tone
PAUSE_FRAMES = 25  # pauses up to 0.5 s inside the prompt join its words into one span


def prompt_span_s(pcm: NDArray[Any]) -> float:
    """Seconds from the first to the last sound of the first span of speech in ``pcm``."""
    found = spans(active_frames(pcm), max_gap=PAUSE_FRAMES)
    assert found, "no sound at all"
    first, last = found[0]
    return (last - first + 1) * FRAME / RATE


def test_audio_both_ways_through_the_callback_call(
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
    )
    node, phone = rig.node, rig.phone
    low, high = rig.rtp_ports
    capture = Capture(tmp_path, f"udp and portrange {low}-{high}", name="rtp")
    try:
        start_capture(capture)
        ring_trigger(sipp, rig.carrier.address)
        phone.wait_for_call_established(15)
        time.sleep(PROMPT_WAIT_S)
        phone.send_dtmf(DESTINATION + "*")
        assert node.wait_for_log("-> CONNECTED", timeout=10), rig.node_log()
        time.sleep(TALK_S)
        rig.release()
    finally:
        packets = capture.stop()
        code = node.stop()
    assert code == 0, rig.node_log()
    check_cdrs(rig)

    switch_ports = range(low, high + 1)
    to_dest = [p for p in packets if p.src[1] in switch_ports and p.dst[1] == media_port]
    from_dest = [p for p in packets if p.src[1] == media_port and p.dst[1] in switch_ports]
    min_packets = int(MIN_TONE_S * 50)
    assert len(from_dest) >= min_packets, (
        f"only {len(from_dest)} RTP packets from the destination (SIPp play_pcap_audio) reached "
        f"the switch; {len(packets)} captured"
    )
    # The customer's leg never goes quiet on the wire: prompt, silence while dialling, then
    # the destination's audio (carriers and NATs drop calls whose RTP stops).
    to_phone = sorted(
        (
            p
            for p in packets
            if p.src[1] in switch_ports and p.dst[1] not in switch_ports and p.dst[1] != media_port
        ),
        key=lambda p: p.time,
    )
    assert len(to_phone) >= min_packets, f"only {len(to_phone)} RTP packets to the phone"
    gaps = [b.time - a.time for a, b in itertools.pairwise(to_phone)]
    assert max(gaps) < 0.5, f"the switch sent no RTP to the phone for {max(gaps):.2f} s"
    payloads = rtp_payloads(to_dest, pt=0)
    assert len(payloads) >= min_packets, (
        f"the destination got {len(payloads)} PCMU packets from the switch, want >= {min_packets}"
    )
    heard_by_dest = g711.ulaw_decode(b"".join(payloads))
    loud = active_frames(heard_by_dest)
    phone_tone = tone_ratio(heard_by_dest, PHONE_HZ) > PURE
    assert phone_tone.sum() >= min_packets, (
        f"only {phone_tone.sum()} of {len(loud)} frames sent to the destination carry the "
        f"phone's {PHONE_HZ:.0f} Hz tone ({loud.sum()} non-silent)"
    )
    assert phone_tone.sum() >= 0.9 * loud.sum(), (
        f"{loud.sum() - phone_tone.sum()} non-silent frames to the destination are not the "
        f"phone's tone (of {loud.sum()})"
    )

    recording = phone.received_audio()
    assert recording is not None, f"baresip recorded nothing:\n{phone.log()[-2000:]}"
    heard_by_phone = read_audio(recording)
    dest_tone = tone_ratio(heard_by_phone, DESTINATION_HZ) > PURE
    assert dest_tone.sum() * FRAME / RATE >= MIN_TONE_S, (
        f"the phone heard the destination's {DESTINATION_HZ:.0f} Hz tone for only "
        f"{dest_tone.sum() * FRAME / RATE:.2f} s"
    )
    bridged_at = int(np.flatnonzero(dest_tone)[0])
    expected = prompt_span_s(read_audio(prompt_path("en", "dial_prompt")))
    before = heard_by_phone[: bridged_at * FRAME]
    heard = prompt_span_s(before)
    assert abs(heard - expected) <= 0.5, (
        f"the phone heard {heard:.2f} s of sound before the bridge, the dial prompt lasts "
        f"{expected:.2f} s"
    )
