"""The Location menu and the name menu on a fake clock (SPEC sections 4 and 5, guide 5 and 6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from softswitch.service.ivr import (
    CancelTimer,
    DigitReceived,
    HangUp,
    Play,
    Prompt,
    PromptFinished,
    Record,
    RecordFinished,
    StartTimer,
    StopPlayback,
    TimerFired,
)
from softswitch.service.menu import (
    TABLE,
    TIMERS_IN,
    CodeChecked,
    LocationMenu,
    LocationSaved,
    MenuAction,
    MenuConfig,
    MenuDone,
    MenuError,
    MenuEvent,
    MenuHungUp,
    MenuState,
    NameSaved,
    SaveLocation,
    SaveName,
    VerifyCode,
)

M = MenuState
P = Prompt
LEG = "callback"


class Menu:
    """Drives a LocationMenu on a fake clock, keeping the timers it arms."""

    def in_state(self, state: MenuState) -> bool:
        """A call, so mypy does not narrow the state across events."""
        return self.menu.state is state

    def __init__(self, **kwargs: object) -> None:
        self.menu = LocationMenu(leg=LEG, **kwargs)  # type: ignore[arg-type]
        self.now = 0.0
        self.timers: dict[str, float] = {}
        self.actions: list[MenuAction] = []

    def _apply(self, actions: list[MenuAction]) -> list[MenuAction]:
        for action in actions:
            if isinstance(action, StartTimer):
                self.timers[action.name] = action.at
            elif isinstance(action, CancelTimer):
                del self.timers[action.name]
        assert self.timers == dict(self.menu.armed_timers)
        assert set(self.timers) <= TIMERS_IN[self.menu.state]
        self.actions += actions
        return actions

    def start(self) -> list[MenuAction]:
        return self._apply(self.menu.start(self.now))

    def send(self, event: MenuEvent, after: float = 0.0) -> list[MenuAction]:
        self.now += after
        return self._apply(self.menu.handle(event, self.now))

    def keys(self, keys: str, gap: float = 0.2) -> list[MenuAction]:
        out: list[MenuAction] = []
        for key in keys:
            out += self.send(DigitReceived(key), after=gap)
        return out

    def fire(self, name: str) -> list[MenuAction]:
        self.now = max(self.now, self.timers.pop(name))
        return self._apply(self.menu.handle(TimerFired(name), self.now))

    def played(self, actions: list[MenuAction]) -> list[tuple[Prompt, ...]]:
        return [a.prompts for a in actions if isinstance(a, Play)]


def of(actions: list[MenuAction], kind: type) -> list[MenuAction]:
    return [a for a in actions if isinstance(a, kind)]


def to_number(m: Menu) -> None:
    assert m.played(m.start()) == [(P.SECURITY_CODE_ENTER,)]
    m.send(PromptFinished(), after=3.0)
    assert of(m.keys("4711"), VerifyCode) == [VerifyCode("4711")]
    assert m.in_state(M.VERIFYING)
    out = m.send(CodeChecked("accepted"), after=0.05)
    assert m.played(out) == [(P.LOCATION_ENTER_NUMBER,)]
    assert m.in_state(M.NUMBER)


def test_change_of_location_then_call_back_now() -> None:
    m = Menu()
    to_number(m)
    out = m.keys("819011112222*")
    assert m.played(out)[-1] == (P.LOCATION_ENTER_EXTENSION,)
    assert StopPlayback(LEG) in out  # the first key stopped the prompt
    out = m.keys("123*")
    [readback] = m.played(out)
    digits = tuple(Prompt(f"digit_{d}") for d in "819011112222")
    assert readback == (
        P.LOCATION_YOU_ENTERED,
        *digits,
        P.LOCATION_EXTENSION,
        P.DIGIT_1,
        P.DIGIT_2,
        P.DIGIT_3,
        P.LOCATION_CONFIRM,
    )
    out = m.keys("1")
    assert of(out, SaveLocation) == [SaveLocation("819011112222", "123")]
    out = m.send(LocationSaved(True), after=0.05)
    assert m.played(out) == [(P.LOCATION_SAVED, P.LOCATION_CALL_BACK_NOW)]
    out = m.keys("1")
    assert out[-2:] == [HangUp(LEG, "menu_call_back"), MenuDone("call_back", call_back=True)]
    assert m.menu.finished and m.timers == {}


def test_star_at_call_back_now_hangs_up_without_a_callback() -> None:
    m = Menu()
    to_number(m)
    m.keys("819011112222*")
    m.keys("*")  # no extension
    assert of(m.keys("1"), SaveLocation) == [SaveLocation("819011112222", "")]
    m.send(LocationSaved(True))
    assert m.keys("*")[-1] == MenuDone("saved", call_back=False)


def test_two_starts_over() -> None:
    m = Menu()
    to_number(m)
    m.keys("819011112222*")
    m.keys("*")
    out = m.keys("2")
    assert m.played(out) == [(P.LOCATION_ENTER_NUMBER,)]
    assert m.in_state(M.NUMBER) and m.menu.number == ""
    m.keys("442071234567**")
    assert of(m.keys("1"), SaveLocation) == [SaveLocation("442071234567", "")]


def test_keys_typed_while_the_code_is_checked_are_kept_in_order() -> None:
    # A customer who knows the menu types the code and the number without waiting: the
    # keys are consumed by the steps they belong to, none dropped or used twice.
    m = Menu()
    m.start()
    m.keys("4711")
    m.keys("819011112222*")  # while the store checks the code
    out = m.send(CodeChecked("accepted"))
    assert m.in_state(M.EXTENSION) and m.menu.number == "819011112222"
    # No number prompt for a number already typed; the extension prompt plays.
    assert m.played(out) == [(P.LOCATION_ENTER_EXTENSION,)]


def test_keys_typed_during_the_save_answer_the_next_question() -> None:
    m = Menu()
    to_number(m)
    m.keys("819011112222*")
    m.keys("*")
    m.keys("1")
    m.keys("1")  # "call me back now", before the switch asked
    out = m.send(LocationSaved(True))
    assert out[-1] == MenuDone("call_back", call_back=True)


def test_wrong_code_then_locked() -> None:
    m = Menu()
    m.start()
    m.keys("1111")
    out = m.send(CodeChecked("rejected"))
    assert m.played(out) == [(P.SECURITY_CODE_WRONG, P.SECURITY_CODE_ENTER)]
    assert m.in_state(M.CODE)
    m.keys("2222")
    out = m.send(CodeChecked("locked"))
    assert Play(LEG, (P.SECURITY_CODE_LOCKED,), barge_in=False) in out
    assert m.keys("1234") == []  # nothing more is listened to
    out = m.send(PromptFinished(), after=4.0)
    assert out[-2:] == [HangUp(LEG, "menu_locked"), MenuDone("locked")]


def test_star_or_pound_restarts_the_code() -> None:
    m = Menu()
    m.start()
    m.keys("47*")
    assert of(m.keys("4711"), VerifyCode) == [VerifyCode("4711")]


@pytest.mark.parametrize(
    ("number", "prompt"),
    [
        ("0312345678*", P.INVALID_NUMBER),
        ("8112*", P.INVALID_NUMBER),
        ("1900555123*", P.BLOCKED_NUMBER),
    ],
)
def test_a_number_the_dial_plan_refuses_is_asked_again(number: str, prompt: Prompt) -> None:
    m = Menu(config=MenuConfig(blocked_prefixes=("1900",)))
    to_number(m)
    out = m.keys(number)
    assert m.played(out)[-1] == (prompt, P.LOCATION_ENTER_NUMBER)
    assert m.in_state(M.NUMBER)


def test_record_play_and_save_the_name() -> None:
    m = Menu(has_name=False)
    to_number(m)
    out = m.keys("#")
    assert m.played(out)[-1] == (P.NO_NAME, P.NAME_MENU)
    out = m.keys("3")  # nothing recorded yet: nothing to save
    assert of(out, SaveName) == []
    out = m.keys("2")
    assert m.played(out)[-1] == (P.NAME_RECORD, P.BEEP)
    assert m.keys("5") == []  # the instructions are not interrupted
    out = m.send(PromptFinished(), after=3.0)
    assert out == [Record(LEG, 10.0, 2.0)]
    out = m.send(RecordFinished(2.5, "key"), after=2.5)
    assert m.played(out)[-1] == (P.NEW_NAME, P.NAME_MENU)
    out = m.keys("1")
    assert m.played(out)[-1] == (P.NEW_NAME, P.NAME_MENU)
    assert of(m.keys("3"), SaveName) == [SaveName()]
    out = m.send(NameSaved(True))
    assert m.played(out)[-1] == (P.NAME_SAVED, P.LOCATION_ENTER_NUMBER)
    assert m.in_state(M.NUMBER)
    out = m.keys("#")
    assert m.played(out)[-1] == (P.NAME, P.NAME_MENU)


def test_a_silent_recording_is_not_offered_for_saving() -> None:
    m = Menu(has_name=True)
    to_number(m)
    m.keys("#")
    m.keys("2")
    m.send(PromptFinished())
    out = m.send(RecordFinished(0.1, "silence"))
    assert m.played(out)[-1] == (P.NAME, P.NAME_MENU)
    assert of(m.keys("3"), SaveName) == []


def test_unanswered_prompts_are_repeated_then_goodbye() -> None:
    m = Menu(config=MenuConfig(input_timeout=10.0, max_replays=2))
    m.start()
    m.send(PromptFinished(), after=3.0)
    for _ in range(2):
        out = m.fire("menu.input")
        assert m.played(out) == [(P.SECURITY_CODE_ENTER,)]
        m.send(PromptFinished(), after=3.0)
    out = m.fire("menu.input")
    assert m.played(out) == [(P.GOODBYE,)]
    out = m.fire("menu.ending")
    assert out[-2:] == [HangUp(LEG, "menu_timeout"), MenuDone("timeout")]


def test_a_slow_entry_is_timed_out_and_asked_again() -> None:
    m = Menu()
    to_number(m)
    m.keys("8190")
    assert "menu.input" in m.timers
    out = m.fire("menu.input")
    assert m.played(out) == [(P.LOCATION_ENTER_NUMBER,)]
    assert m.menu.entry == ""


def test_the_caller_hanging_up_ends_it_without_a_hang_up() -> None:
    m = Menu()
    to_number(m)
    out = m.send(MenuHungUp())
    assert out[-1] == MenuDone("hung_up") and of(out, HangUp) == []
    with pytest.raises(MenuError):
        m.send(MenuHungUp())


def test_the_table_is_complete_and_strict() -> None:
    assert TABLE.reachable() == TABLE.states() == frozenset(MenuState)
    m = Menu()
    m.start()
    for event in (
        CodeChecked("accepted"),
        LocationSaved(True),
        NameSaved(True),
        RecordFinished(1, "key"),
    ):
        with pytest.raises(MenuError):
            m.send(event)
    assert m.in_state(M.CODE)


EVENTS = st.one_of(
    st.builds(DigitReceived, st.sampled_from(list("0123456789*#"))),
    st.just(PromptFinished()),
    st.builds(CodeChecked, st.sampled_from(["accepted", "rejected", "locked"])),
    st.builds(LocationSaved, st.booleans()),
    st.builds(NameSaved, st.booleans()),
    st.builds(RecordFinished, st.floats(0, 10), st.just("key")),
    st.just("timer"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(EVENTS, max_size=80), st.booleans())
def test_random_sequences(events: list[object], has_name: bool) -> None:
    m = Menu(has_name=has_name)
    m.start()
    for event in events:
        if m.menu.finished:
            break
        before = (m.menu.state, dict(m.menu.armed_timers), len(m.actions))
        try:
            if event == "timer":
                if m.timers:
                    m.fire(sorted(m.timers)[0])
            else:
                m.send(event, after=0.5)  # type: ignore[arg-type]
        except MenuError:
            assert (m.menu.state, dict(m.menu.armed_timers), len(m.actions)) == before
    if not m.menu.finished:
        m.send(MenuHungUp())
    done = of(m.actions, MenuDone)
    assert len(done) == 1 and m.actions[-1] is done[0]
    assert m.timers == {}
