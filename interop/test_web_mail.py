"""Web and e-mail triggers against real peers: a real browser, real SMTP, a real carrier and phone.

The rig of :mod:`interop.test_callback_e2e` (Kamailio as the carrier, baresip as the customer's
phone registered with it, SIPp as the destination) with the node's ``[web]`` page and
``[mail]`` listener on free loopback ports:

* **Browser**: headless Chromium from Debian (``/usr/bin/chromium``, a fresh profile, no
  network but loopback) driven by Playwright fills the "Trigger a call" form with the trigger
  number and a destination and submits it. The destination takes the hotline path with a
  one-off number: the switch calls it at once, while the callback INVITE rings baresip through
  Kamailio, with no digits typed. The SIPp destination answers and plays an 1800 Hz tone; once
  baresip answers too the two legs are joined, and baresip's recording of what it heard holds
  that tone. The CDRs show both legs answered.
* **SMTP**: smtplib sends the trigger number in the Subject of a mail to the trigger address;
  the callback reaches baresip the same way. A relay attempt is refused at RCPT.
"""

from __future__ import annotations

import os
import smtplib
import time
from pathlib import Path

import pytest

from interop.callback_setup import (
    CUSTOMER,
    DESTINATION,
    FRAME,
    RATE,
    TRIGGER,
    cdrs,
    tone_destination,
    tone_ratio,
)
from interop.conftest import RigFactory, missing_peer
from interop.peers import free_port
from media.tools import read_audio
from softswitch.store.models import LegKind

pytestmark = pytest.mark.interop

CHROMIUM = "/usr/bin/chromium"
#: The flags the issue names: no sandbox (root in CI), no GPU, nothing fetched from outside.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESTINATION_HZ = 1800.0
MIN_TONE_S = 2.0


def ops_config(web_port: int, mail_port: int) -> str:
    return f"""
[web]
listen = "127.0.0.1:{web_port}"
answer_time = 0.2

[mail]
listen = "127.0.0.1:{mail_port}"
address = "callback@example.net"
"""


def test_browser_trigger_with_a_destination_bridges_both_legs(
    tmp_path: Path,
    start_rig: RigFactory,
) -> None:
    if not Path(CHROMIUM).exists():
        missing_peer(f"{CHROMIUM} is missing (Debian package chromium)")
    if os.geteuid() != 0:
        missing_peer("SIPp play_pcap_audio needs a raw socket (root)")
    from playwright.sync_api import sync_playwright

    tone_uas = tone_destination(tmp_path, DESTINATION_HZ)
    web_port = free_port()
    rig = start_rig(
        destination_scenario=tone_uas.scenario,
        destination_extra=tone_uas.extra,
        extra_config=ops_config(web_port, free_port()),
    )
    node, phone = rig.node, rig.phone
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"),
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                locale="en-US",
                java_script_enabled=False,  # the page must work without it
            )
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{web_port}/")
                assert page.locator("h1").inner_text() == "Trigger a call"
                page.fill("#trigger", "+81 50 1234 5678")
                page.fill("#destination", "44 1234 567890")
                page.screenshot(path=str(tmp_path / "form.png"), full_page=True)
                page.click("button[type=submit]")
                page.wait_for_url("**/sent?lang=en", timeout=10_000)
                assert "If this number is registered with us" in page.inner_text("main")
                page.screenshot(path=str(tmp_path / "sent.png"), full_page=True)
            finally:
                browser.close()
        phone.wait_for_call_established(15)
        assert node.wait_for_log("-> CONNECTED", timeout=15), rig.node_log()
        time.sleep(3.0)  # talk: the destination's tone flows to the phone
        rig.release()
    finally:
        code = node.stop()
    assert code == 0, rig.node_log()
    assert "web trigger 815012345678 from 127.0.0.1 (destination 441234567890): scheduled" in (
        rig.node.log()
    )
    legs = {r.leg: r for r in cdrs(rig.db_url)}
    assert LegKind.TRIGGER not in legs  # no phone trigger: the web page asked
    assert legs[LegKind.CALLBACK].to_number == CUSTOMER
    assert legs[LegKind.CALLBACK].answer_at is not None
    dest = legs[LegKind.DESTINATION]
    assert dest.to_number == DESTINATION and dest.answer_at is not None
    assert legs[LegKind.CALLBACK].call_uuid == dest.call_uuid
    recording = phone.received_audio()
    assert recording is not None, f"baresip recorded nothing:\n{phone.log()[-2000:]}"
    heard = tone_ratio(read_audio(recording), DESTINATION_HZ) > 0.8
    assert heard.sum() * FRAME / RATE >= MIN_TONE_S, (
        f"the phone heard the destination's tone for only {heard.sum() * FRAME / RATE:.2f} s"
    )


def test_mail_trigger_calls_back_through_the_carrier(
    start_rig: RigFactory,
) -> None:
    mail_port = free_port()
    rig = start_rig(
        extra_config=ops_config(free_port(), mail_port),
    )
    node, phone = rig.node, rig.phone
    try:
        with smtplib.SMTP("127.0.0.1", mail_port, timeout=10) as smtp:
            refused = smtp.sendmail(
                "alice@example.com",
                ["callback@example.net"],
                f"From: alice@example.com\r\nTo: callback@example.net\r\nSubject: {TRIGGER}\r\n"
                "\r\nPlease call me back.\r\n",
            )
            assert refused == {}
            with pytest.raises(smtplib.SMTPRecipientsRefused):
                smtp.sendmail("spam@example.org", ["victim@example.org"], "Subject: hi\r\n\r\nx")
        phone.wait_for_call_established(15)
        phone.hangup()
        phone.wait_for_call_closed(10)
        assert node.wait_for_log("finished", timeout=10), rig.node_log()
    finally:
        code = node.stop()
    assert code == 0, rig.node_log()
    log = rig.node.log()
    assert "mail trigger 815012345678 from 127.0.0.1: scheduled" in log
    assert "SECURITY mail_rejected src=127.0.0.1 reason=relay" in log
    legs = {r.leg: r for r in cdrs(rig.db_url)}
    assert legs[LegKind.CALLBACK].to_number == CUSTOMER
    assert legs[LegKind.CALLBACK].answer_at is not None
