"""What every repository shares: the store's errors, ``UNSET``, and number/extension checks.

Two checks for numbers. ``number_digits`` only cleans and counts digits: it is for numbers the
switch answers (trigger numbers) and for look-ups. ``e164_number`` is for numbers the switch
will call (locations, registered numbers, hotline destinations, speed dials): they must be
international E.164 numbers by the dial plan's own rules (``softswitch.service.dialplan``:
an assigned country code first, no national ``0`` after it, at most 15 digits), so a number
written in national format is refused when it is stored, not when the callback fails.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite

from softswitch.service.dialplan import DestinationRefused, normalize_destination

log = logging.getLogger("softswitch.store")

MAX_NUMBER_DIGITS = 15  # E.164
SPEED_DIAL_CODE = re.compile(r"0[1-9][0-9]{0,2}")  # "00" is customer service (SPEC section 2)
SECURITY_CODE = re.compile(r"[0-9]{4}")
EXTENSION = re.compile(r"[0-9*#]{1,16}")


def by_dialect(build: Callable[[Any], Any]) -> dict[str, Any]:
    """A statement that needs a dialect's own syntax (``INSERT ... ON CONFLICT``), built once
    per supported database, keyed as :attr:`Database.dialect` names it."""
    return {"sqlite": build(sqlite), "postgresql": build(postgresql)}


class StoreError(Exception):
    """Base of the errors the store reports to its callers."""


class NotFound(StoreError):
    """The account, callback or reservation does not exist."""


class Conflict(StoreError):
    """The change contradicts stored data (a trigger number in use, 115 speed dials ...)."""


class InvalidInput(StoreError):
    """A value is malformed (not a number, a bad speed-dial code ...)."""


class CsvError(InvalidInput):
    """A CSV file is wrong; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {message}")
        self.path = str(path)
        self.line = line


class IllegalTransition(StoreError):
    """A pending callback was asked to make a move its state does not allow."""


class _Unset(enum.Enum):
    UNSET = 0


UNSET = _Unset.UNSET
"""Default of ``AccountRepo.update`` arguments: leave the field as it is."""


def number_digits(text: str, what: str = "number") -> str:
    """E.164 digits of ``text`` (spaces, dashes, dots, brackets and a leading ``+`` allowed)."""
    cleaned = re.sub(r"[\s\-.()]", "", text.strip())
    cleaned = cleaned.removeprefix("+")
    if not cleaned.isascii() or not cleaned.isdigit():
        raise InvalidInput(f"{what} {text!r}: digits only (country code first)")
    if not 2 <= len(cleaned) <= MAX_NUMBER_DIGITS:
        raise InvalidInput(f"{what} {text!r}: must have 2 to {MAX_NUMBER_DIGITS} digits")
    return cleaned


E164_EXPECTED = (
    "expected E.164: country code first, no + or 00, no national 0, at most 15 digits "
    "(e.g. 81312345678 for Tokyo 03-1234-5678)"
)


def e164_number(text: str, what: str = "number") -> str:
    """The digits of an international number the switch may call, or ``InvalidInput``.

    Spaces, dashes, dots, brackets and a leading ``+`` are allowed; the message says what is
    wrong and what format is expected.
    """
    cleaned = re.sub(r"[\s\-.()]", "", text.strip()).removeprefix("+")
    if not cleaned.isascii() or not cleaned.isdigit():
        problem = "digits only"
    elif cleaned.startswith("0"):
        problem = "starts with 0 (a national number, or the international prefix 00)"
    else:
        try:
            return normalize_destination(cleaned, "").e164
        except DestinationRefused as exc:
            problem = exc.detail
    raise InvalidInput(f"{what} {text!r}: {problem}; {E164_EXPECTED}")


def check_extension(text: str | None) -> str | None:
    """A valid extension/room number (``None`` for none)."""
    if text is None or text == "":
        return None
    if not EXTENSION.fullmatch(text):
        raise InvalidInput(f"extension {text!r}: up to 16 of 0-9 * #")
    return text


def to_seconds(micro: int) -> float:
    """Integer microseconds (as the tables keep time) -> epoch seconds."""
    return micro / 1_000_000
