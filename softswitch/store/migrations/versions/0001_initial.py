"""Initial schema (SPEC section 7): accounts, numbers, speed dials, rates, CDRs, callbacks, credit.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), server_default="standard", nullable=False),
        sa.Column("language", sa.String(length=2), server_default="ja", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="active", nullable=False),
        sa.Column("location_number", sa.String(length=32), nullable=True),
        sa.Column("location_extension", sa.String(length=16), nullable=True),
        sa.Column("security_code_hash", sa.String(length=200), nullable=True),
        sa.Column("failed_code_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until_us", sa.BigInteger(), nullable=True),
        sa.Column("recorded_name_path", sa.Text(), nullable=True),
        sa.Column("credit_limit", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("credit_used", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("credit_reserved", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("hotline_destination", sa.String(length=32), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('standard', 'traveler', 'hotline')", name=op.f("ck_accounts_kind")
        ),
        sa.CheckConstraint("language IN ('ja', 'en')", name=op.f("ck_accounts_language")),
        sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f("ck_accounts_status")),
        sa.CheckConstraint("credit_reserved >= 0", name=op.f("ck_accounts_reserved_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "rates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=200), server_default="", nullable=False),
        sa.Column("price_per_minute", sa.BigInteger(), nullable=False),
        sa.Column("increment_s", sa.Integer(), server_default="6", nullable=False),
        sa.Column("minimum_s", sa.Integer(), server_default="30", nullable=False),
        sa.Column("blocked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.CheckConstraint("increment_s > 0", name=op.f("ck_rates_increment_positive")),
        sa.CheckConstraint("minimum_s >= 0", name=op.f("ck_rates_minimum_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rates")),
        sa.UniqueConstraint("prefix", name=op.f("uq_rates_prefix")),
    )
    op.create_table(
        "callbacks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("trigger_number", sa.String(length=32), nullable=False),
        sa.Column("requested_us", sa.BigInteger(), nullable=False),
        sa.Column("due_us", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_until_us", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'claimed', 'done', 'failed')", name=op.f("ck_callbacks_state")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_callbacks_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_callbacks")),
    )
    op.create_index("ix_callbacks_state_due_us", "callbacks", ["state", "due_us"], unique=False)
    op.create_index(
        "uq_callbacks_open_account",
        "callbacks",
        ["account_id"],
        unique=True,
        postgresql_where=sa.text("state IN ('pending', 'claimed')"),
        sqlite_where=sa.text("state IN ('pending', 'claimed')"),
    )
    op.create_table(
        "cdrs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("call_uuid", sa.String(length=64), nullable=False),
        sa.Column("leg", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("from_number", sa.String(length=64), server_default="", nullable=False),
        sa.Column("to_number", sa.String(length=64), server_default="", nullable=False),
        sa.Column("setup_us", sa.BigInteger(), nullable=False),
        sa.Column("ring_us", sa.BigInteger(), nullable=True),
        sa.Column("answer_us", sa.BigInteger(), nullable=True),
        sa.Column("end_us", sa.BigInteger(), nullable=True),
        sa.Column("cause_code", sa.Integer(), nullable=True),
        sa.Column("cause_text", sa.String(length=200), server_default="", nullable=False),
        sa.Column("billed_seconds", sa.Integer(), server_default="0", nullable=False),
        sa.Column("cost", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("node_id", sa.String(length=64), server_default="", nullable=False),
        sa.CheckConstraint(
            "leg IN ('trigger', 'callback', 'destination', 'operator')", name=op.f("ck_cdrs_leg")
        ),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_cdrs_account_id_accounts"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdrs")),
    )
    op.create_index(op.f("ix_cdrs_account_id"), "cdrs", ["account_id"], unique=False)
    op.create_index(op.f("ix_cdrs_call_uuid"), "cdrs", ["call_uuid"], unique=False)
    op.create_index(op.f("ix_cdrs_setup_us"), "cdrs", ["setup_us"], unique=False)
    op.create_table(
        "credit_reservations",
        sa.Column("call_uuid", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_credit_reservations_amount_not_negative")),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_credit_reservations_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_uuid", name=op.f("pk_credit_reservations")),
    )
    op.create_index(
        op.f("ix_credit_reservations_account_id"),
        "credit_reservations",
        ["account_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_credit_reservations_expires_us"),
        "credit_reservations",
        ["expires_us"],
        unique=False,
    )
    op.create_table(
        "registered_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("extension", sa.String(length=16), nullable=True),
        sa.Column("label", sa.String(length=100), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_registered_numbers_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registered_numbers")),
        sa.UniqueConstraint(
            "account_id",
            "number",
            "extension",
            name=op.f("uq_registered_numbers_account_id_number_extension"),
        ),
    )
    op.create_table(
        "speed_dials",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=4), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=100), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_speed_dials_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", "code", name=op.f("pk_speed_dials")),
    )
    op.create_table(
        "trigger_numbers",
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_trigger_numbers_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("number", name=op.f("pk_trigger_numbers")),
    )
    op.create_index(
        op.f("ix_trigger_numbers_account_id"), "trigger_numbers", ["account_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("trigger_numbers")
    op.drop_table("speed_dials")
    op.drop_table("registered_numbers")
    op.drop_table("credit_reservations")
    op.drop_table("cdrs")
    op.drop_table("callbacks")
    op.drop_table("rates")
    op.drop_table("accounts")
