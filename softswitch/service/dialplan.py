"""The DialPrompt: collecting what the customer dials, and turning it into a safe dial string.

Theory of operation. :class:`DigitCollector` consumes one key press at a time (``push``) and
the expiry of its single deadline (``expire``); it returns nothing while the entry is still
open, or one :data:`Collected` result when it is complete. It never reads a clock: ``now`` is
passed in, and :attr:`DigitCollector.deadline` says when ``expire`` is due. The grammar, from
the user guide (sections 2, 5-B, 8, 12):

* ``<digits> *``            a destination, country code first (:class:`Dialled`);
* ``# *``                   discard everything and replay the prompt (:class:`Restart`);
* ``0 <1-3 digits>``        a SpeedDial code, 2 to 4 keys in all (``03``, ``087``); complete
                            at 4 keys, on ``*``, or after a short pause (:class:`SpeedDialCode`);
* ``0 0``                   customer service (:class:`CustomerService`);
* ``<trigger number>`` then ``*`` or ``#``: the customer's own trigger number, which starts the
                            Location change menu (guide 5-B: "dial 1 + your trigger number, then
                            ``#`` at the first ring"; ``1`` is just NANP's country code);
* ``* *`` on an empty entry ends the session, as it does everywhere else (:class:`EndSession`).

Anything else that ends with ``*`` but is not all digits, or grows past ``max_digits``, is
:class:`Invalid`; a first-digit or inter-digit timeout replays the prompt. Country codes never
start with ``0``, so a leading ``0`` can only be a SpeedDial or ``00``.

:func:`normalize_destination` validates an E.164 number (country code assigned, at most 15
digits, no national trunk prefix ``0`` after the country code, not under a blocked prefix) and
prepends the trunk's international prefix. It only ever builds a dial string from ASCII digits
and a validated prefix, so nothing a caller types can smuggle URI or dial-string syntax into an
outgoing request (the class of bug behind CVE-2010-0685, where digits reached a dial string
unchecked).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from softswitch.service.countries import KEEPS_LEADING_ZERO, Country, country_for

__all__ = [
    "E164_MAX_DIGITS",
    "NSN_MIN_DIGITS",
    "Collected",
    "CustomerService",
    "DestinationRefused",
    "DialString",
    "Dialled",
    "DigitCollector",
    "EndSession",
    "Invalid",
    "LocationChange",
    "RefusalReason",
    "Restart",
    "SpeedDialCode",
    "normalize_destination",
    "validate_international_prefix",
]

#: ITU-T E.164 section 6: an international number has at most 15 digits (country code included).
E164_MAX_DIGITS = 15
#: The shortest national significant number in service (Niue, Tokelau: 4 digits).
NSN_MIN_DIGITS = 4

_DIGITS = frozenset("0123456789")
_KEYS = frozenset("0123456789*#")
_PREFIX_RE = re.compile(r"\+|[0-9]{1,4}")


# --- the digit collector ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dialled:
    """A destination ended with ``*``: ASCII digits, country code first, not yet validated."""

    digits: str


@dataclass(frozen=True, slots=True)
class SpeedDialCode:
    """A SpeedDial code as dialled, leading ``0`` included (``"03"``, ``"087"``)."""

    code: str


@dataclass(frozen=True, slots=True)
class CustomerService:
    """``00``: connect customer service."""


@dataclass(frozen=True, slots=True)
class LocationChange:
    """The customer dialled their own trigger number: start the Location change menu."""

    trigger: str


@dataclass(frozen=True, slots=True)
class EndSession:
    """``**`` at the dial prompt: the customer is done."""


@dataclass(frozen=True, slots=True)
class Restart:
    """Replay the dial prompt; ``reason`` is ``"hash_star"``, ``"no_input"`` or ``"timeout"``."""

    reason: str


@dataclass(frozen=True, slots=True)
class Invalid:
    """An entry that cannot be a number (a ``#`` inside it, or too many keys)."""

    entry: str


Collected = (
    Dialled | SpeedDialCode | CustomerService | LocationChange | EndSession | Restart | Invalid
)


class DigitCollector:
    """Collects one DialPrompt entry; see the module docstring for the grammar.

    ``start(now)`` opens an entry (call it when the prompt has finished playing, so the customer
    gets the whole first-digit timeout); ``push`` also opens one implicitly (barge-in: a key
    pressed during the prompt). After a result the collector is idle until the next ``start``
    or ``push``.
    """

    def __init__(
        self,
        *,
        first_digit_timeout: float = 10.0,
        inter_digit_timeout: float = 10.0,
        speed_dial_timeout: float = 3.0,
        max_digits: int = 20,
        trigger_numbers: Iterable[str] = (),
    ) -> None:
        self.first_digit_timeout = first_digit_timeout
        self.inter_digit_timeout = inter_digit_timeout
        self.speed_dial_timeout = speed_dial_timeout
        self.max_digits = max_digits
        self.trigger_numbers: frozenset[str] = frozenset(trigger_numbers)
        self._entry = ""
        self._deadline: float | None = None

    @property
    def entry(self) -> str:
        """The keys of the open entry so far."""
        return self._entry

    @property
    def deadline(self) -> float | None:
        """When :meth:`expire` is due, or None while idle."""
        return self._deadline

    def start(self, now: float) -> None:
        """Open an empty entry and arm the first-digit timeout."""
        self._entry = ""
        self._deadline = now + self.first_digit_timeout

    def reset(self) -> None:
        """Discard the entry and go idle (no deadline)."""
        self._entry = ""
        self._deadline = None

    def push(self, key: str, now: float) -> Collected | None:
        """One key press; a result when the entry is complete, else None."""
        if key not in _KEYS:
            raise ValueError(f"not a dial-pad key: {key!r}")
        entry = self._entry
        result: Collected | None = None
        if key == "*":
            if entry == "*":
                result = EndSession()
            elif entry.endswith("#"):
                if entry[:-1] in self.trigger_numbers:
                    result = LocationChange(entry[:-1])
                else:
                    result = Restart("hash_star")
            elif entry == "":
                self._entry = "*"
            else:
                result = self._classify(entry)
        elif key == "#" and entry in self.trigger_numbers:
            # Guide 5-B: the customer waits for "the first ring" and presses #; there is no ring
            # to wait for here, so the # itself completes the entry. A later * still restarts.
            self._entry = entry + "#"
            result = LocationChange(entry)
        elif entry == "0" and key == "0":
            result = CustomerService()
        else:
            self._entry = entry + key
            if self._entry.startswith("0") and len(self._entry) == 4:
                result = self._classify(self._entry)
            elif len(self._entry) > self.max_digits:
                result = Invalid(self._entry)
        if result is not None:
            self.reset()
            return result
        self._deadline = now + (
            self.speed_dial_timeout
            if self._entry.startswith("0") and len(self._entry) >= 2
            else self.inter_digit_timeout
        )
        return None

    def expire(self, now: float) -> Collected | None:
        """The deadline passed: a pending SpeedDial completes, anything else replays the prompt."""
        if self._deadline is None or now < self._deadline:
            return None
        entry = self._entry
        self.reset()
        if entry == "":
            return Restart("no_input")
        if entry.startswith("0") and len(entry) >= 2:
            return self._classify(entry)
        return Restart("timeout")

    def _classify(self, entry: str) -> Collected:
        if not _DIGITS.issuperset(entry):
            return Invalid(entry)
        if entry.startswith("0"):
            if 2 <= len(entry) <= 4:
                return SpeedDialCode(entry)
            return Invalid(entry)
        if entry in self.trigger_numbers:
            return LocationChange(entry)
        return Dialled(entry)


# --- destination validation ------------------------------------------------------------------


class RefusalReason(enum.Enum):
    """Why a destination is not dialled (the ``reason`` of the service's Refused event)."""

    INVALID = "invalid"
    BLOCKED = "blocked"
    NO_CREDIT = "no_credit"
    OVER_LIMIT = "over_limit"
    UNKNOWN_SPEED_DIAL = "unknown_speed_dial"


class DestinationRefused(ValueError):
    """:func:`normalize_destination` will not build a dial string for this number."""

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class DialString:
    """A validated destination: the E.164 digits and what the trunk is sent."""

    e164: str
    country: Country
    dial_string: str

    @property
    def national_number(self) -> str:
        """The digits after the country code."""
        return self.e164[len(self.country.code) :]


def validate_international_prefix(prefix: str) -> str:
    """``prefix`` if it is ``+``, 1-4 ASCII digits (``00``, ``011`` ...) or empty, else ValueError.

    Empty: the trunk takes bare E.164 digits (country code first), as many carriers do.
    """
    if prefix and not (prefix.isascii() and _PREFIX_RE.fullmatch(prefix)):
        raise ValueError(f"international prefix must be '+', 1-4 digits or empty, got {prefix!r}")
    return prefix


def normalize_destination(
    digits: str,
    international_prefix: str,
    *,
    blocked_prefixes: Collection[str] = (),
) -> DialString:
    """Validate the international number ``digits`` (country code first) and build its dial string.

    Raises :class:`DestinationRefused` (``INVALID`` or ``BLOCKED``) for anything that is not a
    plausible, allowed E.164 number, and ``ValueError`` for a malformed ``international_prefix``
    (a configuration error, not the customer's). ``blocked_prefixes`` are E.164 digit prefixes
    (``"1900"``, ``"881"``); a leading ``+`` in them is ignored.
    """
    validate_international_prefix(international_prefix)
    # str.isdigit() accepts non-ASCII digits ("٣", "³"); only 0-9 may reach a dial string.
    if not digits or not _DIGITS.issuperset(digits):
        raise DestinationRefused(RefusalReason.INVALID, f"not a string of digits 0-9: {digits!r}")
    if len(digits) > E164_MAX_DIGITS:
        raise DestinationRefused(
            RefusalReason.INVALID, f"{len(digits)} digits, E.164 allows {E164_MAX_DIGITS}"
        )
    country = country_for(digits)
    if country is None:
        raise DestinationRefused(RefusalReason.INVALID, f"no country code starts {digits!r}")
    national = digits[len(country.code) :]
    if len(national) < NSN_MIN_DIGITS:
        raise DestinationRefused(
            RefusalReason.INVALID, f"national number {national!r} after +{country.code} too short"
        )
    if national.startswith("0") and country.code not in KEEPS_LEADING_ZERO:
        raise DestinationRefused(
            RefusalReason.INVALID,
            f"national trunk prefix 0 after +{country.code} (dial the area code without its 0)",
        )
    if country.code == "1" and national[0] in "01":
        # NANP area codes are [2-9]XX; "1 1..." is a customer dialling the US trunk prefix twice.
        raise DestinationRefused(RefusalReason.INVALID, "NANP area codes start with 2-9")
    for prefix in blocked_prefixes:
        bare = prefix.removeprefix("+")
        if bare and digits.startswith(bare):
            raise DestinationRefused(RefusalReason.BLOCKED, f"+{digits} is under blocked +{bare}")
    return DialString(digits, country, international_prefix + digits)
