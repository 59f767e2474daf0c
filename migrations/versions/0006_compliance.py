"""The compliance monitor's schema ``compliance``: alerts, cases, its offsets and rule state,
and ``reporting.alerts``.

- ``offsets``: how far the monitor has read each partition of ``ledger.events``, written in the
  same transaction as the alerts and state those records produced (exactly once, as the
  projector does);
- ``state``: the rules' windows (a payer's recent movements, a payee's payers per window), one
  JSON slot per key, written with the offsets;
- ``alerts``: one row per alert (rule and rule version, its ``signature`` (the finding without
  the version, which a backtest compares by), wallet, asset, severity, the evidence
  event ids, the event-time window); ``published`` marks the ones already appended to
  ``compliance.alerts``;
- ``cases`` and ``case_notes``: alerts on one wallet group into its active case
  (``open → investigating → cleared | escalated``); the monitor decides the case commands of
  ``compliance.commands`` against these rows, and ``case_events`` holds each decision's event
  until it is appended to ``compliance.events`` (an outbox).

Only the compliance monitor writes these; the GraphQL API reads them for the compliance and
auditor roles alone.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS compliance")
    op.execute("""
        CREATE TABLE compliance.offsets (
            topic text NOT NULL,
            partition integer NOT NULL,
            next_offset bigint NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (topic, partition)
        )""")
    op.execute("""
        CREATE TABLE compliance.state (
            key text PRIMARY KEY,
            slot text NOT NULL
        )""")
    op.execute("""
        CREATE TABLE compliance.cases (
            case_id text PRIMARY KEY,
            wallet text NOT NULL,
            status text NOT NULL DEFAULT 'open'
                CONSTRAINT cases_status CHECK (status IN ('open', 'investigating', 'cleared', 'escalated')),
            assignee text,
            report_reference text,
            opened_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )""")
    op.execute("CREATE UNIQUE INDEX cases_one_active_per_wallet ON compliance.cases (wallet) "
               "WHERE status IN ('open', 'investigating')")
    op.execute("""
        CREATE TABLE compliance.alerts (
            alert_id text PRIMARY KEY,
            rule text NOT NULL,
            rule_version text NOT NULL,
            signature text NOT NULL,
            wallet text NOT NULL,
            asset text NOT NULL,
            severity text NOT NULL,
            evidence text[] NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            case_id text REFERENCES compliance.cases,
            raised_at timestamptz NOT NULL DEFAULT now(),
            published boolean NOT NULL DEFAULT false
        )""")
    op.execute("CREATE INDEX alerts_by_time ON compliance.alerts (window_end DESC, alert_id)")
    op.execute("CREATE INDEX alerts_by_wallet ON compliance.alerts (wallet)")
    op.execute("CREATE INDEX alerts_by_case ON compliance.alerts (case_id)")
    op.execute("CREATE INDEX alerts_unpublished ON compliance.alerts (alert_id) WHERE NOT published")
    op.execute("""
        CREATE TABLE compliance.case_notes (
            case_id text NOT NULL REFERENCES compliance.cases,
            note_id text NOT NULL,
            author text NOT NULL,
            action text NOT NULL,
            text text NOT NULL,
            at timestamptz NOT NULL,
            PRIMARY KEY (case_id, note_id)
        )""")
    op.execute("""
        CREATE TABLE compliance.case_events (
            event_id text PRIMARY KEY,
            case_id text NOT NULL,
            record bytea NOT NULL,
            published boolean NOT NULL DEFAULT false
        )""")
    op.execute("CREATE INDEX case_events_unpublished ON compliance.case_events (event_id) "
               "WHERE NOT published")
    op.execute("""
        CREATE OR REPLACE VIEW reporting.alerts AS
        SELECT a.alert_id, a.rule, a.rule_version, a.wallet, a.asset, a.severity, a.evidence,
               a.window_start, a.window_end, a.raised_at, a.case_id, c.status AS case_status
        FROM compliance.alerts a LEFT JOIN compliance.cases c USING (case_id)""")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS reporting.alerts")
    op.execute("DROP SCHEMA IF EXISTS compliance CASCADE")
