"""Nodes: every ``softswitch serve`` sharing the store writes its row at start (id, SIP
address, version), a heartbeat every few seconds, and when it stopped cleanly (issue 12). A
node whose heartbeat went stale has died: the callbacks it had claimed are taken over at once
rather than after their lease, and ``softswitch status`` shows the cluster from it.

A new table only, so the same operations run on SQLite and PostgreSQL.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=200), server_default="", nullable=False),
        sa.Column("version", sa.String(length=32), server_default="", nullable=False),
        sa.Column("started_us", sa.BigInteger(), nullable=False),
        sa.Column("heartbeat_us", sa.BigInteger(), nullable=False),
        sa.Column("stopped_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
    )
    op.create_index(op.f("ix_nodes_heartbeat_us"), "nodes", ["heartbeat_us"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_nodes_heartbeat_us"), table_name="nodes")
    op.drop_table("nodes")
