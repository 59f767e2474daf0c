"""What the compliance monitor promises other systems: the ``AlertRaised`` record it appends to
``compliance.alerts`` (keyed ``wallet:<id>``), and the NOTIFY channel its commits signal.

An alert's ``id`` is derived from what raised it (rule, rule version, wallet, asset and the
triggering event or window), so a replay or a re-sent record carries the same id: consumers
de-duplicate by it. Amounts do not appear: the evidence is event ids in ``ledger.events``.
"""

import json
from datetime import datetime

import msgspec

#: The monitor's commits ``NOTIFY`` this channel with ``{"alerts": [ids], "cases": [ids]}``.
CHANNEL = "compliance_changes"

SEVERITIES = ("low", "medium", "high")
CASE_STATUSES = ("open", "investigating", "cleared", "escalated")
#: A case in one of these takes the wallet's new alerts; otherwise a new case opens.
ACTIVE_CASE_STATUSES = ("open", "investigating")


class AlertRaised(msgspec.Struct, frozen=True, kw_only=True):
    VERSION = 1

    id: str
    rule: str
    rule_version: str
    wallet: str
    asset: str
    severity: str
    evidence: tuple[str, ...]
    window_start: datetime
    window_end: datetime
    case_id: str | None = None
    #: The finding without the rules version: rule, wallet, asset and trigger. Two versions of
    #: the rules that find the same thing give two ids and one signature (the backtest's key).
    signature: str = ""


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AlertRaised)


def encode_alert(alert: AlertRaised) -> bytes:
    return _encoder.encode(alert)


def decode_alert(data: bytes) -> AlertRaised:
    return _decoder.decode(data)


def notify_payload(alerts: list[str], cases: list[str]) -> str:
    """A notification naming what changed, cut to stay under PostgreSQL's 8000-byte limit (a
    listener that sees a truncated list re-reads the queue anyway)."""
    payload = {"alerts": alerts[:100], "cases": cases[:100]}
    return json.dumps(payload)
