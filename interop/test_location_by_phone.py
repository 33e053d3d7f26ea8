"""The Location menu by phone on the trigger call itself, against real peers (SPEC 1, 4, 5).

Kamailio is the carrier (the switch registers with digest auth; numbers are routed as in
:mod:`interop.test_callback_e2e`), a SIPp UAC rings the trigger number with an SDP offer
(``trigger_menu*.xml``) and :class:`~interop.rtp_peer.RtpPeer` is that caller's media: it
hears the switch's ringback in the 183's early media, learns the switch's RTP port from it,
and presses keys as RFC 4733 events. The switch's DEBUG log says which prompt it plays; each
step waits for its prompt and then presses the keys (they barge in, as a customer who knows
the menu does).

* ``#`` in the early media: the switch answers (200), asks for the security code, takes the
  new number (country code first, ``*``), no extension (``*``), reads it back, ``1`` saves it,
  ``1`` calls back now: it hangs up the trigger call and the callback INVITE goes through
  Kamailio to the new number (a SIPp UAS behind the carrier's "PSTN" route answers, then
  hangs up). The store, the CDRs and Kamailio's routing log are the evidence.
* Staying on the line: with ``[service] trigger_answer_after = 5`` the switch answers by itself
  after 5 s; the caller sends no RTP at all before that (a carrier that drops the caller's
  early media), enters the code, hears the number prompt and hangs up.
* The name (the ``#`` in the early media pressed in-band this time, as a DTMF tone: the switch
  listens for both there): ``#`` at the number prompt, ``2``, a 1 kHz tone for 2 s then ``#``,
  ``3`` saves; the menu is finished keeping the same location, typed ahead in one go (number
  ``*``, ``*``, ``1`` during the read-back, ``*``: no callback now). Then a normal trigger (hung
  up after one ring) calls baresip back, and a capture of the switch's RTP to the phone shows
  the recorded tone first, then the dial prompt.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from interop.callback_setup import (
    CUSTOMER,
    FRAME,
    RATE,
    TRIGGER,
    CallbackRig,
    Capture,
    account,
    active_frames,
    cdrs,
    ring_trigger,
    rtp_payloads,
    spans,
    tone,
    tone_ratio,
)
from interop.conftest import RigFactory, SippFactory, start_capture
from interop.kamailio import SCENARIOS as KAMAILIO_SCENARIOS
from interop.peers import Node, Sipp
from interop.rtp_peer import RtpPeer
from media import g711
from media.tools import read_audio
from softswitch.store.models import LegKind

pytestmark = pytest.mark.interop

CODE = "4711"
NEW_LOCATION = "442079460000"  # not a registered phone: Kamailio routes it to the "PSTN" UAS
RINGBACK_HZ = 425.0  # ITU-T E.180 (the node's default tone country)
NAME_HZ = 1000.0
NAME_S = 2.0
PURE = 0.8
PROMPT_TIMEOUT = 10.0


def start_trigger(sipp: SippFactory, rig: CallbackRig, caller: RtpPeer, scenario: str) -> Sipp:
    """The SIPp caller ringing the trigger through the carrier, its audio on ``caller``."""
    return sipp(
        str(KAMAILIO_SCENARIOS / scenario),
        remote=rig.carrier.address,
        service=TRIGGER,
        timeout_s=60,
        extra=("-key", "rtp_port", str(caller.port)),
    ).start()


def at_prompt(node: Node, caller: RtpPeer, prompt: str, keys: str, *, count: int = 1) -> None:
    """Wait until the switch plays ``prompt`` (its ``count``-th time), then press ``keys``."""
    assert node.wait_for_log(f"{prompt}.wav", PROMPT_TIMEOUT, count=count), (
        f"the switch never played {prompt} (#{count}):\n{node.log()[-4000:]}"
    )
    caller.press(keys)


def ringback_heard(caller: RtpPeer) -> float:
    """Seconds of the switch's ringback tone the caller heard so far."""
    heard = caller.heard()
    return float((tone_ratio(heard, RINGBACK_HZ) > PURE).sum()) * FRAME / RATE


def test_location_change_entered_by_hash_in_the_trigger_early_media(
    start_rig: RigFactory,
    sipp: SippFactory,
) -> None:
    rig = start_rig(
        # The callback at the new location: answered, then hung up after 1.5 s.
        destination_scenario=str(KAMAILIO_SCENARIOS / "uas_answer_bye.xml"),
        destination_extra=("-d", "1500"),
        security_code=CODE,
    )
    node = rig.node
    try:
        with RtpPeer() as caller:
            trigger = start_trigger(sipp, rig, caller, "trigger_menu.xml")
            caller.wait_for_remote(10)  # the switch's ringback: 183 with early media
            time.sleep(1.2)  # about one ring
            assert ringback_heard(caller) >= 0.5, "no ringback in the trigger's early media"
            caller.press("#")
            assert node.wait_for_log("answered (# in the early media)", 5), rig.node_log()
            at_prompt(node, caller, "security_code_enter", CODE)
            at_prompt(node, caller, "location_enter_number", NEW_LOCATION + "*")
            at_prompt(node, caller, "location_enter_extension", "*")
            at_prompt(node, caller, "location_confirm", "1")  # during the read-back
            at_prompt(node, caller, "location_call_back_now", "1")
            result = trigger.wait(15)
            assert result.returncode == 0, result.describe()  # the switch's BYE came
        assert result.received(method="BYE"), "the switch did not hang up the trigger call"
        # The callback at the new location, through the carrier's router.
        called = rig.destination.wait(20)
        assert called.returncode == 0, called.describe()
        [invite] = called.received(method="INVITE")
        assert invite.first_line.startswith(f"INVITE sip:{NEW_LOCATION}@"), invite.first_line
        assert f"carrier: {NEW_LOCATION} -> pstn" in rig.carrier.log()
        assert node.wait_for_log("finished (customer_hangup)", 10), rig.node_log()
    finally:
        code = node.stop()
    assert code == 0, rig.node_log()
    assert f"at {CUSTOMER}" not in node.log(), "the old location was called"

    moved = account(rig.db_url).location
    assert moved is not None and moved.number == NEW_LOCATION and not moved.extension
    records = cdrs(rig.db_url)
    [trigger_cdr] = [r for r in records if r.leg is LegKind.TRIGGER]
    assert trigger_cdr.cause_text == (
        "answered (# in the early media) into the location menu; menu_call_back"
    )
    assert trigger_cdr.answer_at is not None and trigger_cdr.cost == 0
    [callback] = [r for r in records if r.leg is LegKind.CALLBACK]
    assert callback.to_number == NEW_LOCATION and callback.answer_at is not None, records


def test_location_menu_entered_by_staying_on_the_line(
    start_rig: RigFactory,
    sipp: SippFactory,
) -> None:
    rig = start_rig(
        security_code=CODE,
        extra_config="\n[service]\ntrigger_answer_after = 5\n",
    )
    node = rig.node
    try:
        # Nothing from the caller before the answer: the carrier drops its early media.
        with RtpPeer(send=False) as caller:
            trigger = sipp(
                str(KAMAILIO_SCENARIOS / "trigger_menu_hangup.xml"),
                remote=rig.carrier.address,
                service=TRIGGER,
                timeout_s=60,
                extra=("-key", "rtp_port", str(caller.port), "-d", "5000"),
            ).start()
            caller.wait_for_remote(10)
            assert node.wait_for_log("answered (the caller stayed on the line 5 s)", 10), (
                rig.node_log()
            )
            caller.sending = True
            at_prompt(node, caller, "security_code_enter", CODE)
            assert node.wait_for_log("location_enter_number.wav", PROMPT_TIMEOUT), rig.node_log()
            result = trigger.wait(20)
            assert result.returncode == 0, result.describe()
        assert node.wait_for_log("finished (customer_hangup)", 10), rig.node_log()
    finally:
        code = node.stop()
    assert code == 0, rig.node_log()
    invite_at = min(m.time for m in result.messages if m.method == "INVITE")
    ok_at = min(m.time for m in result.messages if m.status == 200 and m.cseq_method == "INVITE")
    assert 5.0 <= ok_at - invite_at < 6.5, f"answered after {ok_at - invite_at:.2f} s, not ~5 s"
    assert "calling back" not in node.log(), "a caller who hung up in the menu got a callback"

    [trigger_cdr] = [r for r in cdrs(rig.db_url) if r.leg is LegKind.TRIGGER]
    assert trigger_cdr.cause_text == (
        "answered (the caller stayed on the line 5 s) into the location menu; customer_hangup"
    )
    assert trigger_cdr.answer_at is not None and trigger_cdr.cost == 0
    unchanged = account(rig.db_url).location
    assert unchanged is not None and unchanged.number == CUSTOMER


def test_name_recorded_in_the_menu_is_played_at_the_next_callback(
    tmp_path: Path,
    start_rig: RigFactory,
    sipp: SippFactory,
) -> None:
    rig = start_rig(
        security_code=CODE,
    )
    node, phone = rig.node, rig.phone
    low, high = rig.rtp_ports
    capture = Capture(tmp_path, f"udp and portrange {low}-{high}", name="rtp")
    try:
        with RtpPeer() as caller:
            trigger = start_trigger(sipp, rig, caller, "trigger_menu.xml")
            caller.wait_for_remote(10)
            time.sleep(0.5)
            caller.press_tones("#")  # in-band this time: a phone that only sends tones
            assert node.wait_for_log("answered (# in the early media)", 5), rig.node_log()
            at_prompt(node, caller, "security_code_enter", CODE)
            at_prompt(node, caller, "location_enter_number", "#")  # the name menu
            at_prompt(node, caller, "name_menu", "2")  # record
            assert node.wait_for_log("beep.wav", PROMPT_TIMEOUT), rig.node_log()
            wait_for_beep_end(caller, time.monotonic(), timeout=10)
            caller.play(tone(NAME_HZ, NAME_S))
            caller.press("#")  # ends the recording
            at_prompt(node, caller, "name_menu", "3", count=2)  # heard the new name: save
            # Saved; back at the number prompt. Keep the same location, no extension, confirm,
            # no callback now: typed ahead in one go, without waiting for the prompts (each
            # key cuts the prompt of the step before and answers its own).
            at_prompt(node, caller, "name_saved", CUSTOMER + "**1*")
            result = trigger.wait(15)
            assert result.returncode == 0, result.describe()
        saved = account(rig.db_url).recorded_name_path
        assert saved is not None and Path(saved).exists(), saved
        recorded = read_audio(saved)
        name_s = float((tone_ratio(recorded, NAME_HZ) > PURE).sum()) * FRAME / RATE
        assert name_s >= NAME_S - 0.5, f"the recording holds {name_s:.2f} s of the tone"

        start_capture(capture)
        ring_trigger(sipp, rig.carrier.address)  # the normal trigger: one ring, CANCEL
        phone.wait_for_call_established(15)
        time.sleep(NAME_S + 2.5)  # the name, then the start of the dial prompt
        phone.hangup()
        phone.wait_for_call_closed(10)
        assert node.wait_for_log("finished (customer_hangup)", 10, count=1), rig.node_log()
    finally:
        packets = capture.stop()
        code = node.stop()
    assert code == 0, rig.node_log()

    phone_ports = range(phone.rtp_base, phone.rtp_base + 20)
    to_phone = [p for p in packets if p.dst[1] in phone_ports]
    heard = g711.ulaw_decode(b"".join(rtp_payloads(to_phone, pt=0)))
    assert len(heard) >= RATE * 2, f"only {len(heard) / RATE:.2f} s of audio to the phone"
    name = tone_ratio(heard, NAME_HZ) > PURE
    loud = active_frames(heard)
    found = spans(name, max_gap=2)
    assert found, "the recorded name (1 kHz) was not played to the phone"
    first, last = found[0]
    assert (last - first + 1) * FRAME / RATE >= NAME_S - 0.5, f"name span {found[0]}"
    assert not loud[:first].any(), "something was played before the recorded name"
    after = loud[last + 1 :] & ~name[last + 1 :]
    assert after.sum() * FRAME / RATE >= 0.5, "no dial prompt after the recorded name"
    # The dial prompt's words are speech, not the tone.
    assert not name[last + 1 :].any()


def wait_for_beep_end(caller: RtpPeer, since: float, timeout: float) -> None:
    """Wait until the record beep (1 kHz) has been heard and has stopped: recording starts."""
    deadline = time.monotonic() + timeout
    started = False
    while time.monotonic() < deadline:
        heard = caller.heard(since=since)
        beep = tone_ratio(heard, 1000.0) > PURE
        if beep.any():
            started = True
            last = int(np.flatnonzero(beep)[-1])
            if len(beep) - last > 5:  # 100 ms past the beep's last frame
                return
        time.sleep(0.02)
    raise AssertionError(f"the record beep was {'not over' if started else 'never heard'}")
