"""Idempotency keys are reserved before the command is sent, with the state of that send.

A request with an ``Idempotency-Key`` first inserts its key's row (``ON CONFLICT DO NOTHING``):
the one request whose insert lands sends the command; every other with the same key reads the
row. ``state`` says how far the sender got:

- ``reserved``: the command is being sent (or its sender died; ``updated_at`` tells how long
  ago, and a stale reservation is taken over by a retry);
- ``sent``: Kafka acknowledged it; ``response`` is the answer every retry gets;
- ``unknown``: the send failed after the record left the producer, so it may be in Kafka; a
  retry sends the same command id again, which the processor decides at most once.

A send that failed before the record left the producer deletes its row: the key is free again.
Rows written before this revision were written after their command was sent.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE public.idempotency_keys "
               "ADD COLUMN state text NOT NULL DEFAULT 'sent' "
               "CONSTRAINT idempotency_keys_state CHECK (state IN ('reserved', 'sent', 'unknown')), "
               "ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now()")


def downgrade() -> None:
    op.execute("DELETE FROM public.idempotency_keys WHERE state <> 'sent'")
    op.execute("ALTER TABLE public.idempotency_keys DROP COLUMN state, DROP COLUMN updated_at")
