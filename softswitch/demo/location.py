"""A Location change by phone, as ``softswitch demo --scenario location`` shows it (SPEC 4).

The customer is away from the number the switch calls back (a hotel, say). From their phone
they ring their trigger number and stay on the line (:class:`MenuCaller`, a
:class:`~softswitch.demo.carrier.Caller`): the switch answers the INVITE with 183 and its own
SDP and plays its ringback as early media; the customer presses ``#`` there (RFC 4733 to the
switch's early-media address) and the switch answers (200, ACK) into the Location menu. The
customer listens to each prompt before pressing its keys (a :class:`MenuStep` each): the
security code, the number to be called back at (country code first, then ``*``), the
extension (``*`` alone for none), the read-back (``1`` confirms: the location is saved), "call
you back now?" (``1``). The switch hangs up the trigger call and calls back at the new number
through the normal callback path: the :class:`RoomPhone` there answers, hears the dial prompt
and ends the call with ``**``.

Audio heard between the keys is kept per step (a phase of the caller's audio), so
:func:`location_checks` says, with the measured seconds, that each prompt was heard rather
than assuming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from softswitch.demo.carrier import (
    AudioCheck,
    Caller,
    CallerState,
    EmulatedCarrier,
    Phone,
    PhoneState,
    nonsilent_seconds,
    tone_seconds,
)
from softswitch.sip.message import Address

__all__ = [
    "LocationScript",
    "MenuCaller",
    "MenuStep",
    "RoomPhone",
    "location_checks",
    "run_location_change",
]


#: The switch calls back at once after "call you back now?" ``1`` (about a second; slack for CI).
CALLBACK_WITHIN_S = 3.0


@dataclass(frozen=True, slots=True)
class MenuStep:
    """One prompt of the menu and the keys the customer presses once it has been heard."""

    #: The caller's audio phase the prompt is kept under (from the last key before it).
    phase: str
    #: What the switch says, in words, for the checks.
    prompt: str
    keys: str
    #: Non-silent audio the customer waits for before pressing the keys.
    listen_s: float


@dataclass(frozen=True, slots=True)
class LocationScript:
    """What the customer does on the trigger call and at the new place (times in seconds)."""

    security_code: str = "4711"
    #: Where to be called back from now on: country code first (the hotel room's phone).
    new_number: str = "81355501234"
    #: Extension or room number; empty: none (``*`` alone).
    extension: str = ""
    #: Ringback heard in the early media before pressing ``#``.
    early_s: float = 0.5
    #: Of each prompt heard before pressing its keys (every prompt stops at the first key).
    listen_s: float = 0.8
    #: Of the read-back ("you entered 8 1 3 ...") heard before confirming with ``1``.
    readback_s: float = 2.0
    digit_ms: int = 100
    gap_ms: int = 100
    prompt_timeout: float = 10.0
    answer_timeout: float = 5.0
    bye_timeout: float = 10.0
    #: From the switch hanging up the trigger call to the room phone's call being over.
    callback_timeout: float = 30.0

    def steps(self) -> tuple[MenuStep, ...]:
        return (
            MenuStep("code", "enter your security code", self.security_code, self.listen_s),
            MenuStep(
                "number", "the number to call you back at", self.new_number + "*", self.listen_s
            ),
            MenuStep("extension", "the extension", self.extension + "*", self.listen_s),
            MenuStep("read-back", "the read-back, digit by digit", "1", self.readback_s),
            MenuStep("call back now", "saved; call you back now?", "1", self.listen_s),
        )


class MenuCaller(Caller):
    """The customer's phone on the trigger call: ``#`` in the early media, then the menu."""

    def __init__(self, carrier: EmulatedCarrier, number: str, script: LocationScript) -> None:
        super().__init__(carrier, number)
        self.script = script
        self.steps = script.steps()
        #: Non-silent seconds heard in each step's phase when its keys were pressed.
        self.heard: dict[str, float] = {}
        self.hash_at: float | None = None
        self.menu_done_at: float | None = None

    def on_connected(self) -> None:
        # Switched here, at the 2xx, so no ringback is counted as the first prompt.
        self.set_phase(self.steps[0].phase)

    async def run(self, trigger: str, target: Address | None = None) -> bool:
        """Ring ``trigger``, enter the menu, change the location; True if the switch hung up."""
        s = self.script
        await self.call(trigger, target)
        if not await self.until(
            lambda: self.state is CallerState.EARLY, s.answer_timeout, "183 with SDP"
        ):
            return await self._fail()
        self.set_phase("early")
        self._play(None, 120.0)  # a phone sends RTP (silence) as soon as it has the address
        if not await self.until(
            lambda: self.loud_seconds("early") >= s.early_s, s.prompt_timeout, "the ringback"
        ):
            return await self._fail()
        self._note(f"heard {self.loud_seconds('early'):.1f} s of ringback; presses # (RFC 4733)")
        self.hash_at = time.time()
        await self.press("#", s.digit_ms, s.gap_ms)
        if not await self.until(
            lambda: self.state is CallerState.CONNECTED, s.answer_timeout, "the answer after #"
        ):
            return await self._fail()
        for index, step in enumerate(self.steps):
            if not await self._listen(step):
                return await self._fail()
            self.heard[step.phase] = self.loud_seconds(step.phase)
            shown = step.keys if step.keys != "*" else "* (none)"
            self._note(f"heard {self.heard[step.phase]:.1f} s of {step.prompt!r}; presses {shown}")
            await self.press(step.keys, s.digit_ms, s.gap_ms)
            # From the key's end on, what is heard is the next prompt (or nothing).
            following = self.steps[index + 1].phase if index + 1 < len(self.steps) else "after"
            self.set_phase(following)
        self.menu_done_at = time.time()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ended.wait(), s.bye_timeout)
        if self.ended_by == "node":
            return True
        self.error = self.error or "the switch did not hang up after 'call you back now' 1"
        return await self._fail()

    async def _listen(self, step: MenuStep) -> bool:
        """Wait until ``step``'s prompt has been heard for its ``listen_s``."""
        return await self.until(
            lambda: self.loud_seconds(step.phase) >= step.listen_s,
            self.script.prompt_timeout,
            f"the prompt {step.prompt!r}",
        )

    async def _fail(self) -> bool:
        self._note(f"FAILED: {self.error}; hanging up")
        await self.hangup()
        return False


class RoomPhone(Phone):
    """The phone at the new location: answers the callback, hears the dial prompt, ``**``."""

    def __init__(
        self,
        carrier: EmulatedCarrier,
        number: str,
        answer_after: float = 0.3,
        *,
        listen_s: float = 1.0,
        hangup_digits: str = "**",
        prompt_timeout: float = 15.0,
        bye_timeout: float = 10.0,
    ) -> None:
        super().__init__(carrier, "room phone", number, answer_after)
        self.listen_s = listen_s
        self.hangup_digits = hangup_digits
        self.prompt_timeout = prompt_timeout
        self.bye_timeout = bye_timeout
        self.hangup_sent_at: float | None = None

    def on_connected(self) -> None:
        self._note("connected; listening for the dial prompt")
        self.carrier.spawn(self._run_script())

    async def _run_script(self) -> None:
        self.set_phase("prompt")
        self._play(None, self.prompt_timeout + self.bye_timeout + 5)
        if not await self.until(
            lambda: self.loud_seconds("prompt") >= self.listen_s,
            self.prompt_timeout,
            "the dial prompt",
        ):
            self._note(f"FAILED: {self.error}")
            await self.hangup()
            return
        self._note(f"heard {self.loud_seconds('prompt'):.1f} s of the dial prompt")
        self.set_phase("release")
        self.hangup_sent_at = time.time()
        self._note(f"presses {self.hangup_digits} to end the call")
        await self.press(self.hangup_digits)
        if not await self.until(
            lambda: self.state is PhoneState.ENDED, self.bye_timeout, "the node's BYE"
        ):
            self._note(f"FAILED: {self.error}; hanging up")
            await self.hangup()


async def run_location_change(
    carrier: EmulatedCarrier,
    trigger: str,
    script: LocationScript,
    room: RoomPhone,
    *,
    target: Address | None = None,
) -> MenuCaller:
    """The whole scenario: the trigger call through the menu, then the callback to ``room``.

    ``room`` must be behind ``carrier`` (:meth:`EmulatedCarrier.add_phone`) with the number
    ``script.new_number``. Returns the caller; :func:`location_checks` judges both.
    """
    caller = MenuCaller(carrier, carrier.config.customer_number, script)
    if await caller.run(trigger, target):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(room.ended.wait(), script.callback_timeout)
    return caller


def location_checks(
    carrier: EmulatedCarrier, caller: MenuCaller, room: RoomPhone
) -> list[AudioCheck]:
    """The demo's verdicts on the location change, each with its measured figure."""
    script = caller.script
    statuses = [status for _, status in caller.statuses]
    ringback = nonsilent_seconds(caller.audio("early"))
    # Shown, not required: which country's cadence the switch picks is its business.
    jp_ringback = tone_seconds(caller.audio("early"), 400.0)
    answered_in = (
        f"{caller.answered_at - caller.hash_at:.2f} s after #"
        if caller.answered_at is not None and caller.hash_at is not None
        else f"state {caller.state.value}, final {caller.final_status}"
    )
    checks = [
        AudioCheck(
            "the switch sent 183 with its SDP for the trigger call (early media, not answered)",
            caller.early_at is not None and 183 in statuses,
            ", ".join(str(status) for status in statuses) or "no response",
        ),
        AudioCheck(
            "customer heard the switch's ringback in the early media",
            ringback >= script.early_s,
            f"{ringback:.1f} s of audio ({jp_ringback:.1f} s of it 400 Hz, Japan's ringback)",
        ),
        AudioCheck(
            "# in the early media answered the trigger call (200, ACK)",
            caller.answered_at is not None
            and caller.hash_at is not None
            and caller.answered_at >= caller.hash_at
            and caller.final_status == 200,
            answered_in,
        ),
    ]
    for step in caller.steps:
        heard = caller.heard.get(step.phase)
        shown = step.keys if step.keys != "*" else "*"
        checks.append(
            AudioCheck(
                f"customer heard {step.prompt!r} before pressing {shown}",
                heard is not None and heard >= step.listen_s,
                "not reached" if heard is None else f"{heard:.1f} s of audio",
            )
        )
    callback_after = (
        room.invited_at - caller.ended_at
        if room.invited_at is not None and caller.ended_at is not None
        else None
    )
    prompt_s = nonsilent_seconds(room.audio("prompt"))
    checks += [
        AudioCheck(
            "the switch hung up the trigger call (BYE)",
            caller.ended_by == "node",
            f"ended by {caller.ended_by}",
        ),
        AudioCheck(
            f"the callback reached the room phone at the new number {room.number}",
            callback_after is not None and callback_after <= CALLBACK_WITHIN_S,
            "no INVITE" if callback_after is None else f"{callback_after:.1f} s after the BYE",
        ),
        AudioCheck(
            "room phone answered and heard the dial prompt",
            room.connected_at is not None and prompt_s >= room.listen_s,
            f"{prompt_s:.1f} s of audio",
        ),
        AudioCheck(
            f"{room.hangup_digits} ended the call: the node hung up the room phone",
            room.ended_by == "node",
            f"ended by {room.ended_by}",
        ),
        AudioCheck(
            "nothing called the old number",
            carrier.customer.invited_at is None,
            f"customer phone {carrier.customer.state.value}",
        ),
    ]
    return checks
