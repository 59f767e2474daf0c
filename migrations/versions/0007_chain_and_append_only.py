"""The hash chain in ``events``; ``events`` and ``ledger_entries`` append-only.

``events`` gains each event's chain link as the processor wrote it in the record's headers
(``events.chain``): the writer, the sequence number in the writer's chain for the partition,
the previous link (32 bytes) and, on a writer's last record of a transaction, its Ed25519
signature. ``ledgerline audit --verify-chain`` recomputes every link from the rows. Rows of
events written before this revision have none (the chain starts with the first event the
processor writes after it).

A trigger refuses UPDATE, DELETE and TRUNCATE on both tables for every role, the owner
included, unless the session has set ``ledgerline.rewrite = 'allowed'``: only migrations do
(``SET LOCAL`` in their transaction). A rebuild never updates or deletes rows (it swaps whole
tables) and copies the trigger to the tables it builds (``projector.shadow``). A role that owns
the tables can still drop the trigger; the chain is what makes that visible (docs/audit.md).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

APPEND_ONLY = ("events", "ledger_entries")
_COLUMNS = (("chain_writer", "text"), ("chain_seq", "bigint"), ("chain_prev", "bytea"),
            ("chain_sig", "bytea"))

_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger.refuse_rewrite() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('ledgerline.rewrite', true) = 'allowed' THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    RAISE EXCEPTION '%.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'the audit trail is never rewritten; only migrations may (docs/audit.md)';
END $$
"""


def upgrade() -> None:
    for name, kind in _COLUMNS:
        op.execute(f"ALTER TABLE ledger.events ADD COLUMN {name} {kind}")
    op.execute(_FUNCTION)
    for table in APPEND_ONLY:
        op.execute(f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON ledger.{table} "
                   "FOR EACH ROW EXECUTE FUNCTION ledger.refuse_rewrite()")
        op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON ledger.{table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_rewrite()")


def downgrade() -> None:
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON ledger.{table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON ledger.{table}")
    op.execute("DROP FUNCTION IF EXISTS ledger.refuse_rewrite()")
    for name, _ in _COLUMNS:
        op.execute(f"ALTER TABLE ledger.events DROP COLUMN {name}")
