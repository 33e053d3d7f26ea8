"""CustomerCall scenarios on a fake clock: the customer-visible rules of SPEC sections 1, 2, 7."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from softswitch import fsm
from softswitch.service.callflow import (
    CALLBACK,
    DESTINATION,
    OPERATOR,
    TABLE,
    Action,
    Authorize,
    Authorized,
    Bridge,
    CallbackAnswered,
    CallbackFailed,
    CallbackRinging,
    CallFlowConfig,
    CallFlowError,
    CallState,
    CancelTimer,
    Conference,
    CustomerCall,
    CustomerHungUp,
    DestinationAnswered,
    DestinationFailed,
    DestinationHungUp,
    DestinationRinging,
    DigitReceived,
    Event,
    FaxDetected,
    Finished,
    ForwardDigit,
    HangUp,
    OperatorAnswered,
    OperatorFailed,
    OperatorHungUp,
    OperatorRinging,
    Originate,
    Play,
    PlayTone,
    Prompt,
    PromptFinished,
    Refused,
    ResolveSpeedDial,
    RetryLater,
    SendDtmf,
    SpeedDialResolved,
    StartBilling,
    StartTimer,
    StopBilling,
    StopPlayback,
    TimerFired,
    Unbridge,
    WriteCdr,
    state_diagram,
    transitions,
)
from tests.service.driver import LOCATION, Driver, of

Handler = Callable[[CustomerCall, Event, float], list[Action]]

S = CallState
NUMBER = "81312345678"
DIAL = "+81312345678"


def authorized(max_seconds: int = 600, rate: int = 12, number: str = NUMBER) -> Authorized:
    return Authorized(number, "+" + number, rate, max_seconds)


def dial(d: Driver, number: str = NUMBER, max_seconds: int = 600) -> None:
    """From the dial prompt to a ringing destination."""
    out = d.keys(number + "*")
    assert of(out, Authorize) == [Authorize(number)]
    assert d.in_state(S.AUTHORIZING)
    out = d.send(authorized(max_seconds, number=number), after=0.05)
    [originate] = of(out, Originate)
    assert (originate.leg, originate.dial_string) == (DESTINATION, "+" + number)
    assert d.in_state(S.DIALLING)


def connected(d: Driver, max_seconds: int = 600) -> float:
    d.answered()
    dial(d, max_seconds=max_seconds)
    d.send(DestinationRinging(early_media=False), after=1.0)
    d.send(DestinationAnswered(), after=8.0)
    assert d.in_state(S.CONNECTED)
    return d.now


def last_cdr(d: Driver, leg: str) -> WriteCdr:
    return [c for c in of(d.actions, WriteCdr) if c.leg == leg][-1]


def assert_finished(d: Driver) -> None:
    """Everything ended: Finished last, no timers, billing balanced, a CDR per Originate."""
    assert d.in_state(S.ENDED)
    assert isinstance(d.actions[-1], Finished)
    assert len(of(d.actions, Finished)) == 1
    assert d.timers == {}
    assert len(of(d.actions, StartBilling)) == len(of(d.actions, StopBilling))
    originated = [(o.leg, o.attempt) for o in of(d.actions, Originate)]
    recorded = [(c.leg, c.attempt) for c in of(d.actions, WriteCdr)]
    assert sorted(originated) == sorted(recorded)


# --- the whole call ---


def test_happy_path() -> None:
    d = Driver(has_name=True, caller_id="12065550100")
    out = d.start()
    assert out == [
        Originate(CALLBACK, LOCATION, "12065550100", 1),
        StartTimer("ring", 45.0),
    ]
    d.send(CallbackRinging(), after=1.0)
    out = d.send(CallbackAnswered(), after=4.0)
    assert CancelTimer("ring") in out
    assert of(out, Play) == [Play(CALLBACK, (Prompt.NAME, Prompt.DIAL_PROMPT), barge_in=True)]
    assert d.in_state(S.ANNOUNCING)
    out = d.send(PromptFinished(), after=5.0)
    assert d.in_state(S.COLLECTING)
    assert out == [StartTimer("collect", 20.0)]

    out = d.keys("81312345678*")
    assert of(out, Authorize) == [Authorize(NUMBER)]
    out = d.send(authorized(), after=0.05)
    assert of(out, Originate) == [Originate(DESTINATION, DIAL, "12065550100", 1)]
    out = d.send(DestinationRinging(early_media=False), after=1.0)
    assert out == [PlayTone(CALLBACK, "ringback")]
    answer_at = d.now + 8.0
    out = d.send(DestinationAnswered(), after=8.0)
    assert out[:3] == [
        StopPlayback(CALLBACK),
        CancelTimer("dest_ring"),
        Bridge(CALLBACK, DESTINATION),
    ]
    assert StartBilling(answer_at) in out
    assert StartTimer("credit_warning", answer_at + 540) in out
    assert StartTimer("credit_cut", answer_at + 600) in out

    out = d.send(DigitReceived("9"), after=30.0)
    assert out == [ForwardDigit(DESTINATION, "9")]
    d.keys("**")
    cdr = last_cdr(d, DESTINATION)
    assert cdr.answer_at == answer_at
    assert cdr.end_at == pytest.approx(answer_at + 30.6)
    assert cdr.ring_at == pytest.approx(answer_at - 8.0)
    assert (cdr.billed_seconds, cdr.cost, cdr.rate) == (36, 8, 12)  # 7.2 -> 8
    assert_finished(d)


def test_star_star_in_call_releases_both_legs_and_stops_billing() -> None:
    d = Driver()
    answer_at = connected(d)
    d.send(DigitReceived("*"), after=95.0)
    out = d.send(DigitReceived("*"), after=0.3)
    release_at = answer_at + 95.3
    assert out == [
        CancelTimer("hold"),
        StopBilling(release_at),
        Unbridge(CALLBACK, DESTINATION),
        HangUp(DESTINATION, "customer_release"),
        WriteCdr(
            leg=DESTINATION,
            attempt=1,
            number=NUMBER,
            dial_string=DIAL,
            setup_at=pytest.approx(answer_at - 9.0),  # type: ignore[arg-type]
            ring_at=pytest.approx(answer_at - 8.0),  # type: ignore[arg-type]
            answer_at=answer_at,
            end_at=release_at,
            cause="customer_release",
            sip_status=None,
            billed_seconds=96,  # 30 s minimum + 11 increments of 6 s
            cost=20,  # 12/min * 96 s = 19.2, rounded up
            rate=12,
        ),
        HangUp(CALLBACK, "customer_release"),
        out[6],
        CancelTimer("credit_warning"),
        CancelTimer("credit_cut"),
        Finished("customer_release"),
    ]
    callback = out[6]
    assert isinstance(callback, WriteCdr)
    assert (callback.leg, callback.cause, callback.cost, callback.answer_at) == (
        CALLBACK,
        "customer_release",
        0,
        3.0,
    )
    assert_finished(d)


# --- callback retries ---


def test_a_retryable_failure_ends_the_session_with_a_retry_due_after_the_pause() -> None:
    d = Driver(config=CallFlowConfig(callback_retry_pause=20.0, callback_ring_timeout=45.0))
    d.start()
    out = d.send(CallbackFailed("busy", 486), after=2.0)
    assert out[0] == WriteCdr(
        CALLBACK, 1, LOCATION, LOCATION, 0.0, None, None, 2.0, "busy", 486, 0, 0, None
    )
    assert RetryLater(22.0, "busy") in out
    assert out[-1] == Finished("callback_retry")
    assert_finished(d)


def test_the_next_attempt_knows_its_number_and_the_last_one_gives_up() -> None:
    d = Driver(first_attempt=3)
    out = d.start()
    assert out[0] == Originate(CALLBACK, LOCATION, None, 3)
    d.send(CallbackRinging(), after=1.0)
    out = d.fire("ring")  # nobody answers within 45 s
    assert out[0] == HangUp(CALLBACK, "no_answer")
    assert of(out, RetryLater) == []
    assert of(out, Finished) == [Finished("callback_no_answer")]
    cdr = of(out, WriteCdr)[0]
    assert (cdr.attempt, cdr.cause, cdr.ring_at) == (3, "no_answer", 1.0)
    assert_finished(d)


def test_rejected_callback_is_not_retried() -> None:
    d = Driver()
    d.start()
    out = d.send(CallbackFailed("rejected", 603), after=1.0)
    assert of(out, Finished) == [Finished("callback_rejected")]
    assert_finished(d)


def test_answer_on_a_later_attempt() -> None:
    d = Driver(first_attempt=2)
    d.start()
    out = d.send(CallbackAnswered(), after=5.0)
    assert d.in_state(S.ANNOUNCING)
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]
    assert d.call.attempt == 2


# --- announcements ---


def test_extension_is_sent_after_a_pause_then_the_prompt() -> None:
    d = Driver(extension="1234", config=CallFlowConfig(extension_pause=2.0))
    d.start()
    out = d.send(CallbackAnswered(), after=3.0)
    assert of(out, Play) == []
    assert StartTimer("extension", 5.0) in out
    assert d.send(DigitReceived("5")) == []  # the switchboard's keys are not the customer's
    out = d.fire("extension")
    assert out == [SendDtmf(CALLBACK, "1234"), Play(CALLBACK, (Prompt.DIAL_PROMPT,))]


def test_extension_must_be_dtmf() -> None:
    with pytest.raises(ValueError):
        Driver(extension="12;x")


def test_barge_in_stops_the_prompt() -> None:
    d = Driver(has_name=True)
    d.start()
    d.send(CallbackAnswered(), after=3.0)
    out = d.send(DigitReceived("8"), after=0.5)
    assert StopPlayback(CALLBACK) in out
    assert d.in_state(S.COLLECTING)
    assert d.send(PromptFinished()) == []  # a late end of the stopped prompt changes nothing
    out = d.keys("1312345678*")
    assert of(out, Authorize) == [Authorize(NUMBER)]
    assert of(out, StopPlayback) == []


def test_hash_star_replays_the_dial_prompt() -> None:
    d = Driver()
    d.answered()
    out = d.keys("8131#*")
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]
    assert of(out, Authorize) == []
    assert "collect" not in d.timers
    out = d.send(PromptFinished(), after=3.0)
    assert of(out, StartTimer) == [StartTimer("collect", d.now + 10.0)]
    out = d.keys(NUMBER + "*")
    assert of(out, Authorize) == [Authorize(NUMBER)]


def test_inter_digit_timeout_replays_the_prompt() -> None:
    d = Driver()
    d.answered()
    d.keys("813")
    out = d.fire("collect")
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]
    assert d.call.collector.entry == ""


def test_silent_callback_ends_cleanly_after_two_minutes() -> None:
    d = Driver()
    d.answered()
    answered_at = 3.0
    prompts = 1
    while (due := min(d.timers, key=d.timers.__getitem__)) != "silence":
        out = d.fire(due)
        prompts += len(of(out, Play))
        if of(out, Play):
            d.send(PromptFinished(), after=4.0)
    out = d.fire("silence")
    assert d.now == answered_at + 120.0
    assert prompts >= 5  # the prompt kept being replayed
    assert of(out, Play) == [Play(CALLBACK, (Prompt.GOODBYE,), barge_in=False)]
    assert d.in_state(S.ENDING)
    out = d.send(PromptFinished(), after=2.0)
    assert out[0] == HangUp(CALLBACK, "silence")
    assert_finished(d)


def test_goodbye_that_never_finishes_still_ends() -> None:
    d = Driver()
    d.answered()
    d.fire("silence")
    out = d.fire("ending")
    assert out[0] == HangUp(CALLBACK, "silence")
    assert_finished(d)


# --- speed dial, customer service, location change ---


def test_speed_dial() -> None:
    d = Driver(config=CallFlowConfig(speed_dial_timeout=3.0))
    d.answered()
    d.keys("03")
    out = d.fire("collect")
    assert of(out, ResolveSpeedDial) == [ResolveSpeedDial("03")]
    assert d.in_state(S.AUTHORIZING)
    out = d.send(SpeedDialResolved("4930123456"), after=0.01)
    assert out == [Authorize("4930123456")]
    d.send(authorized(number="4930123456"), after=0.05)
    assert d.in_state(S.DIALLING)


def test_speed_dial_with_star_and_four_keys() -> None:
    d = Driver()
    d.answered()
    assert of(d.keys("087*"), ResolveSpeedDial) == [ResolveSpeedDial("087")]
    d.send(SpeedDialResolved(None))
    assert d.in_state(S.COLLECTING)
    assert of(d.actions, Play)[-1] == Play(
        CALLBACK, (Prompt.UNKNOWN_SPEED_DIAL, Prompt.DIAL_PROMPT)
    )
    assert of(d.keys("0871"), ResolveSpeedDial) == [ResolveSpeedDial("0871")]


def test_double_zero_at_the_prompt_reaches_customer_service() -> None:
    d = Driver(operator="sip:care@127.0.0.1")
    d.answered()
    out = d.keys("00")
    assert d.in_state(S.OPERATOR)
    assert Play(CALLBACK, (Prompt.CONNECTING_CUSTOMER_SERVICE,), barge_in=False) in out
    assert Originate(OPERATOR, "sip:care@127.0.0.1", None) in out
    assert d.send(OperatorRinging(), after=0.5) == []  # announcement plays on
    assert d.send(PromptFinished(), after=2.0) == [PlayTone(CALLBACK, "ringback")]
    out = d.send(OperatorAnswered(), after=5.0)
    assert Bridge(CALLBACK, OPERATOR) in out
    assert of(out, StartBilling) == []
    assert of(d.keys("123"), ForwardDigit) == [ForwardDigit(OPERATOR, k) for k in "123"]
    out = d.send(OperatorHungUp(), after=60.0)
    assert last_cdr(d, OPERATOR).cause == "normal"
    assert last_cdr(d, OPERATOR).cost == 0
    assert d.in_state(S.COLLECTING)
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]


def test_destination_events_without_a_destination_are_errors() -> None:
    d = Driver()
    d.answered()
    d.keys("00")
    with pytest.raises(CallFlowError):
        d.send(DestinationAnswered())


def test_unreachable_customer_service_returns_to_the_prompt() -> None:
    d = Driver()
    d.answered()
    d.keys("00")
    out = d.send(OperatorFailed("congestion", 503), after=1.0)
    assert of(out, Play)[-1] == Play(CALLBACK, (Prompt.CALL_FAILED, Prompt.DIAL_PROMPT))
    assert d.in_state(S.COLLECTING)


def test_own_trigger_number_is_answered_with_a_prompt_and_the_dial_prompt() -> None:
    # The Location change menu does not exist yet: the customer must hear why, then be able
    # to dial, never be left on a silent open line (a defect: the leg stayed up, silent).
    d = Driver(trigger_numbers=["12065550100"])
    d.answered()
    out = d.keys("12065550100#")
    assert of(out, HangUp) == []
    assert of(out, Play) == [Play(CALLBACK, (Prompt.LOCATION_UNAVAILABLE, Prompt.DIAL_PROMPT))]
    assert d.in_state(S.COLLECTING)
    assert of(out, Finished) == []
    d.send(PromptFinished(), after=5.0)
    assert "collect" in d.timers
    dial(d)


def test_star_star_at_the_prompt_ends() -> None:
    d = Driver()
    d.answered()
    out = d.keys("**")
    assert HangUp(CALLBACK, "customer_release") in out
    assert_finished(d)


# --- refusals ---


@pytest.mark.parametrize(
    ("reason", "prompt"),
    [
        ("invalid", "invalid_number"),
        ("blocked", "blocked_number"),
        ("no_credit", "no_credit"),
        ("over_limit", "over_limit"),
    ],
)
def test_refusal_plays_a_prompt_then_the_dial_prompt(reason: str, prompt: str) -> None:
    d = Driver()
    d.answered()
    d.keys(NUMBER + "*")
    out = d.send(Refused(reason), after=0.05)
    assert of(out, Play) == [Play(CALLBACK, (Prompt(prompt), Prompt.DIAL_PROMPT))]
    assert d.in_state(S.COLLECTING)
    d.send(PromptFinished(), after=5.0)
    dial(d)


def test_no_talk_time_is_no_credit() -> None:
    d = Driver()
    d.answered()
    d.keys(NUMBER + "*")
    out = d.send(authorized(max_seconds=0))
    assert of(out, Play) == [Play(CALLBACK, (Prompt.NO_CREDIT, Prompt.DIAL_PROMPT))]
    assert of(out, Originate) == []


def test_garbage_entry_is_refused_without_asking_the_runtime() -> None:
    d = Driver()
    d.answered()
    out = d.keys("81#3*")
    assert of(out, Authorize) == []
    assert of(out, Play) == [Play(CALLBACK, (Prompt.INVALID_NUMBER, Prompt.DIAL_PROMPT))]


def test_unknown_refusal_reason() -> None:
    with pytest.raises(ValueError):
        Refused("because")


# --- destination ringing and busy ---


def test_early_media_is_relayed_instead_of_local_ringback() -> None:
    d = Driver()
    d.answered()
    dial(d)
    out = d.send(DestinationRinging(early_media=True), after=1.0)
    assert out == [Bridge(CALLBACK, DESTINATION, early_media=True)]
    out = d.send(DestinationAnswered(), after=5.0)
    assert Bridge(CALLBACK, DESTINATION) in out
    assert of(out, StopPlayback) == []


def test_ringback_then_early_media() -> None:
    d = Driver()
    d.answered()
    dial(d)
    d.send(DestinationRinging(), after=1.0)
    out = d.send(DestinationRinging(early_media=True), after=1.0)
    assert out == [StopPlayback(CALLBACK), Bridge(CALLBACK, DESTINATION, early_media=True)]


def busy(d: Driver) -> None:
    d.answered()
    dial(d)
    d.send(DestinationRinging(), after=1.0)
    out = d.send(DestinationFailed("busy", 486), after=2.0)
    assert out[0] == StopPlayback(CALLBACK)
    assert PlayTone(CALLBACK, "busy") in out
    cdr = last_cdr(d, DESTINATION)
    assert (cdr.cause, cdr.sip_status, cdr.billed_seconds, cdr.cost) == ("busy", 486, 0, 0)
    assert d.in_state(S.DEST_BUSY)


def test_busy_then_redial() -> None:
    d = Driver()
    busy(d)
    out = d.keys("*#")
    assert of(out, Authorize) == [Authorize(NUMBER)]
    assert StopPlayback(CALLBACK) in out
    assert d.in_state(S.AUTHORIZING)
    d.send(authorized())
    assert [o.leg for o in of(d.actions, Originate)] == [CALLBACK, DESTINATION, DESTINATION]


def test_busy_then_new_number() -> None:
    d = Driver()
    busy(d)
    out = d.keys("##")
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]
    assert d.in_state(S.COLLECTING)


def test_busy_then_end() -> None:
    d = Driver()
    busy(d)
    d.keys("**")
    assert_finished(d)


def test_busy_times_out_to_the_prompt() -> None:
    d = Driver()
    busy(d)
    d.keys("5")  # not a command: ignored
    out = d.fire("busy")
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]


def test_destination_no_answer() -> None:
    d = Driver(config=CallFlowConfig(destination_ring_timeout=60.0))
    d.answered()
    dial(d)
    d.send(DestinationRinging(), after=1.0)
    out = d.fire("dest_ring")
    assert HangUp(DESTINATION, "no_answer") in out
    assert Play(CALLBACK, (Prompt.NO_ANSWER,)) in out
    assert d.in_state(S.DEST_BUSY)


def test_new_number_while_ringing() -> None:
    d = Driver()
    d.answered()
    dial(d)
    d.send(DestinationRinging(), after=1.0)
    out = d.keys("##")
    assert HangUp(DESTINATION, "new_number") in out
    assert d.in_state(S.COLLECTING)
    assert of(out, ForwardDigit) == []


# --- in-call commands and digit forwarding ---


def test_new_number_in_call() -> None:
    d = Driver()
    connected(d)
    out = d.keys("##")
    assert StopBilling(d.now) in out
    assert HangUp(DESTINATION, "new_number") in out
    assert of(out, ForwardDigit) == []
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]
    assert d.in_state(S.COLLECTING)
    dial(d, "12025550123")
    assert of(d.actions, Originate)[-1] == Originate(DESTINATION, "+12025550123", None, 2)
    d.send(DestinationFailed("rejected", 403), after=2.0)
    assert [c.attempt for c in of(d.actions, WriteCdr) if c.leg == DESTINATION] == [1, 2]


def test_double_zero_in_call_holds_the_destination_and_calls_customer_service() -> None:
    d = Driver()
    connected(d)
    d.now += 5.0  # a pause before the command
    out = d.keys("00", gap=0.4)
    assert of(out, ForwardDigit) == [ForwardDigit(DESTINATION, "0")]  # the first 0 went at once
    # The destination is not lost: held (still billed) while customer service is called.
    assert of(out, HangUp) == [] and of(out, StopBilling) == []
    assert Unbridge(CALLBACK, DESTINATION) in out
    assert Originate(OPERATOR, "customer-service", None, 1) in out
    assert d.in_state(S.CONSULTING)


def test_zeros_inside_a_bank_menu_entry_are_forwarded() -> None:
    d = Driver()
    connected(d)
    out = d.keys("1005", gap=0.3)
    assert of(out, ForwardDigit) == [ForwardDigit(DESTINATION, k) for k in "1005"]
    assert d.in_state(S.CONNECTED)
    out = d.keys("0", gap=5.0) + d.keys("0", gap=1.5)  # too slow to be a command
    assert len(of(out, ForwardDigit)) == 2
    assert d.in_state(S.CONNECTED)


def test_star_then_digit_forwards_both_in_order() -> None:
    d = Driver()
    connected(d)
    out = d.send(DigitReceived("*"), after=2.0)
    assert out == [StartTimer("hold", d.now + 1.0)]
    out = d.send(DigitReceived("1"), after=0.4)
    assert out == [
        CancelTimer("hold"),
        ForwardDigit(DESTINATION, "*"),
        ForwardDigit(DESTINATION, "1"),
    ]


def test_hash_alone_is_forwarded_after_the_hold_back() -> None:
    d = Driver()
    connected(d)
    d.send(DigitReceived("#"), after=2.0)
    out = d.fire("hold")
    assert out == [ForwardDigit(DESTINATION, "#")]
    assert d.in_state(S.CONNECTED)


def test_hash_star_in_call_is_forwarded_in_order() -> None:
    d = Driver()
    connected(d)
    d.keys("5#*")
    d.fire("hold")
    assert [f.digit for f in of(d.actions, ForwardDigit)] == ["5", "#", "*"]


def test_digits_go_through_at_once() -> None:
    d = Driver()
    connected(d)
    assert d.send(DigitReceived("7"), after=1.0) == [ForwardDigit(DESTINATION, "7")]


def test_destination_hangs_up_back_to_the_prompt_then_idle_end() -> None:
    d = Driver(config=CallFlowConfig(after_call_idle=30.0))
    answer_at = connected(d)
    out = d.send(DestinationHungUp(), after=61.0)
    assert out[:2] == [StopBilling(answer_at + 61.0), Unbridge(CALLBACK, DESTINATION)]
    assert of(out, HangUp) == []
    cdr = last_cdr(d, DESTINATION)
    assert (cdr.cause, cdr.billed_seconds, cdr.cost) == ("normal", 66, 14)  # 13.2 -> 14
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]
    assert d.timers["silence"] == d.now + 30.0
    d.fire("silence")
    d.send(PromptFinished(), after=2.0)
    assert_finished(d)


# --- credit ---


def test_credit_warning_and_cut() -> None:
    d = Driver()
    answer_at = connected(d, max_seconds=90)
    assert d.timers["credit_warning"] == answer_at + 30
    out = d.fire("credit_warning")
    assert out == [Play(CALLBACK, (Prompt.ONE_MINUTE_WARNING,), barge_in=False, mix=True)]
    out = d.fire("credit_cut")
    assert d.now == answer_at + 90
    assert StopBilling(answer_at + 90) in out
    assert HangUp(DESTINATION, "credit_exhausted") in out
    cdr = last_cdr(d, DESTINATION)
    assert (cdr.billed_seconds, cdr.cost) == (90, 18)
    assert of(out, Play) == [Play(CALLBACK, (Prompt.NO_CREDIT, Prompt.DIAL_PROMPT))]
    assert d.in_state(S.COLLECTING)


def test_short_credit_warns_at_once() -> None:
    d = Driver()
    answer_at = connected(d, max_seconds=30)
    assert d.timers["credit_warning"] == answer_at


# --- hotline / preset destination ---


def test_hotline_rings_the_customer_and_the_destination_at_once() -> None:
    # Guide section 10: the callback and the preset destination are placed together.
    d = Driver(preset_destination="12025550123")
    out = d.start()
    assert out == [
        Originate(CALLBACK, LOCATION, None, 1),
        StartTimer("ring", 45.0),
        Authorize("12025550123"),
    ]
    assert d.in_state(S.HOTLINE)
    out = d.send(authorized(number="12025550123"), after=0.05)
    assert of(out, Originate) == [Originate(DESTINATION, "+12025550123", None, 1)]
    d.send(DestinationRinging(), after=1.0)
    out = d.send(CallbackAnswered(), after=2.0)
    assert d.in_state(S.DIALLING)
    assert of(out, PlayTone) == [PlayTone(CALLBACK, "ringback")]
    answer_at = d.now + 3.0
    out = d.send(DestinationAnswered(), after=3.0)
    assert Bridge(CALLBACK, DESTINATION) in out and StartBilling(answer_at) in out


def test_hotline_destination_answering_first_hears_ringback_and_is_billed_from_the_join() -> None:
    d = Driver(preset_destination="12025550123")
    d.start()
    d.send(authorized(number="12025550123"), after=0.05)
    out = d.send(DestinationAnswered(), after=4.0)
    assert out == [CancelTimer("dest_ring"), PlayTone(DESTINATION, "ringback")]
    assert d.in_state(S.HOTLINE)
    joined = d.now + 6.0
    out = d.send(CallbackAnswered(), after=6.0)
    assert d.in_state(S.CONNECTED)
    assert StopPlayback(DESTINATION) in out
    assert Bridge(CALLBACK, DESTINATION) in out and StartBilling(joined) in out
    d.keys("**", gap=10.0)
    cdr = last_cdr(d, DESTINATION)
    assert cdr.answer_at == pytest.approx(4.05)
    assert cdr.billed_seconds == 30  # 20.3 s from the join, not 26 s from the answer
    assert_finished(d)


def test_hotline_destination_failing_first_is_told_to_the_customer_on_answer() -> None:
    d = Driver(preset_destination="12025550123")
    d.start()
    d.send(authorized(number="12025550123"), after=0.05)
    d.send(DestinationFailed("busy", 486), after=1.0)
    assert d.in_state(S.HOTLINE)
    out = d.send(CallbackAnswered(), after=2.0)
    assert d.in_state(S.DEST_BUSY)
    assert of(out, PlayTone) == [PlayTone(CALLBACK, "busy")]
    out = d.keys("*#")
    assert Authorize("12025550123") in out


def test_hotline_customer_not_reached_releases_the_destination() -> None:
    d = Driver(preset_destination="12025550123")
    d.start()
    d.send(authorized(number="12025550123"), after=0.05)
    d.send(DestinationAnswered(), after=2.0)
    out = d.send(CallbackFailed("busy", 486), after=1.0)
    assert HangUp(DESTINATION, "customer_unreachable") in out
    assert RetryLater(d.now + 20.0, "busy") in out
    assert last_cdr(d, DESTINATION).cost == 0
    assert_finished(d)


def test_hotline_with_extension() -> None:
    d = Driver(preset_destination="12025550123", extension="305")
    d.start()
    d.send(authorized(number="12025550123"), after=0.05)
    d.send(DestinationRinging(), after=1.0)
    out = d.send(CallbackAnswered(), after=3.0)
    assert out[1] == SendDtmf(CALLBACK, "305")


def test_refused_hotline_falls_back_to_the_dial_prompt() -> None:
    d = Driver(preset_destination="12025550123")
    d.start()
    d.send(CallbackAnswered(), after=3.0)
    out = d.send(Refused("no_credit"))
    assert of(out, Play) == [Play(CALLBACK, (Prompt.NO_CREDIT, Prompt.DIAL_PROMPT))]


# --- the customer hangs up, in every state ---


def to_calling_back(d: Driver) -> None:
    d.start()
    d.send(CallbackRinging(), after=1.0)


def to_announcing(d: Driver) -> None:
    d.start()
    d.send(CallbackAnswered(), after=1.0)


def to_collecting(d: Driver) -> None:
    d.answered()
    d.keys("813")


def to_authorizing(d: Driver) -> None:
    d.answered()
    d.keys(NUMBER + "*")


def to_dialling(d: Driver) -> None:
    d.answered()
    dial(d)
    d.send(DestinationRinging(early_media=True), after=1.0)


def to_busy(d: Driver) -> None:
    busy(d)


def to_connected(d: Driver) -> None:
    connected(d)
    d.keys("*")


def to_operator(d: Driver) -> None:
    d.answered()
    d.keys("00")
    d.send(OperatorAnswered(), after=3.0)


def to_ending(d: Driver) -> None:
    d.answered()
    d.fire("silence")


@pytest.mark.parametrize(
    ("drive", "state"),
    [
        (to_calling_back, S.CALLING_BACK),
        (to_announcing, S.ANNOUNCING),
        (to_collecting, S.COLLECTING),
        (to_authorizing, S.AUTHORIZING),
        (to_dialling, S.DIALLING),
        (to_busy, S.DEST_BUSY),
        (to_connected, S.CONNECTED),
        (to_operator, S.OPERATOR),
        (to_ending, S.ENDING),
    ],
)
def test_customer_hangs_up_in_every_state(
    drive: Callable[[Driver], None], state: CallState
) -> None:
    d = Driver()
    drive(d)
    assert d.state is state
    peer_live = d.call._dest is not None or d.call._operator is not None
    out = d.send(CustomerHungUp(), after=1.0)
    assert_finished(d)
    hung = [h.leg for h in of(out, HangUp)]
    assert all(h.reason == "customer_hangup" for h in of(out, HangUp))
    assert CALLBACK not in hung or state is S.CALLING_BACK
    if peer_live:
        assert hung[0] in (DESTINATION, OPERATOR)
    assert all(c.end_at == d.now for c in of(out, WriteCdr))
    with pytest.raises(CallFlowError):
        d.send(CustomerHungUp())


# --- the table is strict ---


def test_events_without_an_entry_are_errors_and_change_nothing() -> None:
    d = Driver()
    d.answered()
    before = (d.state, dict(d.call.armed_timers))
    for event in (
        DestinationAnswered(),
        CallbackAnswered(),
        Authorized(NUMBER, DIAL, 12, 60),
        SpeedDialResolved("1"),
        TimerFired("credit_cut"),  # not armed
    ):
        with pytest.raises(CallFlowError):
            d.call.handle(event, d.now)
        assert (d.state, dict(d.call.armed_timers)) == before


def test_answers_must_match_questions() -> None:
    d = Driver()
    d.answered()
    d.keys(NUMBER + "*")
    with pytest.raises(CallFlowError):
        d.send(SpeedDialResolved("4930123456"))
    d2 = Driver()
    d2.answered()
    d2.keys("03*")
    with pytest.raises(CallFlowError):
        d2.send(authorized())


def test_start_once_and_before_events() -> None:
    d = Driver()
    with pytest.raises(CallFlowError):
        d.send(CallbackAnswered())
    d.start()
    with pytest.raises(CallFlowError):
        d.start()


def test_malformed_events() -> None:
    for make in (
        lambda: DigitReceived("x"),
        lambda: DigitReceived("12"),
        lambda: CallbackFailed("bored"),
        lambda: DestinationFailed("maybe"),
    ):
        with pytest.raises(ValueError):
            make()


def test_every_state_but_ended_accepts_customer_hangup() -> None:
    pairs = set(transitions())
    for state in CallState:
        assert ((state, "CustomerHungUp") in pairs) is (state is not S.ENDED)


# --- customer service joins the call (00 during a call) ---


def consulting(d: Driver) -> float:
    answer_at = connected(d)
    d.now += 5.0
    d.keys("00", gap=0.4)
    assert d.in_state(S.CONSULTING)
    return answer_at


def test_operator_answers_and_the_three_are_conferenced() -> None:
    d = Driver()
    consulting(d)
    assert d.send(OperatorRinging(), after=0.5) == []  # "connecting customer service" plays on
    assert d.send(PromptFinished(), after=2.0) == [PlayTone(CALLBACK, "ringback")]
    out = d.send(OperatorAnswered(), after=4.0)
    assert out == [
        StopPlayback(CALLBACK),
        CancelTimer("operator_ring"),
        Conference((CALLBACK, DESTINATION, OPERATOR)),
    ]
    assert d.in_state(S.CONFERENCE)
    # The customer's keys still reach the destination (bank menus), not customer service.
    assert d.send(DigitReceived("4"), after=1.0) == [ForwardDigit(DESTINATION, "4")]
    out = d.send(OperatorHungUp(), after=30.0)
    assert out[-1] == Bridge(CALLBACK, DESTINATION)
    assert Unbridge(CALLBACK, "conference") in out
    assert last_cdr(d, OPERATOR).cause == "normal"
    assert d.in_state(S.CONNECTED)
    out = d.keys("**")
    assert last_cdr(d, DESTINATION).cause == "customer_release"
    assert_finished(d)


def test_destination_leaving_the_conference_leaves_customer_service() -> None:
    d = Driver()
    consulting(d)
    d.send(OperatorAnswered(), after=4.0)
    out = d.send(DestinationHungUp(), after=10.0)
    assert StopBilling(d.now) in out
    assert Bridge(CALLBACK, OPERATOR) in out
    assert CancelTimer("credit_cut") in out
    assert d.in_state(S.OPERATOR)
    assert last_cdr(d, DESTINATION).cost > 0
    out = d.send(OperatorHungUp(), after=10.0)
    assert d.in_state(S.COLLECTING)
    assert of(out, Play) == [Play(CALLBACK, (Prompt.DIAL_PROMPT,))]


def test_customer_service_unreachable_returns_to_the_destination() -> None:
    d = Driver()
    consulting(d)
    out = d.send(OperatorFailed("busy", 486), after=2.0)
    assert Bridge(CALLBACK, DESTINATION) in out
    assert Play(CALLBACK, (Prompt.CALL_FAILED,), barge_in=False, mix=True) in out
    assert d.in_state(S.CONNECTED)
    assert last_cdr(d, OPERATOR).sip_status == 486
    assert {"credit_warning", "credit_cut"} <= set(d.timers)


def test_customer_service_not_answering_returns_to_the_destination() -> None:
    d = Driver()
    consulting(d)
    out = d.fire("operator_ring")
    assert HangUp(OPERATOR, "no_answer") in out
    assert d.in_state(S.CONNECTED)


def test_credit_runs_out_while_customer_service_is_called() -> None:
    d = Driver()
    connected(d, max_seconds=120)
    d.now += 5.0
    d.keys("00", gap=0.4)
    out = d.fire("credit_cut")
    assert HangUp(DESTINATION, "credit_exhausted") in out
    assert d.in_state(S.OPERATOR)
    assert of(d.actions, StartBilling) and len(of(d.actions, StopBilling)) == 1


def test_new_number_from_the_conference_releases_both() -> None:
    d = Driver()
    consulting(d)
    d.send(OperatorAnswered(), after=4.0)
    out = d.keys("##")
    assert {h.leg for h in of(out, HangUp)} == {DESTINATION, OPERATOR}
    assert Unbridge(CALLBACK, "conference") in out
    assert d.in_state(S.COLLECTING)


# --- the table itself ---


def test_every_state_is_reachable_and_drawn() -> None:
    assert TABLE.reachable() == TABLE.states() == frozenset(CallState)
    diagram = state_diagram()
    for state in CallState:
        assert state.name in diagram
    assert "CONNECTED --> CONSULTING: DigitReceived" in diagram


def test_a_handler_may_not_move_where_its_entry_does_not_lead() -> None:
    d = Driver()
    d.start()
    broken: fsm.Table[CallState, object, Handler] = fsm.Table(
        "broken",
        {(S.CALLING_BACK, CallbackAnswered): (CustomerCall._on_callback_answered, S.ENDED)},
        initial=S.CALLING_BACK,
        error=CallFlowError,
    )
    transition = broken.fire(S.CALLING_BACK, CallbackAnswered)
    d.call._transition, d.call._input = transition, CallbackAnswered
    with pytest.raises(CallFlowError, match="may lead to ENDED, not ANNOUNCING"):
        d.call._set_state(S.ANNOUNCING)


# --- fax and modem (SPEC section 6) ---


def test_fax_tones_silence_the_credit_warning_and_hash_hash_still_works() -> None:
    d = Driver()
    connected(d, max_seconds=120)
    assert d.send(FaxDetected("CNG"), after=5.0) == []
    assert d.fire("credit_warning") == []  # no tone over the fax
    out = d.keys("##")  # RFC 4733 keys still reach the service: the next fax destination
    assert HangUp(DESTINATION, "new_number") in out
    assert d.in_state(S.COLLECTING)
