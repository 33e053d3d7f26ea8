"""What the service's machines say to a caller and hear back: prompts, keys, timers, recording.

The customer's call (:mod:`softswitch.service.callflow`) and the Location menu
(:mod:`softswitch.service.menu`) share this vocabulary, so the controller carries out a
``Play`` or a ``StartTimer`` the same way whichever machine asked for it. Everything here is
a frozen value; nothing here does anything.

:class:`Prompt` is the complete list of prompts the machines can play: :class:`Play` takes only
its members (mypy rejects anything else), so :data:`PROMPTS_PLAYED` is what the prompt set must
hold, and the node checks exactly that at start-up.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "DIGIT_PROMPTS",
    "DTMF_KEYS",
    "PROMPTS_PLAYED",
    "Abort",
    "CallBackNow",
    "CancelTimer",
    "CustomerHungUp",
    "DigitReceived",
    "Finished",
    "HangUp",
    "Play",
    "PlayTone",
    "Prompt",
    "PromptFinished",
    "Record",
    "RecordFinished",
    "StartTimer",
    "StopPlayback",
    "StopRecording",
    "TimerFired",
]

#: RFC 4733 section 3.2 events 0-15; A-D exist on some phones and are ignored by the service.
DTMF_KEYS = "0123456789*#ABCD"


class Prompt(enum.StrEnum):
    """Every prompt the service can play: the prompt set must hold each one (but the names).

    ``NAME`` is the customer's saved recorded name and ``NEW_NAME`` the recording just made
    at the name menu: files of the account, not of the prompt set.
    """

    NAME = "name"
    NEW_NAME = "new_name"
    DIAL_PROMPT = "dial_prompt"
    INVALID_NUMBER = "invalid_number"
    BLOCKED_NUMBER = "blocked_number"
    NO_CREDIT = "no_credit"
    OVER_LIMIT = "over_limit"
    UNKNOWN_SPEED_DIAL = "unknown_speed_dial"
    NO_ANSWER = "no_answer"
    CALL_FAILED = "call_failed"
    ONE_MINUTE_WARNING = "one_minute_warning"
    CONNECTING_CUSTOMER_SERVICE = "connecting_customer_service"
    LOCATION_UNAVAILABLE = "location_unavailable"
    GOODBYE = "goodbye"
    # The Location menu (SPEC section 4, guide section 5) and the name menu (section 5).
    SECURITY_CODE_ENTER = "security_code_enter"
    SECURITY_CODE_WRONG = "security_code_wrong"
    SECURITY_CODE_LOCKED = "security_code_locked"
    LOCATION_ENTER_NUMBER = "location_enter_number"
    LOCATION_ENTER_EXTENSION = "location_enter_extension"
    LOCATION_YOU_ENTERED = "location_you_entered"
    LOCATION_EXTENSION = "location_extension"
    LOCATION_CONFIRM = "location_confirm"
    LOCATION_SAVED = "location_saved"
    LOCATION_CALL_BACK_NOW = "location_call_back_now"
    NAME_MENU = "name_menu"
    NAME_RECORD = "name_record"
    NAME_SAVED = "name_saved"
    NO_NAME = "no_name"
    BEEP = "beep"
    DIGIT_0 = "digit_0"
    DIGIT_1 = "digit_1"
    DIGIT_2 = "digit_2"
    DIGIT_3 = "digit_3"
    DIGIT_4 = "digit_4"
    DIGIT_5 = "digit_5"
    DIGIT_6 = "digit_6"
    DIGIT_7 = "digit_7"
    DIGIT_8 = "digit_8"
    DIGIT_9 = "digit_9"
    DIGIT_STAR = "digit_star"
    DIGIT_POUND = "digit_pound"


#: The prompt-set names the service can play (what the node checks at start-up).
PROMPTS_PLAYED: frozenset[str] = frozenset(
    p.value for p in Prompt if p not in (Prompt.NAME, Prompt.NEW_NAME)
)

#: The prompt that reads one key back.
DIGIT_PROMPTS: Mapping[str, Prompt] = MappingProxyType(
    {
        **{d: Prompt(f"digit_{d}") for d in "0123456789"},
        "*": Prompt.DIGIT_STAR,
        "#": Prompt.DIGIT_POUND,
    }
)


# --- what the caller does ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DigitReceived:
    """A key press of the caller (RFC 4733 or in-band, already de-duplicated)."""

    digit: str
    source: str = "rfc4733"

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in DTMF_KEYS:
            raise ValueError(f"not a DTMF key: {self.digit!r}")


@dataclass(frozen=True, slots=True)
class PromptFinished:
    """The prompts of the last :class:`Play` played to the end."""


@dataclass(frozen=True, slots=True)
class RecordFinished:
    """The recording asked for by :class:`Record` ended (``reason``: key, silence, max)."""

    duration: float
    reason: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The timer ``name`` (armed by :class:`StartTimer`) is due."""

    name: str


@dataclass(frozen=True, slots=True)
class CustomerHungUp:
    """The customer's leg is gone (their BYE)."""


@dataclass(frozen=True, slots=True)
class Abort:
    """The controller ends the session (the node stops, the trigger was absorbed elsewhere, an
    operator hung it up): every leg still up is released and recorded with ``reason``."""

    reason: str


# --- what the service does --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallBackNow:
    """After this session: call the customer back at their (just changed) location."""


@dataclass(frozen=True, slots=True)
class Finished:
    """The session is over; every leg is released and recorded.

    ``reason`` ``"callback_retry"`` follows a ``RetryLater``: another attempt is owed.
    """

    reason: str


@dataclass(frozen=True, slots=True)
class HangUp:
    """Release ``leg``: CANCEL if unanswered, BYE if answered."""

    leg: str
    reason: str


@dataclass(frozen=True, slots=True)
class Play:
    """Play prompts on ``leg`` in order.

    ``barge_in``: the first key press stops it (the machine sends :class:`StopPlayback`).
    ``mix``: play over the bridge (the other party keeps talking) instead of replacing audio.
    """

    leg: str
    prompts: tuple[Prompt, ...]
    barge_in: bool = True
    mix: bool = False


@dataclass(frozen=True, slots=True)
class PlayTone:
    """Play a tone on ``leg`` until stopped: ``"ringback"``, ``"busy"`` or ``"beep"``."""

    leg: str
    tone: str


@dataclass(frozen=True, slots=True)
class StopPlayback:
    """Stop any prompt or tone on ``leg`` (no :class:`PromptFinished` follows)."""

    leg: str


@dataclass(frozen=True, slots=True)
class Record:
    """Record what ``leg`` says until ``#``, ``silence_s`` of silence, or ``max_s``."""

    leg: str
    max_s: float
    silence_s: float


@dataclass(frozen=True, slots=True)
class StopRecording:
    """End the recording on ``leg`` now (a :class:`RecordFinished` follows)."""

    leg: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Arm (or re-arm) the timer ``name`` to fire at ``at``."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Disarm the timer ``name``."""

    name: str
