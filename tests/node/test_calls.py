"""The call controller through the node, on a fake clock: what the customer, the carrier and
the store see of a whole callback call (SPEC sections 1, 2, 7).

Each test drives a real Node with the service (SIP over the wire format, transactions,
outbound legs, the controller, the call flow) through :class:`tests.node.harness.Rig`, and
asserts what crosses its edges: the INVITEs, CANCELs and BYEs the carrier gets, the media
commands per leg, the store requests, and the CDRs, credit and queue rows in the store.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from media import engine as me
from softswitch.config import LimitsConfig
from softswitch.node import commands as cmd
from softswitch.service.callbacks import (
    CALLBACK_LEASE,
    LEASE_RENEWAL,
    LIVE_HEARTBEAT,
    RECOVERY_PASSES,
    STATIC_TRIGGER_HOLD,
)
from softswitch.service.callflow import CallState, CustomerCall
from softswitch.store.models import (
    AccountKind,
    AccountStatus,
    CallbackState,
    Cdr,
    LegKind,
    Rate,
)
from tests.node.harness import (
    CUSTOMER,
    DESTINATION,
    TRIGGER,
    WALL0,
    Call,
    Rig,
    account,
)


def callback_answered(rig: Rig) -> Call:
    """Trigger, callback INVITE to the customer, ringing, answered; the dial prompt plays."""
    rig.trigger()
    callback = rig.last_call(CUSTOMER)
    rig.ring(callback)
    rig.advance(2.0)
    rig.answer(callback)
    assert rig.playing(callback) == ["dial_prompt"]
    return callback


def connected(rig: Rig) -> tuple[Call, Call]:
    """... the customer dials the destination, it rings and answers: bridged."""
    callback = callback_answered(rig)
    rig.keys(callback, DESTINATION + "*")
    destination = rig.last_call(DESTINATION)
    rig.ring(destination)
    assert rig.playing(callback) == ["ringback"]
    rig.advance(3.0)
    rig.answer(destination)
    legs = rig.media.legs
    assert legs[callback.leg_id].bridged_to == destination.leg_id
    assert not legs[callback.leg_id].early_media
    return callback, destination


def session_state(rig: Rig) -> CallState:
    [session] = rig.calls.sessions.values()
    assert isinstance(session.call, CustomerCall)
    return session.call.state


def assert_all_over(rig: Rig) -> None:
    """The call is over everywhere: no session, no live media, no credit held, row settled."""
    rig.pump()
    assert rig.calls.sessions == {}
    assert rig.media.live() == []
    assert rig.store.reservations == {}
    assert all(p.state is not CallbackState.CLAIMED for p in rig.store.queue.values())
    assert rig.calls.idle


# --- the whole call -------------------------------------------------------------------------


def test_whole_callback_call() -> None:
    rig = Rig()
    rig.trigger(ring=1.5)
    [trigger_cdr] = rig.store.cdrs_of(LegKind.TRIGGER)
    assert (trigger_cdr.to_number, trigger_cdr.cause_code) == (TRIGGER, 487)
    assert trigger_cdr.end_at == pytest.approx(WALL0 + 1.5)
    callback = rig.last_call(CUSTOMER)
    assert callback.invite.uri.user == "+" + CUSTOMER
    # The callback leaves at once, its queue row (claimed by this node) alongside.
    enqueue = [c for c in rig.commands if isinstance(c, cmd.EnqueueCallback)]
    assert [(e.account_id, e.trigger, e.node_id) for e in enqueue] == [(1, TRIGGER, "test-node")]
    # The customer's leg: in-band keys are the service's (clamped out of the bridge).
    assert rig.media.legs[callback.leg_id].service_digits

    rig.ring(callback)
    rig.advance(2.0)
    rig.answer(callback)
    assert rig.playing(callback) == ["dial_prompt"]
    assert rig.media.legs[callback.leg_id].remote == ("127.0.0.1", 40000)

    rig.keys(callback, DESTINATION + "*")
    destination = rig.last_call(DESTINATION)
    assert destination.invite.uri.user == "+" + DESTINATION
    assert not rig.media.legs[destination.leg_id].service_digits
    assert rig.store.reservations  # credit held before dialling
    rig.ring(destination)
    rig.advance(4.0)
    rig.answer(destination)
    assert rig.media.legs[callback.leg_id].bridged_to == destination.leg_id
    rig.advance(20.0)
    rig.keys(callback, "**")
    assert rig.requests_to(destination, "BYE") and rig.requests_to(callback, "BYE")

    cdrs = {c.leg: c for c in rig.store.cdrs}
    assert set(cdrs) == {LegKind.TRIGGER, LegKind.CALLBACK, LegKind.DESTINATION}
    assert len({c.call_uuid for c in rig.store.cdrs}) == 1  # one customer call
    dest = cdrs[LegKind.DESTINATION]
    assert dest.to_number == DESTINATION and dest.cause_text == "customer_release"
    assert (dest.billed_seconds, dest.cost) == (30, 10)  # 30 s minimum at 20 per minute
    assert dest.answer_at is not None and dest.end_at is not None
    assert dest.end_at - dest.answer_at == pytest.approx(20.6)
    assert cdrs[LegKind.CALLBACK].to_number == CUSTOMER
    assert rig.store.used == {1: 10}
    assert rig.store.settled == [(1, "complete", None)]
    assert_all_over(rig)
    assert not rig.node.triggers.under_way(TRIGGER)


def test_trigger_ended_by_bye_in_its_early_dialog_calls_back() -> None:
    # A defect: a BYE in the trigger's early dialog got 481 and no callback.
    rig = Rig()
    rig.trigger(how="BYE")
    assert rig.last_call(CUSTOMER)
    [cdr] = rig.store.cdrs_of(LegKind.TRIGGER)
    assert cdr.cause_text == "trigger ended by BYE"


def test_hash_star_replays_the_dial_prompt() -> None:
    rig = Rig()
    callback = callback_answered(rig)
    rig.prompt_done(callback)
    rig.keys(callback, "4412#*")
    assert rig.playing(callback) == ["dial_prompt"]
    assert not any(isinstance(c, cmd.QuoteRate) for c in rig.commands)
    rig.keys(callback, DESTINATION + "*")
    assert rig.last_call(DESTINATION)


# --- callback retries -----------------------------------------------------------------------


def test_busy_callback_is_retried_with_the_configured_pause_and_attempts() -> None:
    rig = Rig(callback_attempts=2, callback_retry_pause=30.0)
    rig.trigger()
    first = rig.last_call(CUSTOMER)
    rig.reject(first, 486)
    rig.advance(29.0)
    assert len(rig.calls_out) == 1
    rig.advance(1.5)
    second = rig.last_call(CUSTOMER)
    assert second is not first
    rig.reject(second, 486)
    rig.advance(60.0)
    assert len(rig.calls_out) == 2  # two attempts in all, as configured
    callbacks = rig.store.cdrs_of(LegKind.CALLBACK)
    assert [(c.cause_code, c.cause_text) for c in callbacks] == [(486, "busy")] * 2
    # One customer call across its attempts: the retry kept the call's id.
    assert len({c.call_uuid for c in rig.store.cdrs}) == 1
    # The pause was the queue's (a restart would resume it), then the last attempt failed.
    assert rig.store.settled == [(1, "reschedule", "callback_retry"), (1, "fail", "callback_busy")]
    assert_all_over(rig)
    assert not rig.node.triggers.under_way(TRIGGER)


def test_a_trigger_during_the_retry_pause_is_absorbed() -> None:
    rig = Rig(callback_retry_pause=30.0)
    rig.trigger()
    rig.reject(rig.last_call(CUSTOMER), 486)
    [row] = rig.store.queue.values()
    assert row.state is CallbackState.PENDING and row.due_at == pytest.approx(WALL0 + 31.0)
    rig.advance(5.0)
    rig.trigger()
    assert len(rig.calls_out) == 1
    assert rig.store.cdrs_of(LegKind.TRIGGER)[-1].cause_text.endswith("already under way")
    rig.advance(30.0)
    assert len(rig.calls_out) == 2


def test_a_restarted_node_resumes_the_attempts_where_they_were() -> None:
    # The queue says two attempts were made (the row was claimed twice): this is the third
    # and last, and its failure gives up instead of starting over.
    rig = Rig(callback_attempts=3)
    row = rig.store.add_pending(1, due_at=WALL0)
    rig.store.queue[row] = replace(rig.store.queue[row], attempts=2)
    rig.advance(1.5)
    rig.reject(rig.last_call(CUSTOMER), 486)
    assert rig.store.settled == [(row, "fail", "callback_busy")]
    assert len(rig.calls_out) == 1


def test_a_number_that_does_not_exist_is_not_retried() -> None:
    rig = Rig()
    rig.trigger()
    rig.reject(rig.last_call(CUSTOMER), 404)
    rig.advance(120.0)
    assert len(rig.calls_out) == 1
    assert rig.store.settled == [(1, "fail", "callback_rejected")]


def test_unanswered_callback_is_cancelled_at_the_configured_ring_timeout() -> None:
    # A defect: the call flow's fixed 45 s won over callback_ring_timeout.
    rig = Rig(callback_ring_timeout=25.0, callback_attempts=1)
    rig.trigger()
    callback = rig.last_call(CUSTOMER)
    rig.ring(callback)
    rig.advance(24.0)
    assert rig.requests_to(callback, "CANCEL") == []
    rig.advance(1.5)
    assert rig.requests_to(callback, "CANCEL")
    rig.reject(callback, 487)
    [cdr] = rig.store.cdrs_of(LegKind.CALLBACK)
    assert cdr.cause_text == "no_answer"
    assert rig.store.settled == [(1, "fail", "callback_no_answer")]
    assert_all_over(rig)


def test_answered_on_the_third_attempt() -> None:
    rig = Rig(callback_retry_pause=10.0)
    rig.trigger()
    rig.reject(rig.last_call(CUSTOMER), 480)
    rig.advance(10.5)
    rig.reject(rig.last_call(CUSTOMER), 503)
    rig.advance(10.5)
    third = rig.last_call(CUSTOMER)
    rig.answer(third)
    assert rig.playing(third) == ["dial_prompt"]
    assert [c.cause_text for c in rig.store.cdrs_of(LegKind.CALLBACK)] == [
        "no_answer",
        "unreachable",
    ]


# --- the destination ------------------------------------------------------------------------


def test_busy_destination_plays_busy_tone_and_star_hash_redials() -> None:
    rig = Rig()
    callback = callback_answered(rig)
    rig.keys(callback, DESTINATION + "*")
    first = rig.last_call(DESTINATION)
    rig.reject(first, 486)
    assert rig.playing(callback) == ["busy"]
    [cdr] = rig.store.cdrs_of(LegKind.DESTINATION)
    assert (cdr.cause_code, cdr.cause_text, cdr.cost) == (486, "busy", 0)
    assert rig.store.reservations == {}  # nothing was spent: the hold is given back
    rig.keys(callback, "*#")
    second = rig.last_call(DESTINATION)
    assert second is not first and second.number == first.number
    rig.answer(second)
    assert session_state(rig) is CallState.CONNECTED


def test_unanswered_destination_is_cancelled_and_the_customer_told() -> None:
    rig = Rig(destination_ring_timeout=30.0)
    callback = callback_answered(rig)
    rig.keys(callback, DESTINATION + "*")
    destination = rig.last_call(DESTINATION)
    rig.ring(destination)
    rig.advance(30.5)
    assert rig.requests_to(destination, "CANCEL")
    assert rig.playing(callback) == ["no_answer"]
    rig.reject(destination, 487)  # the carrier's answer to our CANCEL: nothing more happens
    assert session_state(rig) is CallState.DEST_BUSY
    rig.keys(callback, "##")
    assert rig.playing(callback) == ["dial_prompt"]
    assert session_state(rig) is CallState.COLLECTING


def test_early_media_is_heard_one_way_until_answer() -> None:
    # A defect: the bridge was two-way during early media (the destination heard the
    # customer before it answered).
    rig = Rig()
    callback = callback_answered(rig)
    rig.keys(callback, DESTINATION + "*")
    destination = rig.last_call(DESTINATION)
    rig.ring(destination, early_media=True)
    legs = rig.media.legs
    assert legs[callback.leg_id].bridged_to == destination.leg_id
    assert legs[callback.leg_id].early_media
    bridges = [c for c in rig.commands if isinstance(c, cmd.BridgeMedia)]
    assert bridges[-1] == cmd.BridgeMedia(callback.leg_id, destination.leg_id, True)
    rig.answer(destination)
    assert not legs[callback.leg_id].early_media


def test_hash_hash_releases_the_destination_and_asks_for_the_next_number() -> None:
    rig = Rig()
    callback, destination = connected(rig)
    rig.advance(40.0)
    rig.keys(callback, "##")
    assert rig.requests_to(destination, "BYE")
    assert rig.requests_to(callback, "BYE") == []
    assert rig.playing(callback) == ["dial_prompt"]
    [first] = rig.store.cdrs_of(LegKind.DESTINATION)
    assert first.cause_text == "new_number" and first.cost == 14  # 42 s at 20/min
    assert rig.store.used == {1: 14}
    rig.keys(callback, "44987654321*")
    second = rig.last_call("44987654321")
    rig.answer(second)
    rig.keys(callback, "**")
    assert [c.cause_text for c in rig.store.cdrs_of(LegKind.DESTINATION)] == [
        "new_number",
        "customer_release",
    ]
    assert_all_over(rig)


def test_destination_hanging_up_returns_the_customer_to_the_dial_prompt() -> None:
    rig = Rig(after_call_idle=20.0)
    callback, destination = connected(rig)
    rig.advance(10.0)
    rig.hang_up(destination)
    assert rig.playing(callback) == ["dial_prompt"]
    rig.prompt_done(callback)
    rig.advance(21.0)
    assert rig.playing(callback) == ["goodbye"]  # nobody dialled: the session ends politely
    rig.prompt_done(callback)
    assert rig.requests_to(callback, "BYE")
    assert_all_over(rig)


def test_customer_keys_reach_the_destination_as_events_star_held_back() -> None:
    rig = Rig()
    callback, destination = connected(rig)
    rig.keys(callback, "12", source="inband")
    sent = rig.media.legs[destination.leg_id].sent_digits
    assert sent == [("1", "rfc4733"), ("2", "rfc4733")]
    rig.keys(callback, "*")
    assert len(sent) == 2  # held: it may start a command
    rig.advance(1.2)
    assert sent[-1] == ("*", "rfc4733")


# --- customer service -----------------------------------------------------------------------


def test_double_zero_in_a_call_brings_customer_service_in_without_losing_the_destination() -> None:
    rig = Rig(operator="care")
    callback, destination = connected(rig)
    rig.advance(5.0)
    rig.keys(callback, "00", gap=0.4)
    operator = rig.last_call("care")
    assert rig.requests_to(destination, "BYE") == []  # held, not dropped
    assert rig.media.legs[callback.leg_id].bridged_to is None
    assert rig.playing(callback) == ["connecting_customer_service"]
    rig.answer(operator)
    legs = rig.media.legs
    conference = {legs[c.leg_id].conference for c in (callback, destination, operator)}
    assert len(conference) == 1 and None not in conference
    rig.advance(30.0)
    rig.hang_up(operator)
    assert legs[callback.leg_id].bridged_to == destination.leg_id
    [op_cdr] = rig.store.cdrs_of(LegKind.OPERATOR)
    assert op_cdr.cause_text == "normal" and op_cdr.cost == 0
    rig.keys(callback, "**")
    [dest_cdr] = rig.store.cdrs_of(LegKind.DESTINATION)
    assert dest_cdr.billed_seconds >= 36  # billed through the consultation
    assert_all_over(rig)


def test_double_zero_at_the_dial_prompt_calls_customer_service() -> None:
    rig = Rig(operator="care")
    callback = callback_answered(rig)
    rig.keys(callback, "00")
    operator = rig.last_call("care")
    rig.answer(operator)
    assert rig.media.legs[callback.leg_id].bridged_to == operator.leg_id


# --- money ----------------------------------------------------------------------------------


def test_credit_runs_out_mid_call() -> None:
    # 100 units at 20/min buys 300 s; the warning plays a minute before the cut.
    rig = Rig(accounts=[account(credit_limit=100)])
    callback, destination = connected(rig)
    rig.advance(239.0)
    assert rig.playing(callback) == []
    rig.advance(2.0)
    assert rig.playing(callback) == ["one_minute_warning"]
    rig.advance(60.0)
    assert rig.requests_to(destination, "BYE")
    assert rig.playing(callback) == ["no_credit", "dial_prompt"]
    [cdr] = rig.store.cdrs_of(LegKind.DESTINATION)
    assert (cdr.cause_text, cdr.billed_seconds, cdr.cost) == ("credit_exhausted", 300, 100)
    assert rig.store.available(1) == 0
    rig.keys(callback, DESTINATION + "*")
    assert rig.playing(callback) == ["no_credit", "dial_prompt"]
    assert len([c for c in rig.calls_out if c.number.endswith(DESTINATION)]) == 1


@pytest.mark.parametrize(
    ("dialled", "prompt"),
    [
        ("4412*", "invalid_number"),  # too short for E.164
        ("1900555*", "blocked_number"),  # blocked by configuration
        ("86123456789*", "invalid_number"),  # no rate for China
        ("055*", "unknown_speed_dial"),
    ],
)
def test_refusals_are_explained_then_the_dial_prompt(dialled: str, prompt: str) -> None:
    rig = Rig(blocked_prefixes=("1900",))
    callback = callback_answered(rig)
    rig.keys(callback, dialled)
    assert rig.playing(callback) == [prompt, "dial_prompt"]
    assert [c.number for c in rig.calls_out] == ["+" + CUSTOMER]
    assert rig.store.reservations == {}


def test_blocked_rate_is_refused() -> None:
    rig = Rig(
        rates=[Rate("44", "UK", Decimal(20), 6, 30), Rate("4470", "UK mobile", 0, 6, 30, True)]
    )
    callback = callback_answered(rig)
    rig.keys(callback, "447012345678*")
    assert rig.playing(callback) == ["blocked_number", "dial_prompt"]


def test_speed_dial() -> None:
    rig = Rig()
    rig.store.speed_dials[(1, "03")] = DESTINATION
    callback = callback_answered(rig)
    rig.keys(callback, "03*")
    assert rig.last_call(DESTINATION)


def test_reservation_answered_after_the_customer_hung_up_is_given_back() -> None:
    rig = Rig(hold=[cmd.ReserveCredit])
    callback = callback_answered(rig)
    rig.keys(callback, DESTINATION + "*")
    assert rig.held
    rig.hang_up(callback)
    assert rig.calls.sessions  # waits for the answer it is owed
    rig.release()
    assert rig.store.reservations == {}
    assert not any(c.number.endswith(DESTINATION) for c in rig.calls_out)
    assert_all_over(rig)


# --- the defects found by trying the product --------------------------------------------------


def test_own_trigger_number_opens_the_location_menu_and_calls_back_at_the_new_place() -> None:
    # Guide 5-B: on a callback, 1 + the trigger number (NANP's 1 is its country code here).
    rig = Rig()
    rig.store.codes[1] = "4711"
    callback = callback_answered(rig)
    rig.keys(callback, TRIGGER + "#")
    assert rig.playing(callback) == ["security_code_enter"]
    rig.prompt_done(callback)
    rig.keys(callback, "4711")
    assert rig.playing(callback) == ["location_enter_number"]
    rig.keys(callback, "819011112222*")
    assert rig.playing(callback) == ["location_enter_extension"]
    rig.keys(callback, "*")
    readback = rig.playing(callback)
    assert readback[0] == "location_you_entered" and readback[-1] == "location_confirm"
    assert "".join(p.removeprefix("digit_") for p in readback[1:-1]) == "819011112222"
    rig.keys(callback, "1")
    assert rig.store.accounts[1].location is not None
    assert rig.store.accounts[1].location.number == "819011112222"
    assert rig.playing(callback) == ["location_saved", "location_call_back_now"]
    rig.keys(callback, "1")
    assert rig.requests_to(callback, "BYE")
    [cdr] = rig.store.cdrs_of(LegKind.CALLBACK)
    assert cdr.cause_text == "location_changed"
    # Then the normal callback path, at the new location, read from the store.
    rig.advance(1.5)
    moved = rig.last_call("819011112222")
    assert moved.invite.uri.user == "+819011112222"
    rig.answer(moved)
    assert rig.playing(moved) == ["dial_prompt"]


def test_wrong_security_codes_lock_the_menu(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.store.codes[1] = "4711"
    callback = callback_answered(rig)
    rig.keys(callback, TRIGGER + "#")
    with caplog.at_level(logging.WARNING, logger="softswitch.security"):
        for code in ("1111", "2222"):
            rig.keys(callback, code)
            assert rig.playing(callback) == ["security_code_wrong", "security_code_enter"]
        rig.keys(callback, "3333")
    assert rig.playing(callback) == ["security_code_locked"]
    assert caplog.text.count("SECURITY bad_security_code src=- account=1 ") == 2
    assert "SECURITY lockout src=- account=1 " in caplog.text
    rig.prompt_done(callback)
    assert rig.requests_to(callback, "BYE")
    assert rig.store.accounts[1].location is not None
    assert rig.store.accounts[1].location.number == CUSTOMER  # nothing changed
    assert_all_over(rig)


def test_name_recorded_at_the_name_menu_is_played_at_the_next_callback() -> None:
    rig = Rig()
    rig.store.codes[1] = "4711"
    callback = callback_answered(rig)
    rig.keys(callback, TRIGGER + "#")
    rig.keys(callback, "4711")
    rig.keys(callback, "#")
    assert rig.playing(callback) == ["no_name", "name_menu"]
    rig.keys(callback, "2")
    assert rig.playing(callback) == ["name_record", "beep"]
    rig.prompt_done(callback)
    recording = rig.media.legs[callback.leg_id].recording
    assert recording is not None and recording.startswith("1-")
    rig.recorded(callback, 2.4)
    assert rig.playing(callback) == [Path(recording).stem, "name_menu"]
    rig.keys(callback, "3")
    assert rig.store.accounts[1].recorded_name_path == "/var/recordings/name-1.wav"
    assert rig.playing(callback) == ["name_saved", "location_enter_number"]
    rig.hang_up(callback)
    assert_all_over(rig)
    rig.trigger()
    again = rig.last_call(CUSTOMER)
    assert again is not callback
    rig.answer(again)
    assert rig.playing(again) == ["name-1", "dial_prompt"]


def test_a_hotline_account_has_no_location_menu() -> None:
    rig = Rig(accounts=[account(kind=AccountKind.HOTLINE, hotline=None)])
    callback = callback_answered(rig)
    rig.keys(callback, TRIGGER + "#")
    assert rig.playing(callback) == ["location_unavailable", "dial_prompt"]


def test_the_kinds_policy_decides_who_may_move_and_who_may_record_a_name() -> None:
    # [service] location_kinds / name_kinds: here only travellers may move, nobody may record.
    rig = Rig(location_kinds=("traveler",), name_kinds=())
    callback = callback_answered(rig)  # a standard account
    rig.keys(callback, TRIGGER + "#")
    assert rig.playing(callback) == ["location_unavailable", "dial_prompt"]
    rig.hang_up(callback)
    assert_all_over(rig)
    traveler = Rig(accounts=[account(kind=AccountKind.TRAVELER)], name_kinds=())
    traveler.store.codes[1] = "4711"
    callback = callback_answered(traveler)
    traveler.keys(callback, TRIGGER + "#")
    traveler.keys(callback, "4711")
    assert traveler.playing(callback) == ["location_enter_number"]
    traveler.keys(callback, "#")  # the name menu's key does nothing for this kind
    traveler.keys(callback, "819011112222*")
    assert traveler.playing(callback) == ["location_enter_extension"]


def test_second_trigger_during_a_long_call_is_absorbed_without_ringing_the_customer() -> None:
    # A defect: after a 120 s window a repeated trigger sent a callback INVITE, then CANCEL.
    rig = Rig()
    connected(rig)
    rig.advance(600.0)
    rig.trigger(ring=1.0)
    assert [c.number for c in rig.calls_out].count("+" + CUSTOMER) == 1
    second = rig.store.cdrs_of(LegKind.TRIGGER)[-1]
    assert second.cause_text.endswith("a callback was already under way")
    assert session_state(rig) is CallState.CONNECTED


def test_another_trigger_number_of_the_same_account_is_absorbed_too() -> None:
    rig = Rig(accounts=[account(triggers=(TRIGGER, "815099998888"))])
    rig.trigger()
    rig.trigger("815099998888")
    assert len(rig.calls_out) == 1
    assert not rig.node.triggers.under_way("815099998888")  # nothing of its own under way


def test_long_call_keeps_its_claim_on_the_queue_row() -> None:
    # Without renewal the 300 s lease lapses mid-call and the claim loop calls back again.
    rig = Rig()
    connected(rig)
    rig.advance(CALLBACK_LEASE + LEASE_RENEWAL)
    assert rig.store.renewed and all(ids == (1,) for ids in rig.store.renewed)
    assert len(rig.calls_out) == 2  # the callback and the destination, nothing more


# --- the queue and the store ----------------------------------------------------------------


def test_due_callback_in_the_queue_is_claimed_and_placed() -> None:
    rig = Rig()
    row = rig.store.add_pending(1, due_at=WALL0 + 5.0)
    rig.advance(4.5)
    assert rig.calls_out == []
    rig.advance(1.0)
    callback = rig.last_call(CUSTOMER)
    rig.answer(callback)
    rig.hang_up(callback)
    assert rig.store.settled == [(row, "complete", None)]
    assert_all_over(rig)


def test_callback_already_open_elsewhere_is_absorbed_and_the_attempt_cancelled() -> None:
    rig = Rig(hold=[cmd.EnqueueCallback])
    rig.store.add_pending(1, due_at=WALL0 + 999)  # another node's open callback
    rig.trigger()
    callback = rig.last_call(CUSTOMER)
    rig.ring(callback)
    rig.release(cmd.EnqueueCallback)
    assert rig.requests_to(callback, "CANCEL")
    rig.reject(callback, 487)
    assert rig.store.settled == []  # not ours to settle
    rig.pump()
    assert rig.calls.sessions == {}


def test_a_failed_cdr_write_is_logged_whole(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(hold=[cmd.WriteCdr])
    rig.trigger()
    with caplog.at_level(logging.ERROR, logger="softswitch.calls"):
        rig.fail_held(cmd.WriteCdr)
    assert "CDR NOT WRITTEN" in caplog.text and TRIGGER in caplog.text


def test_call_lines_name_the_call_the_account_and_the_node(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In a cluster one call's story can span nodes: each call line says which wrote it."""
    rig = Rig(node_id="vm:4242:beef")
    with caplog.at_level(logging.INFO, logger="softswitch.calls"):
        callback_answered(rig)
    [sid] = rig.node.calls.sessions if rig.node.calls else []
    lines = [r.getMessage() for r in caplog.records if f"call={sid} " in r.getMessage()]
    assert lines, caplog.text
    assert all("account=1 node=vm:4242:beef: " in line for line in lines), lines


def test_store_failure_while_rating_gives_a_prompt_not_silence() -> None:
    rig = Rig(hold=[cmd.QuoteRate])
    callback = callback_answered(rig)
    rig.keys(callback, DESTINATION + "*")
    rig.fail_held(cmd.QuoteRate)
    assert rig.playing(callback) == ["invalid_number", "dial_prompt"]


def test_suspended_account_gets_no_callback_but_its_trigger_is_on_record() -> None:
    rig = Rig(accounts=[account(status=AccountStatus.SUSPENDED)])
    rig.trigger()
    assert rig.calls_out == []
    assert len(rig.store.cdrs_of(LegKind.TRIGGER)) == 1
    assert not rig.node.triggers.under_way(TRIGGER)


def test_static_trigger_has_no_callback_and_absorbs_repeats_for_a_while() -> None:
    rig = Rig(trigger_numbers=("815011112222",))
    rig.trigger("815011112222")
    assert rig.node.triggers.under_way("815011112222")
    rig.advance(STATIC_TRIGGER_HOLD + 1)
    assert not rig.node.triggers.under_way("815011112222")
    assert rig.calls_out == [] and rig.store.cdrs == []


def test_an_account_without_a_valid_location_is_not_called() -> None:
    rig = Rig(accounts=[account(location="0312345678")])
    rig.trigger()
    assert rig.calls_out == []
    assert not rig.node.triggers.under_way(TRIGGER)


# --- shutdown in every state ------------------------------------------------------------------


def _calling(rig: Rig) -> None:
    rig.trigger()
    rig.ring(rig.last_call(CUSTOMER))


def _collecting(rig: Rig) -> None:
    rig.prompt_done(callback_answered(rig))


def _authorizing(rig: Rig) -> None:
    callback = callback_answered(rig)
    rig.keys(callback, DESTINATION + "*")


def _dialling(rig: Rig) -> None:
    _authorizing(rig)
    rig.ring(rig.last_call(DESTINATION))


def _busy(rig: Rig) -> None:
    _authorizing(rig)
    rig.reject(rig.last_call(DESTINATION), 486)


def _connected(rig: Rig) -> None:
    connected(rig)


def _consulting(rig: Rig) -> None:
    callback, _ = connected(rig)
    rig.advance(3.0)
    rig.keys(callback, "00", gap=0.4)


def _conference(rig: Rig) -> None:
    _consulting(rig)
    rig.answer(rig.last_call("customer-service"))


def _ending(rig: Rig) -> None:
    callback_answered(rig)
    rig.advance(121.0)


@pytest.mark.parametrize(
    ("drive", "state"),
    [
        (_calling, CallState.CALLING_BACK),
        (_collecting, CallState.COLLECTING),
        (_dialling, CallState.DIALLING),
        (_busy, CallState.DEST_BUSY),
        (_connected, CallState.CONNECTED),
        (_consulting, CallState.CONSULTING),
        (_conference, CallState.CONFERENCE),
        (_ending, CallState.ENDING),
    ],
)
def test_stopping_the_node_ends_every_call_with_its_records(drive, state) -> None:  # type: ignore[no-untyped-def]
    rig = Rig()
    drive(rig)
    assert session_state(rig) is state
    placed = list(rig.calls_out)
    rig.node.stop(rig.now)
    rig.pump()
    for call in placed:
        # Every leg still up is released: CANCEL while it rings, BYE once answered.
        if call.status is None:
            assert rig.requests_to(call, "CANCEL"), call.number
        elif call.status == 200 and not call.hung_up:
            assert rig.requests_to(call, "BYE"), call.number
    recorded = len(rig.store.cdrs) - len(rig.store.cdrs_of(LegKind.TRIGGER))
    assert recorded == len(placed)  # a CDR for every leg placed
    # A customer never reached gets the callback later (the row goes back to the queue).
    reached = state not in (CallState.CALLING_BACK,)
    assert rig.store.settled == [
        (1, "complete", None) if reached else (1, "reschedule", "node_stopping")
    ]
    assert_all_over(rig)


def test_stopping_while_authorizing_waits_for_the_answer() -> None:
    rig = Rig(hold=[cmd.QuoteRate])
    _authorizing(rig)
    rig.node.stop(rig.now)
    rig.pump()
    assert not rig.calls.idle  # the store still owes an answer
    rig.release()
    assert_all_over(rig)


def test_claims_made_while_stopping_go_back_to_the_queue() -> None:
    rig = Rig(hold=[cmd.ClaimCallbacks])
    rig.store.add_pending(1, due_at=WALL0)
    rig.advance(1.5)
    rig.node.stop(rig.now)
    rig.release()
    assert rig.store.settled == [(1, "reschedule", "node stopping")]
    assert rig.calls_out == []


def test_a_trigger_while_stopping_is_queued_for_later_not_lost() -> None:
    rig = Rig()
    rig.node.stop(rig.now)
    rig.trigger()
    assert rig.calls_out == []
    [row] = rig.store.queue.values()
    assert row.state is CallbackState.PENDING and row.claimed_by is None
    assert len(rig.store.cdrs_of(LegKind.TRIGGER)) == 1


def test_web_trigger_takes_the_phone_triggers_path() -> None:
    rig = Rig()
    assert rig.calls.callback_requested("815000000000", rig.now, source="web") == "unknown"
    assert rig.calls.callback_requested(TRIGGER, rig.now, source="web") == "scheduled"
    rig.pump()
    callback = rig.last_call(CUSTOMER)
    assert rig.calls.callback_requested(TRIGGER, rig.now, source="mail") == "absorbed"
    rig.trigger()  # the phone's trigger is absorbed the same way
    assert len(rig.calls_out) == 1
    assert rig.store.cdrs_of(LegKind.TRIGGER)[-1].cause_text.endswith("already under way")
    rig.answer(callback)
    assert rig.playing(callback) == ["dial_prompt"]


def test_web_trigger_with_a_destination_dials_it_on_answer() -> None:
    rig = Rig()
    assert (
        rig.calls.callback_requested(TRIGGER, rig.now, source="web", destination=DESTINATION)
        == "scheduled"
    )
    rig.pump()
    callback = rig.last_call(CUSTOMER)
    rig.answer(callback)
    destination = rig.last_call(DESTINATION)
    rig.answer(destination)
    assert rig.media.legs[callback.leg_id].bridged_to == destination.leg_id
    assert not any(isinstance(c, cmd.PlayMedia) and "dial_prompt" in str(c) for c in rig.commands)


def test_web_trigger_for_a_suspended_account_is_refused() -> None:
    rig = Rig(accounts=[account(status=AccountStatus.SUSPENDED)])
    assert rig.calls.callback_requested(TRIGGER, rig.now, source="web") == "refused"
    assert not rig.node.triggers.under_way(TRIGGER)


def test_live_calls_as_the_operators_see_them_and_a_hang_up_by_hand() -> None:
    rig = Rig()
    callback, destination = connected(rig)
    rig.keys(callback, "5", source="inband")
    [info] = rig.calls.calls(rig.now)
    assert (info.account_id, info.trigger, info.state, info.key_source) == (
        1,
        TRIGGER,
        "CONNECTED",
        "inband",
    )
    assert {(leg.name, leg.state) for leg in info.legs} == {
        ("callback", "answered"),
        ("destination", "answered"),
    }
    assert info.duration > 0 and info.started_at >= WALL0
    assert not rig.calls.hang_up("nosuchid", rig.now)
    assert rig.calls.hang_up(info.sid[:8], rig.now)
    rig.pump()
    assert rig.requests_to(callback, "BYE") and rig.requests_to(destination, "BYE")
    assert {c.cause_text for c in rig.store.cdrs_of(LegKind.DESTINATION)} == {"operator_hangup"}
    assert_all_over(rig)


def test_draining_lets_live_calls_finish_and_queues_new_triggers() -> None:
    rig = Rig(
        accounts=[account(1), account(2, triggers=("815099990000",), location="819099990000")]
    )
    callback, _ = connected(rig)
    rig.calls.drain(rig.now)
    rig.trigger("815099990000", caller="819099990000")
    assert len(rig.calls_out) == 2  # no callback for the second account now
    [row] = [p for p in rig.store.queue.values() if p.account_id == 2]
    assert row.state is CallbackState.PENDING
    rig.advance(30.0)
    assert session_state(rig) is CallState.CONNECTED  # the live call goes on
    rig.keys(callback, "**")
    assert_all_over(rig)


def test_hotline_calls_the_customer_and_the_destination_at_once() -> None:
    rig = Rig(accounts=[account(kind=AccountKind.HOTLINE, hotline=DESTINATION)])
    rig.trigger()
    callback = rig.last_call(CUSTOMER)
    destination = rig.last_call(DESTINATION)  # placed together, before anyone answered
    rig.answer(destination)
    assert rig.playing(destination) == ["ringback"]
    rig.advance(5.0)
    rig.answer(callback)
    assert rig.media.legs[callback.leg_id].bridged_to == destination.leg_id
    rig.advance(40.0)
    rig.keys(callback, "**")
    [cdr] = rig.store.cdrs_of(LegKind.DESTINATION)
    assert cdr.billed_seconds == 42  # from the join, not from the destination's answer
    assert_all_over(rig)


# --- the trigger call: early media, # and the 4-ring answer (SPEC sections 1 and 4) ----------


def test_trigger_rings_with_early_media_and_a_short_ring_still_calls_back() -> None:
    rig = Rig()
    trigger = rig.ring_trigger()
    [progress] = [r for r in rig.trigger_responses(trigger) if r.status == 183]
    assert b"m=audio" in progress.body  # our SDP: the caller hears our ringback
    assert not any(r.status == 180 for r in rig.trigger_responses(trigger))
    assert rig.media.legs[trigger.leg_id].remote == ("127.0.0.1", 41000)
    assert [getattr(i, "name", None) for i in rig.media.legs[trigger.leg_id].playing] == [
        "ringback"
    ]
    rig.advance(1.0)
    rig.trigger_request(trigger, "CANCEL")  # hung up after one ring: the free signal
    assert any(r.status == 487 for r in rig.trigger_responses(trigger))
    assert rig.media.legs[trigger.leg_id].closed
    assert rig.last_call(CUSTOMER)  # the callback, exactly as before
    [cdr] = rig.store.cdrs_of(LegKind.TRIGGER)
    assert cdr.cause_code == 487 and cdr.answer_at is None


def test_hash_in_early_media_answers_into_the_location_menu() -> None:
    rig = Rig()
    rig.store.codes[1] = "4711"
    trigger = rig.ring_trigger()
    rig.advance(2.0)
    rig.trigger_key(trigger, "#")
    [ok] = [r for r in rig.trigger_responses(trigger) if r.status == 200]
    assert ok.cseq.method == "INVITE" and b"m=audio" in ok.body
    rig.trigger_request(trigger, "ACK")
    assert rig.calls_out == []  # no callback: the customer is in the menu
    playing = rig.media.legs[trigger.leg_id].playing
    assert [p.stem for p in playing if isinstance(p, Path)] == ["security_code_enter"]
    rig.trigger_key(trigger, "4711")
    rig.trigger_key(trigger, "442071234567*")
    rig.trigger_key(trigger, "*")
    rig.trigger_key(trigger, "1")
    location = rig.store.accounts[1].location
    assert location is not None and location.number == "442071234567"
    rig.trigger_key(trigger, "1")  # call me back now
    bye = [r for r in rig.requests if r.call_id == trigger.call_id and r.method == "BYE"]
    assert bye, "the switch hangs up the trigger call"
    [cdr] = rig.store.cdrs_of(LegKind.TRIGGER)
    assert cdr.answer_at is not None and cdr.cost == 0
    assert (
        cdr.cause_text == "answered (# in the early media) into the location menu; menu_call_back"
    )
    rig.advance(1.5)
    assert rig.last_call("442071234567")  # the callback, at the new location


def test_a_caller_who_stays_on_the_line_is_answered_into_the_menu() -> None:
    rig = Rig(trigger_answer_after=20.0)
    trigger = rig.ring_trigger()
    rig.advance(19.0)
    assert not any(r.status == 200 for r in rig.trigger_responses(trigger))
    rig.advance(1.5)
    assert any(r.status == 200 for r in rig.trigger_responses(trigger))
    rig.trigger_request(trigger, "ACK")
    rig.trigger_request(trigger, "BYE")  # the caller gives up in the menu
    rig.pump()
    [cdr] = rig.store.cdrs_of(LegKind.TRIGGER)
    assert cdr.cause_text.startswith("answered (the caller stayed on the line 20 s)")
    assert cdr.cause_text.endswith("customer_hangup")
    assert rig.calls_out == [] and rig.calls.idle


def test_the_four_ring_answer_can_be_turned_off() -> None:
    rig = Rig(trigger_answer_after=0.0)
    trigger = rig.ring_trigger()
    rig.advance(21.0)
    assert any(r.status == 480 for r in rig.trigger_responses(trigger))
    assert rig.last_call(CUSTOMER)  # a trigger that rang too long still asks for a callback


def test_accounts_without_the_menu_get_plain_ringing() -> None:
    rig = Rig(accounts=[account(kind=AccountKind.HOTLINE, hotline=DESTINATION)])
    trigger = rig.ring_trigger()
    statuses = [r.status for r in rig.trigger_responses(trigger)]
    assert 180 in statuses and 183 not in statuses
    assert trigger.leg_id == ""


def test_fax_tones_from_the_destination_make_the_call_clear_channel() -> None:
    rig = Rig(accounts=[account(credit_limit=100)])
    callback, destination = connected(rig)
    rig.node.media_event(me.FaxDetected(destination.leg_id, "CED", True), rig.now)
    rig.pump()
    rig.advance(245.0)  # past the one-minute warning: nothing is played over the fax
    assert rig.playing(callback) == []
    assert session_state(rig) is CallState.CONNECTED


T38_OFFER = (
    b"v=0\r\no=- 7 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=image 40010 udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\n"
)
T38_ANSWER = T38_OFFER.replace(b"40010", b"40020")


def test_a_t38_offer_from_one_far_end_is_relayed_to_the_other() -> None:
    rig = Rig()
    callback, destination = connected(rig)
    call_id = rig.reinvite_from(destination, T38_OFFER)
    # Not answered by the switch itself: offered to the customer's side, unchanged.
    assert not [r for r in rig.responses if r.call_id == call_id and r.status == 200]
    [offer] = [r for r in rig.requests_to(callback, "INVITE") if r.to.tag is not None and r.body]
    assert offer.body == T38_OFFER
    rig.answer_request(offer, 200, T38_ANSWER)
    assert rig.requests_to(callback, "ACK")
    [answer] = [r for r in rig.responses if r.call_id == call_id and r.status == 200]
    assert answer.body == T38_ANSWER and answer.cseq.method == "INVITE"
    assert session_state(rig) is CallState.CONNECTED


def test_a_refused_t38_offer_is_refused_back_and_the_call_stays_on_g711() -> None:
    rig = Rig()
    callback, destination = connected(rig)
    call_id = rig.reinvite_from(destination, T38_OFFER)
    [offer] = [r for r in rig.requests_to(callback, "INVITE") if r.to.tag is not None and r.body]
    rig.answer_request(offer, 488)
    assert [r.status for r in rig.responses if r.call_id == call_id and r.status >= 200] == [488]
    rig.keys(callback, "**")
    assert_all_over(rig)


# --- a node that dies mid-call (issue 11) --------------------------------------------------------


def test_live_calls_are_written_down_and_forgotten_when_over() -> None:
    rig = Rig()
    callback, _ = connected(rig)
    # Written down as it happens, not at the next heartbeat: the queue row, the customer's
    # answer, the credit held and the destination's answer (billing began).
    [live] = rig.store.live.values()
    assert live.alive_at == pytest.approx(WALL0 + rig.now)  # the destination's answer, now
    assert live.node_id == "test-node" and live.callback_id == 1
    assert live.answered and live.reservation is not None
    legs = {leg["leg"]: leg for leg in json.loads(live.legs)}
    assert set(legs) == {"callback", "destination"}
    assert legs["destination"]["answer_at"] is not None
    first = live.alive_at
    rig.advance(10.0)
    [live] = rig.store.live.values()
    assert live.alive_at > first  # and refreshed while the call lasts
    rig.keys(callback, "**")
    assert rig.store.live == {}


def test_a_survivor_records_the_calls_of_a_dead_node() -> None:
    dead = Rig(node_id="node-a")
    connected(dead)
    dead.advance(60.0)  # talking; the last heartbeat is its last sign of life
    last_alive = max(c.alive_at for c in dead.store.live.values())
    # node-a is killed here (no more input), and node-b starts on the same store later.
    survivor = Rig(store=dead.store, node_id="node-b", wall0=WALL0 + 300.0)
    store = survivor.store
    cdrs = {c.leg: c for c in store.cdrs if c.cause_text.startswith("interrupted")}
    assert set(cdrs) == {LegKind.CALLBACK, LegKind.DESTINATION}
    dest = cdrs[LegKind.DESTINATION]
    assert dest.end_at == last_alive and dest.answer_at is not None
    assert dest.cost > 0 and dest.billed_seconds >= 54  # the talk time known, billed
    assert store.used == {1: dest.cost} and store.reservations == {}
    # The customer was reached: the callback is done, never placed again.
    assert store.settled == [(1, "complete", None)]
    assert store.live == {}
    survivor.advance(30.0)
    assert survivor.calls_out == []


def test_a_recovered_call_is_forgotten_only_once_its_records_are_durable() -> None:
    dead = Rig(node_id="node-a")
    connected(dead)
    dead.advance(20.0)
    # The survivor's first CDR write fails (the store hiccups): the description stays its
    # own, and the next recovery pass writes the records again.
    survivor = Rig(store=dead.store, node_id="node-b", wall0=WALL0 + 300.0, hold=(cmd.WriteCdr,))
    store = survivor.store
    assert len(survivor.held) == 2 and len(store.live) == 1
    assert store.cdrs_of(LegKind.DESTINATION) == []
    survivor.fail_held(cmd.WriteCdr)
    assert len(store.live) == 1  # kept: nothing is forgotten before its CDRs are written
    assert store.used == {1: 10} and store.settled == [(1, "complete", None)]  # done once
    survivor.advance(10.0)  # the next pass takes it again (it is this node's recovery)
    assert len(survivor.held) == 2  # only what failed: the two CDRs
    survivor.release(cmd.WriteCdr)
    assert store.live == {}
    [dest] = store.cdrs_of(LegKind.DESTINATION)
    assert dest.cause_text.startswith("interrupted") and dest.cost == 10
    assert store.used == {1: 10} and store.settled == [(1, "complete", None)]


def test_a_recovery_the_store_keeps_refusing_ends_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = Rig(node_id="node-a")
    connected(dead)
    dead.advance(20.0)
    survivor = Rig(store=dead.store, node_id="node-b", wall0=WALL0 + 300.0, hold=(cmd.WriteCdr,))
    for _ in range(RECOVERY_PASSES):
        survivor.fail_held(cmd.WriteCdr)
        survivor.advance(10.0)
    assert survivor.held == [] and survivor.store.live == {}  # given up, not retried forever
    lost = [r.message for r in caplog.records if "RECOVERY WRITE LOST" in r.message]
    assert len(lost) == 2 and all("interrupted" in m for m in lost)


def test_a_callback_not_yet_answered_when_its_node_died_is_placed_once_more() -> None:
    dead = Rig(node_id="node-a")
    dead.trigger()
    dead.ring(dead.last_call(CUSTOMER))
    dead.advance(6.0)
    survivor = Rig(store=dead.store, node_id="node-b", wall0=WALL0 + 300.0)
    [cdr] = [c for c in survivor.store.cdrs if c.leg is LegKind.CALLBACK]
    assert cdr.cause_text.startswith("interrupted") and cdr.answer_at is None
    assert survivor.store.settled == [(1, "reschedule", "interrupted")]
    survivor.advance(1.5)
    callback = survivor.last_call(CUSTOMER)  # owed again, placed by the survivor
    survivor.answer(callback)
    survivor.advance(5.0)
    assert len(survivor.calls_out) == 1
    # One customer call across both nodes: the resumed attempt keeps the call's id.
    assert len({c.call_uuid for c in survivor.store.cdrs}) == 1


# --- fraud and money limits (issue 11) ---------------------------------------------------------


def test_phone_triggers_count_in_the_shared_per_number_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(limits=LimitsConfig(per_trigger=1))
    rig.trigger()
    rig.reject(rig.last_call(CUSTOMER), 603)  # the customer refuses: over, not retried
    rig.advance(1.0)
    rig.trigger()  # a second use of the number within the window (web and mail count too)
    rig.advance(30.0)
    assert len(rig.calls_out) == 1  # no second callback
    [_, second] = rig.store.cdrs_of(LegKind.TRIGGER)
    assert "too many triggers" in second.cause_text
    events = [r.message for r in caplog.records if r.message.startswith("SECURITY rate_limited")]
    assert len(events) == 1 and "channel=phone" in events[0] and "src=-" in events[0]
    # The web page and the mail listener share the very same window.
    assert not rig.calls.limits.check("198.51.100.7", TRIGGER, rig.now).allowed


def test_the_outbound_cap_refuses_attempts_as_congestion(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig(limits=LimitsConfig(outbound_per_minute=1))
    callback = callback_answered(rig)  # the minute's one attempt
    rig.keys(callback, DESTINATION + "*")
    assert len(rig.calls_out) == 1  # the callback only: the destination is not dialled
    assert rig.playing(callback) == ["call_failed"]
    assert any("outbound call cap reached" in r.message for r in caplog.records)
    rig.prompt_done(callback)
    rig.advance(61.0)  # a minute on, the customer dials again and gets through
    rig.keys(callback, DESTINATION + "*")
    assert rig.last_call(DESTINATION) is rig.calls_out[1]


def test_the_daily_spend_cap_limits_what_a_call_may_buy() -> None:
    rig = Rig(limits=LimitsConfig(daily_spend=30))
    # Earlier today the account spent 20 (and 1000 two days ago, outside the window).
    for cost, ago in ((20, 3600.0), (1000, 2 * 86400.0)):
        rig.store.cdrs.append(
            Cdr(
                call_uuid=f"earlier-{cost}",
                leg=LegKind.DESTINATION,
                account_id=1,
                from_number=CUSTOMER,
                to_number=DESTINATION,
                setup_at=WALL0 - ago,
                end_at=WALL0 - ago + 60,
                cost=cost,
            )
        )
    _, destination = connected(rig)
    [session_id] = rig.calls.sessions
    # 10 left of the day's 30, at 20 a minute: 30 s held, though the credit would buy hours.
    assert [held for _, held in rig.store.reservations.values()] == [10]
    rig.advance(60.0)
    [cdr] = [c for c in rig.store.cdrs_of(LegKind.DESTINATION) if c.call_uuid == session_id]
    assert cdr.billed_seconds == 30 and cdr.cost == 10  # cut when the day's money ran out
    assert rig.requests_to(destination, "BYE")


def test_a_spent_daily_cap_refuses_the_call_with_the_no_credit_prompt() -> None:
    rig = Rig(limits=LimitsConfig(daily_spend=20))
    rig.store.cdrs.append(
        Cdr(
            call_uuid="earlier",
            leg=LegKind.DESTINATION,
            account_id=1,
            from_number=CUSTOMER,
            to_number=DESTINATION,
            setup_at=WALL0 - 3600.0,
            end_at=WALL0 - 3540.0,
            cost=20,
        )
    )
    callback = callback_answered(rig)
    rig.keys(callback, DESTINATION + "*")
    assert len(rig.calls_out) == 1
    assert rig.playing(callback) == ["no_credit", "dial_prompt"]  # then another number?
    assert rig.store.reservations == {}


def test_a_leg_over_before_its_node_died_is_recorded_and_charged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = Rig(node_id="node-a")
    _, destination = connected(dead)
    dead.advance(1.0)  # talking; the next heartbeat is 5 s away
    dead.hang_up(destination)  # over: its CDR written, its talk charged; the customer stays on
    [over] = dead.store.cdrs_of(LegKind.DESTINATION)
    assert dead.store.used == {1: over.cost} and dead.store.reservations == {}
    # Written down again at once: the leg and its credit hold are no longer the call's.
    [live] = dead.store.live.values()
    assert [leg["leg"] for leg in json.loads(live.legs)] == ["callback"]
    assert live.reservation is None
    dead.advance(1.0)  # at the dial prompt, the node dies (no heartbeat since)
    survivor = Rig(store=dead.store, node_id="node-b", wall0=WALL0 + 300.0)
    store = survivor.store
    # The destination once (as it ended), its talk charged once, the callback interrupted.
    assert store.cdrs_of(LegKind.DESTINATION) == [over]
    [interrupted] = [c for c in store.cdrs if c.cause_text.startswith("interrupted")]
    assert interrupted.leg is LegKind.CALLBACK
    assert store.used == {1: over.cost} and store.reservations == {}
    assert store.live == {} and store.settled == [(1, "complete", None)]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_live_call_keeps_an_ended_leg_written_down_until_its_records_are_durable() -> None:
    dead = Rig(node_id="node-a", hold=(cmd.WriteCdr, cmd.CommitCredit))
    callback, _ = connected(dead)
    dead.release(cmd.WriteCdr)  # the trigger's CDR
    dead.keys(callback, "##")  # the destination released, the customer stays on
    assert len(dead.held) == 2  # its CDR and its charge, not durable yet
    dead.advance(LIVE_HEARTBEAT + 0.5)  # a heartbeat meanwhile
    [live] = dead.store.live.values()
    assert {leg["leg"] for leg in json.loads(live.legs)} == {"callback", "destination"}
    # The node dies with the CDR unwritten: the survivor records the leg (as interrupted).
    survivor = Rig(store=dead.store, node_id="node-b", wall0=WALL0 + 300.0)
    [dest] = survivor.store.cdrs_of(LegKind.DESTINATION)
    assert dest.cause_text.startswith("interrupted") and dest.cost > 0
    assert survivor.store.used == {1: dest.cost} and survivor.store.reservations == {}
