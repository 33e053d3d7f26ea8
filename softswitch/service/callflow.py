"""One customer's Callback session as a sans-IO state machine: events in, actions out.

Theory of operation. The call controller (:mod:`softswitch.node.calls`) creates a
:class:`CustomerCall` when a Trigger schedules a Callback, calls :meth:`CustomerCall.start`
and then feeds it events with :meth:`CustomerCall.handle` (``now`` passed in, never read).
Each call returns the actions to perform, in order. The machine knows no SIP, media or
database: legs are named (``"callback"``, ``"destination"``, ``"operator"``), prompts are
:class:`Prompt` members the controller maps to files in the account's language, and money
questions go out as :class:`Authorize` / :class:`ResolveSpeedDial` and come back as
:class:`Authorized`, :class:`Refused` or :class:`SpeedDialResolved`.

All transitions live in this file, in one :class:`softswitch.fsm.Table` (``TABLE``):
``(state, input) -> (handler, states it may lead to)``. The input is the event's class, or
``"timer <name>"`` for a :class:`TimerFired`. An input without an entry raises
:class:`CallFlowError` and changes nothing; a handler that moves anywhere its entry does not
list is a bug caught on the spot. Every state change goes through ``_set_state``, which logs
``old -> new`` and cancels every timer the new state does not run (``TIMERS_IN``), so a timer
can only fire where it means something. :func:`transitions` lists the pairs and
:func:`state_diagram` draws the diagram (README, "Call flow").

Contract with the controller: after the machine sends :class:`HangUp` for a leg, events about
that leg are not reported (a 200 crossing our CANCEL is the controller's to BYE). Only the
callback leg's digits and prompt ends are reported (the customer's keys; the far legs' are
theirs to send in the audio or as RFC 4733 events the bridge relays).

The SPEC rules it implements (sections 1, 2, 7): up to ``callback_attempts`` callback
attempts on busy / no answer / unreachable with a pause, not for a number that does not exist
or refuses (the pause is the queue's: a failed attempt ends the session with
:class:`RetryLater`, and the controller puts the callback back in the store due after the
pause, so a restart resumes it; the next attempt is a new session that knows its number);
extension DTMF, recorded name and
dial prompt on answer; barge-in; the DialPrompt grammar (:mod:`softswitch.service.dialplan`);
busy handling (``*#`` redial, ``##`` new number, ``**`` end); in-call ``**``, ``##``, ``00``
with ``*`` and ``#`` held back ``hold_back`` seconds before they are forwarded; early media of
the destination heard one way only; the one-minute credit warning and the cut; silence and
idle endings; hotline / preset destinations; a CDR (:class:`WriteCdr`) for every leg attempt,
answered or not.

In-call ``00``: a ``0`` is always forwarded at once (bank menus); a second ``0`` within
``hold_back`` seconds makes ``00`` only if the first ``0`` came after ``command_guard``
seconds without keys, so ``1005`` typed into an IVR does not reach customer service. ``00``
during a call puts the destination on hold (still billed, never dropped) and calls customer
service (CONSULTING); when the operator answers, the three are joined in a conference
(CONFERENCE); the operator leaving returns the customer to the destination, the destination
leaving leaves the customer with the operator (OPERATOR). ``00`` at the dial prompt calls
customer service alone.

The customer's own trigger number at the dial prompt (guide 5-B) asks for the Location change
menu, which does not exist yet: the customer hears ``location_unavailable`` and the dial
prompt again, never silence.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType

from softswitch import fsm
from softswitch.service import dialplan
from softswitch.service.dialplan import DigitCollector, RefusalReason
from softswitch.service.ivr import (
    PROMPTS_PLAYED,
    Abort,
    CallBackNow,
    CancelTimer,
    CustomerHungUp,
    DigitReceived,
    Finished,
    HangUp,
    Play,
    PlayTone,
    Prompt,
    PromptFinished,
    Record,
    RecordFinished,
    StartTimer,
    StopPlayback,
    TimerFired,
)
from softswitch.service.menu import (
    CodeChecked,
    LocationMenu,
    LocationSaved,
    MenuAction,
    MenuConfig,
    MenuDone,
    MenuHungUp,
    NameSaved,
    SaveLocation,
    SaveName,
    VerifyCode,
)
from softswitch.service.rating import Rate, billable_seconds, cost, cut_at, warning_at

__all__ = [
    "CALLBACK",
    "DESTINATION",
    "OPERATOR",
    "PROMPTS_PLAYED",
    "TABLE",
    "Abort",
    "Action",
    "Authorize",
    "Authorized",
    "Bridge",
    "CallBackNow",
    "CallFlowConfig",
    "CallFlowError",
    "CallState",
    "CallbackAnswered",
    "CallbackFailed",
    "CallbackRinging",
    "CancelTimer",
    "Conference",
    "CustomerCall",
    "CustomerHungUp",
    "DestinationAnswered",
    "DestinationFailed",
    "DestinationHungUp",
    "DestinationRinging",
    "DigitReceived",
    "Event",
    "FaxDetected",
    "Finished",
    "ForwardDigit",
    "HangUp",
    "OperatorAnswered",
    "OperatorFailed",
    "OperatorHungUp",
    "OperatorRinging",
    "Originate",
    "Play",
    "PlayTone",
    "Prompt",
    "PromptFinished",
    "Refused",
    "ResolveSpeedDial",
    "RetryLater",
    "SendDtmf",
    "SpeedDialResolved",
    "StartBilling",
    "StartTimer",
    "StopBilling",
    "StopPlayback",
    "TimerFired",
    "Unbridge",
    "WriteCdr",
    "interrupted_cdrs",
    "state_diagram",
    "transitions",
]

log = logging.getLogger("softswitch.service.callflow")

CALLBACK = "callback"
DESTINATION = "destination"
OPERATOR = "operator"
#: What :class:`Unbridge` names as the other side when the callback leg is in a conference.
CONFERENCE = "conference"

CALLBACK_FAILURES = frozenset({"busy", "no_answer", "unreachable", "rejected"})
RETRYABLE_CALLBACK_FAILURES = frozenset({"busy", "no_answer", "unreachable"})
DESTINATION_FAILURES = frozenset({"busy", "no_answer", "rejected", "congestion", "unreachable"})


#: The prompt played for each refusal, before the dial prompt again.
REFUSAL_PROMPTS: Mapping[RefusalReason, Prompt] = MappingProxyType(
    {
        RefusalReason.INVALID: Prompt.INVALID_NUMBER,
        RefusalReason.BLOCKED: Prompt.BLOCKED_NUMBER,
        RefusalReason.NO_CREDIT: Prompt.NO_CREDIT,
        RefusalReason.OVER_LIMIT: Prompt.OVER_LIMIT,
        RefusalReason.UNKNOWN_SPEED_DIAL: Prompt.UNKNOWN_SPEED_DIAL,
    }
)
#: The prompt for a destination that failed other than busy (busy gets the busy tone).
FAILURE_PROMPTS: Mapping[str, Prompt] = MappingProxyType(
    {
        "no_answer": Prompt.NO_ANSWER,
        "rejected": Prompt.CALL_FAILED,
        "congestion": Prompt.CALL_FAILED,
        "unreachable": Prompt.CALL_FAILED,
    }
)


class CallFlowError(fsm.TransitionError):
    """An event the session's state machine has no entry for (or a malformed one)."""


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallbackRinging:
    """The callback leg is ringing at the customer's Location (180/183)."""


@dataclass(frozen=True, slots=True)
class CallbackAnswered:
    """The customer (or their fax, or a hotel operator) answered the callback leg."""


@dataclass(frozen=True, slots=True)
class CallbackFailed:
    """The callback attempt failed before answer: busy, no_answer, unreachable or rejected."""

    reason: str
    sip_status: int | None = None

    def __post_init__(self) -> None:
        if self.reason not in CALLBACK_FAILURES:
            raise ValueError(f"callback failure reason {self.reason!r}")


@dataclass(frozen=True, slots=True)
class DestinationRinging:
    """The destination rings; ``early_media``: it sent 183 with SDP (announcements, ringback)."""

    early_media: bool = False


@dataclass(frozen=True, slots=True)
class DestinationAnswered:
    """The destination answered (200)."""


@dataclass(frozen=True, slots=True)
class DestinationFailed:
    """The destination failed before answer."""

    cause: str
    sip_status: int | None = None

    def __post_init__(self) -> None:
        if self.cause not in DESTINATION_FAILURES:
            raise ValueError(f"destination failure cause {self.cause!r}")


@dataclass(frozen=True, slots=True)
class DestinationHungUp:
    """The answered destination hung up (BYE)."""


@dataclass(frozen=True, slots=True)
class FaxDetected:
    """Fax or modem tones on a bridged leg (SPEC section 6): the media went clear channel.

    From here on nothing is played over the call (a warning tone would break the fax) and
    only RFC 4733 keys can reach the service (in-band detection is off on clear channel).
    """

    kind: str


@dataclass(frozen=True, slots=True)
class OperatorRinging:
    """Customer service rings; ``early_media`` as for :class:`DestinationRinging`."""

    early_media: bool = False


@dataclass(frozen=True, slots=True)
class OperatorAnswered:
    """Customer service answered."""


@dataclass(frozen=True, slots=True)
class OperatorFailed:
    """Customer service could not be reached."""

    cause: str
    sip_status: int | None = None

    def __post_init__(self) -> None:
        if self.cause not in DESTINATION_FAILURES:
            raise ValueError(f"operator failure cause {self.cause!r}")


@dataclass(frozen=True, slots=True)
class OperatorHungUp:
    """Customer service hung up (BYE)."""


@dataclass(frozen=True, slots=True)
class Authorized:
    """The controller validated, rated and reserved credit for ``number``.

    ``rate`` is minor units per minute; ``max_seconds`` is the talk time the reservation buys
    (:func:`softswitch.service.rating.reservation_for`); ``minimum`` and ``increment`` come from
    the rate table row.
    """

    number: str
    dial_string: str
    rate: Rate
    max_seconds: int
    minimum: int = 30
    increment: int = 6


@dataclass(frozen=True, slots=True)
class Refused:
    """The controller will not dial: ``reason`` is a :class:`RefusalReason` value."""

    reason: str

    def __post_init__(self) -> None:
        RefusalReason(self.reason)


@dataclass(frozen=True, slots=True)
class SpeedDialResolved:
    """The answer to :class:`ResolveSpeedDial`: the stored number, or None if there is none."""

    number: str | None


Event = (
    CallbackRinging
    | CallbackAnswered
    | CallbackFailed
    | DigitReceived
    | PromptFinished
    | DestinationRinging
    | DestinationAnswered
    | DestinationFailed
    | DestinationHungUp
    | OperatorRinging
    | OperatorAnswered
    | OperatorFailed
    | OperatorHungUp
    | CustomerHungUp
    | Abort
    | Authorized
    | Refused
    | SpeedDialResolved
    | TimerFired
    | CodeChecked
    | LocationSaved
    | NameSaved
    | RecordFinished
    | FaxDetected
)


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Originate:
    """Place ``leg`` (an INVITE through the trunk, or to the operator).

    ``attempt`` numbers the legs of one name within the session (callback retries, every
    destination dialled); the matching :class:`WriteCdr` carries the same number.
    """

    leg: str
    dial_string: str
    caller_id: str | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class SendDtmf:
    """Send ``digits`` on ``leg`` (RFC 4733 and in-band), e.g. a hotel room extension."""

    leg: str
    digits: str


@dataclass(frozen=True, slots=True)
class Bridge:
    """Connect the media of two legs; ``early_media``: only ``leg_b`` -> ``leg_a`` (ringing)."""

    leg_a: str
    leg_b: str
    early_media: bool = False


@dataclass(frozen=True, slots=True)
class Unbridge:
    """Disconnect the media of two legs."""

    leg_a: str
    leg_b: str


@dataclass(frozen=True, slots=True)
class Conference:
    """Mix ``legs`` together (everyone hears everyone else)."""

    legs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Authorize:
    """Validate, rate and reserve credit for ``number``; answer Authorized or Refused."""

    number: str


@dataclass(frozen=True, slots=True)
class ResolveSpeedDial:
    """Look up the SpeedDial ``code`` (``"03"``); answer :class:`SpeedDialResolved`."""

    code: str


@dataclass(frozen=True, slots=True)
class StartBilling:
    """The destination answered at ``at``: the billed call starts."""

    at: float


@dataclass(frozen=True, slots=True)
class StopBilling:
    """The billed call ended at ``at``."""

    at: float


@dataclass(frozen=True, slots=True)
class WriteCdr:
    """The record of one leg attempt, written when the leg ends (answered or not)."""

    leg: str
    attempt: int
    number: str
    dial_string: str
    setup_at: float
    ring_at: float | None
    answer_at: float | None
    end_at: float
    cause: str
    sip_status: int | None
    billed_seconds: int
    cost: int
    rate: Rate | None


@dataclass(frozen=True, slots=True)
class ForwardDigit:
    """Send ``digit`` to ``to_leg`` (a key press that is not part of a command)."""

    to_leg: str
    digit: str


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Call the customer back again at ``at`` (the attempt failed for ``reason``)."""

    at: float
    reason: str


Action = (
    Originate
    | HangUp
    | Play
    | PlayTone
    | StopPlayback
    | SendDtmf
    | Bridge
    | Unbridge
    | Conference
    | Authorize
    | ResolveSpeedDial
    | StartTimer
    | CancelTimer
    | StartBilling
    | StopBilling
    | WriteCdr
    | ForwardDigit
    | RetryLater
    | Finished
    | VerifyCode
    | SaveLocation
    | SaveName
    | Record
    | CallBackNow
)


# --- configuration and state -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallFlowConfig:
    """Timing and limits of a session (seconds); built from ``[service]`` of the node config."""

    callback_attempts: int = 3
    callback_ring_timeout: float = 45.0
    callback_retry_pause: float = 20.0
    extension_pause: float = 2.0
    first_digit_timeout: float = 10.0
    inter_digit_timeout: float = 10.0
    speed_dial_timeout: float = 3.0
    max_digits: int = 20
    silence_timeout: float = 120.0
    after_call_idle: float = 30.0
    destination_ring_timeout: float = 60.0
    busy_timeout: float = 30.0
    hold_back: float = 1.0
    command_guard: float = 1.0
    warning_seconds: int = 60
    goodbye_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.callback_attempts < 1:
            raise ValueError("callback_attempts must be at least 1")
        for name in self.__slots__:
            value = getattr(self, name)
            if value < 0:
                raise ValueError(f"{name} must not be negative")


class CallState(enum.Enum):
    CALLING_BACK = "calling_back"
    HOTLINE = "hotline"  # the customer and the preset destination ring together
    ANNOUNCING = "announcing"
    COLLECTING = "collecting"
    AUTHORIZING = "authorizing"
    DIALLING = "dialling"
    DEST_BUSY = "dest_busy"
    CONNECTED = "connected"
    CONSULTING = "consulting"
    CONFERENCE = "conference"
    OPERATOR = "operator"
    LOCATION = "location"
    ENDING = "ending"
    ENDED = "ended"


S = CallState

#: The timers each state runs; entering a state cancels the others.
TIMERS_IN: Mapping[CallState, frozenset[str]] = MappingProxyType(
    {
        S.CALLING_BACK: frozenset({"ring"}),
        S.HOTLINE: frozenset({"ring", "dest_ring"}),
        S.ANNOUNCING: frozenset({"extension", "silence"}),
        S.COLLECTING: frozenset({"collect", "silence"}),
        S.AUTHORIZING: frozenset({"silence"}),
        S.DIALLING: frozenset({"dest_ring", "hold"}),
        S.DEST_BUSY: frozenset({"busy", "hold"}),
        S.CONNECTED: frozenset({"hold", "credit_warning", "credit_cut"}),
        S.CONSULTING: frozenset({"operator_ring", "hold", "credit_warning", "credit_cut"}),
        S.CONFERENCE: frozenset({"hold", "credit_warning", "credit_cut"}),
        S.OPERATOR: frozenset({"operator_ring", "hold"}),
        S.LOCATION: frozenset({"menu.input", "menu.ending"}),
        S.ENDING: frozenset({"ending"}),
        S.ENDED: frozenset(),
    }
)

#: Two-key commands each state recognises (SPEC section 2, guide section 12).
COMMANDS_IN: Mapping[CallState, frozenset[str]] = MappingProxyType(
    {
        S.DIALLING: frozenset({"**", "##"}),
        S.DEST_BUSY: frozenset({"**", "##", "*#"}),
        S.CONNECTED: frozenset({"**", "##", "00"}),
        S.CONSULTING: frozenset({"**", "##"}),
        S.CONFERENCE: frozenset({"**", "##"}),
        S.OPERATOR: frozenset({"**", "##"}),
    }
)


@dataclass(slots=True)
class _Leg:
    leg: str
    attempt: int
    number: str
    dial_string: str
    setup_at: float
    ring_at: float | None = None
    answer_at: float | None = None
    rate: Rate | None = None
    max_seconds: int = 0
    minimum: int = 30
    increment: int = 6
    early_media: bool = False
    #: Billing starts here: the answer, or (hotline) when the customer joins the answered call.
    bill_from: float | None = None
    #: Hotline: billed only once the customer joined (an answer alone costs nothing).
    joined_only: bool = False

    def describe(self, clock: Callable[[float], float]) -> dict[str, object]:
        """This leg as plain data (JSON), its times through ``clock`` (to wall time)."""

        def at(t: float | None) -> float | None:
            return None if t is None else clock(t)

        return {
            "leg": self.leg,
            "attempt": self.attempt,
            "number": self.number,
            "dial_string": self.dial_string,
            "setup_at": clock(self.setup_at),
            "ring_at": at(self.ring_at),
            "answer_at": at(self.answer_at),
            "bill_from": at(self.bill_from),
            "joined_only": self.joined_only,
            "rate": None if self.rate is None else str(self.rate),
            "max_seconds": self.max_seconds,
            "minimum": self.minimum,
            "increment": self.increment,
        }

    @classmethod
    def from_description(cls, d: Mapping[str, object]) -> _Leg:
        def num(key: str) -> float | None:
            value = d.get(key)
            return None if value is None else float(str(value))

        rate = d.get("rate")
        setup_at = num("setup_at")
        assert setup_at is not None
        return cls(
            leg=str(d["leg"]),
            attempt=int(str(d["attempt"])),
            number=str(d["number"]),
            dial_string=str(d["dial_string"]),
            setup_at=setup_at,
            ring_at=num("ring_at"),
            answer_at=num("answer_at"),
            rate=None if rate is None else Decimal(str(rate)),
            max_seconds=int(str(d.get("max_seconds", 0))),
            minimum=int(str(d.get("minimum", 30))),
            increment=int(str(d.get("increment", 6))),
            bill_from=num("bill_from"),
            joined_only=bool(d.get("joined_only", False)),
        )

    def cdr(self, end_at: float, cause: str, sip_status: int | None = None) -> WriteCdr:
        billed = charged = 0
        start = self.bill_from
        if start is None and not self.joined_only:
            start = self.answer_at
        if start is not None and self.rate is not None:
            billed = min(
                billable_seconds(end_at - start, self.minimum, self.increment),
                self.max_seconds,
            )
            charged = cost(self.rate, billed)
        return WriteCdr(
            leg=self.leg,
            attempt=self.attempt,
            number=self.number,
            dial_string=self.dial_string,
            setup_at=self.setup_at,
            ring_at=self.ring_at,
            answer_at=self.answer_at,
            end_at=end_at,
            cause=cause,
            sip_status=sip_status,
            billed_seconds=billed,
            cost=charged,
            rate=self.rate,
        )


@dataclass(slots=True)
class _Keys:
    """Two-key command detection in call states (see the module docstring)."""

    held: str = ""
    zero_at: float | None = None
    last_at: float | None = None


# --- the machine -----------------------------------------------------------------------------

_Handler = Callable[["CustomerCall", Event, float], list[Action]]


class CustomerCall:
    """The Callback session of one customer.

    ``location`` is the dial string of the callback leg (already normalised by the
    controller), ``extension`` the DTMF sent after answer (hotel room, PBX extension; ``0-9*#``
    only), ``has_name`` whether a recorded name exists, ``preset_destination`` a number called
    together with the customer, joined when both answer (hotline accounts, web triggers with a
    destination), ``trigger_numbers``
    the account's own trigger numbers (dialling one asks for the Location change menu),
    ``operator`` the dial string of customer service.
    """

    def __init__(
        self,
        *,
        location: str,
        caller_id: str | None = None,
        extension: str = "",
        has_name: bool = False,
        preset_destination: str | None = None,
        trigger_numbers: Iterable[str] = (),
        operator: str = "customer-service",
        config: CallFlowConfig | None = None,
        name: str = "",
        first_attempt: int = 1,
        location_menu: MenuConfig | None = None,
    ) -> None:
        if any(ch not in "0123456789*#" for ch in extension):
            raise ValueError(f"extension may only hold 0-9 * #: {extension!r}")
        self.config = config or CallFlowConfig()
        self.name = name or f"{id(self):x}"
        self.location = location
        self.caller_id = caller_id
        self.extension = extension
        self.has_name = has_name
        self.preset_destination = preset_destination
        self.operator = operator
        #: The Location menu's settings; None: this account may not change location by phone.
        self.location_menu = location_menu
        self._menu: LocationMenu | None = None
        self.collector = DigitCollector(
            first_digit_timeout=self.config.first_digit_timeout,
            inter_digit_timeout=self.config.inter_digit_timeout,
            speed_dial_timeout=self.config.speed_dial_timeout,
            max_digits=self.config.max_digits,
            trigger_numbers=trigger_numbers,
        )
        self.state = CallState.CALLING_BACK
        if first_attempt < 1:
            raise ValueError(f"first_attempt {first_attempt} (attempts count from 1)")
        self.attempt = first_attempt - 1  # the attempts made before this session
        self._started = False
        self._timers: dict[str, float] = {}
        self._callback: _Leg | None = None
        self._dest: _Leg | None = None
        self._operator: _Leg | None = None
        self._media: str | None = None  # what plays on the callback leg: "prompt", "tone", None
        self._bridged: str | None = None  # the far leg bridged with the callback, or CONFERENCE
        self._billing = False
        self._awaiting: str | None = None  # "speed_dial" or "authorize" while AUTHORIZING
        #: HOTLINE: why the destination cannot be reached, for when the customer answers.
        self._hotline_refusal: Prompt | None = None
        self._fax = False  # fax or modem tones made the call clear channel
        self._hotline_failure: str | None = None
        self._number: str | None = None  # the last number sent to Authorize (for *# redial)
        self._keys = _Keys()
        self._placed: dict[str, int] = {}
        self._transition: fsm.Transition[CallState, _Handler] | None = None
        self._input: object = None

    def __repr__(self) -> str:
        return f"<CustomerCall {self.name} {self.state.name}>"

    # --- public API ---

    @property
    def armed_timers(self) -> Mapping[str, float]:
        """The timers armed now, by name, with their due time."""
        return MappingProxyType(self._timers)

    def describe_legs(self, clock: Callable[[float], float]) -> list[dict[str, object]]:
        """The legs placed and not yet recorded, as plain data, times through ``clock``.

        What a node keeps in the store while the call lasts, so that if it dies another
        writes their CDRs (:func:`interrupted_cdrs`).
        """
        legs = (self._callback, self._dest, self._operator)
        return [leg.describe(clock) for leg in legs if leg is not None]

    @property
    def finished(self) -> bool:
        return self.state is CallState.ENDED

    def start(self, now: float) -> list[Action]:
        """Place the first callback attempt (and, for a preset destination, dial it too)."""
        if self._started:
            raise CallFlowError("session already started", state=self.state)
        self._started = True
        actions = self._originate_callback(now)
        if self.preset_destination is None:
            return actions
        # Hotline (guide section 10): the customer and the preset destination at once.
        self.state = S.HOTLINE
        self._awaiting = "authorize"
        self._number = self.preset_destination
        return [*actions, Authorize(self.preset_destination)]

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to perform, in order.

        Raises :class:`CallFlowError` (changing nothing) for an event the current state has
        no entry for.
        """
        if not self._started:
            raise CallFlowError("session not started", state=self.state)
        inp = input_of(event)
        transition = TABLE.fire(self.state, inp, who=self.name)
        if isinstance(event, TimerFired):
            if event.name not in self._timers:
                raise CallFlowError(
                    f"{self.state.name}: timer {event.name!r} is not armed",
                    state=self.state,
                    input=inp,
                )
            del self._timers[event.name]
        before = self.state
        self._transition, self._input = transition, inp
        try:
            assert transition.handler is not None
            actions = transition.handler(self, event, now)
        finally:
            self._transition = self._input = None
        if self.state is before and before not in transition.targets:
            raise CallFlowError(
                f"{self.name} in {before.name}: {fsm.input_name(inp)} must leave the state",
                state=before,
                input=inp,
            )
        return actions

    # --- plumbing ---

    def _set_state(self, new: CallState) -> list[Action]:
        old = self.state
        if self._transition is not None:
            TABLE.move(log, self.name, old, new, self._transition, self._input)
        self.state = new
        self._keys = _Keys(last_at=self._keys.last_at)
        return [self._cancel(name) for name in list(self._timers) if name not in TIMERS_IN[new]]

    def _arm(self, name: str, at: float) -> StartTimer:
        self._timers[name] = at
        return StartTimer(name, at)

    def _cancel(self, name: str) -> CancelTimer:
        del self._timers[name]
        return CancelTimer(name)

    def _cancel_if_armed(self, name: str) -> list[Action]:
        return [self._cancel(name)] if name in self._timers else []

    def _quiet(self) -> list[Action]:
        if self._media is None:
            return []
        self._media = None
        return [StopPlayback(CALLBACK)]

    def _play(self, *prompts: Prompt, barge_in: bool = True) -> list[Action]:
        self._media = "prompt"
        return [Play(CALLBACK, prompts, barge_in=barge_in)]

    def _tone(self, tone: str) -> list[Action]:
        self._media = "tone"
        return [PlayTone(CALLBACK, tone)]

    def _originate_callback(self, now: float) -> list[Action]:
        self.attempt += 1
        self._callback = _Leg(CALLBACK, self.attempt, self.location, self.location, now)
        return [
            Originate(CALLBACK, self.location, self.caller_id, self.attempt),
            self._arm("ring", now + self.config.callback_ring_timeout),
        ]

    def _unbridge(self) -> list[Action]:
        if self._bridged is None:
            return []
        other, self._bridged = self._bridged, None
        return [Unbridge(CALLBACK, other)]

    def _release_dest(
        self, now: float, cause: str, *, hang_up: bool, status: int | None = None
    ) -> list[Action]:
        """End the destination leg: stop billing, unbridge, hang up, record."""
        dest = self._dest
        if dest is None:
            return []
        actions: list[Action] = []
        if self._billing:
            self._billing = False
            actions.append(StopBilling(now))
        if self._bridged == DESTINATION:
            actions += self._unbridge()
        if hang_up:
            actions.append(HangUp(DESTINATION, cause))
        actions.append(dest.cdr(now, cause, status))
        self._dest = None
        return actions

    def _release_operator(
        self, now: float, cause: str, *, hang_up: bool, status: int | None = None
    ) -> list[Action]:
        """End the customer-service leg: unbridge, hang up, record."""
        operator = self._operator
        if operator is None:
            return []
        actions: list[Action] = []
        if self._bridged == OPERATOR:
            actions += self._unbridge()
        if hang_up:
            actions.append(HangUp(OPERATOR, cause))
        actions.append(operator.cdr(now, cause, status))
        self._operator = None
        return actions

    def _release_far_legs(self, now: float, cause: str) -> list[Action]:
        actions = self._release_dest(now, cause, hang_up=True)
        actions += self._release_operator(now, cause, hang_up=True)
        # Leaving a conference: nothing is bridged any more.
        actions += self._unbridge()
        return actions

    def _end(self, now: float, cause: str, *, hang_up_callback: bool) -> list[Action]:
        """Release everything, record every leg, and finish."""
        actions = self._release_far_legs(now, cause)
        callback = self._callback
        if callback is not None:
            if hang_up_callback:
                actions.append(HangUp(CALLBACK, cause))
            actions.append(callback.cdr(now, cause))
            self._callback = None
        self._media = None
        actions += self._set_state(S.ENDED)
        actions.append(Finished(cause))
        return actions

    def _enter_collecting(
        self, now: float, prompts: tuple[Prompt, ...], idle: float | None
    ) -> list[Action]:
        """Back to the DialPrompt: play ``prompts``; ``idle`` re-arms the silence timer."""
        actions = self._quiet()
        actions += self._set_state(S.COLLECTING)
        self.collector.reset()
        self._awaiting = None
        actions += self._play(*prompts)
        if idle is not None:
            actions.append(self._arm("silence", now + idle))
        elif "silence" not in self._timers:
            actions.append(self._arm("silence", now + self.config.silence_timeout))
        return actions

    def _announce(self, now: float) -> list[Action]:
        if self.preset_destination is not None:
            return self._authorize(self.preset_destination)
        if self.has_name:
            return self._play(Prompt.NAME, Prompt.DIAL_PROMPT)
        return self._play(Prompt.DIAL_PROMPT)

    def _authorize(self, number: str) -> list[Action]:
        actions = self._quiet()
        actions += self._set_state(S.AUTHORIZING)
        self._awaiting = "authorize"
        self._number = number
        actions.append(Authorize(number))
        return actions

    def _call_operator(self, now: float) -> list[Action]:
        """Place the customer-service leg and announce it (the caller set the state)."""
        actions = self._play(Prompt.CONNECTING_CUSTOMER_SERVICE, barge_in=False)
        self._operator = _Leg(OPERATOR, self._next(OPERATOR), self.operator, self.operator, now)
        actions.append(Originate(OPERATOR, self.operator, self.caller_id, self._operator.attempt))
        actions.append(self._arm("operator_ring", now + self.config.destination_ring_timeout))
        return actions

    def _enter_operator(self, now: float) -> list[Action]:
        actions = self._quiet()
        actions += self._set_state(S.OPERATOR)
        return actions + self._call_operator(now)

    def _next(self, leg: str) -> int:
        """The number of the next ``leg`` placed in this session (CDR ``attempt``), from 1."""
        self._placed[leg] = self._placed.get(leg, 0) + 1
        return self._placed[leg]

    def _touch(self, now: float) -> list[Action]:
        """A customer key press: the session is not silent."""
        return [self._arm("silence", now + self.config.silence_timeout)]

    def _far_leg(self) -> str | None:
        """Where the customer's non-command keys go: the answered destination, else operator."""
        if self._dest is not None and self._dest.answer_at is not None:
            return DESTINATION
        if self._operator is not None and self._operator.answer_at is not None:
            return OPERATOR
        return None

    # --- CALLING_BACK ---

    def _callback_leg(self, event: Event) -> _Leg:
        if self._callback is None:
            raise CallFlowError(
                f"{type(event).__name__} while no callback attempt is ringing", state=self.state
            )
        return self._callback

    def _on_callback_ringing(self, event: Event, now: float) -> list[Action]:
        leg = self._callback_leg(event)
        if leg.ring_at is None:
            leg.ring_at = now
        return []

    def _on_callback_answered(self, event: Event, now: float) -> list[Action]:
        leg = self._callback_leg(event)
        leg.answer_at = now
        actions = self._set_state(S.ANNOUNCING)
        actions += self._touch(now)
        if self.extension:
            actions.append(self._arm("extension", now + self.config.extension_pause))
            return actions
        return actions + self._announce(now)

    def _callback_failed(self, now: float, reason: str, status: int | None) -> list[Action]:
        leg = self._callback
        assert leg is not None
        self._callback = None
        actions: list[Action] = [leg.cdr(now, reason, status)]
        actions += self._cancel_if_armed("ring")
        if reason in RETRYABLE_CALLBACK_FAILURES and self.attempt < self.config.callback_attempts:
            log.info(
                "customer call %s: callback attempt %d failed (%s), retrying in %.0f s",
                self.name,
                self.attempt,
                reason,
                self.config.callback_retry_pause,
            )
            actions.append(RetryLater(now + self.config.callback_retry_pause, reason))
            return actions + self._end(now, "callback_retry", hang_up_callback=False)
        log.info(
            "customer call %s: callback gave up after attempt %d (%s)",
            self.name,
            self.attempt,
            reason,
        )
        return actions + self._end(now, f"callback_{reason}", hang_up_callback=False)

    def _on_callback_failed(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, CallbackFailed)
        self._callback_leg(event)
        return self._callback_failed(now, event.reason, event.sip_status)

    def _on_hung_up_before_answer(self, event: Event, now: float) -> list[Action]:
        # No customer can hang up a leg that has not answered: treat it as an abort and
        # cancel the attempt that is ringing, if one is.
        return self._end(now, "customer_hangup", hang_up_callback=self._callback is not None)

    def _on_abort(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, Abort)
        log.info("customer call %s: aborted (%s)", self.name, event.reason)
        return self._end(now, event.reason, hang_up_callback=self._callback is not None)

    def _on_customer_hung_up(self, event: Event, now: float) -> list[Action]:
        return self._end(now, "customer_hangup", hang_up_callback=False)

    def _timer_ring(self, event: Event, now: float) -> list[Action]:
        return [HangUp(CALLBACK, "no_answer"), *self._callback_failed(now, "no_answer", None)]

    # --- ANNOUNCING / COLLECTING ---

    def _timer_extension(self, event: Event, now: float) -> list[Action]:
        return [SendDtmf(CALLBACK, self.extension), *self._announce(now)]

    def _timer_silence(self, event: Event, now: float) -> list[Action]:
        log.info("customer call %s: silent for too long, ending", self.name)
        actions = self._quiet()
        actions += self._set_state(S.ENDING)
        actions += self._play(Prompt.GOODBYE, barge_in=False)
        actions.append(self._arm("ending", now + self.config.goodbye_timeout))
        return actions

    def _on_announced(self, event: Event, now: float) -> list[Action]:
        if self._media != "prompt":
            # A prompt stopped by barge-in may still report its end; nothing is playing now.
            return []
        self._media = None
        actions = self._set_state(S.COLLECTING)
        self.collector.start(now)
        assert self.collector.deadline is not None
        return [*actions, self._arm("collect", self.collector.deadline)]

    def _on_dial_prompt_finished(self, event: Event, now: float) -> list[Action]:
        if self._media != "prompt":
            return []
        self._media = None
        if self.collector.deadline is not None:
            return []  # keys came during the prompt: the entry's own deadline runs
        self.collector.start(now)
        assert self.collector.deadline is not None
        return [self._arm("collect", self.collector.deadline)]

    def _on_digit_announcing(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, DigitReceived)
        if event.digit in "ABCD" or "extension" in self._timers:
            # Keys before the extension is sent come from a switchboard, not the customer.
            return []
        actions = self._touch(now)
        actions += self._quiet()  # barge-in
        actions += self._set_state(S.COLLECTING)
        return actions + self._push(event.digit, now)

    def _on_digit_collecting(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, DigitReceived)
        if event.digit in "ABCD":
            return []
        actions = self._touch(now)
        actions += self._quiet()  # barge-in
        return actions + self._push(event.digit, now)

    def _push(self, key: str, now: float) -> list[Action]:
        result = self.collector.push(key, now)
        if result is None:
            assert self.collector.deadline is not None
            return [self._arm("collect", self.collector.deadline)]
        return self._cancel_if_armed("collect") + self._collected(result, now)

    def _collected(self, result: dialplan.Collected, now: float) -> list[Action]:
        log.debug("customer call %s: dial prompt gave %r", self.name, result)
        if isinstance(result, dialplan.Dialled):
            return self._authorize(result.digits)
        if isinstance(result, dialplan.SpeedDialCode):
            actions = self._set_state(S.AUTHORIZING)
            self._awaiting = "speed_dial"
            return [*actions, ResolveSpeedDial(result.code)]
        if isinstance(result, dialplan.CustomerService):
            return self._enter_operator(now)
        if isinstance(result, dialplan.LocationChange):
            if self.location_menu is None:
                log.info(
                    "customer call %s: location change asked for (trigger %s), not allowed",
                    self.name,
                    result.trigger,
                )
                return self._enter_collecting(
                    now, (Prompt.LOCATION_UNAVAILABLE, Prompt.DIAL_PROMPT), None
                )
            return self._enter_location(now)
        if isinstance(result, dialplan.EndSession):
            return self._end(now, "customer_release", hang_up_callback=True)
        if isinstance(result, dialplan.Invalid):
            return self._enter_collecting(now, (Prompt.INVALID_NUMBER, Prompt.DIAL_PROMPT), None)
        return self._enter_collecting(now, (Prompt.DIAL_PROMPT,), None)

    def _timer_collect(self, event: Event, now: float) -> list[Action]:
        result = self.collector.expire(now)
        if result is None:
            deadline = self.collector.deadline
            return [] if deadline is None else [self._arm("collect", deadline)]
        return self._collected(result, now)

    # --- AUTHORIZING ---

    def _ignore(self, event: Event, now: float) -> list[Action]:
        # While the number is checked (or goodbye plays) keys mean nothing; the prompt that
        # follows starts a fresh entry. A prompt's late end changes nothing either.
        return []

    def _on_speed_dial(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, SpeedDialResolved)
        if self._awaiting != "speed_dial":
            raise CallFlowError("SpeedDialResolved without a ResolveSpeedDial", state=self.state)
        if event.number is None:
            prompt = REFUSAL_PROMPTS[RefusalReason.UNKNOWN_SPEED_DIAL]
            return self._enter_collecting(now, (prompt, Prompt.DIAL_PROMPT), None)
        return self._authorize(event.number)

    def _on_authorized(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, Authorized)
        if self._awaiting != "authorize":
            raise CallFlowError("Authorized without an Authorize", state=self.state)
        if event.max_seconds <= 0:
            return self._enter_collecting(now, (Prompt.NO_CREDIT, Prompt.DIAL_PROMPT), None)
        actions = self._set_state(S.DIALLING)
        return actions + self._dial(event, now)

    def _dial(self, event: Authorized, now: float) -> list[Action]:
        """Place the destination leg the controller authorised."""
        actions: list[Action] = []
        self._awaiting = None
        self._dest = _Leg(
            DESTINATION,
            self._next(DESTINATION),
            event.number,
            event.dial_string,
            now,
            rate=event.rate,
            max_seconds=event.max_seconds,
            minimum=event.minimum,
            increment=event.increment,
        )
        actions.append(
            Originate(DESTINATION, event.dial_string, self.caller_id, self._dest.attempt)
        )
        actions.append(self._arm("dest_ring", now + self.config.destination_ring_timeout))
        return actions

    def _on_refused(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, Refused)
        if self._awaiting != "authorize":
            raise CallFlowError("Refused without an Authorize", state=self.state)
        prompt = REFUSAL_PROMPTS[RefusalReason(event.reason)]
        return self._enter_collecting(now, (prompt, Prompt.DIAL_PROMPT), None)

    # --- HOTLINE: the customer and the preset destination ring at once ---

    def _hotline_authorized(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, Authorized)
        if self._awaiting != "authorize":
            raise CallFlowError("Authorized without an Authorize", state=self.state)
        if event.max_seconds <= 0:
            self._awaiting = None
            self._hotline_refusal = Prompt.NO_CREDIT
            return []
        actions = self._dial(event, now)
        assert self._dest is not None
        self._dest.joined_only = True
        return actions

    def _hotline_refused(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, Refused)
        if self._awaiting != "authorize":
            raise CallFlowError("Refused without an Authorize", state=self.state)
        self._awaiting = None
        self._hotline_refusal = REFUSAL_PROMPTS[RefusalReason(event.reason)]
        return []

    def _hotline_dest(self, event: Event) -> _Leg:
        if self._dest is None:
            raise CallFlowError(
                f"{type(event).__name__} while no destination is dialled", state=self.state
            )
        return self._dest

    def _hotline_dest_ringing(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, DestinationRinging)
        self._hotline_dest(event)
        assert self._dest is not None
        if self._dest.ring_at is None:
            self._dest.ring_at = now
        if event.early_media:
            self._dest.early_media = True  # heard by the customer once they answer
        return []

    def _hotline_dest_answered(self, event: Event, now: float) -> list[Action]:
        dest = self._hotline_dest(event)
        if dest.answer_at is not None:
            raise CallFlowError("destination answered twice", state=self.state)
        dest.answer_at = now
        # The destination answered first: it hears ringback while the customer's phone rings.
        actions = self._cancel_if_armed("dest_ring")
        return [*actions, PlayTone(DESTINATION, "ringback")]

    def _hotline_dest_failed(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, DestinationFailed)
        if self._hotline_dest(event).answer_at is not None:
            raise CallFlowError("destination failed after answer", state=self.state)
        self._hotline_failure = event.cause
        return self._release_dest(now, event.cause, hang_up=False, status=event.sip_status)

    def _hotline_dest_hung_up(self, event: Event, now: float) -> list[Action]:
        # The destination gave up waiting for the customer: the customer will hear so.
        self._hotline_dest(event)
        self._hotline_failure = "unreachable"
        actions: list[Action] = [StopPlayback(DESTINATION)]
        return actions + self._release_dest(now, "normal", hang_up=False)

    def _hotline_dest_no_answer(self, event: Event, now: float) -> list[Action]:
        self._hotline_failure = "no_answer"
        return self._release_dest(now, "no_answer", hang_up=True)

    def _hotline_callback_answered(self, event: Event, now: float) -> list[Action]:
        leg = self._callback_leg(event)
        leg.answer_at = now
        actions = self._cancel_if_armed("ring")
        if self.extension:
            actions.append(SendDtmf(CALLBACK, self.extension))
        dest = self._dest
        if dest is not None and dest.answer_at is not None:
            # Both have answered: joined now, billed from now.
            actions.append(StopPlayback(DESTINATION))
            actions += self._set_state(S.CONNECTED)
            return actions + self._connect(dest, now)
        if dest is not None:
            # Its ring timer runs on from when it was dialled (kept across the move).
            actions += self._set_state(S.DIALLING)
            if dest.early_media:
                self._bridged = DESTINATION
                return [*actions, Bridge(CALLBACK, DESTINATION, early_media=True)]
            return actions + self._tone("ringback")
        if self._awaiting == "authorize":
            actions += self._set_state(S.AUTHORIZING)
            return actions + self._touch(now)
        if self._hotline_failure is not None:
            return actions + self._enter_busy(now, self._hotline_failure)
        prompt = self._hotline_refusal or Prompt.CALL_FAILED
        return actions + self._enter_collecting(now, (prompt, Prompt.DIAL_PROMPT), None)

    def _hotline_callback_failed(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, CallbackFailed)
        self._callback_leg(event)
        actions = self._release_dest(now, "customer_unreachable", hang_up=True)
        return actions + self._callback_failed(now, event.reason, event.sip_status)

    def _hotline_ring_timeout(self, event: Event, now: float) -> list[Action]:
        actions: list[Action] = [HangUp(CALLBACK, "no_answer")]
        actions += self._release_dest(now, "customer_unreachable", hang_up=True)
        return actions + self._callback_failed(now, "no_answer", None)

    # --- DIALLING / DEST_BUSY ---

    def _ringing(self, leg: _Leg, early_media: bool) -> list[Action]:
        """A far leg rings: the customer hears its early media (one way) or our ringback."""
        if leg.answer_at is not None:
            raise CallFlowError(f"{leg.leg} rings after answer", state=self.state)
        if early_media and not leg.early_media:
            leg.early_media = True
            self._bridged = leg.leg
            # A prompt still announcing customer service may finish; a tone gives way at once.
            actions = self._quiet() if self._media == "tone" else []
            return [*actions, Bridge(CALLBACK, leg.leg, early_media=True)]
        if not leg.early_media and self._media is None:
            return self._tone("ringback")
        return []

    def _on_dest_ringing(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, DestinationRinging) and self._dest is not None
        if self._dest.ring_at is None:
            self._dest.ring_at = now
        return self._ringing(self._dest, event.early_media)

    def _on_dest_answered(self, event: Event, now: float) -> list[Action]:
        dest = self._dest
        assert dest is not None
        if dest.answer_at is not None:
            raise CallFlowError("destination answered twice", state=self.state)
        dest.answer_at = now
        actions = self._quiet()
        actions += self._cancel_if_armed("dest_ring")
        actions += self._set_state(S.CONNECTED)
        return actions + self._connect(dest, now)

    def _connect(self, dest: _Leg, now: float) -> list[Action]:
        """Bridge the customer and the answered destination; billing starts now."""
        dest.bill_from = now
        self._bridged = DESTINATION
        actions: list[Action] = [Bridge(CALLBACK, DESTINATION)]
        self._billing = True
        actions.append(StartBilling(now))
        actions.append(
            self._arm(
                "credit_warning", warning_at(now, dest.max_seconds, self.config.warning_seconds)
            )
        )
        actions.append(self._arm("credit_cut", cut_at(now, dest.max_seconds)))
        return actions

    def _on_dest_failed(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, DestinationFailed)
        actions = self._quiet()
        actions += self._release_dest(now, event.cause, hang_up=False, status=event.sip_status)
        return actions + self._enter_busy(now, event.cause)

    def _timer_dest_ring(self, event: Event, now: float) -> list[Action]:
        actions = self._release_dest(now, "no_answer", hang_up=True)
        return actions + self._enter_busy(now, "no_answer")

    def _enter_busy(self, now: float, cause: str) -> list[Action]:
        actions = self._quiet()
        actions += self._set_state(S.DEST_BUSY)
        if cause == "busy":
            actions += self._tone("busy")
        else:
            actions += self._play(FAILURE_PROMPTS[cause])
        actions.append(self._arm("busy", now + self.config.busy_timeout))
        return actions

    def _timer_busy(self, event: Event, now: float) -> list[Action]:
        return self._enter_collecting(now, (Prompt.DIAL_PROMPT,), None)

    def _prompt_done(self, event: Event, now: float) -> list[Action]:
        # A failure prompt or warning ended (or a stopped prompt's late report): nothing to do.
        if self._media == "prompt":
            self._media = None
        return []

    # --- CONNECTED ---

    def _on_dest_hung_up(self, event: Event, now: float) -> list[Action]:
        actions = self._quiet()
        actions += self._release_dest(now, "normal", hang_up=False)
        return actions + self._enter_collecting(
            now, (Prompt.DIAL_PROMPT,), self.config.after_call_idle
        )

    def _timer_credit_warning(self, event: Event, now: float) -> list[Action]:
        if self._fax:
            return []  # a tone over a fax call would break it; the cut still comes
        self._media = "prompt"
        return [Play(CALLBACK, (Prompt.ONE_MINUTE_WARNING,), barge_in=False, mix=True)]

    def _on_fax(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, FaxDetected)
        if not self._fax:
            log.info("customer call %s: %s tones, the call is clear channel", self.name, event.kind)
        self._fax = True
        self._media = None  # the engine stopped what played
        return []

    def _timer_credit_cut(self, event: Event, now: float) -> list[Action]:
        log.info("customer call %s: credit exhausted, releasing the destination", self.name)
        actions = self._quiet()
        actions += self._release_dest(now, "credit_exhausted", hang_up=True)
        return actions + self._enter_collecting(now, (Prompt.NO_CREDIT, Prompt.DIAL_PROMPT), None)

    # --- CONSULTING: the destination on hold while customer service is called ---

    def _on_operator_ringing(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, OperatorRinging) and self._operator is not None
        if self._operator.ring_at is None:
            self._operator.ring_at = now
        return self._ringing(self._operator, event.early_media)

    def _on_operator_prompt_finished(self, event: Event, now: float) -> list[Action]:
        if self._media != "prompt":
            return []
        self._media = None
        operator = self._operator
        if (
            operator is not None
            and operator.ring_at is not None
            and operator.answer_at is None
            and not operator.early_media
        ):
            return self._tone("ringback")
        return []

    def _on_operator_joins(self, event: Event, now: float) -> list[Action]:
        operator = self._operator
        assert operator is not None
        operator.answer_at = now
        actions = self._quiet()
        actions += self._cancel_if_armed("operator_ring")
        actions += self._unbridge()
        self._bridged = CONFERENCE
        actions.append(Conference((CALLBACK, DESTINATION, OPERATOR)))
        return actions + self._set_state(S.CONFERENCE)

    def _back_to_destination(
        self, now: float, cause: str, *, hang_up: bool, status: int | None = None
    ) -> list[Action]:
        """Customer service was not reached: the customer talks to the destination again."""
        actions = self._quiet()
        actions += self._cancel_if_armed("operator_ring")
        actions += self._release_operator(now, cause, hang_up=hang_up, status=status)
        actions += self._unbridge()
        self._bridged = DESTINATION
        actions.append(Bridge(CALLBACK, DESTINATION))
        actions += self._set_state(S.CONNECTED)
        self._media = "prompt"
        return [*actions, Play(CALLBACK, (Prompt.CALL_FAILED,), barge_in=False, mix=True)]

    def _on_operator_failed_consulting(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, OperatorFailed)
        return self._back_to_destination(now, event.cause, hang_up=False, status=event.sip_status)

    def _timer_operator_ring_consulting(self, event: Event, now: float) -> list[Action]:
        return self._back_to_destination(now, "no_answer", hang_up=True)

    def _on_dest_left(self, event: Event, now: float) -> list[Action]:
        """The destination hung up while customer service is ringing or joined."""
        actions = self._release_dest(now, "normal", hang_up=False)
        return actions + self._with_operator_only(now)

    def _timer_credit_cut_with_operator(self, event: Event, now: float) -> list[Action]:
        log.info("customer call %s: credit exhausted, releasing the destination", self.name)
        actions = self._release_dest(now, "credit_exhausted", hang_up=True)
        return actions + self._with_operator_only(now)

    def _with_operator_only(self, now: float) -> list[Action]:
        actions = self._unbridge()
        operator = self._operator
        assert operator is not None
        if operator.answer_at is not None or operator.early_media:
            self._bridged = OPERATOR
            actions.append(Bridge(CALLBACK, OPERATOR, early_media=operator.answer_at is None))
        return actions + self._set_state(S.OPERATOR)

    # --- CONFERENCE ---

    def _on_operator_left(self, event: Event, now: float) -> list[Action]:
        actions = self._release_operator(now, "normal", hang_up=False)
        actions += self._unbridge()
        self._bridged = DESTINATION
        actions.append(Bridge(CALLBACK, DESTINATION))
        return actions + self._set_state(S.CONNECTED)

    # --- OPERATOR (customer service alone) ---

    def _on_operator_answered(self, event: Event, now: float) -> list[Action]:
        operator = self._operator
        assert operator is not None
        if operator.answer_at is not None:
            raise CallFlowError("operator answered twice", state=self.state)
        operator.answer_at = now
        actions = self._quiet()
        actions += self._cancel_if_armed("operator_ring")
        self._bridged = OPERATOR
        actions.append(Bridge(CALLBACK, OPERATOR))
        return actions

    def _on_operator_failed(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, OperatorFailed)
        actions = self._quiet()
        actions += self._release_operator(now, event.cause, hang_up=False, status=event.sip_status)
        return actions + self._enter_collecting(now, (Prompt.CALL_FAILED, Prompt.DIAL_PROMPT), None)

    def _timer_operator_ring(self, event: Event, now: float) -> list[Action]:
        actions = self._release_operator(now, "no_answer", hang_up=True)
        return actions + self._enter_collecting(now, (Prompt.CALL_FAILED, Prompt.DIAL_PROMPT), None)

    def _on_operator_hung_up(self, event: Event, now: float) -> list[Action]:
        actions = self._quiet()
        actions += self._release_operator(now, "normal", hang_up=False)
        return actions + self._enter_collecting(
            now, (Prompt.DIAL_PROMPT,), self.config.after_call_idle
        )

    # --- LOCATION: the Location menu on the callback leg (guide 5-B) ---

    def _enter_location(self, now: float) -> list[Action]:
        actions = self._quiet()
        actions += self._set_state(S.LOCATION)
        self._menu = LocationMenu(
            leg=CALLBACK, has_name=self.has_name, config=self.location_menu, name=self.name
        )
        return actions + self._from_menu(self._menu.start(now), now)

    def _on_menu_event(self, event: Event, now: float) -> list[Action]:
        menu = self._menu
        assert menu is not None
        assert isinstance(
            event,
            DigitReceived
            | PromptFinished
            | RecordFinished
            | TimerFired
            | CodeChecked
            | LocationSaved
            | NameSaved,
        )
        return self._from_menu(menu.handle(event, now), now)

    def _on_menu_hung_up(self, event: Event, now: float) -> list[Action]:
        menu = self._menu
        assert menu is not None
        return self._from_menu(menu.handle(MenuHungUp(), now), now)

    def _from_menu(self, actions: list[MenuAction], now: float) -> list[Action]:
        """The menu's actions as the call's: its timers are the call's, its end ends the call."""
        out: list[Action] = []
        for action in actions:
            if isinstance(action, StartTimer):
                out.append(self._arm(action.name, action.at))
            elif isinstance(action, CancelTimer):
                if action.name in self._timers:
                    out.append(self._cancel(action.name))
            elif isinstance(action, MenuDone):
                if action.outcome == "hung_up":
                    out += self._end(now, "customer_hangup", hang_up_callback=False)
                elif action.call_back:
                    out.append(CallBackNow())
                    out += self._end(now, "location_changed", hang_up_callback=False)
                else:
                    out += self._end(now, f"menu_{action.outcome}", hang_up_callback=False)
            else:
                out.append(action)
        return out

    # --- ENDING ---

    def _goodbye_done(self, event: Event, now: float) -> list[Action]:
        return self._end(now, "silence", hang_up_callback=True)

    def _on_goodbye_finished(self, event: Event, now: float) -> list[Action]:
        if self._media != "prompt":
            return []
        return self._goodbye_done(event, now)

    # --- commands in DIALLING, DEST_BUSY, CONNECTED, CONSULTING, CONFERENCE, OPERATOR ---

    def _on_digit_command(self, event: Event, now: float) -> list[Action]:
        assert isinstance(event, DigitReceived)
        if event.digit in "ABCD":
            return []
        commands = COMMANDS_IN[self.state]
        keys = self._keys
        to = self._far_leg()
        last, keys.last_at = keys.last_at, now
        actions: list[Action] = []
        key = event.digit
        if keys.held:
            held, keys.held = keys.held, ""
            actions += self._cancel_if_armed("hold")
            if held + key in commands:
                return actions + self._command(held + key, now)
            if to is not None:
                actions.append(ForwardDigit(to, held))
        if key in "*#":
            keys.held = key
            keys.zero_at = None
            actions.append(self._arm("hold", now + self.config.hold_back))
            return actions
        if key == "0" and "00" in commands:
            if keys.zero_at is not None and now - keys.zero_at <= self.config.hold_back:
                keys.zero_at = None
                return actions + self._command("00", now)
            quiet_before = last is None or now - last >= self.config.command_guard
            keys.zero_at = now if quiet_before else None
        else:
            keys.zero_at = None
        if to is not None:
            actions.append(ForwardDigit(to, key))
        return actions

    def _timer_hold(self, event: Event, now: float) -> list[Action]:
        held, self._keys.held = self._keys.held, ""
        to = self._far_leg()
        if held and to is not None:
            return [ForwardDigit(to, held)]
        return []

    def _command(self, command: str, now: float) -> list[Action]:
        log.info("customer call %s: command %s in %s", self.name, command, self.state.name)
        if command == "**":
            return self._end(now, "customer_release", hang_up_callback=True)
        if command == "*#":
            assert self._number is not None
            return self._authorize(self._number)
        if command == "00":
            # The destination stays (on hold, still billed) while customer service is called.
            actions = self._quiet()
            actions += self._unbridge()
            actions += self._set_state(S.CONSULTING)
            return actions + self._call_operator(now)
        actions = self._quiet()
        actions += self._release_far_legs(now, "new_number")
        return actions + self._enter_collecting(
            now, (Prompt.DIAL_PROMPT,), self.config.silence_timeout
        )


def interrupted_cdrs(legs: Iterable[Mapping[str, object]], end_at: float) -> list[WriteCdr]:
    """The CDRs of a call whose node died: its legs (:meth:`CustomerCall.describe_legs`)
    ended when it was last known alive, ``end_at``, cause ``interrupted``; an answered
    destination is billed for the talk time known."""
    return [_Leg.from_description(d).cdr(end_at, "interrupted") for d in legs]


def timer_input(name: str) -> str:
    """The table input of :class:`TimerFired` ``name``."""
    return f"timer {name}"


def input_of(event: Event) -> object:
    """The table input an event is looked up by: its class, or ``"timer <name>"``."""
    if isinstance(event, TimerFired):
        return timer_input(event.name)
    return type(event)


_C = CustomerCall
_CALLING = {S.CALLING_BACK}
_COLLECT_TARGETS = {S.COLLECTING, S.AUTHORIZING, S.OPERATOR, S.LOCATION, S.ENDED}
_COMMAND_TARGETS = {S.ENDED, S.COLLECTING}


def _timer(name: str) -> str:
    return timer_input(name)


# Every entry: (state, input) -> (handler, the states the handler may leave the machine in).
_ENTRIES: dict[tuple[CallState, object], tuple[_Handler, CallState | set[CallState]]] = {
    # The callback leg rings at the customer's location.
    (S.CALLING_BACK, CallbackRinging): (_C._on_callback_ringing, S.CALLING_BACK),
    (S.CALLING_BACK, CallbackAnswered): (_C._on_callback_answered, {S.ANNOUNCING, S.AUTHORIZING}),
    (S.CALLING_BACK, CallbackFailed): (_C._on_callback_failed, S.ENDED),
    (S.CALLING_BACK, CustomerHungUp): (_C._on_hung_up_before_answer, S.ENDED),
    (S.CALLING_BACK, _timer("ring")): (_C._timer_ring, S.ENDED),
    # Hotline: the customer and the preset destination ring at once.
    (S.HOTLINE, CallbackRinging): (_C._on_callback_ringing, S.HOTLINE),
    (S.HOTLINE, CallbackAnswered): (
        _C._hotline_callback_answered,
        {S.CONNECTED, S.DIALLING, S.AUTHORIZING, S.DEST_BUSY, S.COLLECTING},
    ),
    (S.HOTLINE, CallbackFailed): (_C._hotline_callback_failed, S.ENDED),
    (S.HOTLINE, Authorized): (_C._hotline_authorized, S.HOTLINE),
    (S.HOTLINE, Refused): (_C._hotline_refused, S.HOTLINE),
    (S.HOTLINE, DestinationRinging): (_C._hotline_dest_ringing, S.HOTLINE),
    (S.HOTLINE, DestinationAnswered): (_C._hotline_dest_answered, S.HOTLINE),
    (S.HOTLINE, DestinationFailed): (_C._hotline_dest_failed, S.HOTLINE),
    (S.HOTLINE, DestinationHungUp): (_C._hotline_dest_hung_up, S.HOTLINE),
    (S.HOTLINE, _timer("ring")): (_C._hotline_ring_timeout, S.ENDED),
    (S.HOTLINE, _timer("dest_ring")): (_C._hotline_dest_no_answer, S.HOTLINE),
    (S.HOTLINE, CustomerHungUp): (_C._on_hung_up_before_answer, S.ENDED),
    # Answered: extension DTMF, then the name and the dial prompt.
    (S.ANNOUNCING, DigitReceived): (_C._on_digit_announcing, {S.ANNOUNCING, *_COLLECT_TARGETS}),
    (S.ANNOUNCING, PromptFinished): (_C._on_announced, {S.ANNOUNCING, S.COLLECTING}),
    (S.ANNOUNCING, _timer("extension")): (_C._timer_extension, {S.ANNOUNCING, S.AUTHORIZING}),
    (S.ANNOUNCING, _timer("silence")): (_C._timer_silence, S.ENDING),
    (S.ANNOUNCING, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # The DialPrompt.
    (S.COLLECTING, DigitReceived): (_C._on_digit_collecting, _COLLECT_TARGETS),
    (S.COLLECTING, PromptFinished): (_C._on_dial_prompt_finished, S.COLLECTING),
    (S.COLLECTING, _timer("collect")): (_C._timer_collect, _COLLECT_TARGETS),
    (S.COLLECTING, _timer("silence")): (_C._timer_silence, S.ENDING),
    (S.COLLECTING, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # Waiting for the controller's answer about a number or a speed dial.
    (S.AUTHORIZING, Authorized): (_C._on_authorized, {S.DIALLING, S.COLLECTING}),
    (S.AUTHORIZING, Refused): (_C._on_refused, S.COLLECTING),
    (S.AUTHORIZING, SpeedDialResolved): (_C._on_speed_dial, {S.AUTHORIZING, S.COLLECTING}),
    (S.AUTHORIZING, DigitReceived): (_C._ignore, S.AUTHORIZING),
    (S.AUTHORIZING, PromptFinished): (_C._prompt_done, S.AUTHORIZING),
    (S.AUTHORIZING, _timer("silence")): (_C._timer_silence, S.ENDING),
    (S.AUTHORIZING, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # The destination rings.
    (S.DIALLING, DestinationRinging): (_C._on_dest_ringing, S.DIALLING),
    (S.DIALLING, DestinationAnswered): (_C._on_dest_answered, S.CONNECTED),
    (S.DIALLING, DestinationFailed): (_C._on_dest_failed, S.DEST_BUSY),
    (S.DIALLING, DigitReceived): (_C._on_digit_command, {S.DIALLING, *_COMMAND_TARGETS}),
    (S.DIALLING, PromptFinished): (_C._prompt_done, S.DIALLING),
    (S.DIALLING, _timer("dest_ring")): (_C._timer_dest_ring, S.DEST_BUSY),
    (S.DIALLING, _timer("hold")): (_C._timer_hold, S.DIALLING),
    (S.DIALLING, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # Busy, no answer or failed: *# redials, ## asks again, ** ends.
    (S.DEST_BUSY, DigitReceived): (
        _C._on_digit_command,
        {S.DEST_BUSY, S.AUTHORIZING, *_COMMAND_TARGETS},
    ),
    (S.DEST_BUSY, PromptFinished): (_C._prompt_done, S.DEST_BUSY),
    (S.DEST_BUSY, _timer("busy")): (_C._timer_busy, S.COLLECTING),
    (S.DEST_BUSY, _timer("hold")): (_C._timer_hold, S.DEST_BUSY),
    (S.DEST_BUSY, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # Talking (billed).
    (S.CONNECTED, DestinationHungUp): (_C._on_dest_hung_up, S.COLLECTING),
    (S.CONNECTED, DigitReceived): (
        _C._on_digit_command,
        {S.CONNECTED, S.CONSULTING, *_COMMAND_TARGETS},
    ),
    (S.CONNECTED, PromptFinished): (_C._prompt_done, S.CONNECTED),
    (S.CONNECTED, _timer("hold")): (_C._timer_hold, S.CONNECTED),
    (S.CONNECTED, _timer("credit_warning")): (_C._timer_credit_warning, S.CONNECTED),
    (S.CONNECTED, _timer("credit_cut")): (_C._timer_credit_cut, S.COLLECTING),
    (S.CONNECTED, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # 00 in a call: the destination on hold (billed) while customer service rings.
    (S.CONSULTING, OperatorRinging): (_C._on_operator_ringing, S.CONSULTING),
    (S.CONSULTING, OperatorAnswered): (_C._on_operator_joins, S.CONFERENCE),
    (S.CONSULTING, OperatorFailed): (_C._on_operator_failed_consulting, S.CONNECTED),
    (S.CONSULTING, DestinationHungUp): (_C._on_dest_left, S.OPERATOR),
    (S.CONSULTING, DigitReceived): (_C._on_digit_command, {S.CONSULTING, *_COMMAND_TARGETS}),
    (S.CONSULTING, PromptFinished): (_C._on_operator_prompt_finished, S.CONSULTING),
    (S.CONSULTING, _timer("operator_ring")): (_C._timer_operator_ring_consulting, S.CONNECTED),
    (S.CONSULTING, _timer("hold")): (_C._timer_hold, S.CONSULTING),
    (S.CONSULTING, _timer("credit_warning")): (_C._timer_credit_warning, S.CONSULTING),
    (S.CONSULTING, _timer("credit_cut")): (_C._timer_credit_cut_with_operator, S.OPERATOR),
    (S.CONSULTING, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # Three-way: customer, destination (billed) and customer service.
    (S.CONFERENCE, OperatorHungUp): (_C._on_operator_left, S.CONNECTED),
    (S.CONFERENCE, DestinationHungUp): (_C._on_dest_left, S.OPERATOR),
    (S.CONFERENCE, DigitReceived): (_C._on_digit_command, {S.CONFERENCE, *_COMMAND_TARGETS}),
    (S.CONFERENCE, PromptFinished): (_C._prompt_done, S.CONFERENCE),
    (S.CONFERENCE, _timer("hold")): (_C._timer_hold, S.CONFERENCE),
    (S.CONFERENCE, _timer("credit_warning")): (_C._timer_credit_warning, S.CONFERENCE),
    (S.CONFERENCE, _timer("credit_cut")): (_C._timer_credit_cut_with_operator, S.OPERATOR),
    (S.CONFERENCE, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # Customer service alone (00 at the dial prompt, or the destination left).
    (S.OPERATOR, OperatorRinging): (_C._on_operator_ringing, S.OPERATOR),
    (S.OPERATOR, OperatorAnswered): (_C._on_operator_answered, S.OPERATOR),
    (S.OPERATOR, OperatorFailed): (_C._on_operator_failed, S.COLLECTING),
    (S.OPERATOR, OperatorHungUp): (_C._on_operator_hung_up, S.COLLECTING),
    (S.OPERATOR, DigitReceived): (_C._on_digit_command, {S.OPERATOR, *_COMMAND_TARGETS}),
    (S.OPERATOR, PromptFinished): (_C._on_operator_prompt_finished, S.OPERATOR),
    (S.OPERATOR, _timer("operator_ring")): (_C._timer_operator_ring, S.COLLECTING),
    (S.OPERATOR, _timer("hold")): (_C._timer_hold, S.OPERATOR),
    (S.OPERATOR, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
    # Goodbye after silence.
    # The Location menu on the callback leg (the menu is a machine of its own).
    (S.LOCATION, DigitReceived): (_C._on_menu_event, {S.LOCATION, S.ENDED}),
    (S.LOCATION, PromptFinished): (_C._on_menu_event, {S.LOCATION, S.ENDED}),
    (S.LOCATION, RecordFinished): (_C._on_menu_event, S.LOCATION),
    (S.LOCATION, CodeChecked): (_C._on_menu_event, {S.LOCATION, S.ENDED}),
    (S.LOCATION, LocationSaved): (_C._on_menu_event, {S.LOCATION, S.ENDED}),
    (S.LOCATION, NameSaved): (_C._on_menu_event, {S.LOCATION, S.ENDED}),
    (S.LOCATION, _timer("menu.input")): (_C._on_menu_event, {S.LOCATION, S.ENDED}),
    (S.LOCATION, _timer("menu.ending")): (_C._on_menu_event, S.ENDED),
    (S.LOCATION, CustomerHungUp): (_C._on_menu_hung_up, S.ENDED),
    (S.ENDING, DigitReceived): (_C._ignore, S.ENDING),
    (S.ENDING, PromptFinished): (_C._on_goodbye_finished, {S.ENDING, S.ENDED}),
    (S.ENDING, _timer("ending")): (_C._goodbye_done, S.ENDED),
    (S.ENDING, CustomerHungUp): (_C._on_customer_hung_up, S.ENDED),
}

# Fax or modem tones can appear wherever the customer and a far end are joined (or the
# customer's fax answered the callback and sends CNG at the dial prompt).
_ENTRIES.update(
    {
        (state, FaxDetected): (_C._on_fax, state)
        for state in (
            S.ANNOUNCING,
            S.COLLECTING,
            S.AUTHORIZING,
            S.DIALLING,
            S.DEST_BUSY,
            S.CONNECTED,
            S.CONSULTING,
            S.CONFERENCE,
            S.OPERATOR,
        )
    }
)
# The controller may end a call in any state (the node stops, the callback was absorbed).
_ENTRIES.update({(state, Abort): (_C._on_abort, S.ENDED) for state in S if state is not S.ENDED})

#: The transition table of a customer's call (see the module docstring).
TABLE: fsm.Table[CallState, object, _Handler] = fsm.Table(
    "customer call",
    _ENTRIES,
    initial={S.CALLING_BACK, S.HOTLINE},
    final={S.ENDED},
    error=CallFlowError,
)


def transitions() -> list[tuple[CallState, str]]:
    """Every ``(state, input name)`` pair the machine accepts (for docs and tests)."""
    return [(state, fsm.input_name(inp)) for (state, inp), _ in TABLE]


def state_diagram() -> str:
    """The call flow as a Mermaid ``stateDiagram-v2``, drawn from :data:`TABLE`."""
    return TABLE.mermaid()
