"""One customer's Callback session as a sans-IO state machine: events in, actions out.

Theory of operation. The runtime creates a :class:`CustomerCall` when a Trigger schedules a
Callback, calls :meth:`CustomerCall.start` and then feeds it events with :meth:`CustomerCall.handle`
(``now`` passed in, never read). Each call returns the actions to perform, in order. The machine
knows no SIP, media or database: legs are named (``"callback"``, ``"destination"``,
``"operator"``), prompts are names the runtime maps to files in the account's language, and
money questions go out as :class:`Authorize` / :class:`ResolveSpeedDial` and come back as
:class:`Authorized`, :class:`Refused` or :class:`SpeedDialResolved`.

All transitions live in this file: ``_TABLE`` maps ``(state, event type)`` to a handler, and
an event without an entry raises :class:`CallFlowError` and changes nothing. State changes go
through ``_set_state``, which logs ``old -> new`` and cancels every timer the new state does not
run (``TIMERS_IN``), so a timer can only fire where it means something. Timers are named;
:class:`StartTimer` on an armed name re-arms it; the runtime delivers :class:`TimerFired` only
for armed timers (an unarmed one is a :class:`CallFlowError`).

Contract with the runtime: after the machine sends :class:`HangUp` for a leg, events about that
leg are not reported (a 200 crossing our CANCEL is the runtime's to BYE). Leg events carry the
leg they are about, which must be the leg the state expects. Digits from legs other than the
callback leg are relayed by the media bridge and ignored here.

The SPEC rules it implements (sections 1, 2, 7): up to ``callback_attempts`` callback attempts
on busy / no answer / unreachable with a pause; extension DTMF, recorded name and dial prompt
on answer; barge-in; the DialPrompt grammar (:mod:`softswitch.service.dialplan`); busy handling
(``*#`` redial, ``##`` new number, ``**`` end); in-call ``**``, ``##``, ``00`` with ``*`` and
``#`` held back ``hold_back`` seconds before they are forwarded; the one-minute credit warning and
the cut; silence and idle endings; hotline / preset destinations; a CDR (:class:`WriteCdr`) for
every leg attempt, answered or not.

In-call ``00``: a ``0`` is always forwarded at once (bank menus); a second ``0`` within
``hold_back`` seconds makes ``00`` only if the first ``0`` came after ``command_guard`` seconds
without keys, so ``1005`` typed into an IVR does not reach customer service. ``00`` releases
the destination (billing stops) before customer service is called.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from softswitch.service import dialplan
from softswitch.service.dialplan import DigitCollector, RefusalReason
from softswitch.service.rating import Rate, billable_seconds, cost, cut_at, warning_at

__all__ = [
    "CALLBACK",
    "DESTINATION",
    "OPERATOR",
    "Action",
    "Authorize",
    "Authorized",
    "Bridge",
    "CallFlowConfig",
    "CallFlowError",
    "CallState",
    "CallbackAnswered",
    "CallbackFailed",
    "CallbackRinging",
    "CancelTimer",
    "ChangeLocation",
    "CustomerCall",
    "CustomerHungUp",
    "DestinationAnswered",
    "DestinationFailed",
    "DestinationHungUp",
    "DestinationRinging",
    "DigitReceived",
    "Event",
    "Finished",
    "ForwardDigit",
    "HangUp",
    "Originate",
    "Play",
    "PlayTone",
    "PromptFinished",
    "Refused",
    "ResolveSpeedDial",
    "SendDtmf",
    "SpeedDialResolved",
    "StartBilling",
    "StartTimer",
    "StopBilling",
    "StopPlayback",
    "TimerFired",
    "Unbridge",
    "WriteCdr",
]

log = logging.getLogger("softswitch.service.callflow")

CALLBACK = "callback"
DESTINATION = "destination"
OPERATOR = "operator"

#: RFC 4733 section 3.2 events 0-15; A-D exist on some phones and are ignored by the service.
DTMF_KEYS = "0123456789*#ABCD"
CALLBACK_FAILURES = frozenset({"busy", "no_answer", "unreachable", "rejected"})
RETRYABLE_CALLBACK_FAILURES = frozenset({"busy", "no_answer", "unreachable"})
DESTINATION_FAILURES = frozenset({"busy", "no_answer", "rejected", "congestion", "unreachable"})

#: The prompt played for each refusal, before the dial prompt again.
REFUSAL_PROMPTS: Mapping[RefusalReason, str] = MappingProxyType(
    {
        RefusalReason.INVALID: "invalid_number",
        RefusalReason.BLOCKED: "blocked_number",
        RefusalReason.NO_CREDIT: "no_credit",
        RefusalReason.OVER_LIMIT: "over_limit",
        RefusalReason.UNKNOWN_SPEED_DIAL: "unknown_speed_dial",
    }
)
#: The prompt for a destination that failed other than busy (busy gets the busy tone).
FAILURE_PROMPTS: Mapping[str, str] = MappingProxyType(
    {
        "no_answer": "no_answer",
        "rejected": "call_failed",
        "congestion": "call_failed",
        "unreachable": "call_failed",
    }
)


class CallFlowError(Exception):
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
class DigitReceived:
    """A key press on ``leg`` (RFC 4733 or in-band, already de-duplicated)."""

    digit: str
    leg: str = CALLBACK
    source: str = "rfc4733"

    def __post_init__(self) -> None:
        if len(self.digit) != 1 or self.digit not in DTMF_KEYS:
            raise ValueError(f"not a DTMF key: {self.digit!r}")


@dataclass(frozen=True, slots=True)
class PromptFinished:
    """The prompts of the last :class:`Play` on ``leg`` played to the end."""

    leg: str = CALLBACK


@dataclass(frozen=True, slots=True)
class DestinationRinging:
    """The destination (or operator) leg rings; ``early_media``: it sent 183 with SDP."""

    early_media: bool = False
    leg: str = DESTINATION


@dataclass(frozen=True, slots=True)
class DestinationAnswered:
    """The destination (or operator) leg answered (200)."""

    leg: str = DESTINATION


@dataclass(frozen=True, slots=True)
class DestinationFailed:
    """The destination (or operator) leg failed before answer."""

    cause: str
    sip_status: int | None = None
    leg: str = DESTINATION

    def __post_init__(self) -> None:
        if self.cause not in DESTINATION_FAILURES:
            raise ValueError(f"destination failure cause {self.cause!r}")


@dataclass(frozen=True, slots=True)
class DestinationHungUp:
    """The answered destination (or operator) leg hung up (BYE)."""

    leg: str = DESTINATION


@dataclass(frozen=True, slots=True)
class CustomerHungUp:
    """The callback leg is gone (customer BYE), or the runtime aborts the session."""


@dataclass(frozen=True, slots=True)
class Authorized:
    """The runtime validated, rated and reserved credit for ``number``.

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
    """The runtime will not dial: ``reason`` is a :class:`RefusalReason` value."""

    reason: str

    def __post_init__(self) -> None:
        RefusalReason(self.reason)


@dataclass(frozen=True, slots=True)
class SpeedDialResolved:
    """The answer to :class:`ResolveSpeedDial`: the stored number, or None if there is none."""

    number: str | None


@dataclass(frozen=True, slots=True)
class TimerFired:
    """The timer ``name`` (armed by :class:`StartTimer`) is due."""

    name: str


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
    | CustomerHungUp
    | Authorized
    | Refused
    | SpeedDialResolved
    | TimerFired
)


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Originate:
    """Place ``leg`` (an INVITE through the trunk, or to the operator URI).

    ``attempt`` numbers the legs of one name within the session (callback retries, every
    destination dialled); the matching :class:`WriteCdr` carries the same number.
    """

    leg: str
    dial_string: str
    caller_id: str | None = None
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class HangUp:
    """Release ``leg``: CANCEL if unanswered, BYE if answered."""

    leg: str
    reason: str


@dataclass(frozen=True, slots=True)
class Play:
    """Play prompts on ``leg`` in order; ``("name",)`` is the customer's recorded name.

    ``barge_in``: the first key press stops it (the machine sends :class:`StopPlayback`).
    ``mix``: play over the bridge (the other party keeps talking) instead of replacing audio.
    """

    leg: str
    prompts: tuple[str, ...]
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
class Authorize:
    """Validate, rate and reserve credit for ``number``; answer Authorized or Refused."""

    number: str


@dataclass(frozen=True, slots=True)
class ResolveSpeedDial:
    """Look up the SpeedDial ``code`` (``"03"``); answer :class:`SpeedDialResolved`."""

    code: str


@dataclass(frozen=True, slots=True)
class ChangeLocation:
    """Hand the callback leg to the Location change menu for ``trigger``."""

    trigger: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Arm (or re-arm) the timer ``name`` to fire at ``at``."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Disarm the timer ``name``."""

    name: str


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
class Finished:
    """The session is over; every leg is released and recorded."""

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
    | Authorize
    | ResolveSpeedDial
    | ChangeLocation
    | StartTimer
    | CancelTimer
    | StartBilling
    | StopBilling
    | WriteCdr
    | ForwardDigit
    | Finished
)


# --- configuration and state -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallFlowConfig:
    """Timing and limits of a session (seconds)."""

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


class CallState(enum.Enum):
    CALLING_BACK = "calling_back"
    ANNOUNCING = "announcing"
    COLLECTING = "collecting"
    AUTHORIZING = "authorizing"
    DIALLING = "dialling"
    DEST_BUSY = "dest_busy"
    CONNECTED = "connected"
    OPERATOR = "operator"
    ENDING = "ending"
    ENDED = "ended"


S = CallState

#: The timers each state runs; entering a state cancels the others.
TIMERS_IN: Mapping[CallState, frozenset[str]] = MappingProxyType(
    {
        S.CALLING_BACK: frozenset({"ring", "retry"}),
        S.ANNOUNCING: frozenset({"extension", "silence"}),
        S.COLLECTING: frozenset({"collect", "silence"}),
        S.AUTHORIZING: frozenset({"silence"}),
        S.DIALLING: frozenset({"dest_ring", "hold"}),
        S.DEST_BUSY: frozenset({"busy", "hold"}),
        S.CONNECTED: frozenset({"hold", "credit_warning", "credit_cut"}),
        S.OPERATOR: frozenset({"dest_ring", "hold"}),
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

    def cdr(self, end_at: float, cause: str, sip_status: int | None = None) -> WriteCdr:
        billed = charged = 0
        if self.answer_at is not None and self.rate is not None:
            billed = min(
                billable_seconds(end_at - self.answer_at, self.minimum, self.increment),
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


class CustomerCall:
    """The Callback session of one customer.

    ``location`` is the dial string of the callback leg (already normalised by the runtime),
    ``extension`` the DTMF sent after answer (hotel room, PBX extension; ``0-9*#`` only),
    ``has_name`` whether a recorded name exists, ``preset_destination`` a number dialled at once
    on answer (hotline accounts, web triggers with a destination), ``trigger_numbers`` the
    account's own trigger numbers (dialling one starts the Location change menu), ``operator``
    the dial string of customer service.
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
    ) -> None:
        if any(ch not in "0123456789*#" for ch in extension):
            raise ValueError(f"extension may only hold 0-9 * #: {extension!r}")
        self.config = config or CallFlowConfig()
        self.location = location
        self.caller_id = caller_id
        self.extension = extension
        self.has_name = has_name
        self.preset_destination = preset_destination
        self.operator = operator
        self.collector = DigitCollector(
            first_digit_timeout=self.config.first_digit_timeout,
            inter_digit_timeout=self.config.inter_digit_timeout,
            speed_dial_timeout=self.config.speed_dial_timeout,
            max_digits=self.config.max_digits,
            trigger_numbers=trigger_numbers,
        )
        self.state = CallState.CALLING_BACK
        self.attempt = 0
        self._started = False
        self._timers: dict[str, float] = {}
        self._callback: _Leg | None = None
        self._peer: _Leg | None = None
        self._media: str | None = None  # what plays on the callback leg: "prompt", "tone", None
        self._bridged = False
        self._billing = False
        self._awaiting: str | None = None  # "speed_dial" or "authorize" while AUTHORIZING
        self._number: str | None = None  # the last number sent to Authorize (for *# redial)
        self._keys = _Keys()
        self._placed: dict[str, int] = {}

    # --- public API ---

    @property
    def armed_timers(self) -> Mapping[str, float]:
        """The timers armed now, by name, with their due time."""
        return MappingProxyType(self._timers)

    @property
    def finished(self) -> bool:
        return self.state is CallState.ENDED

    def start(self, now: float) -> list[Action]:
        """Place the first callback attempt."""
        if self._started:
            raise CallFlowError("session already started")
        self._started = True
        return self._originate_callback(now)

    def handle(self, event: Event, now: float) -> list[Action]:
        """Feed one event; returns the actions to perform, in order.

        Raises :class:`CallFlowError` (changing nothing) for an event the current state has
        no entry for.
        """
        if not self._started:
            raise CallFlowError("session not started")
        handler = _TABLE.get((self.state, type(event)))
        if handler is None:
            raise CallFlowError(f"{self.state.name}: no transition for {type(event).__name__}")
        if isinstance(event, TimerFired) and event.name not in self._timers:
            raise CallFlowError(f"{self.state.name}: timer {event.name!r} is not armed")
        leg = getattr(event, "leg", None)
        if leg is not None and not isinstance(event, DigitReceived | PromptFinished):
            expected = self._peer.leg if self._peer is not None else None
            if leg != expected:
                raise CallFlowError(f"{self.state.name}: event for {leg}, expected {expected}")
        if isinstance(event, TimerFired):
            del self._timers[event.name]
        return handler(self, event, now)

    # --- plumbing ---

    def _set_state(self, new: CallState) -> list[Action]:
        old = self.state
        self.state = new
        log.debug("customer call %x: %s -> %s", id(self), old.name, new.name)
        self._keys = _Keys(last_at=self._keys.last_at)
        return [self._cancel(name) for name in list(self._timers) if name not in TIMERS_IN[new]]

    def _arm(self, name: str, at: float) -> StartTimer:
        self._timers[name] = at
        return StartTimer(name, at)

    def _cancel(self, name: str) -> CancelTimer:
        del self._timers[name]
        return CancelTimer(name)

    def _quiet(self) -> list[Action]:
        if self._media is None:
            return []
        self._media = None
        return [StopPlayback(CALLBACK)]

    def _play(self, *prompts: str, barge_in: bool = True) -> list[Action]:
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

    def _release_peer(
        self, now: float, cause: str, *, hang_up: bool, status: int | None = None
    ) -> list[Action]:
        """End the destination/operator leg: stop billing, unbridge, hang up, record."""
        peer = self._peer
        if peer is None:
            return []
        actions: list[Action] = []
        if self._billing:
            self._billing = False
            actions.append(StopBilling(now))
        if self._bridged:
            self._bridged = False
            actions.append(Unbridge(CALLBACK, peer.leg))
        if hang_up:
            actions.append(HangUp(peer.leg, cause))
        actions.append(peer.cdr(now, cause, status))
        self._peer = None
        return actions

    def _end(self, now: float, cause: str, *, hang_up_callback: bool) -> list[Action]:
        """Release everything, record every leg, and finish."""
        actions = self._release_peer(now, cause, hang_up=True)
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
        self, now: float, prompts: tuple[str, ...], idle: float | None
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
        return self._play("name", "dial_prompt") if self.has_name else self._play("dial_prompt")

    def _authorize(self, number: str) -> list[Action]:
        actions = self._quiet()
        actions += self._set_state(S.AUTHORIZING)
        self._awaiting = "authorize"
        self._number = number
        actions.append(Authorize(number))
        return actions

    def _enter_operator(self, now: float) -> list[Action]:
        actions = self._quiet()
        actions += self._set_state(S.OPERATOR)
        actions += self._play("connecting_customer_service", barge_in=False)
        self._peer = _Leg(OPERATOR, self._next(OPERATOR), self.operator, self.operator, now)
        actions.append(Originate(OPERATOR, self.operator, self.caller_id, self._peer.attempt))
        actions.append(self._arm("dest_ring", now + self.config.destination_ring_timeout))
        return actions

    def _next(self, leg: str) -> int:
        """The number of the next ``leg`` placed in this session (CDR ``attempt``), from 1."""
        self._placed[leg] = self._placed.get(leg, 0) + 1
        return self._placed[leg]

    def _touch(self, now: float) -> list[Action]:
        """A customer key press: the session is not silent."""
        return [self._arm("silence", now + self.config.silence_timeout)]

    # --- CALLING_BACK ---

    def _callback_leg(self, event: Event) -> _Leg:
        if self._callback is None:
            raise CallFlowError(f"{type(event).__name__} while no callback attempt is ringing")
        return self._callback

    def _on_callback_ringing(self, event: CallbackRinging, now: float) -> list[Action]:
        leg = self._callback_leg(event)
        if leg.ring_at is None:
            leg.ring_at = now
        return []

    def _on_callback_answered(self, event: CallbackAnswered, now: float) -> list[Action]:
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
        if "ring" in self._timers:
            actions.append(self._cancel("ring"))
        if reason in RETRYABLE_CALLBACK_FAILURES and self.attempt < self.config.callback_attempts:
            log.info("callback attempt %d failed (%s), retrying", self.attempt, reason)
            actions.append(self._arm("retry", now + self.config.callback_retry_pause))
            return actions
        log.info("callback gave up after attempt %d (%s)", self.attempt, reason)
        return actions + self._end(now, f"callback_{reason}", hang_up_callback=False)

    def _on_callback_failed(self, event: CallbackFailed, now: float) -> list[Action]:
        self._callback_leg(event)
        return self._callback_failed(now, event.reason, event.sip_status)

    def _on_customer_hung_up(self, event: CustomerHungUp, now: float) -> list[Action]:
        # Before answer this is the runtime aborting the session: cancel the ringing attempt.
        hang_up = self.state is S.CALLING_BACK and self._callback is not None
        return self._end(now, "customer_hangup", hang_up_callback=hang_up)

    # --- timers ---

    def _on_timer(self, event: TimerFired, now: float) -> list[Action]:
        method: Callable[[CustomerCall, float], list[Action]] = _TIMERS[event.name]
        return method(self, now)

    def _timer_ring(self, now: float) -> list[Action]:
        return [HangUp(CALLBACK, "no_answer"), *self._callback_failed(now, "no_answer", None)]

    def _timer_retry(self, now: float) -> list[Action]:
        return self._originate_callback(now)

    def _timer_extension(self, now: float) -> list[Action]:
        return [SendDtmf(CALLBACK, self.extension), *self._announce(now)]

    def _timer_silence(self, now: float) -> list[Action]:
        log.info("customer call %x: silent for too long, ending", id(self))
        actions = self._quiet()
        actions += self._set_state(S.ENDING)
        actions += self._play("goodbye", barge_in=False)
        actions.append(self._arm("ending", now + self.config.goodbye_timeout))
        return actions

    def _timer_ending(self, now: float) -> list[Action]:
        return self._end(now, "silence", hang_up_callback=True)

    def _timer_collect(self, now: float) -> list[Action]:
        result = self.collector.expire(now)
        if result is None:
            deadline = self.collector.deadline
            return [] if deadline is None else [self._arm("collect", deadline)]
        return self._collected(result, now)

    def _timer_dest_ring(self, now: float) -> list[Action]:
        actions = self._release_peer(now, "no_answer", hang_up=True)
        if self.state is S.OPERATOR:
            return actions + self._enter_collecting(now, ("call_failed", "dial_prompt"), None)
        return actions + self._enter_busy(now, "no_answer")

    def _timer_busy(self, now: float) -> list[Action]:
        return self._enter_collecting(now, ("dial_prompt",), None)

    def _timer_hold(self, now: float) -> list[Action]:
        held, self._keys.held = self._keys.held, ""
        if held and self._forwarding():
            return [ForwardDigit(self._peer.leg if self._peer else DESTINATION, held)]
        return []

    def _timer_credit_warning(self, now: float) -> list[Action]:
        self._media = "prompt"
        return [Play(CALLBACK, ("one_minute_warning",), barge_in=False, mix=True)]

    def _timer_credit_cut(self, now: float) -> list[Action]:
        log.info("customer call %x: credit exhausted, releasing the destination", id(self))
        actions = self._quiet()
        actions += self._release_peer(now, "credit_exhausted", hang_up=True)
        return actions + self._enter_collecting(now, ("no_credit", "dial_prompt"), None)

    # --- ANNOUNCING / COLLECTING ---

    def _on_prompt_finished(self, event: PromptFinished, now: float) -> list[Action]:
        if event.leg != CALLBACK or self._media != "prompt":
            # A prompt stopped by barge-in may still report its end; nothing is playing now.
            return []
        self._media = None
        if self.state is S.ANNOUNCING:
            actions = self._set_state(S.COLLECTING)
            self.collector.start(now)
            assert self.collector.deadline is not None
            return [*actions, self._arm("collect", self.collector.deadline)]
        if self.state is S.COLLECTING and self.collector.deadline is None:
            self.collector.start(now)
            assert self.collector.deadline is not None
            return [self._arm("collect", self.collector.deadline)]
        if self.state is S.ENDING:
            return self._end(now, "silence", hang_up_callback=True)
        peer = self._peer
        if (
            self.state is S.OPERATOR
            and peer is not None
            and peer.ring_at is not None
            and peer.answer_at is None
            and not peer.early_media
        ):
            return self._tone("ringback")
        return []

    def _on_digit_collecting(self, event: DigitReceived, now: float) -> list[Action]:
        if event.leg != CALLBACK or event.digit in "ABCD":
            return []
        if self.state is S.ANNOUNCING and "extension" in self._timers:
            # Keys before the extension is sent come from a switchboard, not the customer.
            return []
        actions = self._touch(now)
        if self._media is not None:
            actions += self._quiet()  # barge-in
        if self.state is S.ANNOUNCING:
            actions += self._set_state(S.COLLECTING)
        result = self.collector.push(event.digit, now)
        if result is None:
            assert self.collector.deadline is not None
            return [*actions, self._arm("collect", self.collector.deadline)]
        if "collect" in self._timers:
            actions.append(self._cancel("collect"))
        return actions + self._collected(result, now)

    def _collected(self, result: dialplan.Collected, now: float) -> list[Action]:
        log.debug("customer call %x: dial prompt gave %r", id(self), result)
        if isinstance(result, dialplan.Dialled):
            return self._authorize(result.digits)
        if isinstance(result, dialplan.SpeedDialCode):
            actions = self._set_state(S.AUTHORIZING)
            self._awaiting = "speed_dial"
            return [*actions, ResolveSpeedDial(result.code)]
        if isinstance(result, dialplan.CustomerService):
            return self._enter_operator(now)
        if isinstance(result, dialplan.LocationChange):
            return [
                ChangeLocation(result.trigger),
                *self._end(now, "location_change", hang_up_callback=False),
            ]
        if isinstance(result, dialplan.EndSession):
            return self._end(now, "customer_release", hang_up_callback=True)
        if isinstance(result, dialplan.Invalid):
            return self._play("invalid_number", "dial_prompt")
        return self._play("dial_prompt")

    # --- AUTHORIZING ---

    def _on_digit_ignored(self, event: DigitReceived, now: float) -> list[Action]:
        # While the number is checked (or goodbye plays) keys mean nothing; the prompt that
        # follows starts a fresh entry.
        return []

    def _on_speed_dial(self, event: SpeedDialResolved, now: float) -> list[Action]:
        if self._awaiting != "speed_dial":
            raise CallFlowError("SpeedDialResolved without a ResolveSpeedDial")
        if event.number is None:
            prompt = REFUSAL_PROMPTS[RefusalReason.UNKNOWN_SPEED_DIAL]
            return self._enter_collecting(now, (prompt, "dial_prompt"), None)
        return self._authorize(event.number)

    def _on_authorized(self, event: Authorized, now: float) -> list[Action]:
        if self._awaiting != "authorize":
            raise CallFlowError("Authorized without an Authorize")
        if event.max_seconds <= 0:
            return self._enter_collecting(now, ("no_credit", "dial_prompt"), None)
        actions = self._set_state(S.DIALLING)
        self._awaiting = None
        self._peer = _Leg(
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
            Originate(DESTINATION, event.dial_string, self.caller_id, self._peer.attempt)
        )
        actions.append(self._arm("dest_ring", now + self.config.destination_ring_timeout))
        return actions

    def _on_refused(self, event: Refused, now: float) -> list[Action]:
        if self._awaiting != "authorize":
            raise CallFlowError("Refused without an Authorize")
        prompt = REFUSAL_PROMPTS[RefusalReason(event.reason)]
        return self._enter_collecting(now, (prompt, "dial_prompt"), None)

    # --- DIALLING / OPERATOR ringing ---

    def _on_ringing(self, event: DestinationRinging, now: float) -> list[Action]:
        peer = self._peer
        assert peer is not None
        if peer.answer_at is not None:
            raise CallFlowError(f"{peer.leg} rings after answer")
        if peer.ring_at is None:
            peer.ring_at = now
        if event.early_media and not peer.early_media:
            peer.early_media = True
            self._bridged = True
            # A prompt still announcing customer service may finish; a tone gives way at once.
            actions = self._quiet() if self._media == "tone" else []
            return [*actions, Bridge(CALLBACK, peer.leg, early_media=True)]
        if not peer.early_media and self._media is None:
            return self._tone("ringback")
        return []

    def _on_answered(self, event: DestinationAnswered, now: float) -> list[Action]:
        peer = self._peer
        assert peer is not None
        if peer.answer_at is not None:
            raise CallFlowError(f"{peer.leg} answered twice")
        peer.answer_at = now
        actions = self._quiet()
        if "dest_ring" in self._timers:
            actions.append(self._cancel("dest_ring"))
        self._bridged = True
        actions.append(Bridge(CALLBACK, peer.leg))
        if self.state is S.OPERATOR:
            return actions
        actions += self._set_state(S.CONNECTED)
        self._billing = True
        actions.append(StartBilling(now))
        actions.append(
            self._arm(
                "credit_warning", warning_at(now, peer.max_seconds, self.config.warning_seconds)
            )
        )
        actions.append(self._arm("credit_cut", cut_at(now, peer.max_seconds)))
        return actions

    def _on_failed(self, event: DestinationFailed, now: float) -> list[Action]:
        peer = self._peer
        assert peer is not None
        if peer.answer_at is not None:
            raise CallFlowError(f"{peer.leg} failed after answer")
        actions = self._quiet()
        actions += self._release_peer(now, event.cause, hang_up=False, status=event.sip_status)
        if self.state is S.OPERATOR:
            return actions + self._enter_collecting(now, ("call_failed", "dial_prompt"), None)
        return actions + self._enter_busy(now, event.cause)

    def _enter_busy(self, now: float, cause: str) -> list[Action]:
        actions = self._quiet()
        actions += self._set_state(S.DEST_BUSY)
        if cause == "busy":
            actions += self._tone("busy")
        else:
            actions += self._play(FAILURE_PROMPTS[cause])
        actions.append(self._arm("busy", now + self.config.busy_timeout))
        return actions

    def _on_hung_up(self, event: DestinationHungUp, now: float) -> list[Action]:
        peer = self._peer
        assert peer is not None
        if peer.answer_at is None:
            raise CallFlowError(f"{peer.leg} hung up before answer (report DestinationFailed)")
        actions = self._quiet()
        actions += self._release_peer(now, "normal", hang_up=False)
        return actions + self._enter_collecting(now, ("dial_prompt",), self.config.after_call_idle)

    # --- commands in DIALLING, DEST_BUSY, CONNECTED, OPERATOR ---

    def _forwarding(self) -> bool:
        return self._peer is not None and self._peer.answer_at is not None

    def _on_digit_command(self, event: DigitReceived, now: float) -> list[Action]:
        if event.leg != CALLBACK or event.digit in "ABCD":
            return []
        commands = COMMANDS_IN[self.state]
        keys = self._keys
        forward = self._forwarding()
        to = self._peer.leg if self._peer is not None else DESTINATION
        last, keys.last_at = keys.last_at, now
        actions: list[Action] = []
        key = event.digit
        if keys.held:
            held, keys.held = keys.held, ""
            if "hold" in self._timers:
                actions.append(self._cancel("hold"))
            if held + key in commands:
                return actions + self._command(held + key, now)
            if forward:
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
        if forward:
            actions.append(ForwardDigit(to, key))
        return actions

    def _command(self, command: str, now: float) -> list[Action]:
        log.info("customer call %x: command %s in %s", id(self), command, self.state.name)
        if command == "**":
            return self._end(now, "customer_release", hang_up_callback=True)
        if command == "*#":
            assert self._number is not None
            return self._authorize(self._number)
        cause = "customer_service" if command == "00" else "new_number"
        actions = self._quiet()
        actions += self._release_peer(now, cause, hang_up=True)
        if command == "00":
            return actions + self._enter_operator(now)
        return actions + self._enter_collecting(now, ("dial_prompt",), self.config.silence_timeout)


_Handler = Callable[[CustomerCall, Any, float], list[Action]]

_COLLECTING_ENTRIES: dict[type, _Handler] = {
    DigitReceived: CustomerCall._on_digit_collecting,
    PromptFinished: CustomerCall._on_prompt_finished,
    TimerFired: CustomerCall._on_timer,
    CustomerHungUp: CustomerCall._on_customer_hung_up,
}
_PEER_RINGING: dict[type, _Handler] = {
    DestinationRinging: CustomerCall._on_ringing,
    DestinationAnswered: CustomerCall._on_answered,
    DestinationFailed: CustomerCall._on_failed,
}
_COMMANDS: dict[type, _Handler] = {
    DigitReceived: CustomerCall._on_digit_command,
    PromptFinished: CustomerCall._on_prompt_finished,
    TimerFired: CustomerCall._on_timer,
    CustomerHungUp: CustomerCall._on_customer_hung_up,
}

_BY_STATE: dict[CallState, dict[type, _Handler]] = {
    S.CALLING_BACK: {
        CallbackRinging: CustomerCall._on_callback_ringing,
        CallbackAnswered: CustomerCall._on_callback_answered,
        CallbackFailed: CustomerCall._on_callback_failed,
        TimerFired: CustomerCall._on_timer,
        CustomerHungUp: CustomerCall._on_customer_hung_up,
    },
    S.ANNOUNCING: _COLLECTING_ENTRIES,
    S.COLLECTING: _COLLECTING_ENTRIES,
    S.AUTHORIZING: {
        Authorized: CustomerCall._on_authorized,
        Refused: CustomerCall._on_refused,
        SpeedDialResolved: CustomerCall._on_speed_dial,
        DigitReceived: CustomerCall._on_digit_ignored,
        PromptFinished: CustomerCall._on_prompt_finished,
        TimerFired: CustomerCall._on_timer,
        CustomerHungUp: CustomerCall._on_customer_hung_up,
    },
    S.DIALLING: {**_PEER_RINGING, **_COMMANDS},
    S.DEST_BUSY: _COMMANDS,
    S.CONNECTED: {DestinationHungUp: CustomerCall._on_hung_up, **_COMMANDS},
    S.OPERATOR: {
        **_PEER_RINGING,
        DestinationHungUp: CustomerCall._on_hung_up,
        **_COMMANDS,
    },
    S.ENDING: {
        DigitReceived: CustomerCall._on_digit_ignored,
        PromptFinished: CustomerCall._on_prompt_finished,
        TimerFired: CustomerCall._on_timer,
        CustomerHungUp: CustomerCall._on_customer_hung_up,
    },
    S.ENDED: {},
}

#: The transition table: ``(state, event type) -> handler``; a missing pair is a CallFlowError.
_TABLE: dict[tuple[CallState, type], _Handler] = {
    (state, event_type): handler
    for state, entries in _BY_STATE.items()
    for event_type, handler in entries.items()
}

_TIMERS: dict[str, Callable[[CustomerCall, float], list[Action]]] = {
    "ring": CustomerCall._timer_ring,
    "retry": CustomerCall._timer_retry,
    "extension": CustomerCall._timer_extension,
    "silence": CustomerCall._timer_silence,
    "ending": CustomerCall._timer_ending,
    "collect": CustomerCall._timer_collect,
    "dest_ring": CustomerCall._timer_dest_ring,
    "busy": CustomerCall._timer_busy,
    "hold": CustomerCall._timer_hold,
    "credit_warning": CustomerCall._timer_credit_warning,
    "credit_cut": CustomerCall._timer_credit_cut,
}


def transitions() -> list[tuple[CallState, str]]:
    """Every ``(state, event name)`` pair the machine accepts (for docs and tests)."""
    return [(state, event_type.__name__) for state, event_type in _TABLE]
