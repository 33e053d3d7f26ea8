"""Rate prices with fractions: ``price_per_minute`` (whole minor units) becomes
``price_micros_per_minute`` (millionths of a minor unit), with a CHECK that it is not negative.

Existing prices are multiplied by 1,000,000, so every rate keeps its price exactly. On SQLite
the table is rebuilt (batch mode) from its full 0001 definition, so its CHECK and UNIQUE
constraints survive the copy.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _rates(*columns: sa.Column[int], checks: tuple[sa.CheckConstraint, ...] = ()) -> sa.Table:
    """The rates table as 0001 made it, plus ``columns`` and ``checks``."""
    return sa.Table(
        "rates",
        sa.MetaData(),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("description", sa.String(length=200), server_default="", nullable=False),
        sa.Column("increment_s", sa.Integer(), server_default="6", nullable=False),
        sa.Column("minimum_s", sa.Integer(), server_default="30", nullable=False),
        sa.Column("blocked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        *columns,
        sa.CheckConstraint("increment_s > 0", name=op.f("ck_rates_increment_positive")),
        sa.CheckConstraint("minimum_s >= 0", name=op.f("ck_rates_minimum_not_negative")),
        *checks,
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rates")),
        sa.UniqueConstraint("prefix", name=op.f("uq_rates_prefix")),
    )


def upgrade() -> None:
    whole = sa.Column("price_per_minute", sa.BigInteger(), nullable=False)
    with op.batch_alter_table("rates", copy_from=_rates(whole)) as batch:
        batch.add_column(sa.Column("price_micros_per_minute", sa.BigInteger(), nullable=True))
    op.execute("UPDATE rates SET price_micros_per_minute = price_per_minute * 1000000")
    both = (
        sa.Column("price_per_minute", sa.BigInteger(), nullable=False),
        sa.Column("price_micros_per_minute", sa.BigInteger(), nullable=True),
    )
    with op.batch_alter_table("rates", copy_from=_rates(*both)) as batch:
        batch.drop_column("price_per_minute")
        batch.alter_column("price_micros_per_minute", nullable=False)
        batch.create_check_constraint(
            op.f("ck_rates_price_not_negative"), "price_micros_per_minute >= 0"
        )


def downgrade() -> None:
    # Fractions of a minor unit are rounded up: no rate becomes cheaper than it was.
    micros = sa.Column("price_micros_per_minute", sa.BigInteger(), nullable=False)
    check = sa.CheckConstraint(
        "price_micros_per_minute >= 0", name=op.f("ck_rates_price_not_negative")
    )
    with op.batch_alter_table("rates", copy_from=_rates(micros, checks=(check,))) as batch:
        batch.add_column(sa.Column("price_per_minute", sa.BigInteger(), nullable=True))
    op.execute("UPDATE rates SET price_per_minute = (price_micros_per_minute + 999999) / 1000000")
    both = (
        sa.Column("price_per_minute", sa.BigInteger(), nullable=True),
        sa.Column("price_micros_per_minute", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("rates", copy_from=_rates(*both, checks=(check,))) as batch:
        batch.drop_constraint(op.f("ck_rates_price_not_negative"), type_="check")
        batch.drop_column("price_micros_per_minute")
        batch.alter_column("price_per_minute", nullable=False)
