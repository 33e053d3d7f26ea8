"""Live calls: the customer calls in progress as their node last described them, so a node
that dies loses none of their CDRs, credit or callbacks (another node, or the same one
restarted, finishes them as interrupted). And the queued callback remembers the customer call
it belongs to (``callbacks.call_uuid``), so every attempt's CDRs share it whichever node
places them.

A new table and a nullable column, so the same operations run on SQLite and PostgreSQL; the
table's rows go with their account (ON DELETE CASCADE).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_calls",
        sa.Column("call_uuid", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("callback_id", sa.BigInteger(), nullable=True),
        sa.Column("trigger_number", sa.String(length=32), server_default="", nullable=False),
        sa.Column("started_us", sa.BigInteger(), nullable=False),
        sa.Column("alive_us", sa.BigInteger(), nullable=False),
        sa.Column("answered", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("legs", sa.Text(), server_default="[]", nullable=False),
        sa.Column("reservation", sa.String(length=80), nullable=True),
        sa.Column("recovering_by", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_live_calls_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("call_uuid", name=op.f("pk_live_calls")),
    )
    op.create_index(op.f("ix_live_calls_alive_us"), "live_calls", ["alive_us"], unique=False)
    op.add_column("callbacks", sa.Column("call_uuid", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("callbacks") as batch:
        batch.drop_column("call_uuid")
    op.drop_index(op.f("ix_live_calls_alive_us"), table_name="live_calls")
    op.drop_table("live_calls")
