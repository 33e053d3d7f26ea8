"""Random event sequences against CustomerCall (Hypothesis).

Whatever the runtime reports, in any order: the machine either accepts the event or raises
CallFlowError and changes nothing; only the timers of the current state are armed; billing
starts and stops in pairs and runs only while CONNECTED; Finished comes once, last. A
CustomerHungUp in any live state ends the session with a CDR for every leg it originated.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.service.callflow import (
    TIMERS_IN,
    Abort,
    Authorized,
    CallbackAnswered,
    CallbackFailed,
    CallbackRinging,
    CallFlowConfig,
    CallFlowError,
    CallState,
    CustomerHungUp,
    DestinationAnswered,
    DestinationFailed,
    DestinationHungUp,
    DestinationRinging,
    DigitReceived,
    Event,
    Finished,
    OperatorAnswered,
    OperatorFailed,
    OperatorHungUp,
    OperatorRinging,
    Originate,
    PromptFinished,
    Refused,
    SpeedDialResolved,
    StartBilling,
    StopBilling,
    TimerFired,
    WriteCdr,
)
from tests.service.driver import Driver, of
from tests.service.test_callflow import (
    to_authorizing,
    to_busy,
    to_calling_back,
    to_collecting,
    to_connected,
    to_dialling,
    to_operator,
)

PREFIXES = [
    Driver.start,
    to_calling_back,
    to_collecting,
    to_authorizing,
    to_dialling,
    to_busy,
    to_connected,
    to_operator,
]

events = st.one_of(
    st.just(CallbackRinging()),
    st.just(CallbackAnswered()),
    st.builds(CallbackFailed, st.sampled_from(["busy", "no_answer", "unreachable", "rejected"])),
    st.builds(DigitReceived, st.sampled_from(list("0123456789*#A"))),
    st.just(PromptFinished()),
    st.builds(DestinationRinging, st.booleans()),
    st.just(DestinationAnswered()),
    st.builds(DestinationFailed, st.sampled_from(["busy", "no_answer", "rejected", "congestion"])),
    st.just(DestinationHungUp()),
    st.builds(OperatorRinging, st.booleans()),
    st.just(OperatorAnswered()),
    st.builds(OperatorFailed, st.sampled_from(["busy", "no_answer", "rejected", "congestion"])),
    st.just(OperatorHungUp()),
    st.just(Abort("node_stopping")),
    st.builds(
        Authorized,
        st.just("81312345678"),
        st.just("+81312345678"),
        st.integers(0, 100),
        st.integers(0, 7200),
    ),
    st.builds(Refused, st.sampled_from(["invalid", "blocked", "no_credit", "over_limit"])),
    st.builds(SpeedDialResolved, st.sampled_from([None, "4930123456"])),
    st.just("timer"),  # fire an armed timer, chosen below
)


ENDERS = frozenset({"silence", "ending", "ring"})
KEY_RUNS = ["81312345678*", "00", "03*", "0871", "##", "**", "*#", "#*", "*1", "12065550100#"]

#: Events the runtime would plausibly send in each state (drawn more often than noise).
LIKELY: dict[CallState, st.SearchStrategy[object]] = {
    CallState.CALLING_BACK: st.sampled_from(
        [CallbackRinging(), *[CallbackAnswered()] * 4, CallbackFailed("busy"), "timer"]
    ),
    CallState.HOTLINE: st.sampled_from(
        [
            CallbackRinging(),
            *[CallbackAnswered()] * 3,
            CallbackFailed("busy"),
            Authorized("12025550123", "+12025550123", 12, 600),
            Refused("no_credit"),
            DestinationRinging(),
            DestinationRinging(early_media=True),
            DestinationAnswered(),
            DestinationFailed("busy", 486),
            "timer",
        ]
    ),
    CallState.ANNOUNCING: st.sampled_from([PromptFinished(), "timer", *KEY_RUNS]),
    CallState.COLLECTING: st.sampled_from(
        [PromptFinished(), "timer", *KEY_RUNS, *KEY_RUNS[:1] * 4]
    ),
    CallState.AUTHORIZING: st.sampled_from(
        [
            Authorized("81312345678", "+81312345678", 12, 90),
            Authorized("81312345678", "+81312345678", 12, 3600),
            Refused("blocked"),
            SpeedDialResolved("4930123456"),
            SpeedDialResolved(None),
        ]
    ),
    CallState.DIALLING: st.sampled_from(
        [
            DestinationRinging(),
            DestinationRinging(early_media=True),
            *[DestinationAnswered()] * 4,
            DestinationFailed("busy", 486),
            "timer",
            "##",
        ]
    ),
    CallState.DEST_BUSY: st.sampled_from(["*#", "##", "**", "timer", PromptFinished()]),
    CallState.CONNECTED: st.sampled_from(
        ["timer", "##", "00", "*1", "5", "#", DestinationHungUp(), PromptFinished()]
    ),
    CallState.CONSULTING: st.sampled_from(
        [
            OperatorRinging(),
            OperatorRinging(early_media=True),
            *[OperatorAnswered()] * 3,
            OperatorFailed("busy", 486),
            DestinationHungUp(),
            PromptFinished(),
            "timer",
            "##",
        ]
    ),
    CallState.CONFERENCE: st.sampled_from(
        [OperatorHungUp(), DestinationHungUp(), PromptFinished(), "timer", "##", "5", "**"]
    ),
    CallState.OPERATOR: st.sampled_from(
        [
            OperatorRinging(),
            OperatorAnswered(),
            OperatorHungUp(),
            OperatorFailed("rejected", 603),
            PromptFinished(),
            "timer",
            "##",
        ]
    ),
    CallState.ENDING: st.sampled_from([PromptFinished(), "timer", "5"]),
}


def feed(d: Driver, event: Event) -> None:
    """Hand one event to the machine; a CallFlowError must leave everything as it was."""
    before = (d.state, dict(d.call.armed_timers), len(d.actions))
    try:
        actions = d.call.handle(event, d.now)
    except CallFlowError:
        assert (d.state, dict(d.call.armed_timers), len(d.actions)) == before
        return
    if isinstance(event, TimerFired):
        del d.timers[event.name]
    d._apply(actions)
    check(d)


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(["plain"] * 6 + ["hotline", "extension", "both"]))
def test_random_event_sequences(data: st.DataObject, variant: str) -> None:
    hotline = variant in ("hotline", "both")
    extension = variant in ("extension", "both")
    d = Driver(
        preset_destination="12025550123" if hotline else None,
        extension="12" if extension else "",
        has_name=True,
        trigger_numbers=["12065550100"],
        config=CallFlowConfig(),
    )
    # Start from a state reached by a scripted prefix, so every state gets random traffic.
    prefixes = [Driver.start] if hotline or extension else PREFIXES
    data.draw(st.sampled_from(prefixes), label="prefix")(d)
    for _ in range(data.draw(st.integers(10, 60), label="steps")):
        if d.in_state(CallState.ENDED):
            break
        choice = data.draw(st.one_of(*[LIKELY[d.state]] * 4, events))
        d.now += data.draw(st.sampled_from([0.0, 0.2, 0.5, 1.5, 5.0, 40.0]))
        if choice == "timer":
            if d.timers:
                # The session-ending timers are drawn less often, so sessions get deep.
                weighted = [n for n in sorted(d.timers) for _ in range(1 if n in ENDERS else 4)]
                name = data.draw(st.sampled_from(weighted))
                d.now = max(d.now, d.timers[name])
                feed(d, TimerFired(name))
        elif isinstance(choice, str):
            for key in choice:
                if not d.in_state(CallState.ENDED):
                    feed(d, DigitReceived(key))
                    d.now += 0.3
        else:
            feed(d, choice)
    if not d.in_state(CallState.ENDED):
        d.send(CustomerHungUp(), after=1.0)
    assert d.in_state(CallState.ENDED)
    assert isinstance(d.actions[-1], Finished)
    check(d)
    originated = sorted((o.leg, o.attempt) for o in of(d.actions, Originate))
    recorded = sorted((c.leg, c.attempt) for c in of(d.actions, WriteCdr))
    assert originated == recorded
    for cdr in of(d.actions, WriteCdr):
        assert cdr.setup_at <= cdr.end_at
        assert cdr.answer_at is None or cdr.setup_at <= cdr.answer_at <= cdr.end_at
        assert cdr.cost >= 0 and cdr.billed_seconds >= 0


def check(d: Driver) -> None:
    assert set(d.timers) <= TIMERS_IN[d.state]
    billing = len(of(d.actions, StartBilling)) - len(of(d.actions, StopBilling))
    billed_states = (CallState.CONNECTED, CallState.CONSULTING, CallState.CONFERENCE)
    assert billing == (1 if d.state in billed_states else 0)
    finished = of(d.actions, Finished)
    assert len(finished) == (1 if d.state is CallState.ENDED else 0)
    if finished:
        assert d.actions[-1] is finished[0]
        assert d.timers == {}
