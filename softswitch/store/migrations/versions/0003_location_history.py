"""Location history: every change of an account's callback location (SPEC section 4), with
the location before and after, the time, and where it came from (``via``: phone, cli ...).

A new table only, so the same operations run on SQLite and PostgreSQL (no batch copy needed);
its rows go with their account (ON DELETE CASCADE).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a real 64-bit key.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "location_history",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("changed_us", sa.BigInteger(), nullable=False),
        sa.Column("via", sa.String(length=16), nullable=False),
        sa.Column("previous_number", sa.String(length=32), nullable=True),
        sa.Column("previous_extension", sa.String(length=16), nullable=True),
        sa.Column("new_number", sa.String(length=32), nullable=True),
        sa.Column("new_extension", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_location_history_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_location_history")),
    )
    op.create_index(
        "ix_location_history_account_id_changed_us",
        "location_history",
        ["account_id", "changed_us"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_location_history_account_id_changed_us", table_name="location_history")
    op.drop_table("location_history")
