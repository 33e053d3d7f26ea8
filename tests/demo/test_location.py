"""The demo's location scenario: the caller's state machine against a scripted node, and the
whole ``softswitch demo --scenario location`` against a real ``softswitch serve``.

The scripted node is a test-side Endpoint and MediaShell on real UDP sockets (as in
``test_carrier``): it answers the caller's trigger INVITE with 183 and SDP, plays a tone as
early media, hears the caller's keys, answers, and hangs up.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from media.tones import sine
from softswitch import fsm
from softswitch.cli.app import DemoScenario, app
from softswitch.demo.carrier import (
    CALLER_TABLE,
    Caller,
    CallerError,
    CallerState,
    CarrierConfig,
    EmulatedCarrier,
)
from softswitch.demo.carrier import _Call as CallerInput
from softswitch.demo.run import SCENARIOS, run_demo
from softswitch.sip import endpoint as ep
from softswitch.sip import sdp
from softswitch.sip import transaction as txl
from softswitch.sip.dialog import Dialog
from softswitch.sip.message import URI, Request
from tests.demo.test_carrier import NodeMedia, Peer

TRIGGER = "815012345678"


@pytest.fixture
async def carrier() -> Any:
    c = EmulatedCarrier(CarrierConfig())
    await c.start()
    yield c
    await c.stop()


@pytest.fixture
async def peer() -> Any:
    p = await Peer().start()
    yield p
    p.close()


@pytest.fixture
async def media() -> Any:
    m = await NodeMedia().start("trigger")
    yield m
    m.stop()


def state(caller: Caller) -> CallerState:
    """The caller's state now (not narrowed by an earlier assert)."""
    return caller.state


@dataclass
class Inbound:
    """The node's side of the caller's INVITE: its transaction, dialog and SDP answer."""

    tx: txl.ServerTransaction
    request: Request
    dialog: Dialog
    body: bytes


def take_the_trigger(peer: Peer, media: NodeMedia) -> asyncio.Future[Inbound]:
    """Answer the next INVITE with 183 + SDP (early media toward the caller's offer)."""
    found: asyncio.Future[Inbound] = asyncio.get_running_loop().create_future()

    def on_event(event: ep.EndpointEvent) -> bool:
        if not (isinstance(event, ep.RequestReceived) and event.request.method == "INVITE"):
            return False
        req = event.request
        assert req.uri.user == TRIGGER and req.from_.uri.user == "819012345678"
        result = sdp.negotiate_answer(
            sdp.parse_sdp(req.body), "127.0.0.1", media.ports["trigger"], session_id=9
        )
        assert result.audio is not None
        assert media.shell is not None
        media.engine.set_remote(
            "trigger",
            result.audio.remote_address,
            result.audio.remote_port,
            result.audio.codec,
            result.audio.telephone_event_pt,
            media.shell.time(),
        )
        endpoint = peer.endpoint
        tag = endpoint.new_tag()
        dialog = Dialog.from_uas(
            req,
            tag,
            URI(user=TRIGGER, host="127.0.0.1", port=peer.address.port),
            local_via=endpoint.local_via("UDP"),
            new_id=endpoint.new_tag,
        )
        body = bytes(result.answer)
        now = peer.now()
        headers = (
            *dialog.response_headers(req, 183, now=now),
            ("Content-Type", "application/sdp"),
        )
        endpoint.respond(event.tx, 183, headers=headers, body=body, now=now, to_tag=tag)
        found.set_result(Inbound(event.tx, req, dialog, body))
        return True

    peer.on_event = on_event
    return found


async def test_caller_hears_early_media_keys_reach_the_node_answer_is_acked_and_bye_answered(
    carrier: EmulatedCarrier, peer: Peer, media: NodeMedia
) -> None:
    inbound_at = take_the_trigger(peer, media)
    caller = Caller(carrier, "819012345678")
    await caller.call(TRIGGER, target=peer.address)
    inbound = await asyncio.wait_for(inbound_at, 2)
    assert await caller.until(lambda: caller.state is CallerState.EARLY, 2, "183")
    caller.set_phase("early")
    media.engine.play("trigger", [sine((425.0,), 800, -12.0)], barge_in=False)
    assert await caller.until(lambda: caller.loud_seconds("early") >= 0.4, 2, "early media")
    await caller.press("#")
    for _ in range(100):
        if media.digits["trigger"]:
            break
        await asyncio.sleep(0.02)
    assert media.digits["trigger"] == ["#"]  # RFC 4733 to the early-media address

    peer.on_event = None
    now = peer.now()
    headers = (
        *inbound.dialog.response_headers(inbound.request, 200, now=now),
        ("Content-Type", "application/sdp"),
    )
    ok = peer.endpoint.respond(
        inbound.tx,
        200,
        headers=headers,
        body=inbound.body,
        now=now,
        to_tag=inbound.dialog.local_tag,
    )
    peer.pump()
    ack = await peer.next(ep.AckReceived)
    assert ack.request.call_id == caller.call_id
    assert caller.state is CallerState.CONNECTED and caller.final_status == 200
    assert caller.connected.is_set()
    # A retransmitted 2xx is ACKed again (RFC 3261 section 13.2.2.4).
    peer.endpoint.send_response(inbound.tx, ok, peer.now())
    peer.pump()
    await peer.next(ep.AckReceived)
    assert caller.state is CallerState.CONNECTED

    bye = inbound.dialog.create_request("BYE", now=peer.now())
    peer.endpoint.send_request(bye, carrier.address, peer.now())
    peer.pump()
    answered = await peer.next(ep.ResponseReceived)
    assert answered.response.status == 200
    await asyncio.wait_for(caller.ended.wait(), 1)
    assert state(caller) is CallerState.ENDED and caller.ended_by == "node"
    assert caller.leg_id not in carrier.engine.legs
    assert [s for _, s in caller.statuses if s != 100] == [183, 200, 200]
    lines = [text for _, text in carrier.timeline]
    assert "node -> customer phone  SIP/2.0 183 Session Progress" in lines
    assert any(t.startswith("customer phone -> node  ACK sip:") for t in lines)
    assert "customer phone: BYE from the node, answered 200" in lines


async def test_caller_hanging_up_before_the_answer_cancels(
    carrier: EmulatedCarrier, peer: Peer, media: NodeMedia
) -> None:
    inbound_at = take_the_trigger(peer, media)
    caller = Caller(carrier, "819012345678")
    await caller.call(TRIGGER, target=peer.address)
    await asyncio.wait_for(inbound_at, 2)
    assert await caller.until(lambda: caller.state is CallerState.EARLY, 2, "183")
    await caller.hangup()
    assert caller.state is CallerState.CANCELLING
    cancelled = await peer.next(ep.RequestCancelled)
    assert cancelled.request.call_id == caller.call_id
    await asyncio.wait_for(caller.ended.wait(), 2)
    assert caller.ended_by == "cancel" and caller.final_status == 487
    await caller.hangup()  # nothing left to hang up
    assert state(caller) is CallerState.ENDED


async def test_a_caller_without_a_registered_node_is_an_error(carrier: EmulatedCarrier) -> None:
    with pytest.raises(RuntimeError, match="not registered"):
        await Caller(carrier, "819012345678").call(TRIGGER)


# --- the caller's state machine -----------------------------------------------------------------


def test_every_missing_caller_pair_is_a_caller_error() -> None:
    caller = Caller(EmulatedCarrier(), "819012345678")
    missing = 0
    for state in CallerState:
        for inp in CallerInput:
            if CALLER_TABLE.accepts(state, inp):
                continue
            caller.state = state
            with pytest.raises(CallerError) as info:
                caller._fire(inp)
            assert info.value.state is state and info.value.input is inp
            assert caller.state is state
            # What the node sends, or what comes after the call, is dropped instead.
            assert caller._if_entry(inp) is False and caller.state is state
            missing += 1
    assert missing == len(CallerState) * len(CallerInput) - len(CALLER_TABLE)


def test_caller_table_reaches_every_state_and_the_diagram_names_them() -> None:
    assert CALLER_TABLE.reachable() == CALLER_TABLE.states() == frozenset(CallerState)
    assert issubclass(CallerError, fsm.TransitionError) and CALLER_TABLE.error is CallerError
    text = CALLER_TABLE.mermaid()
    for state in CallerState:
        assert state.name in text


# --- the command ------------------------------------------------------------------------------


def test_an_unknown_scenario_is_refused() -> None:
    assert {s.value for s in DemoScenario} == set(SCENARIOS)
    result = CliRunner().invoke(app, ["demo", "--scenario", "fax"])
    assert result.exit_code == 2
    with pytest.raises(ValueError, match="unknown scenario"):
        run_demo(scenario="fax")


def test_demo_scenario_location_end_to_end() -> None:
    """``softswitch demo --scenario location`` against a real node: every check holds."""
    proc = subprocess.run(
        [sys.executable, "-m", "softswitch", "demo", "--scenario", "location"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "[FAIL]" not in out
    assert out.rstrip().endswith("demo passed")
    for line in (
        "[ok  ] the switch sent 183 with its SDP for the trigger call",
        "[ok  ] # in the early media answered the trigger call (200, ACK)",
        "[ok  ] customer heard 'enter your security code' before pressing 4711",
        "[ok  ] customer heard 'the number to call you back at' before pressing 81355501234*",
        "[ok  ] customer heard 'the read-back, digit by digit' before pressing 1",
        "[ok  ] the switch hung up the trigger call (BYE): ended by node",
        "[ok  ] the callback reached the room phone at the new number 81355501234",
        "[ok  ] room phone answered and heard the dial prompt",
        "[ok  ] the new location is saved in the store: 81355501234",
        "[ok  ] the trigger CDR says how the trigger call was answered: answered (# in the "
        "early media) into the location menu",
        "node -> room phone  INVITE sip:+81355501234@carrier.test SIP/2.0",
        "node -> customer phone  BYE sip:819012345678@",
    ):
        assert line in out, line
