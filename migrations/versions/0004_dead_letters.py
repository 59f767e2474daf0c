"""``dead_letters``: the records of the event log the projector could not apply.

One row per position of ``ledger.events`` that is not in the views because the projector
dead-lettered it (undecodable, unappliable, or refused by the database), written in the same
transaction as the projector's offsets, so the count is exact and survives restarts; the
GraphQL ``freshness`` and ``ledgerline audit`` read it. A re-driven event that applies at its
original position removes its row. The table is a view like the others: a rebuild replays it,
so once the projector is fixed a rebuild leaves only what still cannot apply. The letters
themselves, with the record, are in ``ledger.dlq`` (``ledgerline dlq list``).

``appended_at`` is the source record's Kafka timestamp, so a replay writes the same row.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dead_letters",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("offset", sa.BigInteger, primary_key=True),
        sa.Column("cause", sa.Text, nullable=False),
        sa.Column("type", sa.Text),
        sa.Column("key", sa.Text),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("appended_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.text("now()")),
        schema="ledger",
    )


def downgrade() -> None:
    op.drop_table("dead_letters", schema="ledger")
