"""``kill -9`` of a node under call load, then a restart on the same store (issue 11).

Real peers all round: Kamailio is the carrier (the node registers to it; it routes the trigger
number to the node, each customer's number to the baresip registered for it, and every other
number to a SIPp UAS playing the destinations), five baresip phones are five customers, and the
node is a real ``softswitch serve`` on a SQLite file in the test's directory.

Five accounts, five customer calls at once:

* ``ended``: the trigger rung through the carrier (SIPp, CANCELed), the callback answered, the
  destination keyed in (RFC 4733), answered, talked to and released with ``**``: over, with all
  its CDRs, before the kill;
* three ``bridged`` customers triggered from the web page with a destination (the form fetched
  and submitted over HTTP, cookie and CSRF token as a browser would): each answers its callback,
  the destination is dialled at once and answers, and they talk when the node dies;
* ``ringing``: triggered from the web page, its phone rings and is never answered before the
  kill (it gives up ringing right after: the node that called is gone).

The node gets SIGKILL, and a new ``softswitch serve`` starts at once on the same configuration
(the same SIP port) and store. It has to find the dead node's calls (stale after 20 s), and then
the store must show: the ended call's CDRs unchanged; every call live at the kill with its legs
recorded as interrupted at the time it was last written down (just before the kill); no credit
held, the bridged calls' talk time charged; no live call left; every callback settled. On the
wire (the carrier's log and the phones): the customers who had answered are never called again
(watched for 10 s after the recovery), the ringing customer is called exactly once more, by the new node, and after they answer that
call the callback is done. Every CDR of one customer call carries one ``call_uuid``.

The whole test takes about 50 s: the 20 s of staleness before recovery cannot be shortened from
outside the process, and the constants are not patched.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from interop.baresip import Baresip
from interop.callback_setup import (
    node_id,
    provision,
    read_store,
    registered_phone,
    ring_trigger,
    rtp_range,
    start_registered_node,
    switch_config,
    wait_for,
)
from interop.conftest import BaresipFactory, KamailioFactory, SippFactory
from interop.kamailio import SCENARIOS as KAMAILIO_SCENARIOS
from interop.peers import Node, free_port
from softswitch.service.callbacks import LIVE_HEARTBEAT, STALE_AFTER
from softswitch.store import Store
from softswitch.store.models import (
    Account,
    CallbackState,
    Cdr,
    CreditReservation,
    LegKind,
    LiveCall,
    PendingCallback,
)

pytestmark = pytest.mark.interop


@dataclass(frozen=True)
class Customer:
    """One account: its trigger number, its phone's number, the destination it asks for."""

    role: str
    trigger: str
    location: str
    destination: str = ""


ENDED = Customer("ended", "815012345678", "815011110000", "441234567800")
BRIDGED = (
    Customer("bridged1", "815012345001", "815011110001", "441234567801"),
    Customer("bridged2", "815012345002", "815011110002", "441234567802"),
    Customer("bridged3", "815012345003", "815011110003", "441234567803"),
)
RINGING = Customer("ringing", "815012345004", "815011110004")
CUSTOMERS = (ENDED, *BRIDGED, RINGING)
#: How long the customers who were answered are watched for a second callback.
WATCH = 10.0
#: How long after a kill a survivor may take to find the calls (stale, plus a pass, plus
#: slack for a loaded machine).
RECOVERY_WITHIN = STALE_AFTER + 10.0 + 15.0
#: The node's wall clock is its loop's monotonic clock plus an offset taken at start; against
#: the test's ``time.time()`` it may drift by a few milliseconds over a minute.
CLOCKS = 0.1


# --- the store, read from the test ---------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """What the store holds at one moment."""

    cdrs: tuple[Cdr, ...]
    live: tuple[LiveCall, ...]
    callbacks: tuple[PendingCallback, ...]
    accounts: dict[str, Account]
    reservations: dict[str, tuple[CreditReservation, ...]]

    def cdrs_of(self, customer: Customer) -> list[Cdr]:
        account_id = self.accounts[customer.role].id
        return sorted((c for c in self.cdrs if c.account_id == account_id), key=lambda c: c.id or 0)

    def live_of(self, customer: Customer) -> LiveCall | None:
        account_id = self.accounts[customer.role].id
        found = [c for c in self.live if c.account_id == account_id]
        assert len(found) <= 1, found
        return found[0] if found else None

    def callbacks_of(self, customer: Customer) -> list[PendingCallback]:
        account_id = self.accounts[customer.role].id
        return [c for c in self.callbacks if c.account_id == account_id]


async def _read_snapshot(store: Store) -> Snapshot:
    accounts: dict[str, Account] = {}
    reservations: dict[str, tuple[CreditReservation, ...]] = {}
    for customer in CUSTOMERS:
        account = await store.accounts.by_trigger(customer.trigger)
        assert account is not None, customer
        accounts[customer.role] = account
        reservations[customer.role] = await store.credit.reservations(account.id)
    return Snapshot(
        cdrs=tuple(await store.cdrs.list()),
        live=tuple(await store.live_calls.list()),
        callbacks=tuple(await store.callbacks.list()),
        accounts=accounts,
        reservations=reservations,
    )


def snapshot(db_url: str) -> Snapshot:
    return read_store(db_url, _read_snapshot, migrate=False, create=False)


def wait_for_store(
    db_url: str, what: str, ready: Callable[[Snapshot], bool], timeout: float
) -> Snapshot:
    """Poll the store until ``ready``; fail with the last snapshot after ``timeout``."""
    return wait_for(f"store: {what}", lambda: snapshot(db_url), ready, timeout)


def destination_answered(state: Snapshot, customer: Customer) -> bool:
    """The node has written down that this customer's destination answered, credit held."""
    row = state.live_of(customer)
    if row is None or not row.answered or row.reservation is None:
        return False
    legs: list[dict[str, object]] = json.loads(row.legs)
    return any(
        leg["leg"] == "destination"
        and str(leg["number"]).lstrip("+") == customer.destination
        and leg["answer_at"] is not None
        for leg in legs
    )


# --- the web page (the trigger with a destination), without a browser ----------------------


def web_trigger(port: int, trigger: str, destination: str = "") -> None:
    """Fill in and submit the "Trigger a call" form, as a browser would (cookie + CSRF)."""
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # loopback only, whatever the environment says
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
    )
    page_url = f"http://127.0.0.1:{port}/?lang=en"
    with opener.open(page_url, timeout=10) as page:
        form = page.read().decode()
    token = re.search(r'name="csrf" value="([^"]+)"', form)
    assert token is not None, form
    fields = {"csrf": token.group(1), "trigger": trigger, "destination": destination}
    with opener.open(page_url, urllib.parse.urlencode(fields).encode(), timeout=10) as sent:
        assert sent.url.endswith("/sent?lang=en"), (sent.url, sent.read()[-500:])


# --- the wire: what the carrier routed -------------------------------------------------------


def callback_invites(carrier_log: str, number: str) -> list[str]:
    """Call-IDs of the new INVITEs (callbacks) for ``number`` in (part of) the carrier's log,
    in order (an INVITE resent with credentials after its 407 counts once)."""
    pattern = re.compile(rf"carrier: INVITE sip:\+?{number}@\S+ from \S+ call-id (\S+)")
    seen: list[str] = []
    for match in pattern.finditer(carrier_log):
        if match.group(1) not in seen:
            seen.append(match.group(1))
    return seen


def calls_arrived(phone: Baresip, after: int) -> list[str]:
    """The call events a phone reported since event index ``after``."""
    kinds = ("CALL_INCOMING", "CALL_ESTABLISHED", "CALL_RINGING")
    return [str(e.get("type")) for e in phone.events[after:] if e.get("type") in kinds]


def start_phones(start_baresip: BaresipFactory, carrier: str) -> dict[str, Baresip]:
    """A registered phone per customer (all started, then waited for; a port lost to a race
    is retried by registered_phone)."""

    def start(customer: Customer) -> Baresip:
        return start_baresip(
            carrier=carrier,
            number=customer.location,
            register_password="phone",
            auto_answer=customer is not RINGING,  # the ringing customer answers by hand
        )

    phones = {c.role: start(c) for c in CUSTOMERS}
    for customer in CUSTOMERS:
        phones[customer.role] = registered_phone(partial(start, customer), phones[customer.role])
    return phones


def serve(binary: str, workdir: Path, port: int, config: str) -> Node:
    """A ``softswitch serve`` registered to the carrier (its log in ``workdir``)."""
    return start_registered_node(binary, workdir, port, config, timeout=15)


def test_kill_9_under_load_then_restart_recovers_every_call(
    tmp_path: Path,
    softswitch_bin: str,
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'switch.sqlite3'}"
    provision(db_url, [(c.trigger, c.location) for c in CUSTOMERS])
    dest_port = free_port()
    carrier = start_kamailio(
        trigger_number=ENDED.trigger,
        customer_number=ENDED.location,
        pstn_target=f"127.0.0.1:{dest_port}",
    )
    destinations = sipp(
        str(KAMAILIO_SCENARIOS / "uas_answer.xml"), local_port=dest_port, calls=0, timeout_s=180
    ).start()
    phones = start_phones(start_baresip, carrier.address)
    port, web_port = free_port(), free_port()
    config = switch_config(
        port, carrier.address, db_url, rtp_ports=rtp_range(400), log_level="INFO"
    )
    config += f'\n[web]\nlisten = "127.0.0.1:{web_port}"\nanswer_time = 0.1\n'
    first = serve(softswitch_bin, tmp_path / "first", port, config)
    second: Node | None = None
    try:
        # --- load: five customer calls at once ------------------------------------------------
        for customer in (*BRIDGED, RINGING):
            web_trigger(web_port, customer.trigger, customer.destination)
        ring_trigger(sipp, carrier.address, ENDED.trigger)
        ended_phone = phones[ENDED.role]
        ended_phone.wait_for_call_established(15)
        time.sleep(1.5)  # the dial prompt plays; the digits barge in
        ended_phone.send_dtmf(ENDED.destination + "*")
        wait_for_store(
            db_url,
            "the ended call's destination answered",
            lambda s: destination_answered(s, ENDED),
            15,
        )
        time.sleep(1.0)  # talk
        ended_phone.send_dtmf("**")
        ended_phone.wait_for_call_closed(10)
        for customer in BRIDGED:
            phones[customer.role].wait_for_call_established(15)
        phones[RINGING.role].wait_event("CALL_INCOMING", 15)
        # The node has written it all down: the ended call's CDRs (and its description gone),
        # each bridged call with its destination answered and credit held, the ringing one.
        before = wait_for_store(
            db_url,
            "the calls written down",
            lambda s: (
                s.live_of(ENDED) is None
                and {c.leg for c in s.cdrs_of(ENDED)}
                >= {LegKind.TRIGGER, LegKind.CALLBACK, LegKind.DESTINATION}
                and all(destination_answered(s, c) for c in BRIDGED)
                and (ringing := s.live_of(RINGING)) is not None
                and not ringing.answered
                and ringing.callback_id is not None
            ),
            15,
        )
        ended_cdrs = before.cdrs_of(ENDED)
        time.sleep(0.5)  # talk a little more

        # --- kill -9 ---------------------------------------------------------------------------
        assert first.proc is not None and first.alive(), first.log()[-4000:]
        dead_pid, dead_id = first.proc.pid, node_id(first)
        assert f":{dead_pid}:" in dead_id, dead_id
        killed_at = time.time()
        os.kill(dead_pid, signal.SIGKILL)
        assert first.proc.wait(timeout=10) == -signal.SIGKILL
        carrier_mark = len(carrier.log())
        events_mark = {role: len(phone.events) for role, phone in phones.items()}
        at_kill = snapshot(db_url)  # what the dead node left: nobody touches it until recovery
        live_at_kill = {row.account_id: row for row in at_kill.live}
        assert set(live_at_kill) == {at_kill.accounts[c.role].id for c in (*BRIDGED, RINGING)}, (
            at_kill.live
        )
        assert at_kill.cdrs_of(ENDED) == ended_cdrs
        # The ringing phone gives up: the node that called it is gone.
        phones[RINGING.role].hangup()

        # --- restart on the same configuration and store -------------------------------------
        second = serve(softswitch_bin, tmp_path / "second", port, config)
        ringing_phone = phones[RINGING.role]
        ringing_phone.wait_event("CALL_INCOMING", RECOVERY_WITHIN, after=events_mark[RINGING.role])
        # Called again: so the dead node's calls were recovered (the bridged ones with it).
        wait_for_store(
            db_url,
            "the bridged calls recovered",
            lambda s: (
                all(s.live_of(c) is None for c in BRIDGED)
                and all(cb.state is CallbackState.DONE for c in BRIDGED for cb in s.callbacks_of(c))
            ),
            5,
        )
        recovered_at = time.monotonic()
        ringing_phone.accept()
        ringing_phone.wait_event("CALL_ESTABLISHED", 10, after=events_mark[RINGING.role])
        talking = len(ringing_phone.events)
        time.sleep(1.0)  # the dial prompt; the customer hangs up
        ringing_phone.hangup()
        ringing_phone.wait_event("CALL_CLOSED", 10, after=talking)
        after = wait_for_store(
            db_url,
            "every call recovered and every callback done",
            lambda s: (
                not s.live
                and len(s.callbacks) == len(CUSTOMERS)
                and all(c.state is CallbackState.DONE for c in s.callbacks)
            ),
            15,
        )
        time.sleep(max(0.0, recovered_at + WATCH - time.monotonic()))  # nobody else is called

        # --- on the wire ----------------------------------------------------------------------
        # Before the kill, each customer was called once (the carrier's log shows callbacks).
        carrier_log = carrier.log()
        first_calls = {
            c.role: len(callback_invites(carrier_log[:carrier_mark], c.location)) for c in CUSTOMERS
        }
        assert first_calls == {c.role: 1 for c in CUSTOMERS}, carrier_log[-4000:]
        again = {
            c.role: callback_invites(carrier_log[carrier_mark:], c.location) for c in CUSTOMERS
        }
        assert {role: ids for role, ids in again.items() if role != RINGING.role} == {
            c.role: [] for c in (ENDED, *BRIDGED)
        }, again
        assert len(again[RINGING.role]) == 1, again
        for customer in (ENDED, *BRIDGED):
            arrived = calls_arrived(phones[customer.role], events_mark[customer.role])
            assert arrived == [], (customer.role, arrived)
        # The bridged customers hang up at last (their BYE crosses the carrier to the new node,
        # which knows no such call), so no phone is left in a call at teardown.
        for customer in BRIDGED:
            phones[customer.role].hangup()
        for customer in BRIDGED:
            phones[customer.role].wait_event("CALL_CLOSED", 10, after=events_mark[customer.role])
        new_id = node_id(second)
        assert new_id != dead_id
        second_log = second.log()
        assert second_log.count("interrupted when node") == 1 + len(BRIDGED), second_log[-6000:]
        assert "Traceback" not in second_log and "RECOVERY WRITE LOST" not in second_log
    finally:
        first.kill()
        code = second.stop() if second is not None else 0
        destinations.kill()
    assert code == 0, second.log()[-4000:] if second is not None else ""

    # --- the store ------------------------------------------------------------------------------
    final = snapshot(db_url)
    cause = f"interrupted (node {dead_id} stopped answering)"

    # The ended call: every CDR as it was before the kill, nothing added, none interrupted.
    assert final.cdrs_of(ENDED) == ended_cdrs
    legs = {c.leg: c for c in ended_cdrs}
    assert len(ended_cdrs) == 3, ended_cdrs
    assert legs[LegKind.TRIGGER].cause_code == 487 and legs[LegKind.TRIGGER].answer_at is None
    assert legs[LegKind.CALLBACK].answer_at is not None
    assert legs[LegKind.DESTINATION].to_number == ENDED.destination
    assert legs[LegKind.DESTINATION].answer_at is not None
    assert not any(c.cause_text.startswith("interrupted") for c in ended_cdrs), ended_cdrs
    assert all(c.node_id == dead_id for c in ended_cdrs), ended_cdrs

    for customer in BRIDGED:
        records = final.cdrs_of(customer)
        row = live_at_kill[final.accounts[customer.role].id]
        assert sorted(c.leg.value for c in records) == ["callback", "destination"], records
        for record in records:
            assert record.cause_text == cause and record.node_id == new_id, record
            assert record.answer_at is not None, record
            assert record.call_uuid == row.call_uuid
            # Ended when the dead node last wrote the call down: just before the kill.
            assert record.end_at == pytest.approx(row.alive_at, abs=0.002), (record, row)
            assert killed_at - LIVE_HEARTBEAT - 1.5 <= row.alive_at <= killed_at + CLOCKS, (
                killed_at,
                row,
            )
        dest = next(c for c in records if c.leg is LegKind.DESTINATION)
        assert dest.to_number == customer.destination
        assert dest.billed_seconds >= 30 and dest.cost > 0, dest

    ringing_records = final.cdrs_of(RINGING)
    row = live_at_kill[final.accounts[RINGING.role].id]
    assert [c.leg for c in ringing_records] == [LegKind.CALLBACK, LegKind.CALLBACK], ringing_records
    interrupted, resumed = ringing_records
    assert interrupted.cause_text == cause and interrupted.node_id == new_id, interrupted
    assert interrupted.answer_at is None and interrupted.cost == 0, interrupted
    assert interrupted.end_at == pytest.approx(row.alive_at, abs=0.002), (interrupted, row)
    assert killed_at - LIVE_HEARTBEAT - 1.5 <= row.alive_at <= killed_at + CLOCKS, (killed_at, row)
    assert resumed.answer_at is not None and not resumed.cause_text.startswith("interrupted")
    # Placed again only once the dead node's call was stale, by the new node.
    assert resumed.setup_at >= row.alive_at + STALE_AFTER, (resumed, row)
    assert resumed.node_id == new_id, resumed

    # One customer call, one call_uuid (across both nodes); no two calls share one.
    uuids = {c.role: {r.call_uuid for r in final.cdrs_of(c)} for c in CUSTOMERS}
    assert all(len(u) == 1 for u in uuids.values()), uuids
    assert len(set().union(*uuids.values())) == len(CUSTOMERS), uuids

    # Money: nothing held; what was talked is charged, exactly what the CDRs say.
    for customer in CUSTOMERS:
        account = final.accounts[customer.role]
        assert account.credit_reserved == 0, account
        assert final.reservations[customer.role] == (), final.reservations
        assert account.credit_used == sum(c.cost for c in final.cdrs_of(customer)), account
        if customer is not RINGING:
            assert account.credit_used > 0, account

    # Nothing left live; every callback settled, each account's once.
    assert final.live == ()
    assert final.callbacks == after.callbacks
    for customer in CUSTOMERS:
        [callback] = final.callbacks_of(customer)
        assert callback.state is CallbackState.DONE, callback
        assert callback.call_uuid in uuids[customer.role], callback
