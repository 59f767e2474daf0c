"""Cheaper writes of the audit trail: the Kafka position is summarised, not a unique key.

``events`` had five B-tree indexes, each updated for every event the projector writes. The
unique key on (topic, partition, offset) guarded nothing the projector does not already
guarantee (offsets move in the same transaction as the rows, fenced, so a position is written
once) and no query of the APIs uses it. It becomes a BRIN index: positions grow with the table,
so a block range summary finds an event by position, and appending costs next to nothing.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE ledger.events DROP CONSTRAINT events_position")
    op.execute('CREATE INDEX events_position ON ledger.events USING brin ("partition", "offset")')


def downgrade() -> None:
    op.execute("DROP INDEX ledger.events_position")
    op.execute('ALTER TABLE ledger.events '
               'ADD CONSTRAINT events_position UNIQUE (topic, "partition", "offset")')
