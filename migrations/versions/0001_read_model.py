"""The read model: assets, wallets, balances, transfers, trades, ledger entries, events, command log.

The views and their offsets live in the schema ``ledger``, which ``ledgerline rebuild`` replaces
table by table with freshly replayed copies; the database's default ``search_path`` is
``ledger, public`` so every client reads them by their plain names. Tables that are not views
(written by the APIs or by operators' tools) live in ``public`` and are never swapped.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MONEY = sa.Numeric(78, 0)
TS = sa.DateTime(timezone=True)


def _now() -> sa.TextClause:
    return sa.text("now()")


VIEW_SCHEMA = "ledger"
_SEARCH_PATH = f"{VIEW_SCHEMA}, public"


def upgrade() -> None:
    op.execute(f"CREATE SCHEMA IF NOT EXISTS {VIEW_SCHEMA}")
    op.execute(f"SET search_path TO {_SEARCH_PATH}")
    op.execute(
        f"DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET search_path TO {_SEARCH_PATH}', "
        "current_database()); END $$"
    )
    op.create_table(
        "assets",
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("decimals", sa.SmallInteger, nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("max_supply", MONEY),
        # supply = issued - burned; burned counts what the asset has taken off its supply.
        sa.Column("supply", MONEY, nullable=False, server_default="0"),
        sa.Column("burned", MONEY, nullable=False, server_default="0"),
        sa.Column("registered_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
        sa.CheckConstraint("decimals BETWEEN 0 AND 18", name="assets_decimals_range"),
        sa.CheckConstraint("supply >= 0", name="assets_supply_not_negative"),
        sa.CheckConstraint("burned >= 0", name="assets_burned_not_negative"),
    )
    # One row per wallet the ledger has seen; the frozen flag is what compliance last set.
    op.create_table(
        "wallets",
        sa.Column("wallet", sa.Text, primary_key=True),
        sa.Column("frozen", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("freeze_reason", sa.Text),
        sa.Column("frozen_changed_at", TS),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
    )
    op.create_index("wallets_frozen", "wallets", ["wallet"], postgresql_where=sa.text("frozen"))
    op.create_table(
        "wallet_balances",
        sa.Column("wallet", sa.Text, primary_key=True),
        sa.Column("asset", sa.Text, primary_key=True),
        sa.Column("available", MONEY, nullable=False, server_default="0"),
        sa.Column("held", MONEY, nullable=False, server_default="0"),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
        sa.CheckConstraint("available >= 0", name="wallet_available_not_negative"),
        sa.CheckConstraint("held >= 0", name="wallet_held_not_negative"),
    )
    op.create_index("wallet_balances_asset", "wallet_balances", ["asset"])
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.Text, primary_key=True),
        sa.Column("command_id", sa.Text),
        sa.Column("source", sa.Text),
        sa.Column("target", sa.Text),
        sa.Column("asset", sa.Text),
        sa.Column("amount", MONEY),
        sa.Column("memo", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_rank", sa.SmallInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("initiated_at", TS),
        sa.Column("confirmed_at", TS),
        sa.Column("completed_at", TS),
        sa.Column("failed_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
    )
    op.create_index("transfers_source", "transfers", ["source", "initiated_at"])
    op.create_index("transfers_target", "transfers", ["target", "initiated_at"])
    op.create_index("transfers_status", "transfers", ["status"])
    # Delivery versus payment: initiated -> asset_locked -> paid -> transferred -> settled, or
    # failed (with the failing party and reason; released_at once the seller's lock is undone).
    # price is the whole payment for quantity, in payment_asset.
    op.create_table(
        "trades",
        sa.Column("trade_id", sa.Text, primary_key=True),
        sa.Column("command_id", sa.Text),
        sa.Column("seller", sa.Text),
        sa.Column("buyer", sa.Text),
        sa.Column("asset", sa.Text),
        sa.Column("quantity", MONEY),
        sa.Column("payment_asset", sa.Text),
        sa.Column("price", MONEY),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_rank", sa.SmallInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("failed_party", sa.Text),
        sa.Column("created_at", TS),  # initiated
        sa.Column("asset_locked_at", TS),
        sa.Column("paid_at", TS),
        sa.Column("transferred_at", TS),
        sa.Column("settled_at", TS),
        sa.Column("failed_at", TS),
        sa.Column("released_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
    )
    op.create_index("trades_seller", "trades", ["seller", "created_at"])
    op.create_index("trades_buyer", "trades", ["buyer", "created_at"])
    op.create_index("trades_status", "trades", ["status"])
    # delta is the change of the wallet's total (available + held); a trade lock or release
    # moves between the two and has delta 0. Kinds: issue_in, transfer_out, transfer_in,
    # trade_lock, trade_release, trade_payment_out, trade_payment_in, trade_delivery_out,
    # trade_delivery_in, burn.
    op.create_table(
        "ledger_entries",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("wallet", sa.Text, nullable=False),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("delta", MONEY, nullable=False),
        sa.Column("available_after", MONEY, nullable=False),
        sa.Column("held_after", MONEY, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
    )
    op.create_index("ledger_entries_wallet_time", "ledger_entries", ["wallet", "asset", "occurred_at"])
    op.create_table(
        "events",
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("version", sa.SmallInteger, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("command_id", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.Text),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("partition", sa.Integer, nullable=False),
        sa.Column("offset", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.dialects.postgresql.JSONB, nullable=False),
        sa.UniqueConstraint("topic", "partition", "offset", name="events_position"),
    )
    op.create_index("events_key", "events", ["key", "occurred_at"])
    op.create_index("events_correlation", "events", ["correlation_id"])
    op.create_index("events_command", "events", ["command_id"])
    op.create_table(
        "command_log",
        sa.Column("command_id", sa.Text, primary_key=True),
        sa.Column("type", sa.Text),
        sa.Column("principal", sa.Text),
        sa.Column("correlation_id", sa.Text),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("status_rank", sa.SmallInteger, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", TS),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
    )
    op.create_table(
        "projection_offsets",
        sa.Column("projection", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
    )
    # Filled by the projector: how far behind each partition is, for /metrics and GraphQL.
    op.create_table(
        "projection_lag",
        sa.Column("projection", sa.Text, primary_key=True),
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("end_offset", sa.BigInteger, nullable=False),
        sa.Column("records_behind", sa.BigInteger, nullable=False),
        sa.Column("seconds_behind", sa.Float, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=_now()),
        schema="public",
    )
    # Written by the command API, not a view: what each Idempotency-Key was first used for.
    op.create_table(
        "idempotency_keys",
        sa.Column("command_id", sa.Text, primary_key=True),
        sa.Column("principal", sa.Text, nullable=False),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("response", sa.dialects.postgresql.JSONB, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=_now()),
        schema="public",
    )
    # Written by `ledgerline dlq redrive`: which dead letters went back to their topic, so a
    # second redrive does not send them again.
    op.create_table(
        "dlq_redrives",
        sa.Column("dlq_partition", sa.Integer, primary_key=True),
        sa.Column("dlq_offset", sa.BigInteger, primary_key=True),
        sa.Column("source_topic", sa.Text, nullable=False),
        sa.Column("source_partition", sa.Integer, nullable=False),
        sa.Column("source_offset", sa.BigInteger, nullable=False),
        sa.Column("redriven_offset", sa.BigInteger),
        sa.Column("redriven_at", TS, nullable=False, server_default=_now()),
        schema="public",
    )


def downgrade() -> None:
    for public_table in ("dlq_redrives", "idempotency_keys", "projection_lag"):
        op.drop_table(public_table, schema="public")
    op.execute(f"SET search_path TO {_SEARCH_PATH}")
    for table in (
        "projection_offsets",
        "command_log",
        "events",
        "ledger_entries",
        "trades",
        "transfers",
        "wallet_balances",
        "wallets",
        "assets",
    ):
        op.drop_table(table)
    op.execute(f"DROP SCHEMA IF EXISTS {VIEW_SCHEMA}")
