"""The store: accounts, numbers, speed dials, rates, credit, CDRs and the callback queue.

SQLAlchemy 2 Core (async) on SQLite (one node, WAL) or PostgreSQL (several nodes), with Alembic
migrations. Open it with ``await Store.open(url)``; every repository method is one short
transaction returning frozen records from ``softswitch.store.models``. See ``repos`` for how
credit reservation and callback claiming stay correct under concurrency.
"""

from softswitch.store.db import Database, DatabaseUnavailable, DatabaseUrlError
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
    Location,
    LocationChange,
    PendingCallback,
    Rate,
    RegisteredNumber,
    SpeedDial,
)
from softswitch.store.repos import (
    UNSET,
    AccountRepo,
    CallbackQueue,
    CdrFilter,
    CdrRepo,
    Conflict,
    CreditRepo,
    CsvError,
    IllegalTransition,
    InvalidInput,
    NotFound,
    RateRepo,
    SpeedDialRepo,
    Store,
    StoreError,
    TooManySpeedDials,
)

__all__ = [
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
    "Database",
    "DatabaseUnavailable",
    "DatabaseUrlError",
    "IllegalTransition",
    "InvalidInput",
    "Language",
    "LegKind",
    "Location",
    "LocationChange",
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
]
