"""Trunk faults against real peers (issue 11, "Crashes and faults"): the carrier restarted,
5 % packet loss on signalling and media, the store unavailable for a few seconds.

Kamailio plays the carrier (registrar with digest auth, router by number), baresip the
customer's phone, SIPp the trigger caller and the destination, as in
:mod:`interop.test_callback_e2e`.

**The carrier restarted mid-run.** Kamailio keeps its registrations in memory
(``usrloc db_mode 0``), as many carriers' edge proxies do: a restart forgets the switch's
binding, and until the switch registers again every trigger call gets 480 "Switch not
registered". The switch's OPTIONS keep-alive is what notices: its probes go unanswered while
the carrier is down (the trunk is marked DOWN after Timer F), and the first answer after the
restart marks it UP, on which the switch registers again at once instead of waiting for its
refresh (``expires`` 300 s here, so up to 268 s of lost triggers). The test SIGKILLs Kamailio,
waits for the switch to mark the trunk DOWN, restarts Kamailio on the same port, and asserts
that the restarted Kamailio sees the switch's REGISTER and that a whole callback call through
it then completes, with its CDRs in the store.

To fit the test into a minute the switch runs with ``[sip] t1 = 0.1`` (Timer F = 64*T1 =
6.4 s instead of 32 s) and ``keepalive_interval = 5`` (the smallest allowed); the
retransmission schedule keeps its RFC 3261 shape. The restarted Kamailio also routes the
customer's number to baresip statically: the phone's own binding is gone with the restart
too, and it would only come back at baresip's next refresh.

**5 % packet loss.** Everything runs in a network namespace the test creates, whose loopback
drops 5 % of UDP datagrams at random (:class:`interop.faults.LossyLoopback`: an iptables
``statistic`` rule, because this kernel has no ``sch_netem``): SIP and RTP of the node,
Kamailio, baresip and SIPp alike, RFC 3261 timers at their defaults (T1 = 500 ms). Thirteen
whole callback calls run at once: twelve hotline accounts triggered by SIPp (customer and
destination dialled together through Kamailio, both SIPp UASes playing RTP, joined, the
customer hangs up after 4 s) and one ordinary callback call whose customer is baresip: dial
prompt, the destination typed as RFC 4733 digits, bridged to the SIPp destination, ``**``.
Every call must complete, with its legs' CDRs: a transaction fails only if every
retransmission of its request or of its answer is lost, about 0.0975^7 = 8e-8 for an INVITE
(7 sends within Timer B; each send crosses with probability 0.95 and so does its answer) and
less for a non-INVITE (11 sends within Timer F), so across the ~150 transactions of a run
(about 500 SIP messages, 20-30 of them dropped) a lost call has odds around 1 in 100,000; a
failure means a retransmission was missing (ours, or a peer's scenario), which is what the
test is for. The ACK of a 2xx is not retransmitted on a timer: a lost one is made good by
the UAS retransmitting its 2xx and the caller ACKing each copy (RFC 3261 section 13). RFC 4733
digits survive because each event is sent in several packets; audio loses 5 % of its frames,
which is judged by baresip's recording (the destination's tone for at least 1.5 s of the
3 s bridged). The 1xx is the one message nobody retransmits (section 17.2.1): the SIPp
trigger caller hangs up after 4 s without one, as a person would.

**The store unavailable for a few seconds.** The node runs on PostgreSQL (a cluster of the
test's own, :class:`interop.faults.PgCluster`). With a callback call bridged (baresip hearing
the SIPp destination's 1800 Hz tone), PostgreSQL is stopped (fast shutdown: the node's
connections are cut) and started again 3 s later on the same port; meanwhile a second
account's trigger arrives. What the node does, and the test asserts:

* the live call goes on: media never touches the store, so baresip hears the destination
  without a break over 0.2 s from before the outage to after it; it ends normally later and
  its three CDRs are written then;
* the trigger during the outage is taken, not refused: the callback is placed at once from
  memory (the SIPp UAS registered as that customer answers it, hears the prompt for 2 s and
  hangs up, all inside the outage) and its writes, which cannot reach the store, are kept
  and retried by the service shell until PostgreSQL is back: the queue row (then settled
  done), the trigger and callback CDRs, and the live-call row's removal. Nothing is lost:
  every CDR is in the store afterwards, both callbacks are done, no live call is left for a
  survivor to "recover";
* the log says it the way a sysadmin can act on: a WARNING per kind of write kept ("cannot
  connect to PostgreSQL at 127.0.0.1:PORT (database softswitch, user postgres): connection
  refused (is the server running and listening there?); WriteCdr writes are kept and tried
  again"), ERROR lines for what could not wait (heartbeats, claiming due callbacks) with the
  same one-line reason, an INFO when the database is back, and no traceback.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from interop.baresip import Baresip
from interop.callback_setup import (
    CUSTOMER,
    DESTINATION,
    FRAME,
    RATE,
    TRIGGER,
    cdrs,
    phone_tone_file,
    provision,
    read_store,
    register_at_carrier,
    ring_trigger,
    rtp_range,
    spans,
    switch_config,
    tone,
    tone_ratio,
    write_rtp_pcap,
)
from interop.conftest import BaresipFactory, KamailioFactory, RigFactory, SippFactory, missing_peer
from interop.faults import FaultSetupError, LossyLoopback, PgCluster, sbin
from interop.kamailio import Kamailio
from interop.peers import (
    SCENARIOS,
    Node,
    Sipp,
    SippResult,
    free_port,
    injected_scenario,
    numbers_file,
)
from interop.test_callback_e2e import check_cdrs
from media.tools import read_audio
from softswitch.store import Store
from softswitch.store.models import (
    AccountKind,
    CallbackState,
    Cdr,
    LegKind,
    LiveCall,
    PendingCallback,
)

pytestmark = pytest.mark.interop

#: RFC 3261 T1 for the switch in the carrier-restart test: Timer F (64*T1) is 6.4 s.
T1 = 0.1
#: The switch's OPTIONS keep-alive interval (the configuration's minimum).
KEEPALIVE_S = 5


def test_carrier_restart_node_reregisters_and_calls_complete(
    tmp_path: Path,
    start_rig: RigFactory,
    sipp: SippFactory,
) -> None:
    # The OPTIONS keep-alive on, and Timer F at 6.4 s.
    rig = start_rig(keepalive_interval=KEEPALIVE_S, sip_options=f"t1 = {T1:g}")
    carrier, phone, node = rig.carrier, rig.phone, rig.node
    try:
        assert carrier.wait_for_log("carrier: registered switch", 5), carrier.log()[-2000:]
        assert node.wait_for_log("UNKNOWN -> UP", KEEPALIVE_S + 2), rig.node_log()

        # The carrier dies (SIGKILL: no goodbye) and its bindings with it.
        shutil.copy(carrier.log_path, tmp_path / "kamailio_before_restart.log")
        carrier.kill()
        killed_at = time.monotonic()
        timer_f = 64 * T1
        assert node.wait_for_log("UP -> DOWN", KEEPALIVE_S + timer_f + 3), rig.node_log()
        registers_before = node.count("registered to")

        # Back on the same port, with an empty location table.
        carrier.customer_target = phone.sip_address
        carrier.start()
        restarted_at = time.monotonic()
        assert node.wait_for_log("DOWN -> UP", timer_f + 2), rig.node_log()
        assert node.wait_for_log("registered to", 5, count=registers_before + 1), (
            "the switch did not register again after the carrier came back:\n" + rig.node_log()
        )
        assert carrier.wait_for_log("carrier: registered switch", 2), carrier.log()[-2000:]
        print(
            f"carrier down {restarted_at - killed_at:.1f} s; re-registered "
            f"{time.monotonic() - restarted_at:.2f} s after it answered again"
        )

        # A whole callback call through the restarted carrier.
        ring_trigger(sipp, carrier.address)
        phone.wait_for_call_established(15)
        time.sleep(1.5)  # the dial prompt is playing; digits barge in
        phone.send_dtmf(DESTINATION + "*")
        assert node.wait_for_log("-> CONNECTED", timeout=10), rig.node_log()
        time.sleep(2.0)
        rig.release()
        assert "trigger " + TRIGGER in carrier.log(), "the trigger did not cross the carrier"
    finally:
        code = node.stop()
    assert code == 0, rig.node_log()
    check_cdrs(rig)


# --- 5 % packet loss -------------------------------------------------------------------------

LOSS = 0.05
#: Hotline accounts triggered at once by SIPp; with baresip's ordinary call, 13 calls.
HOTLINE_CALLS = 12
#: Where the hotline accounts live: a SIPp UAS registered to Kamailio under this number.
HOTLINE_CUSTOMER = "815022220000"
HOTLINE_TRIGGERS = tuple(f"81501239{i:04d}" for i in range(HOTLINE_CALLS))
#: The number baresip dials (another UK number: routed to the SIPp destination too).
PHONE_DESTINATION = "449876543210"
HOTLINE_TALK_MS = 4000
PHONE_TALK_S = 3.0
PHONE_HZ = 600.0
DESTINATION_HZ = 1800.0


@pytest.fixture
def lossy_loopback() -> Iterator[LossyLoopback]:
    """This test inside a fresh network namespace whose loopback loses 5 % of UDP datagrams.

    Request it first, so it is set up before any peer starts and torn down after all of them
    have stopped; the namespace is deleted even when the test fails.
    """
    if os.geteuid() != 0:
        missing_peer("a network namespace needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)")
    ip, iptables = sbin("ip"), sbin("iptables")
    if ip is None or iptables is None:
        missing_peer("ip (iproute2) and iptables are needed for the lossy namespace")
    assert ip is not None and iptables is not None
    netns = LossyLoopback(LOSS, ip=ip, iptables=iptables)
    try:
        try:
            netns.create()
            netns.enter()
        except FaultSetupError as exc:
            missing_peer(f"cannot make a lossy network namespace here: {exc}")
        yield netns
    finally:
        netns.delete()


def hotline_trigger_scenario(workdir: Path) -> tuple[Path, Path]:
    """loss_trigger.xml dialling the number of its injection file line, and that file."""
    scenario = injected_scenario("loss_trigger.xml", workdir / "loss_trigger_inf.xml")
    return scenario, numbers_file(workdir / "hotline_triggers.csv", HOTLINE_TRIGGERS)


def legs_by_account(records: list[Cdr]) -> dict[int | None, dict[LegKind, Cdr]]:
    out: dict[int | None, dict[LegKind, Cdr]] = {}
    for record in records:
        out.setdefault(record.account_id, {})[record.leg] = record
    return out


def completed(legs: dict[LegKind, Cdr], destination: str) -> bool:
    """A whole callback call: trigger (never answered), callback and destination answered."""
    trigger = legs.get(LegKind.TRIGGER)
    callback = legs.get(LegKind.CALLBACK)
    dest = legs.get(LegKind.DESTINATION)
    return (
        trigger is not None
        and trigger.answer_at is None
        and callback is not None
        and callback.answer_at is not None
        and dest is not None
        and dest.to_number == destination
        and dest.answer_at is not None
        and len({r.call_uuid for r in legs.values()}) == 1
    )


def wait_for_billing(node: Node, account: int, timeout: float) -> bool:
    """Wait until the node logs that ``account``'s destination answered."""
    deadline = time.monotonic() + timeout
    tags = (f" account={account} ", f" account={account}:")
    while time.monotonic() < deadline:
        for line in node.log().splitlines():
            if "destination answered" in line and any(tag in line for tag in tags):
                return True
        time.sleep(0.05)
    return False


def retransmissions(result: SippResult) -> int:
    return result.stat("Retransmissions")


def start_tone_peers(
    workdir: Path,
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
    *,
    sipp_customer: str,
    destination_calls: int,
    customer_calls: int,
    hold_ms: int,
) -> tuple[Kamailio, Sipp, Sipp, Baresip]:
    """The peers of the loss and outage tests, started: Kamailio (the carrier); the SIPp
    destination, which answers ``destination_calls`` calls and plays DESTINATION_HZ; SIPp
    customers registered at the carrier as ``sipp_customer``, which answer
    ``customer_calls`` calls, play PHONE_HZ and hang up after ``hold_ms``; baresip, the
    customer CUSTOMER, registered, its microphone playing PHONE_HZ."""
    write_rtp_pcap(workdir / "phone_audio.pcap", tone(PHONE_HZ, 30.0))
    write_rtp_pcap(workdir / "destination_audio.pcap", tone(DESTINATION_HZ, 30.0))
    talk = shutil.copy(SCENARIOS / "loss_uas_talk.xml", workdir)
    hangup = shutil.copy(SCENARIOS / "loss_uas_hangup.xml", workdir)
    dest_port, customer_port = free_port(), free_port()
    carrier = start_kamailio(
        trigger_number=TRIGGER, customer_number=CUSTOMER, pstn_target=f"127.0.0.1:{dest_port}"
    )
    destination = sipp(
        talk,
        local_port=dest_port,
        calls=destination_calls,
        timeout_s=55,
        extra=("-mp", str(free_port())),
    ).start()
    customers = sipp(
        hangup,
        local_port=customer_port,
        calls=customer_calls,
        timeout_s=55,
        extra=("-mp", str(free_port()), "-d", str(hold_ms)),
    ).start()
    register_at_carrier(sipp, carrier.address, sipp_customer, customer_port, timeout_s=10)
    phone = start_baresip(
        carrier=carrier.address,
        number=CUSTOMER,
        register_password="phone",
        audio_file=phone_tone_file(workdir, PHONE_HZ),
    )
    phone.wait_for_registered(15)
    return carrier, destination, customers, phone


def test_callback_calls_complete_through_five_percent_loss(
    lossy_loopback: LossyLoopback,
    tmp_path: Path,
    softswitch_bin: str,
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'switch.sqlite3'}"
    provision(db_url)  # account 1: Alice, an ordinary account, called back at baresip
    provision(
        db_url,
        [(trigger, HOTLINE_CUSTOMER) for trigger in HOTLINE_TRIGGERS],
        kind=AccountKind.HOTLINE,
        hotline_destination=DESTINATION,
    )
    carrier, destination, customers, phone = start_tone_peers(
        tmp_path,
        start_kamailio,
        start_baresip,
        sipp,
        sipp_customer=HOTLINE_CUSTOMER,
        destination_calls=HOTLINE_CALLS + 1,
        customer_calls=HOTLINE_CALLS,
        hold_ms=HOTLINE_TALK_MS,
    )
    port = free_port()
    config = switch_config(port, carrier.address, db_url, rtp_ports=rtp_range(), log_level="INFO")
    node = Node(softswitch_bin, tmp_path, port, config)
    node.start()
    scenario, numbers = hotline_trigger_scenario(tmp_path)
    started = time.monotonic()
    try:
        assert node.wait_for_log("registered to", 15), node.log()[-3000:]
        # Baresip's call through the carrier, and the twelve hotline triggers at the switch.
        phone_trigger = sipp(
            str(SCENARIOS / "loss_trigger.xml"), remote=carrier.address, service=TRIGGER
        ).start()
        hotline = sipp(
            str(scenario),
            remote=node.address,
            calls=HOTLINE_CALLS,
            rate=4,
            timeout_s=30,
            extra=("-inf", str(numbers)),
        ).start()
        phone.wait_for_call_established(20)
        time.sleep(1.5)  # the dial prompt is playing; digits barge in
        phone.send_dtmf(PHONE_DESTINATION + "*")
        assert node.wait_for_log("calling " + PHONE_DESTINATION, 20), node.log()[-3000:]
        # Talk from the destination's answer: a lost INVITE or 200 delays it by 0.5 s or more.
        assert wait_for_billing(node, account=1, timeout=20), node.log()[-3000:]
        time.sleep(PHONE_TALK_S)
        phone.send_dtmf("**")
        phone.wait_for_call_closed(20)
        results = {
            "phone's trigger": phone_trigger.wait(30),
            "hotline triggers": hotline.wait(40),
            "hotline customers": customers.wait(50),
            "destinations": destination.wait(50),
        }
        # The last calls' legs settle (BYE and its retransmissions) before the node stops.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and node.count("finished (") < HOTLINE_CALLS + 1:
            time.sleep(0.2)
    finally:
        code = node.stop()
    elapsed = time.monotonic() - started
    loss = lossy_loopback.counters()
    retrans = {name: retransmissions(r) for name, r in results.items()}
    print(f"{HOTLINE_CALLS + 1} calls in {elapsed:.1f} s; {loss}; SIPp retransmissions {retrans}")
    assert code == 0, node.log()[-3000:]
    failed = {name: r.describe() for name, r in results.items() if r.returncode != 0}
    assert not failed, "\n\n".join(f"{name}: {text}" for name, text in failed.items())
    # The loss really happened: about 5 % of thousands of datagrams (RTP mostly), and of the
    # ~500 SIP messages (none lost: 0.95^500 = 7e-12) every one lost was made up for.
    assert loss.udp > 2000 and 0.03 < loss.dropped / loss.udp < 0.07, loss
    assert loss.sip > 300 and loss.sip_dropped > 0, loss

    calls = legs_by_account(cdrs(db_url))
    done = [a for a in range(2, HOTLINE_CALLS + 2) if completed(calls.get(a, {}), DESTINATION)]
    phone_done = completed(calls.get(1, {}), PHONE_DESTINATION)
    assert len(done) == HOTLINE_CALLS and phone_done, (
        f"completed: hotline {len(done)}/{HOTLINE_CALLS}, baresip's call {phone_done}; "
        f"CDRs: {calls}\n{node.log()[-3000:]}"
    )

    recording = phone.received_audio()
    assert recording is not None, f"baresip recorded nothing:\n{phone.log()[-2000:]}"
    heard = tone_ratio(read_audio(recording), DESTINATION_HZ) > 0.8
    heard_s = float(heard.sum()) * FRAME / RATE
    assert heard_s >= 1.5, f"the phone heard the destination for {heard_s:.2f} s"


# --- the store unavailable for a few seconds ---------------------------------------------------

#: The second account, triggered while PostgreSQL is down; a SIPp UAS registered under
#: OUTAGE_CUSTOMER answers its callback, hears the dial prompt for 2 s and hangs up.
OUTAGE_TRIGGER = "815012340002"
OUTAGE_CUSTOMER = "815022220000"
OUTAGE_S = 3.0


@dataclass(frozen=True, slots=True)
class StoreContents:
    cdrs: list[Cdr]
    callbacks: tuple[PendingCallback, ...]
    live_calls: tuple[LiveCall, ...]


async def _read_store_contents(store: Store) -> StoreContents:
    return StoreContents(
        list(await store.cdrs.list()),
        await store.callbacks.list(),
        await store.live_calls.list(),
    )


def store_after(db_url: str) -> StoreContents:
    """The CDRs, the callback queue and the live calls in the store now."""
    return read_store(db_url, _read_store_contents)


def test_store_restart_live_call_continues_and_nothing_is_lost(
    pg_cluster: PgCluster,
    tmp_path: Path,
    softswitch_bin: str,
    start_kamailio: KamailioFactory,
    start_baresip: BaresipFactory,
    sipp: SippFactory,
) -> None:
    if os.geteuid() != 0:
        missing_peer("SIPp play_pcap_audio needs a raw socket (root)")
    db_url = pg_cluster.createdb("softswitch")
    provision(db_url, [(TRIGGER, CUSTOMER), (OUTAGE_TRIGGER, OUTAGE_CUSTOMER)])
    carrier, destination, outage_customer, phone = start_tone_peers(
        tmp_path,
        start_kamailio,
        start_baresip,
        sipp,
        sipp_customer=OUTAGE_CUSTOMER,
        destination_calls=1,
        customer_calls=1,
        hold_ms=2000,
    )
    port = free_port()
    config = switch_config(port, carrier.address, db_url, rtp_ports=rtp_range(), log_level="INFO")
    node = Node(softswitch_bin, tmp_path, port, config)
    node.start()
    try:
        assert node.wait_for_log("registered to", 15), node.log()[-3000:]
        ring_trigger(sipp, carrier.address)
        phone.wait_for_call_established(15)
        time.sleep(1.5)  # the dial prompt is playing; digits barge in
        phone.send_dtmf(DESTINATION + "*")
        assert node.wait_for_log("calling " + DESTINATION, timeout=10), node.log()[-3000:]
        time.sleep(1.0)  # bridged: the destination's tone reaches the phone

        # PostgreSQL goes away (fast shutdown: the node's connections are cut) for 3 s; a
        # trigger for the second account arrives meanwhile, straight at the switch.
        log_before = len(node.log())
        down_at = time.monotonic()
        pg_cluster.stop()
        trigger = sipp("invite_cancel.xml", remote=node.address, service=OUTAGE_TRIGGER).run()
        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))
        pg_cluster.start()
        up_at = time.monotonic()
        print(f"PostgreSQL down for {up_at - down_at:.1f} s")
        assert trigger.returncode == 0, trigger.describe()

        # The second account's callback, then two more seconds of the live call.
        answered = outage_customer.wait(30)
        assert answered.returncode == 0, answered.describe()
        time.sleep(max(0.0, up_at + 2.0 - time.monotonic()))
        phone.send_dtmf("**")
        phone.wait_for_call_closed(10)
        result = destination.wait(20)
        assert result.returncode == 0, result.describe()
        assert node.wait_for_log("finished (", timeout=10, count=2), node.log()[-3000:]
    finally:
        code = node.stop()
    assert code == 0, node.log()[-3000:]
    log = node.log()
    outage_log = log[log_before:]
    where = f"cannot connect to PostgreSQL at 127.0.0.1:{pg_cluster.port}"
    errors = [line for line in log.splitlines() if " ERROR " in line]
    print(f"{len(errors)} ERROR lines, e.g.:\n" + "\n".join(errors[:3]))
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    # What a sysadmin reads: where the database is and why it failed, and that writes wait.
    assert any(where in line and "connection refused" in line for line in errors), errors
    kept = [line for line in outage_log.splitlines() if "writes are kept and tried again" in line]
    assert kept and all(" WARNING " in line and where in line for line in kept), outage_log
    assert "the database is back" in log, log[-4000:]
    assert "CDR NOT WRITTEN" not in log and "could not be queued" not in log, errors

    store = store_after(db_url)
    calls = legs_by_account(store.cdrs)
    # The live call went on through the outage and was written when it ended normally.
    assert completed(calls.get(1, {}), DESTINATION), calls
    first = calls[1][LegKind.DESTINATION]
    assert first.cause_text == "customer_release" and first.cost == 10, first
    # The trigger taken during the outage was called back at once (from memory) and its
    # records and queue row were written when PostgreSQL was back.
    second = calls.get(2, {})
    assert set(second) == {LegKind.TRIGGER, LegKind.CALLBACK}, calls
    assert second[LegKind.CALLBACK].answer_at is not None, second
    assert len({r.call_uuid for r in second.values()}) == 1, second
    assert {(c.account_id, c.state) for c in store.callbacks} == {
        (1, CallbackState.DONE),
        (2, CallbackState.DONE),
    }, store.callbacks
    assert store.live_calls == (), store.live_calls  # nothing left for a survivor to "recover"

    # Media never depended on the store: the phone heard the destination right through.
    recording = phone.received_audio()
    assert recording is not None, f"baresip recorded nothing:\n{phone.log()[-2000:]}"
    heard = tone_ratio(read_audio(recording), DESTINATION_HZ) > 0.8
    longest = max(((b - a + 1) for a, b in spans(heard, max_gap=10)), default=0) * FRAME / RATE
    print(f"the phone heard the destination for {longest:.2f} s without a break over 0.2 s")
    assert longest >= OUTAGE_S + 2.0, f"the destination's tone lasted {longest:.2f} s unbroken"
