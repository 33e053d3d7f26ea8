"""The Location menu by phone, and the name menu inside it: a sans-IO state machine.

SPEC sections 4 and 5, guide sections 5 and 6. The customer proves who they are with the
4-digit security code, dials the number to be called back at (country code first, ``*``),
then an extension or room number (``*`` alone for none); the switch reads the entry back
digit by digit, ``1`` saves it and ``2`` starts over; "call you back now?" ``1`` ends the
call and calls back at the new location through the normal callback path, ``*`` hangs up.
``#`` at the number prompt opens the name menu: the recorded name plays, ``1`` replays, ``2``
records a new one (beep, until ``#``, silence or the limit), ``3`` saves it.

The menu runs on one leg (the customer's callback leg, or the trigger call answered into the
menu) and is hosted by a machine that owns that leg: :class:`~softswitch.service.callflow.
CustomerCall` or the controller's trigger session. Its timers are named ``menu.*`` so a host
can run them beside its own; it ends with :class:`MenuDone`, after releasing the leg itself
(but when the caller hung up).

Questions go out as actions and come back as events: :class:`VerifyCode` ->
:class:`CodeChecked` (the store counts failures and locks the menu for the account, for
every entry point at once: a wrong code and an account without one sound the same),
:class:`SaveLocation` -> :class:`LocationSaved`, :class:`~softswitch.service.ivr.Record` ->
:class:`~softswitch.service.ivr.RecordFinished`, :class:`SaveName` -> :class:`NameSaved`.

Keys come before prompts end: every prompt stops at the first key (barge-in), and keys typed
while the switch is busy (a code being checked, a location being saved) are kept, in order,
for the next step; none is dropped or used twice. A prompt that gets no key is repeated
``max_replays`` times, then the menu says goodbye.

States: CODE -> VERIFYING -> NUMBER -> EXTENSION -> READBACK -> SAVING -> CALL_BACK_NOW, with
NAME_MENU <-> RECORDING / SAVING_NAME beside NUMBER, and GOODBYE -> ENDED (:data:`TABLE`).
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from softswitch import fsm
from softswitch.service import dialplan
from softswitch.service.ivr import (
    DIGIT_PROMPTS,
    Abort,
    CallBackNow,
    CancelTimer,
    CustomerHungUp,
    DigitReceived,
    Finished,
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

__all__ = [
    "CALL_TABLE",
    "TABLE",
    "CodeChecked",
    "LocationMenu",
    "LocationSaved",
    "MenuAction",
    "MenuCall",
    "MenuCallState",
    "MenuConfig",
    "MenuDone",
    "MenuError",
    "MenuEvent",
    "MenuHungUp",
    "MenuState",
    "NameSaved",
    "SaveLocation",
    "SaveName",
    "VerifyCode",
]

log = logging.getLogger("softswitch.service.menu")

CODE_LENGTH = 4


class MenuError(fsm.TransitionError):
    """An event the menu has no entry for in its state."""


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeChecked:
    """The answer to :class:`VerifyCode`: ``"accepted"``, ``"rejected"`` or ``"locked"``."""

    result: str

    def __post_init__(self) -> None:
        if self.result not in ("accepted", "rejected", "locked"):
            raise ValueError(f"code check result {self.result!r}")


@dataclass(frozen=True, slots=True)
class LocationSaved:
    """The answer to :class:`SaveLocation`."""

    ok: bool


@dataclass(frozen=True, slots=True)
class NameSaved:
    """The answer to :class:`SaveName`."""

    ok: bool


@dataclass(frozen=True, slots=True)
class MenuHungUp:
    """The caller hung up (the host's leg is gone)."""


MenuEvent = (
    DigitReceived
    | PromptFinished
    | RecordFinished
    | TimerFired
    | CodeChecked
    | LocationSaved
    | NameSaved
    | MenuHungUp
)


# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyCode:
    """Check the security code typed (the store counts failures and locks)."""

    code: str


@dataclass(frozen=True, slots=True)
class SaveLocation:
    """Make ``number`` (E.164 digits) + ``extension`` the account's location."""

    number: str
    extension: str


@dataclass(frozen=True, slots=True)
class SaveName:
    """Keep the recording just made as the account's recorded name."""


@dataclass(frozen=True, slots=True)
class MenuDone:
    """The menu is over: ``outcome`` says how; ``call_back``: call back at the new location."""

    outcome: str
    call_back: bool = False


MenuAction = (
    Play
    | StopPlayback
    | Record
    | StartTimer
    | CancelTimer
    | HangUp
    | VerifyCode
    | SaveLocation
    | SaveName
    | MenuDone
)


# --- configuration and state ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MenuConfig:
    """Timing and limits of the menu (seconds)."""

    input_timeout: float = 10.0
    max_replays: int = 2
    record_max_s: float = 10.0
    record_silence_s: float = 2.0
    max_extension: int = 16
    goodbye_timeout: float = 10.0
    blocked_prefixes: tuple[str, ...] = ()
    #: Whether ``#`` at the number entry opens the name menu (the account kind's policy).
    name_menu: bool = True


class MenuState(enum.Enum):
    CODE = "code"
    VERIFYING = "verifying"
    NUMBER = "number"
    EXTENSION = "extension"
    READBACK = "readback"
    SAVING = "saving"
    CALL_BACK_NOW = "call_back_now"
    NAME_MENU = "name_menu"
    RECORDING = "recording"
    SAVING_NAME = "saving_name"
    GOODBYE = "goodbye"
    ENDED = "ended"


M = MenuState
INPUT = "menu.input"
ENDING = "menu.ending"
#: The timers each state runs; entering a state cancels the others.
TIMERS_IN: Mapping[MenuState, frozenset[str]] = MappingProxyType(
    {
        M.CODE: frozenset({INPUT}),
        M.VERIFYING: frozenset(),
        M.NUMBER: frozenset({INPUT}),
        M.EXTENSION: frozenset({INPUT}),
        M.READBACK: frozenset({INPUT}),
        M.SAVING: frozenset(),
        M.CALL_BACK_NOW: frozenset({INPUT}),
        M.NAME_MENU: frozenset({INPUT}),
        M.RECORDING: frozenset(),
        M.SAVING_NAME: frozenset(),
        M.GOODBYE: frozenset({ENDING}),
        M.ENDED: frozenset(),
    }
)
#: Where each state's prompt starts (what a timeout repeats).
_PROMPTS: Mapping[MenuState, tuple[Prompt, ...]] = MappingProxyType(
    {
        M.CODE: (Prompt.SECURITY_CODE_ENTER,),
        M.NUMBER: (Prompt.LOCATION_ENTER_NUMBER,),
        M.EXTENSION: (Prompt.LOCATION_ENTER_EXTENSION,),
        M.CALL_BACK_NOW: (Prompt.LOCATION_CALL_BACK_NOW,),
        M.NAME_MENU: (Prompt.NAME_MENU,),
    }
)
_COLLECTING = frozenset({M.CODE, M.NUMBER, M.EXTENSION, M.READBACK, M.CALL_BACK_NOW, M.NAME_MENU})

_Handler = Callable[["LocationMenu", MenuEvent, float], list[MenuAction]]


class LocationMenu:
    """The menu on one leg; see the module docstring."""

    def __init__(
        self,
        *,
        leg: str,
        has_name: bool = False,
        config: MenuConfig | None = None,
        name: str = "",
    ) -> None:
        self.leg = leg
        self.has_name = has_name
        self.config = config or MenuConfig()
        self.name = name or f"{id(self):x}"
        self.state = MenuState.CODE
        self.entry = ""
        self.number = ""
        self.extension = ""
        self.new_name = False  # a recording was made and not yet saved
        self._keys: deque[str] = deque()  # typed while busy, for the next step
        self._timers: dict[str, float] = {}
        self._playing = False
        self._replays = 0
        self._started = False
        self._goodbye_outcome = ""
        self._transition: fsm.Transition[MenuState, _Handler] | None = None
        self._input: object = None

    def __repr__(self) -> str:
        return f"<LocationMenu {self.name} {self.state.name}>"

    @property
    def armed_timers(self) -> Mapping[str, float]:
        return MappingProxyType(self._timers)

    @property
    def finished(self) -> bool:
        return self.state is MenuState.ENDED

    # --- public API ---

    def abandon(self) -> list[MenuAction]:
        """Stop here (the host ends the call): what plays stops, the timers are disarmed."""
        actions = self._quiet()
        actions += [self._cancel(name) for name in list(self._timers)]
        self.state = MenuState.ENDED
        return actions

    def start(self, now: float) -> list[MenuAction]:
        """Ask for the security code."""
        if self._started:
            raise MenuError("menu already started", state=self.state)
        self._started = True
        return self._prompt((Prompt.SECURITY_CODE_ENTER,))

    def handle(self, event: MenuEvent, now: float) -> list[MenuAction]:
        """Feed one event; the actions to perform, in order (:class:`MenuError` if none fit)."""
        if not self._started:
            raise MenuError("menu not started", state=self.state)
        inp = input_of(event)
        transition = TABLE.fire(self.state, inp, who=self.name)
        if isinstance(event, TimerFired):
            if event.name not in self._timers:
                raise MenuError(f"timer {event.name!r} is not armed", state=self.state, input=inp)
            del self._timers[event.name]
        self._transition, self._input = transition, inp
        try:
            assert transition.handler is not None
            return transition.handler(self, event, now)
        finally:
            self._transition = self._input = None

    # --- plumbing ---

    def _set_state(self, new: MenuState) -> list[MenuAction]:
        old = self.state
        if self._transition is not None:
            TABLE.move(log, self.name, old, new, self._transition, self._input)
        self.state = new
        if new is not old:
            self._replays = 0
            self.entry = ""
        return [self._cancel(n) for n in list(self._timers) if n not in TIMERS_IN[new]]

    def _arm(self, name: str, at: float) -> StartTimer:
        self._timers[name] = at
        return StartTimer(name, at)

    def _cancel(self, name: str) -> CancelTimer:
        del self._timers[name]
        return CancelTimer(name)

    def _quiet(self) -> list[MenuAction]:
        if not self._playing:
            return []
        self._playing = False
        return [StopPlayback(self.leg)]

    def _prompt(self, prompts: tuple[Prompt, ...]) -> list[MenuAction]:
        """Play ``prompts`` (barge-in); the input timer starts when they end."""
        actions = self._quiet()
        if INPUT in self._timers:
            actions.append(self._cancel(INPUT))
        self._playing = True
        return [*actions, Play(self.leg, prompts)]

    def _go(self, state: MenuState, prompts: tuple[Prompt, ...], now: float) -> list[MenuAction]:
        """Enter a collecting ``state``: keys already typed go to it, else ``prompts`` play."""
        actions = self._set_state(state)
        if self._keys:
            # The customer knows the menu: no prompt for keys they have already typed.
            actions += self._quiet()
            return actions + self._drain(now)
        return actions + self._prompt(prompts)

    def _drain(self, now: float) -> list[MenuAction]:
        """Hand the keys typed while the switch was busy to the current step, in order."""
        actions: list[MenuAction] = []
        while self._keys and self.state in _COLLECTING:
            actions += self._key(self._keys.popleft(), now)
        return actions

    def _end(self, outcome: str, *, hang_up: bool, call_back: bool = False) -> list[MenuAction]:
        actions = self._quiet()
        actions += self._set_state(M.ENDED)
        if hang_up:
            actions.append(HangUp(self.leg, f"menu_{outcome}"))
        log.info("location menu %s: %s", self.name, outcome)
        return [*actions, MenuDone(outcome, call_back)]

    def _goodbye(self, outcome: str, prompts: tuple[Prompt, ...], now: float) -> list[MenuAction]:
        actions = self._quiet()
        actions += self._set_state(M.GOODBYE)
        self._goodbye_outcome = outcome
        self._playing = True
        actions.append(Play(self.leg, prompts, barge_in=False))
        actions.append(self._arm(ENDING, now + self.config.goodbye_timeout))
        return actions

    # --- keys ---

    def _on_digit(self, event: MenuEvent, now: float) -> list[MenuAction]:
        assert isinstance(event, DigitReceived)
        if event.digit in "ABCD":
            return []
        return self._key(event.digit, now)

    def _keep(self, event: MenuEvent, now: float) -> list[MenuAction]:
        # The switch is busy (checking, saving): the key is for the next step.
        assert isinstance(event, DigitReceived)
        if event.digit not in "ABCD":
            self._keys.append(event.digit)
        return []

    def _ignore(self, event: MenuEvent, now: float) -> list[MenuAction]:
        return []

    def _key(self, key: str, now: float) -> list[MenuAction]:
        """One key in a collecting state (barge-in stops the prompt first)."""
        actions = self._quiet()
        if INPUT in self._timers:
            actions.append(self._cancel(INPUT))
        step = _KEY_STEPS[self.state]
        actions += step(self, key, now)
        if self.state in _COLLECTING and not self._playing and INPUT not in self._timers:
            actions.append(self._arm(INPUT, now + self.config.input_timeout))
        return actions

    def _code_key(self, key: str, now: float) -> list[MenuAction]:
        if key not in "0123456789":
            self.entry = ""  # * or #: start the code again
            return []
        self.entry += key
        if len(self.entry) < CODE_LENGTH:
            return []
        code, self.entry = self.entry, ""
        actions = self._set_state(M.VERIFYING)
        return [*actions, VerifyCode(code)]

    def _number_key(self, key: str, now: float) -> list[MenuAction]:
        if key == "#" and not self.entry and self.config.name_menu:
            return self._enter_name_menu(now)
        if key == "#":
            self.entry = ""
            return []
        if key != "*":
            self.entry += key
            if len(self.entry) <= dialplan.E164_MAX_DIGITS:
                return []
        entry, self.entry = self.entry, ""
        try:
            dialplan.normalize_destination(
                entry, "+", blocked_prefixes=self.config.blocked_prefixes
            )
        except dialplan.DestinationRefused as exc:
            log.info("location menu %s: %r refused: %s", self.name, entry, exc)
            prompt = (
                Prompt.BLOCKED_NUMBER
                if exc.reason is dialplan.RefusalReason.BLOCKED
                else Prompt.INVALID_NUMBER
            )
            return self._prompt((prompt, Prompt.LOCATION_ENTER_NUMBER))
        self.number = entry
        return self._go(M.EXTENSION, (Prompt.LOCATION_ENTER_EXTENSION,), now)

    def _extension_key(self, key: str, now: float) -> list[MenuAction]:
        if key != "*":
            if len(self.entry) >= self.config.max_extension:
                self.entry = ""
                return self._prompt((Prompt.LOCATION_ENTER_EXTENSION,))
            self.entry += key
            return []
        self.extension, self.entry = self.entry, ""
        return self._go(M.READBACK, self._readback(), now)

    def _readback(self) -> tuple[Prompt, ...]:
        prompts = [Prompt.LOCATION_YOU_ENTERED, *(DIGIT_PROMPTS[d] for d in self.number)]
        if self.extension:
            prompts += [Prompt.LOCATION_EXTENSION, *(DIGIT_PROMPTS[d] for d in self.extension)]
        return (*prompts, Prompt.LOCATION_CONFIRM)

    def _readback_key(self, key: str, now: float) -> list[MenuAction]:
        if key == "1":
            actions = self._set_state(M.SAVING)
            return [*actions, SaveLocation(self.number, self.extension)]
        if key == "2":
            self.number = self.extension = ""
            return self._go(M.NUMBER, (Prompt.LOCATION_ENTER_NUMBER,), now)
        return []

    def _call_back_key(self, key: str, now: float) -> list[MenuAction]:
        if key == "1":
            return self._end("call_back", hang_up=True, call_back=True)
        if key == "*":
            return self._end("saved", hang_up=True)
        return []

    def _enter_name_menu(self, now: float) -> list[MenuAction]:
        heard = Prompt.NEW_NAME if self.new_name else Prompt.NAME if self.has_name else None
        prompts = (heard or Prompt.NO_NAME, Prompt.NAME_MENU)
        return self._go(M.NAME_MENU, prompts, now)

    def _name_key(self, key: str, now: float) -> list[MenuAction]:
        if key == "1":
            return self._enter_name_menu(now)
        if key == "2":
            actions = self._set_state(M.RECORDING)
            actions += self._quiet()
            self._playing = True
            return [*actions, Play(self.leg, (Prompt.NAME_RECORD, Prompt.BEEP), barge_in=False)]
        if key == "3" and self.new_name:
            actions = self._set_state(M.SAVING_NAME)
            return [*actions, SaveName()]
        if key == "*":
            return self._go(M.NUMBER, (Prompt.LOCATION_ENTER_NUMBER,), now)
        return []

    # --- prompts, recording, answers, timers ---

    def _on_prompt_finished(self, event: MenuEvent, now: float) -> list[MenuAction]:
        if not self._playing:
            return []  # a prompt stopped by barge-in reporting its end
        self._playing = False
        return [self._arm(INPUT, now + self.config.input_timeout)]

    def _on_beep_finished(self, event: MenuEvent, now: float) -> list[MenuAction]:
        if not self._playing:
            return []
        self._playing = False
        return [Record(self.leg, self.config.record_max_s, self.config.record_silence_s)]

    def _on_recorded(self, event: MenuEvent, now: float) -> list[MenuAction]:
        assert isinstance(event, RecordFinished)
        if event.duration > 0.3:
            self.new_name = True
        return self._enter_name_menu(now)

    def _on_code_checked(self, event: MenuEvent, now: float) -> list[MenuAction]:
        assert isinstance(event, CodeChecked)
        if event.result == "accepted":
            return self._go(M.NUMBER, (Prompt.LOCATION_ENTER_NUMBER,), now)
        if event.result == "locked":
            self._keys.clear()
            return self._goodbye("locked", (Prompt.SECURITY_CODE_LOCKED,), now)
        self._keys.clear()  # keys typed after a wrong code belong to nothing
        return self._go(M.CODE, (Prompt.SECURITY_CODE_WRONG, Prompt.SECURITY_CODE_ENTER), now)

    def _on_location_saved(self, event: MenuEvent, now: float) -> list[MenuAction]:
        assert isinstance(event, LocationSaved)
        if not event.ok:
            return self._goodbye("failed", (Prompt.CALL_FAILED, Prompt.GOODBYE), now)
        prompts = (Prompt.LOCATION_SAVED, Prompt.LOCATION_CALL_BACK_NOW)
        return self._go(M.CALL_BACK_NOW, prompts, now)

    def _on_name_saved(self, event: MenuEvent, now: float) -> list[MenuAction]:
        assert isinstance(event, NameSaved)
        if event.ok:
            self.new_name = False
            self.has_name = True
            prompts = (Prompt.NAME_SAVED, Prompt.LOCATION_ENTER_NUMBER)
        else:
            prompts = (Prompt.CALL_FAILED, Prompt.LOCATION_ENTER_NUMBER)
        return self._go(M.NUMBER, prompts, now)

    def _on_input_timeout(self, event: MenuEvent, now: float) -> list[MenuAction]:
        self._replays += 1
        if self._replays > self.config.max_replays:
            return self._goodbye("timeout", (Prompt.GOODBYE,), now)
        self.entry = ""
        prompts = self._readback() if self.state is M.READBACK else _PROMPTS[self.state]
        return self._prompt(prompts)

    def _on_goodbye_done(self, event: MenuEvent, now: float) -> list[MenuAction]:
        if isinstance(event, PromptFinished) and not self._playing:
            return []
        return self._end(self._goodbye_outcome, hang_up=True)

    def _on_hung_up(self, event: MenuEvent, now: float) -> list[MenuAction]:
        self._playing = False
        return self._end("hung_up", hang_up=False)


_KEY_STEPS: dict[MenuState, Callable[[LocationMenu, str, float], list[MenuAction]]] = {
    M.CODE: LocationMenu._code_key,
    M.NUMBER: LocationMenu._number_key,
    M.EXTENSION: LocationMenu._extension_key,
    M.READBACK: LocationMenu._readback_key,
    M.CALL_BACK_NOW: LocationMenu._call_back_key,
    M.NAME_MENU: LocationMenu._name_key,
}


def timer_input(name: str) -> str:
    return f"timer {name}"


def input_of(event: MenuEvent) -> object:
    """The table input of an event: its class, or ``"timer <name>"``."""
    if isinstance(event, TimerFired):
        return timer_input(event.name)
    return type(event)


_L = LocationMenu
_ALL_LIVE = [s for s in M if s not in (M.ENDED,)]
#: Keys typed ahead (while a code was checked or a location saved) are played through at once,
#: so the answer that releases them may take the menu as far as they go.
_AHEAD = frozenset(s for s in M if s is not M.VERIFYING)
_ENTRIES: dict[tuple[MenuState, object], tuple[_Handler, MenuState | Collection[MenuState]]] = {
    # The security code.
    (M.CODE, DigitReceived): (_L._on_digit, {M.CODE, M.VERIFYING}),
    (M.CODE, PromptFinished): (_L._on_prompt_finished, M.CODE),
    (M.CODE, timer_input(INPUT)): (_L._on_input_timeout, {M.CODE, M.GOODBYE}),
    (M.VERIFYING, DigitReceived): (_L._keep, M.VERIFYING),
    (M.VERIFYING, PromptFinished): (_L._ignore, M.VERIFYING),
    (M.VERIFYING, CodeChecked): (_L._on_code_checked, _AHEAD),
    # The new number, its extension, the read-back.
    (M.NUMBER, DigitReceived): (_L._on_digit, {M.NUMBER, M.EXTENSION, M.NAME_MENU}),
    (M.NUMBER, PromptFinished): (_L._on_prompt_finished, M.NUMBER),
    (M.NUMBER, timer_input(INPUT)): (_L._on_input_timeout, {M.NUMBER, M.GOODBYE}),
    (M.EXTENSION, DigitReceived): (_L._on_digit, {M.EXTENSION, M.READBACK}),
    (M.EXTENSION, PromptFinished): (_L._on_prompt_finished, M.EXTENSION),
    (M.EXTENSION, timer_input(INPUT)): (_L._on_input_timeout, {M.EXTENSION, M.GOODBYE}),
    (M.READBACK, DigitReceived): (_L._on_digit, {M.READBACK, M.SAVING, M.NUMBER}),
    (M.READBACK, PromptFinished): (_L._on_prompt_finished, M.READBACK),
    (M.READBACK, timer_input(INPUT)): (_L._on_input_timeout, {M.READBACK, M.GOODBYE}),
    (M.SAVING, DigitReceived): (_L._keep, M.SAVING),
    (M.SAVING, PromptFinished): (_L._ignore, M.SAVING),
    (M.SAVING, LocationSaved): (_L._on_location_saved, {M.CALL_BACK_NOW, M.GOODBYE, M.ENDED}),
    (M.CALL_BACK_NOW, DigitReceived): (_L._on_digit, {M.CALL_BACK_NOW, M.ENDED}),
    (M.CALL_BACK_NOW, PromptFinished): (_L._on_prompt_finished, M.CALL_BACK_NOW),
    (M.CALL_BACK_NOW, timer_input(INPUT)): (_L._on_input_timeout, {M.CALL_BACK_NOW, M.GOODBYE}),
    # The recorded name.
    (M.NAME_MENU, DigitReceived): (
        _L._on_digit,
        {M.NAME_MENU, M.RECORDING, M.SAVING_NAME, M.NUMBER},
    ),
    (M.NAME_MENU, PromptFinished): (_L._on_prompt_finished, M.NAME_MENU),
    (M.NAME_MENU, timer_input(INPUT)): (_L._on_input_timeout, {M.NAME_MENU, M.GOODBYE}),
    (M.RECORDING, DigitReceived): (_L._ignore, M.RECORDING),  # "#" ends it in the media
    (M.RECORDING, PromptFinished): (_L._on_beep_finished, M.RECORDING),
    (M.RECORDING, RecordFinished): (_L._on_recorded, M.NAME_MENU),
    (M.SAVING_NAME, DigitReceived): (_L._keep, M.SAVING_NAME),
    (M.SAVING_NAME, PromptFinished): (_L._ignore, M.SAVING_NAME),
    (M.SAVING_NAME, NameSaved): (_L._on_name_saved, _AHEAD),
    # Goodbye (locked out, no answer, a failure).
    (M.GOODBYE, DigitReceived): (_L._ignore, M.GOODBYE),
    (M.GOODBYE, PromptFinished): (_L._on_goodbye_done, {M.GOODBYE, M.ENDED}),
    (M.GOODBYE, timer_input(ENDING)): (_L._on_goodbye_done, M.ENDED),
}
# The caller may hang up anywhere.
_ENTRIES.update({(state, MenuHungUp): (_L._on_hung_up, M.ENDED) for state in _ALL_LIVE})

#: The transition table of the Location menu.
TABLE: fsm.Table[MenuState, object, _Handler] = fsm.Table(
    "location menu", _ENTRIES, initial=M.CODE, final={M.ENDED}, error=MenuError
)


# --- the menu on an answered trigger call ------------------------------------------------------


class MenuCallState(enum.Enum):
    MENU = "menu"
    ENDED = "ended"


MenuCallEvent = MenuEvent | CustomerHungUp | Abort
MenuCallAction = MenuAction | CallBackNow | Finished
_CallHandler = Callable[["MenuCall", MenuCallEvent, float], list[MenuCallAction]]


class MenuCall:
    """The Location menu on a trigger call the switch answered (``#`` in its early media, or
    the caller stayed on the line): the whole life of that call, for the controller.

    It speaks the customer's call's language (``handle(event, now) -> actions``,
    :class:`~softswitch.service.ivr.Finished` last), so the controller runs it like any
    session: the menu's actions pass through, its :class:`MenuDone` becomes
    :class:`~softswitch.service.ivr.CallBackNow` (when asked) and ``Finished``. The caller
    hanging up is ``CustomerHungUp``; the controller ending it is ``Abort`` (the leg is
    released). States: MENU -> ENDED (:data:`CALL_TABLE`).
    """

    def __init__(
        self,
        *,
        leg: str,
        has_name: bool = False,
        config: MenuConfig | None = None,
        name: str = "",
    ) -> None:
        self.leg = leg
        self.name = name or f"{id(self):x}"
        self.menu = LocationMenu(leg=leg, has_name=has_name, config=config, name=self.name)
        self.state = MenuCallState.MENU
        self._transition: fsm.Transition[MenuCallState, _CallHandler] | None = None

    def __repr__(self) -> str:
        return f"<MenuCall {self.name} {self.state.name}>"

    @property
    def finished(self) -> bool:
        return self.state is MenuCallState.ENDED

    @property
    def armed_timers(self) -> Mapping[str, float]:
        return self.menu.armed_timers

    def start(self, now: float) -> list[MenuCallAction]:
        return self._from_menu(self.menu.start(now))

    def handle(self, event: MenuCallEvent, now: float) -> list[MenuCallAction]:
        """Feed one event (a menu event, ``CustomerHungUp`` or ``Abort``)."""
        inp = type(event) if not isinstance(event, TimerFired) else timer_input(event.name)
        transition = CALL_TABLE.fire(self.state, inp, who=self.name)
        self._transition = transition
        try:
            assert transition.handler is not None
            return transition.handler(self, event, now)
        finally:
            self._transition = None

    def _to_menu(self, event: MenuCallEvent, now: float) -> list[MenuCallAction]:
        assert not isinstance(event, CustomerHungUp | Abort)
        return self._from_menu(self.menu.handle(event, now))

    def _hung_up(self, event: MenuCallEvent, now: float) -> list[MenuCallAction]:
        return self._from_menu(self.menu.handle(MenuHungUp(), now))

    def _abort(self, event: MenuCallEvent, now: float) -> list[MenuCallAction]:
        assert isinstance(event, Abort)
        actions: list[MenuCallAction] = [*self.menu.abandon(), HangUp(self.leg, event.reason)]
        return [*actions, *self._done(event.reason)]

    def _from_menu(self, actions: list[MenuAction]) -> list[MenuCallAction]:
        out: list[MenuCallAction] = []
        for action in actions:
            if isinstance(action, MenuDone):
                if action.call_back:
                    out.append(CallBackNow())
                hung_up = action.outcome == "hung_up"
                out += self._done("customer_hangup" if hung_up else f"menu_{action.outcome}")
            else:
                out.append(action)
        return out

    def _done(self, reason: str) -> list[MenuCallAction]:
        old, self.state = self.state, MenuCallState.ENDED
        if self._transition is not None:
            CALL_TABLE.move(log, self.name, old, self.state, self._transition, reason)
        log.info("menu call %s: over (%s)", self.name, reason)
        return [Finished(reason)]


_MC = MenuCall
_MENU_INPUTS: tuple[object, ...] = (
    DigitReceived,
    PromptFinished,
    RecordFinished,
    CodeChecked,
    LocationSaved,
    NameSaved,
    timer_input(INPUT),
    timer_input(ENDING),
)
#: The menu call's table: every menu event goes to the menu; the caller or the controller
#: may end it any time.
CALL_TABLE: fsm.Table[MenuCallState, object, _CallHandler] = fsm.Table(
    "menu call",
    {
        **{
            (MenuCallState.MENU, inp): (_MC._to_menu, {MenuCallState.MENU, MenuCallState.ENDED})
            for inp in _MENU_INPUTS
        },
        (MenuCallState.MENU, CustomerHungUp): (_MC._hung_up, MenuCallState.ENDED),
        (MenuCallState.MENU, Abort): (_MC._abort, MenuCallState.ENDED),
    },
    initial=MenuCallState.MENU,
    final={MenuCallState.ENDED},
    error=MenuError,
)
