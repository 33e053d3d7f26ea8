"""The whole callback call with the destination dialled as IN-BAND tones and ``**`` as RFC 2833.

The same call as :mod:`interop.test_callback_e2e` (Kamailio carrier, baresip customer, SIPp
trigger and destination), but baresip's microphone is a WAV made with the project's DTMF
generator (:func:`media.tones.dtmf_tone`, 80 ms on / 80 ms off at -6 dBm0): silence while the
dial prompt starts, the destination number and ``*`` as tones, silence, one more tone (``5``)
well after the bridge, then silence. ``**`` to end goes out as RFC 2833 events
(``baresip.send_dtmf``), so both kinds of digits are used on the same leg (SPEC section 2).
A capture of the switch's RTP ports proves which path carried what: no telephone-event
packet reached the switch before ``**``.

What happens with in-band tones, by phase (the media engine runs the in-band detector on the
callback leg from the moment it is opened):

* DialPrompt: the callback leg's audio is decoded and detected; a tone digit barges into the
  prompt and feeds the number exactly as an RFC 4733 event does (a press seen on both paths
  counts once, at the first onset).
* Connected (bridged): the customer's audio is relayed to the destination through a short
  delay line on which the in-band detector clamps DTMF out (the frames of a tone become
  silence), so no key reaches the destination by itself: ``*`` and ``#`` are held back about
  a second to see whether a command (``**``, ``##``) follows, and every key that is not part of
  one is forwarded by the service as an RFC 4733 event (in-band only to a destination that
  negotiated no telephone-event). The late ``*5`` proves it: the destination receives the
  events ``*`` and ``5`` from the switch, in that order, and its decoded audio holds no digit
  at all (before the fix the tones leaked, and ``**`` typed in-band would have reached it).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from interop.callback_setup import (
    DESTINATION,
    Capture,
    ring_trigger,
    rtp_payloads,
)
from interop.conftest import RigFactory, SippFactory, start_capture
from interop.test_callback_e2e import check_cdrs
from media import g711
from media.tones import RATE, dtmf_tone
from media.tools import detect_dtmf, read_audio, write_audio
from softswitch.store.models import Language

pytestmark = pytest.mark.interop

LEAD_IN_S = 1.5  # the dial prompt has started; the first tone barges in
ON_MS = OFF_MS = 80
LEVEL_DBM0 = -6.0
LATE_DIGIT_AT_S = 10.0  # well after the bridge (about 3 s after the last dialled tone)
LATE_KEYS = "*5"  # a held key, then one that is not a command: both forwarded as events
TELEPHONE_EVENT_PT = 101


def inband_speech(path: Path) -> Path:
    """The phone's microphone: lead-in, ``DESTINATION*`` as tones, then ``*5`` at 10 s."""
    gap = np.zeros(OFF_MS * RATE // 1000, dtype=np.int16)
    parts = [np.zeros(int(LEAD_IN_S * RATE), dtype=np.int16)]
    for digit in DESTINATION + "*":
        parts += [dtmf_tone(digit, ON_MS, LEVEL_DBM0), gap]
    pcm = np.concatenate(parts)
    pad = int(LATE_DIGIT_AT_S * RATE) - len(pcm)
    late = [part for key in LATE_KEYS for part in (dtmf_tone(key, ON_MS, LEVEL_DBM0), gap)]
    pcm = np.concatenate([pcm, np.zeros(pad, dtype=np.int16), *late])
    write_audio(path, pcm)
    return path


def test_whole_callback_call_with_inband_digits_and_rfc2833_end(
    tmp_path: Path,
    start_rig: RigFactory,
    sipp: SippFactory,
) -> None:
    speech = inband_speech(tmp_path / "inband_digits.wav")
    # The tones really are what the switch's own detector recognises, before any network.
    assert (
        "".join(d for d, _, _ in detect_dtmf(read_audio(speech))) == DESTINATION + "*" + LATE_KEYS
    )
    rig = start_rig(
        audio_file=speech,
        language=Language.JA,  # the other tests use English: both prompt sets in CI
    )
    node, phone = rig.node, rig.phone
    low, high = rig.rtp_ports
    capture = Capture(tmp_path, f"udp and portrange {low}-{high}", name="rtp")
    try:
        start_capture(capture)
        ring_trigger(sipp, rig.carrier.address)
        phone.wait_for_call_established(15)
        established = time.monotonic()
        # Nothing is pressed here: the WAV dials by itself.
        assert node.wait_for_log("calling " + DESTINATION, timeout=12), rig.node_log()
        assert node.wait_for_log("prompts/ja/dial_prompt", timeout=1), rig.node_log()
        assert node.wait_for_log("-> CONNECTED", timeout=8), rig.node_log()
        # Past the late in-band "5" (and its second of hold-back), then end with RFC 2833.
        time.sleep(max(0.0, established + LATE_DIGIT_AT_S + 1.5 - time.monotonic()))
        rfc2833_from = time.time()
        rig.release()
    finally:
        packets = capture.stop()
        code = node.stop()
    assert code == 0, rig.node_log()
    check_cdrs(rig)
    assert "command ** in CONNECTED" in node.log(), rig.node_log()

    phone_ports = range(phone.rtp_base, phone.rtp_base + 20)
    from_phone = [p for p in packets if p.src[1] in phone_ports]
    assert from_phone, f"no RTP from the phone captured ({len(packets)} packets)"
    events = [
        p for p in from_phone if len(p.payload) > 12 and p.payload[1] & 0x7F == TELEPHONE_EVENT_PT
    ]
    early = [p for p in events if p.time < rfc2833_from]
    assert not early, f"{len(early)} telephone-event packets before ** (digits not in-band?)"
    assert events, "the ** was not sent as RFC 2833 telephone-events"

    # What the switch sent the destination: the late keys as RFC 4733 events, in order, and
    # audio in which no digit can be heard (the tones were clamped out of the relay).
    switch_ports = range(low, high + 1)
    to_destination = [
        p for p in packets if p.src[1] in switch_ports and p.dst[1] not in phone_ports
    ]
    audio = g711.ulaw_decode(b"".join(rtp_payloads(to_destination, pt=0)))
    heard = "".join(d for d, _, _ in detect_dtmf(audio))
    assert heard == "", f"in-band digits {heard!r} leaked through the bridge to the destination"
    codes = [
        p.payload[12]
        for p in to_destination
        if len(p.payload) > 12 and p.payload[1] & 0x7F == TELEPHONE_EVENT_PT
    ]
    keys = "".join("0123456789*#"[c] for i, c in enumerate(codes) if i == 0 or c != codes[i - 1])
    assert keys == LATE_KEYS, f"events to the destination spell {keys!r}, expected {LATE_KEYS!r}"
