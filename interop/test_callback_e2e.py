"""The whole callback call against real peers: Kamailio (the carrier), baresip (the customer's
phone), SIPp (the trigger caller and the destination).

Kamailio registers the switch with digest auth and routes by number: the trigger number to the
switch, the customer's number to baresip (registered with Kamailio), anything else to a SIPp
UAS playing the destination. The customer rings the trigger and hangs up; the switch calls
baresip back, plays the dial prompt, collects the digits baresip sends as RFC 2833 events,
dials the destination through Kamailio, bridges, and ``**`` releases both legs. The CDRs in
the switch's store are the evidence.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from interop.conftest import BaresipFactory, KamailioFactory, SippFactory
from interop.kamailio import SCENARIOS as KAMAILIO_SCENARIOS
from interop.peers import Node, free_port
from softswitch.store import Store
from softswitch.store.models import AccountKind, Language, LegKind, Location, Rate

pytestmark = pytest.mark.interop

TRIGGER = "815012345678"
CUSTOMER = "815011110000"
DESTINATION = "441234567890"


def provision(db_url: str) -> None:
    async def go() -> None:
        store = await Store.open(db_url)
        try:
            await store.accounts.add(
                "Alice",
                kind=AccountKind.STANDARD,
                language=Language.EN,
                triggers=[TRIGGER],
                location=Location(CUSTOMER),
                credit_limit=100_000,
            )
            await store.rates.set(Rate("44", "United Kingdom", 20, 6, 30))
        finally:
            await store.close()

    asyncio.run(go())


def cdrs(db_url: str) -> list[object]:
    async def go() -> list[object]:
        store = await Store.open(db_url)
        try:
            return list(await store.cdrs.list())
        finally:
            await store.close()

    return asyncio.run(go())


def switch_config(port: int, carrier: str, db_url: str) -> str:
    return f"""
[sip]
listen = "127.0.0.1:{port}"

[database]
url = "{db_url}"

[trunk]
registrar = "sip:carrier.test"
proxy = "{carrier}"
username = "switch"
password = "secret"
realm = "carrier.test"
expires = 300
keepalive_interval = 0
caller_id = "81300000000"
international_prefix = ""     # this carrier routes bare E.164 digits

[media]
host = "127.0.0.1"
rtp_ports = [30000, 30999]

[log]
level = "DEBUG"
"""


def test_whole_callback_call_with_rfc2833_digits(
    tmp_path: Path,
    softswitch_bin: str,
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'switch.sqlite3'}"
    provision(db_url)
    dest_port = free_port()
    carrier = start_kamailio(
        trigger_number=TRIGGER, customer_number=CUSTOMER, pstn_target=f"127.0.0.1:{dest_port}"
    )
    destination = sipp(
        str(KAMAILIO_SCENARIOS / "uas_answer.xml"), local_port=dest_port, timeout_s=60
    ).start()
    phone = start_baresip(carrier=carrier.address, number=CUSTOMER, register_password="phone")
    phone.wait_for_registered(10)
    port = free_port()
    node = Node(softswitch_bin, tmp_path, port, switch_config(port, carrier.address, db_url))
    node.start()
    try:
        assert node.wait_for_log("registered to", timeout=10), node.log()[-3000:]
        trigger = sipp("invite_cancel.xml", remote=carrier.address, service=TRIGGER).run()
        assert trigger.returncode == 0, trigger.describe()
        phone.wait_for_call_established(15)
        time.sleep(1.5)  # the dial prompt is playing; digits barge in
        phone.send_dtmf(DESTINATION + "*")
        assert node.wait_for_log("calling " + DESTINATION, timeout=10), node.log()[-3000:]
        assert node.wait_for_log("session", timeout=1)
        time.sleep(3.0)  # ring, answer, bridge, talk
        phone.send_dtmf("**")
        phone.wait_for_call_closed(10)
        result = destination.wait(20)
        assert result.returncode == 0, result.describe()
        assert node.wait_for_log("finished", timeout=10), node.log()[-3000:]
    finally:
        code = node.stop()
    assert code == 0, node.log()[-3000:]
    records = cdrs(db_url)
    legs = {r.leg: r for r in records}  # type: ignore[attr-defined]
    assert set(legs) >= {LegKind.CALLBACK, LegKind.DESTINATION}, records
    dest = legs[LegKind.DESTINATION]
    assert dest.to_number == DESTINATION  # type: ignore[attr-defined]
    assert dest.answer_at is not None  # type: ignore[attr-defined]
    assert dest.billed_seconds == 30 and dest.cost == 10  # type: ignore[attr-defined]
