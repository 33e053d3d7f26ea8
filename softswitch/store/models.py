"""Domain records the store hands to the service layer (SPEC section 7).

Every record is a frozen dataclass: a snapshot of rows at the moment of reading, never a live
object bound to a session. The service changes state only through the repositories.

Conventions shared by every record:

* Times are UTC Unix epoch seconds as ``float`` (the ``now`` the service already carries). The
  database keeps them as integer microseconds, so a time survives a round trip to the
  microsecond.
* Money is an ``int`` in minor units of the service's single currency: 1 = 1 yen for a yen
  service, 1 = 1 cent for a dollar service. No floats ever touch a balance. The one exception
  is a rate's price per minute, which may have a fraction of a minor unit (up to 6 decimal
  places, a ``Decimal``; rating rounds each call's cost up to a whole minor unit).
* Numbers are E.164 digits without ``+`` or the international prefix (``815012345678``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal


class AccountKind(enum.Enum):
    """SPEC section 7: how the account's trigger behaves."""

    STANDARD = "standard"
    TRAVELER = "traveler"
    HOTLINE = "hotline"


class Language(enum.Enum):
    """The prompt set an account hears."""

    JA = "ja"
    EN = "en"


class AccountStatus(enum.Enum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class LegKind(enum.Enum):
    """The legs of one customer session; a CDR row is one leg."""

    TRIGGER = "trigger"
    CALLBACK = "callback"
    DESTINATION = "destination"
    OPERATOR = "operator"


class CallbackState(enum.Enum):
    """A pending callback: ``pending`` -> ``claimed`` -> ``done`` | ``failed`` | ``pending``."""

    PENDING = "pending"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"


class CodeCheck(enum.Enum):
    """The answer to a security code attempt (SPEC section 4)."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    LOCKED = "locked"
    NO_CODE = "no_code"


@dataclass(frozen=True, slots=True)
class Location:
    """Where the switch calls the customer back: a number plus an optional extension/room."""

    number: str
    extension: str | None = None


@dataclass(frozen=True, slots=True)
class LocationChange:
    """One change of an account's callback location: ``previous`` became ``location`` at
    ``changed_at``, made ``via`` the phone menu (``"phone"``), the admin CLI (``"cli"``) ...
    ``None`` is "no location"."""

    id: int
    account_id: int
    changed_at: float
    via: str
    previous: Location | None
    location: Location | None


@dataclass(frozen=True, slots=True)
class Account:
    """A customer account. ``available_credit`` is what a new call may still reserve."""

    id: int
    name: str
    kind: AccountKind
    language: Language
    status: AccountStatus
    location: Location | None
    triggers: tuple[str, ...]
    has_security_code: bool
    failed_code_count: int
    locked_until: float | None
    recorded_name_path: str | None
    credit_limit: int
    credit_used: int
    credit_reserved: int
    hotline_destination: str | None
    created_at: float
    updated_at: float

    @property
    def available_credit(self) -> int:
        return self.credit_limit - self.credit_used - self.credit_reserved

    @property
    def active(self) -> bool:
        return self.status is AccountStatus.ACTIVE


@dataclass(frozen=True, slots=True)
class RegisteredNumber:
    """A number the customer keeps on file to choose as a location."""

    id: int
    account_id: int
    number: str
    extension: str | None
    label: str


@dataclass(frozen=True, slots=True)
class SpeedDial:
    """``0`` + ``code`` at the dial prompt dials ``number`` (code is 2-4 digits in all)."""

    account_id: int
    code: str
    number: str
    label: str = ""


@dataclass(frozen=True, slots=True)
class Rate:
    """The price of calls to numbers starting with ``prefix`` (longest prefix wins).

    Billing (SPEC section 7, arithmetic in ``softswitch.service.rating``) counts from the answer
    of the destination leg: at least ``minimum_s`` seconds, then whole ``increment_s`` steps, at
    ``price_per_minute`` minor units. ``blocked`` prefixes cannot be dialled.

    ``price_per_minute`` may have up to 6 decimal places (``Decimal("2.35")``); a whole price
    may be given as an ``int``. The store always returns a ``Decimal`` (``Decimal("20")``,
    which equals ``20``), and ``rating`` computes with it exactly.
    """

    prefix: str
    description: str
    price_per_minute: int | Decimal
    increment_s: int = 6
    minimum_s: int = 30
    blocked: bool = False


@dataclass(frozen=True, slots=True)
class Cdr:
    """A call detail record: one row per leg; ``call_uuid`` groups one customer session.

    ``cause_code`` is the SIP final status of the leg (200, 486, 487 ...) or, where the leg
    ended after answer, the status or Q.850 cause the service recorded; ``cause_text`` says it
    in words. ``id`` is ``None`` until the record is written.
    """

    call_uuid: str
    leg: LegKind
    account_id: int | None
    from_number: str
    to_number: str
    setup_at: float
    ring_at: float | None = None
    answer_at: float | None = None
    end_at: float | None = None
    cause_code: int | None = None
    cause_text: str = ""
    billed_seconds: int = 0
    cost: int = 0
    node_id: str = ""
    id: int | None = None


@dataclass(frozen=True, slots=True)
class PendingCallback:
    """A callback the switch owes an account, kept in the database so no node loses it."""

    id: int
    account_id: int
    trigger: str
    requested_at: float
    due_at: float
    attempts: int
    state: CallbackState
    claimed_by: str | None
    claimed_until: float | None
    last_error: str | None
    #: The customer call it belongs to: every attempt's CDRs share it ("" for old rows).
    call_uuid: str = ""


@dataclass(frozen=True, slots=True)
class CreditReservation:
    """Credit held for a live call until it is committed (charged) or released."""

    call_uuid: str
    account_id: int
    amount: int
    created_at: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A customer call in progress, as its node last described it (its heartbeat).

    ``legs`` is the call flow's description of the legs (JSON text: numbers, times, rates) the
    CDRs of an interrupted call are written from; ``reservation`` the credit held for the
    destination, if any; times are wall-clock UTC seconds.
    """

    call_uuid: str
    node_id: str
    account_id: int
    callback_id: int | None
    trigger: str
    started_at: float
    alive_at: float
    answered: bool
    legs: str
    reservation: str | None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A ``softswitch serve`` sharing the store, as it last wrote itself down (issue 12).

    ``address``: where its SIP listens; ``heartbeat_at``: its last sign of life (every few
    seconds while it runs); ``stopped_at``: when it stopped cleanly (None while it runs, or
    if it died). Times are wall-clock UTC seconds.
    """

    id: str
    address: str
    version: str
    started_at: float
    heartbeat_at: float
    stopped_at: float | None = None

    def state(self, now: float, stale_after: float) -> str:
        """``up``, ``stopped`` (cleanly) or ``dead`` (no heartbeat for ``stale_after``)."""
        if self.stopped_at is not None:
            return "stopped"
        return "dead" if self.heartbeat_at < now - stale_after else "up"
