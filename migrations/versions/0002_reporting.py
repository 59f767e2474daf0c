"""The reporting schema: views for analysts and a read-only role that sees nothing else.

``ledgerline_reporting`` (NOLOGIN) may read the ``reporting`` views and nothing more: no table
in ``ledger`` or ``public``, no writes, no DDL. Give analysts a login role in it:

    CREATE ROLE analyst LOGIN PASSWORD '...' IN ROLE ledgerline_reporting;

Amounts appear twice: ``*_units`` in base units and the same value scaled by the asset's
decimals, as NUMERIC (never a float).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROLE = "ledgerline_reporting"


def _scaled(expr: str, decimals: str = "a.decimals") -> str:
    return f"({expr} / (10::numeric ^ {decimals}))::numeric(78, 18)"


VIEWS = {
    "assets": f"""
        SELECT a.symbol, a.name, a.decimals, a.issuer,
               {_scaled("a.max_supply")} AS max_supply, {_scaled("a.supply")} AS supply,
               {_scaled("a.burned")} AS burned, a.supply AS supply_units,
               a.registered_at, a.updated_at
        FROM ledger.assets a""",
    "balances": f"""
        SELECT b.wallet, b.asset, {_scaled("b.available")} AS available,
               {_scaled("b.held")} AS held, b.available AS available_units, b.held AS held_units,
               coalesce(w.frozen, false) AS frozen, b.updated_at
        FROM ledger.wallet_balances b
        JOIN ledger.assets a ON a.symbol = b.asset
        LEFT JOIN ledger.wallets w ON w.wallet = b.wallet""",
    "transfers": f"""
        SELECT t.transfer_id, t.source, t.target, t.asset, {_scaled("t.amount")} AS amount,
               t.amount AS amount_units, t.memo, t.status, t.reason, t.initiated_at,
               t.confirmed_at, t.completed_at, t.failed_at
        FROM ledger.transfers t LEFT JOIN ledger.assets a ON a.symbol = t.asset""",
    "trades": f"""
        SELECT t.trade_id, t.seller, t.buyer, t.asset, {_scaled("t.quantity")} AS quantity,
               t.payment_asset, {_scaled("t.price", "p.decimals")} AS price, t.status, t.reason,
               t.failed_party, t.created_at, t.asset_locked_at, t.paid_at, t.transferred_at,
               t.settled_at, t.failed_at, t.released_at
        FROM ledger.trades t
        LEFT JOIN ledger.assets a ON a.symbol = t.asset
        LEFT JOIN ledger.assets p ON p.symbol = t.payment_asset""",
    "ledger_entries": f"""
        SELECT e.wallet, e.asset, e.occurred_at, {_scaled("e.delta")} AS delta,
               {_scaled("e.available_after")} AS available_after,
               {_scaled("e.held_after")} AS held_after, e.delta AS delta_units, e.kind,
               e.reference, e.event_id
        FROM ledger.ledger_entries e JOIN ledger.assets a ON a.symbol = e.asset""",
    "events": """
        SELECT event_id, type, version, key, command_id, correlation_id, principal, occurred_at,
               topic, partition, "offset", payload
        FROM ledger.events""",
    "commands": """
        SELECT command_id, type, principal, correlation_id, status, reason, created_at, updated_at
        FROM ledger.command_log""",
}


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS reporting")
    for name, query in VIEWS.items():
        op.execute(f"CREATE OR REPLACE VIEW reporting.{name} AS {query}")
    # Roles are cluster-wide; a migration user without CREATEROLE still gets the views.
    op.execute(f"""
        DO $$ BEGIN
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                CREATE ROLE {ROLE} NOLOGIN;
            END IF;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'no CREATEROLE: create role {ROLE} by hand and re-run the grants';
        END $$""")
    op.execute(f"""
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN
                EXECUTE 'REVOKE ALL ON SCHEMA public, ledger FROM {ROLE}';
                EXECUTE 'REVOKE CREATE ON SCHEMA public FROM PUBLIC';
                EXECUTE 'GRANT USAGE ON SCHEMA reporting TO {ROLE}';
                EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA reporting TO {ROLE}';
                EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA reporting GRANT SELECT ON TABLES TO {ROLE}';
            END IF;
        END $$""")


def downgrade() -> None:
    op.execute("DROP SCHEMA IF EXISTS reporting CASCADE")
