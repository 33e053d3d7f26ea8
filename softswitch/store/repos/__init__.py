"""Repositories: the store's API to the service layer and the admin CLI (SPEC section 7).

One module per repository, each method one short transaction returning frozen records from
``softswitch.store.models``:

* ``accounts``: accounts, trigger and registered numbers, location and its history,
  security-code hashing and the location menu's lock;
* ``speed_dials``, ``rates``: the 115 speed dials of an account, prices per prefix;
* ``credit``: reservations for live calls; ``cdrs``: call detail records;
* ``callbacks``: the durable callback queue and its life-cycle table;
* ``live_calls``: live calls as their node describes them; ``nodes``: the nodes sharing the
  store and their heartbeats;
* ``store``: the ``Store`` facade that opens the database and holds one of each;
* ``common``: the errors, ``UNSET`` and number checks they share.

Methods that read then write use ``Database.write()``, which is ``BEGIN IMMEDIATE`` on SQLite
(one writer at a time) and READ COMMITTED with row locks on PostgreSQL, so the same code is
safe on both: see ``credit`` (one conditional UPDATE decides a race for the last credit) and
``callbacks`` (claims with a lease, ``SKIP LOCKED``, one open callback per account).

Repositories take and return records, never files: CSV import and export live beside the CLI
(``softswitch.cli.csvio``). Every name this package exported as one module is exported here.
"""

from softswitch.store.models import (
    Account,
    AccountKind,
    AccountStatus,
    CallbackState,
    Cdr,
    CodeCheck,
    CreditReservation,
    Language,
    LegKind,
    LiveCall,
    Location,
    LocationChange,
    NodeInfo,
    PendingCallback,
    Rate,
    RegisteredNumber,
    SpeedDial,
)
from softswitch.store.repos.accounts import (
    AccountRepo,
    check_security_code,
    hash_security_code,
    lock_account,
)
from softswitch.store.repos.callbacks import CALLBACK_TRANSITIONS, OPEN_STATES, CallbackQueue
from softswitch.store.repos.cdrs import CDR_CSV_COLUMNS, CdrFilter, CdrRepo, iso_utc
from softswitch.store.repos.common import (
    EXTENSION,
    MAX_NUMBER_DIGITS,
    SECURITY_CODE,
    SPEED_DIAL_CODE,
    UNSET,
    Conflict,
    CsvError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    StoreError,
    check_extension,
    e164_number,
    log,
    number_digits,
)
from softswitch.store.repos.credit import CreditRepo
from softswitch.store.repos.live_calls import LiveCallRepo
from softswitch.store.repos.nodes import NodeRepo
from softswitch.store.repos.rates import (
    MAX_PREFIX_DIGITS,
    PRICE_DECIMALS,
    RateRepo,
    parse_price,
    price_from_micros,
    price_micros,
)
from softswitch.store.repos.speed_dials import (
    SpeedDialRepo,
    TooManySpeedDials,
    speed_dial,
    speed_dial_code,
)
from softswitch.store.repos.store import Store
from softswitch.store.tables import MAX_SPEED_DIALS, PRICE_SCALE

__all__ = [
    "CALLBACK_TRANSITIONS",
    "CDR_CSV_COLUMNS",
    "EXTENSION",
    "MAX_NUMBER_DIGITS",
    "MAX_PREFIX_DIGITS",
    "MAX_SPEED_DIALS",
    "OPEN_STATES",
    "PRICE_DECIMALS",
    "PRICE_SCALE",
    "SECURITY_CODE",
    "SPEED_DIAL_CODE",
    "UNSET",
    "Account",
    "AccountKind",
    "AccountRepo",
    "AccountStatus",
    "CallbackQueue",
    "CallbackState",
    "Cdr",
    "CdrFilter",
    "CdrRepo",
    "CodeCheck",
    "Conflict",
    "CreditRepo",
    "CreditReservation",
    "CsvError",
    "IllegalTransition",
    "InvalidInput",
    "Language",
    "LegKind",
    "LiveCall",
    "LiveCallRepo",
    "Location",
    "LocationChange",
    "NodeInfo",
    "NodeRepo",
    "NotFound",
    "PendingCallback",
    "Rate",
    "RateRepo",
    "RegisteredNumber",
    "SpeedDial",
    "SpeedDialRepo",
    "Store",
    "StoreError",
    "TooManySpeedDials",
    "check_extension",
    "check_security_code",
    "e164_number",
    "hash_security_code",
    "iso_utc",
    "lock_account",
    "log",
    "number_digits",
    "parse_price",
    "price_from_micros",
    "price_micros",
    "speed_dial",
    "speed_dial_code",
]
