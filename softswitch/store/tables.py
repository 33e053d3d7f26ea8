"""The schema (SPEC section 7) as SQLAlchemy Core tables, one ``MetaData`` for Alembic.

Portable on purpose: the same tables run on SQLite (one node) and PostgreSQL (several nodes).
Hence times are ``BIGINT`` microseconds since the Unix epoch, UTC (exact, sortable, no time
zone handling in either driver), money is ``BIGINT`` minor units, and enumerations are short
strings guarded by CHECK constraints rather than native enum types. A rate's price may have a
fraction of a minor unit (2.35 cents a minute): it is kept as ``BIGINT`` millionths of a minor
unit (``price_micros_per_minute``), exact on both databases, where a ``NUMERIC`` column would be
a float on SQLite.

Credit is kept on the account row (``credit_used``, ``credit_reserved``) so that reserving is one
conditional UPDATE of one row, which both databases make atomic (see ``repos.CreditRepo``).

A migration in ``migrations/versions`` creates exactly these tables; a test compares the two.
Change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

# Explicit names keep migrations stable across databases.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real 64-bit key.
BigId = BigInteger().with_variant(Integer(), "sqlite")

MAX_SPEED_DIALS = 115
#: Rate prices are kept in millionths of a minor unit: up to 6 decimal places, exactly.
PRICE_SCALE = 1_000_000

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False, server_default="standard"),
    Column("language", String(2), nullable=False, server_default="ja"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("location_number", String(32)),
    Column("location_extension", String(16)),
    Column("security_code_hash", String(200)),
    Column("failed_code_count", Integer, nullable=False, server_default="0"),
    Column("locked_until_us", BigInteger),
    Column("recorded_name_path", Text),
    Column("credit_limit", BigInteger, nullable=False, server_default="0"),
    Column("credit_used", BigInteger, nullable=False, server_default="0"),
    Column("credit_reserved", BigInteger, nullable=False, server_default="0"),
    Column("hotline_destination", String(32)),
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    CheckConstraint("kind IN ('standard', 'traveler', 'hotline')", name="kind"),
    CheckConstraint("language IN ('ja', 'en')", name="language"),
    CheckConstraint("status IN ('active', 'suspended')", name="status"),
    CheckConstraint("credit_reserved >= 0", name="reserved_not_negative"),
)

#: Every change of an account's callback location (SPEC section 4): what it was before, what it
#: became, when, and through what (``via``: "phone" for the Location menu, "cli" ...).
location_history = Table(
    "location_history",
    metadata,
    Column("id", BigId, primary_key=True),
    Column(
        "account_id",
        Integer,
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("changed_us", BigInteger, nullable=False),
    Column("via", String(16), nullable=False),
    Column("previous_number", String(32)),
    Column("previous_extension", String(16)),
    Column("new_number", String(32)),
    Column("new_extension", String(16)),
    Index("ix_location_history_account_id_changed_us", "account_id", "changed_us"),
)

trigger_numbers = Table(
    "trigger_numbers",
    metadata,
    Column("number", String(32), primary_key=True),
    Column(
        "account_id",
        Integer,
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
)

registered_numbers = Table(
    "registered_numbers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column(
        "account_id",
        Integer,
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("number", String(32), nullable=False),
    Column("extension", String(16)),
    Column("label", String(100), nullable=False, server_default=""),
    UniqueConstraint("account_id", "number", "extension"),
)

speed_dials = Table(
    "speed_dials",
    metadata,
    Column(
        "account_id",
        Integer,
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("code", String(4), primary_key=True),
    Column("number", String(32), nullable=False),
    Column("label", String(100), nullable=False, server_default=""),
)

rates = Table(
    "rates",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("description", String(200), nullable=False, server_default=""),
    Column("increment_s", Integer, nullable=False, server_default="6"),
    Column("minimum_s", Integer, nullable=False, server_default="30"),
    Column("blocked", Boolean, nullable=False, server_default=text("false")),
    # Millionths of a minor unit per minute (PRICE_SCALE), so 2.35 cents/min is 2_350_000.
    Column("price_micros_per_minute", BigInteger, nullable=False),
    CheckConstraint("increment_s > 0", name="increment_positive"),
    CheckConstraint("minimum_s >= 0", name="minimum_not_negative"),
    CheckConstraint("price_micros_per_minute >= 0", name="price_not_negative"),
)

cdrs = Table(
    "cdrs",
    metadata,
    Column("id", BigId, primary_key=True),
    Column("call_uuid", String(64), nullable=False, index=True),
    Column("leg", String(16), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="SET NULL"), index=True),
    Column("from_number", String(64), nullable=False, server_default=""),
    Column("to_number", String(64), nullable=False, server_default=""),
    Column("setup_us", BigInteger, nullable=False, index=True),
    Column("ring_us", BigInteger),
    Column("answer_us", BigInteger),
    Column("end_us", BigInteger),
    Column("cause_code", Integer),
    Column("cause_text", String(200), nullable=False, server_default=""),
    Column("billed_seconds", Integer, nullable=False, server_default="0"),
    Column("cost", BigInteger, nullable=False, server_default="0"),
    Column("node_id", String(64), nullable=False, server_default=""),
    CheckConstraint("leg IN ('trigger', 'callback', 'destination', 'operator')", name="leg"),
)

#: The callbacks still to be placed or in progress: at most one per account (the partial
#: unique index below, which ``INSERT ... ON CONFLICT`` in the callback queue names too).
OPEN_CALLBACK = text("state IN ('pending', 'claimed')")

callbacks = Table(
    "callbacks",
    metadata,
    Column("id", BigId, primary_key=True),
    Column(
        "account_id",
        Integer,
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("trigger_number", String(32), nullable=False),
    Column("requested_us", BigInteger, nullable=False),
    Column("due_us", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("claimed_by", String(64)),
    Column("claimed_until_us", BigInteger),
    Column("last_error", Text),
    Column("call_uuid", String(64)),
    CheckConstraint("state IN ('pending', 'claimed', 'done', 'failed')", name="state"),
    Index("ix_callbacks_state_due_us", "state", "due_us"),
    # At most one open callback per account: a second trigger is absorbed (SPEC 1.3), even
    # when two nodes take the two triggers at the same moment.
    Index(
        "uq_callbacks_open_account",
        "account_id",
        unique=True,
        postgresql_where=OPEN_CALLBACK,
        sqlite_where=OPEN_CALLBACK,
    ),
)

#: Customer calls in progress, as their node last described them (a heartbeat every few
#: seconds): if the node dies, another one (or the same, restarted) writes their CDRs as
#: interrupted, releases their credit and settles their callback (issue 11).
live_calls = Table(
    "live_calls",
    metadata,
    Column("call_uuid", String(64), primary_key=True),
    Column("node_id", String(64), nullable=False),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("callback_id", BigInteger),
    Column("trigger_number", String(32), nullable=False, server_default=""),
    Column("started_us", BigInteger, nullable=False),
    Column("alive_us", BigInteger, nullable=False, index=True),
    Column("answered", Boolean, nullable=False, server_default=text("false")),
    #: JSON: the legs as the call flow holds them (numbers, times, rate), for the CDRs.
    Column("legs", Text, nullable=False, server_default="[]"),
    #: The credit reservation of the destination being dialled or talked to, if any.
    Column("reservation", String(80)),
    #: The node recovering this call (so two survivors never both do).
    Column("recovering_by", String(64)),
)

credit_reservations = Table(
    "credit_reservations",
    metadata,
    Column("call_uuid", String(64), primary_key=True),
    Column(
        "account_id",
        Integer,
        ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("amount", BigInteger, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False, index=True),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
)

#: The nodes sharing this store (issue 12): each ``softswitch serve`` writes its row at start
#: and a heartbeat every few seconds, and marks it stopped when it stops cleanly. Survivors
#: read it to take over the queued callbacks a dead node had claimed (its heartbeat is
#: stale) without waiting for their lease, and ``softswitch status`` shows the cluster.
nodes = Table(
    "nodes",
    metadata,
    #: ``host:pid:token``, new at every start (the ``node_id`` of CDRs and live calls).
    Column("id", String(64), primary_key=True),
    #: Where its SIP listens (``udp:127.0.0.1:5070 tcp:...``), for the operator.
    Column("address", String(200), nullable=False, server_default=""),
    Column("version", String(32), nullable=False, server_default=""),
    Column("started_us", BigInteger, nullable=False),
    Column("heartbeat_us", BigInteger, nullable=False, index=True),
    #: Set when it stopped cleanly (SIGTERM); NULL while it runs, or if it died.
    Column("stopped_us", BigInteger),
)
