"""The compliance monitor's rule state as rows (``compliance.state_entries``), and the evidence a
fan-in alert gains after it is raised as rows (``compliance.alert_evidence``).

Each movement a rule window holds is one row (``key`` the slot, ``out|wallet|asset`` or
``in|wallet|asset``; the event id, its event time, amount in base units as decimal digits, and
the counterparty), added when it enters the window and deleted when it leaves, so a batch writes
only what it changed. ``compliance.state`` keeps, per payer slot, only when each windowed rule
last fired (``{"fired": …}`` becomes the bare map).

The slots of the previous layout are converted in place: a payer's moves become rows, and a
payee's payers per fan-in window become rows timed at the window's start (which places them in
the same window). A downgrade restores the payers' slots exactly and places a payee's payments in
fixed windows of the shipped rules' length (3600 s).

``compliance.alert_evidence`` (alert id, event id): the ids a fan-in window's alert gained after
it was raised, so a batch appends a row per new payment instead of rewriting the alert's whole
array (a busy payee's window holds tens of thousands of ids). An alert's evidence is the union
of its array and its rows (``events.compliance.evidence_sql``); ``reporting.alerts`` shows it.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


_VIEW = """
    CREATE OR REPLACE VIEW reporting.alerts AS
    SELECT a.alert_id, a.rule, a.rule_version, a.wallet, a.asset, a.severity, {evidence} AS evidence,
           a.window_start, a.window_end, a.raised_at, a.case_id, c.status AS case_status
    FROM compliance.alerts a LEFT JOIN compliance.cases c USING (case_id)"""
_EVIDENCE = ("ARRAY(SELECT e FROM unnest(a.evidence) e UNION SELECT x.event_id FROM "
             "compliance.alert_evidence x WHERE x.alert_id = a.alert_id ORDER BY 1)")


def upgrade() -> None:
    op.execute("""
        CREATE TABLE compliance.alert_evidence (
            alert_id text NOT NULL,
            event_id text NOT NULL,
            PRIMARY KEY (alert_id, event_id)
        )""")
    op.execute(_VIEW.format(evidence=_EVIDENCE))
    op.execute("""
        CREATE TABLE compliance.state_entries (
            key text NOT NULL,
            event_id text NOT NULL,
            at timestamptz NOT NULL,
            amount text NOT NULL,
            counterparty text,
            PRIMARY KEY (key, event_id)
        )""")
    op.execute("""
        INSERT INTO compliance.state_entries (key, event_id, at, amount, counterparty)
        SELECT s.key, m->>0, (m->>1)::timestamptz, m->>2, m->>3
        FROM compliance.state s, jsonb_array_elements(s.slot::jsonb->'moves') m
        WHERE s.key LIKE 'out|%'
        ON CONFLICT DO NOTHING""")
    op.execute("""
        INSERT INTO compliance.state_entries (key, event_id, at, amount, counterparty)
        SELECT s.key, ids.id, to_timestamp(w.key::bigint), '0', nullif(p.key, '')
        FROM compliance.state s, jsonb_each(s.slot::jsonb->'windows') w, jsonb_each(w.value) p,
             jsonb_array_elements_text(p.value) ids(id)
        WHERE s.key LIKE 'in|%'
        ON CONFLICT DO NOTHING""")
    op.execute("DELETE FROM compliance.state WHERE key LIKE 'in|%'")
    op.execute("UPDATE compliance.state SET slot = coalesce(slot::jsonb->'fired', '{}'::jsonb)::text")
    op.execute("DELETE FROM compliance.state WHERE slot = '{}'")


def downgrade() -> None:
    op.execute(_VIEW.format(evidence="a.evidence"))
    op.execute(f"UPDATE compliance.alerts a SET evidence = {_EVIDENCE} "
               "WHERE EXISTS (SELECT 1 FROM compliance.alert_evidence x WHERE x.alert_id = a.alert_id)")
    op.execute("DROP TABLE compliance.alert_evidence")
    op.execute("""
        UPDATE compliance.state s SET slot = jsonb_build_object(
            'moves', coalesce((SELECT jsonb_agg(jsonb_build_array(e.event_id, e.at, e.amount, e.counterparty)
                                                ORDER BY e.at, e.event_id)
                               FROM compliance.state_entries e WHERE e.key = s.key), '[]'::jsonb),
            'fired', s.slot::jsonb)::text""")
    op.execute("""
        INSERT INTO compliance.state (key, slot)
        SELECT e.key, jsonb_build_object('moves', jsonb_agg(jsonb_build_array(e.event_id, e.at, e.amount,
                                                                             e.counterparty)
                                                            ORDER BY e.at, e.event_id),
                                         'fired', '{}'::jsonb)::text
        FROM compliance.state_entries e
        WHERE e.key LIKE 'out|%' AND NOT EXISTS (SELECT 1 FROM compliance.state s WHERE s.key = e.key)
        GROUP BY e.key""")
    op.execute("""
        INSERT INTO compliance.state (key, slot)
        SELECT key, jsonb_build_object('windows', jsonb_object_agg(start, payers))::text
        FROM (SELECT key, start, jsonb_object_agg(payer, ids) AS payers
              FROM (SELECT key, (extract(epoch FROM at)::bigint / 3600) * 3600 AS start,
                           coalesce(counterparty, '') AS payer,
                           jsonb_agg(event_id ORDER BY event_id) AS ids
                    FROM compliance.state_entries WHERE key LIKE 'in|%' GROUP BY 1, 2, 3) per_payer
              GROUP BY key, start) per_window
        GROUP BY key""")
    op.execute("DROP TABLE compliance.state_entries")
