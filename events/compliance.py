"""What the compliance monitor promises other systems: the ``AlertRaised`` record it appends to
``compliance.alerts`` (keyed ``wallet:<id>``), and the NOTIFY channel its commits signal.

An alert's ``id`` is derived from what raised it (rule, rule version, wallet, asset and the
triggering event or window), so a replay or a re-sent record carries the same id: consumers
de-duplicate by it. Amounts do not appear: the evidence is event ids in ``ledger.events``.
"""

from collections.abc import Iterable, Iterator
from datetime import datetime

import msgspec

from events.codec import Codec
from events.messages import Message
from events.readmodel import payloads

#: The monitor's commits ``NOTIFY`` this channel with ``{"alerts": [ids]}`` and
#: ``{"cases": [ids]}`` payloads, as many of each as the ids take.
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


def evidence_sql(alias: str = "a", schema: str = "compliance") -> str:
    """SQL for an alert row's whole evidence (``alias`` names the ``alerts`` row), sorted: the ids
    it was raised with (``alerts.evidence``) and those a fan-in window's alert gained later, one
    row each in ``alert_evidence`` (so a growing window is not an array rewritten at each batch)."""
    return (f"ARRAY(SELECT e FROM unnest({alias}.evidence) e UNION SELECT x.event_id FROM "
            f"{schema}.alert_evidence x WHERE x.alert_id = {alias}.alert_id ORDER BY 1)")


def notify_payloads(alerts: Iterable[str], cases: Iterable[str]) -> Iterator[str]:
    """The notifications naming what changed: every id, in payloads each under PostgreSQL's
    8000-byte limit (the read model's chunking)."""
    yield from payloads("alerts", alerts)
    yield from payloads("cases", cases)


# --- case actions: commands on ``compliance.commands`` and events on ``compliance.events`` ---
# Keyed ``case:<id>``. The compliance monitor decides them (one writer: a case's state is the
# row the monitor keeps with its offsets), so they stay out of the ledger's message unions.

CASE_ACTIONS = ("assign", "note", "clear", "escalate")


class CaseCommand(Message, frozen=True, kw_only=True):
    case_id: str
    note: str = ""


class AssignCase(CaseCommand, frozen=True, kw_only=True):
    """Take the case on: ``open`` (or ``investigating``) → ``investigating`` with this assignee."""

    assignee: str


class AddCaseNote(CaseCommand, frozen=True, kw_only=True):
    pass


class ClearCase(CaseCommand, frozen=True, kw_only=True):
    """Nothing to report: the case closes as ``cleared``; the wallet's next alert opens a new one."""


class EscalateCase(CaseCommand, frozen=True, kw_only=True):
    """Reported onwards (e.g. a suspicious activity report): closes as ``escalated``."""

    report_reference: str


class CaseAssigned(CaseCommand, frozen=True, kw_only=True):
    assignee: str


class CaseNoteAdded(CaseCommand, frozen=True, kw_only=True):
    pass


class CaseCleared(CaseCommand, frozen=True, kw_only=True):
    pass


class CaseEscalated(CaseCommand, frozen=True, kw_only=True):
    report_reference: str


class CaseActionRejected(CaseCommand, frozen=True, kw_only=True):
    """``reason``: ``unknown_case``, or ``case_closed`` (cleared and escalated cases are final)."""

    action: str
    reason: str


CASE_COMMANDS: tuple[type[CaseCommand], ...] = (AssignCase, AddCaseNote, ClearCase, EscalateCase)
CASE_EVENTS: tuple[type[CaseCommand], ...] = (CaseAssigned, CaseNoteAdded, CaseCleared, CaseEscalated,
                                              CaseActionRejected)

#: Decodes case commands and case events (the ledger's codec knows neither).
CASE_CODEC = Codec((*CASE_COMMANDS, *CASE_EVENTS))


# --- the sanctions list: events on the compacted ``compliance.sanctions`` (key ``wallet:<id>``) ---


class WalletSanctioned(Message, frozen=True, kw_only=True):
    """The wallet is on the sanctions list: every processor refuses movements touching it."""

    wallet: str
    reason: str


class WalletUnsanctioned(Message, frozen=True, kw_only=True):
    wallet: str
    reason: str


class WalletTierSet(Message, frozen=True, kw_only=True):
    """A wallet's KYC tier on ``compliance.kyc``: per asset, the most it may send in any 24
    hours (whole base units, as decimal digits); an asset not named is not limited."""

    wallet: str
    tier: str
    daily_limits: dict[str, str]


#: Decodes the records of ``compliance.sanctions`` and ``compliance.kyc``.
SANCTIONS_CODEC = Codec((WalletSanctioned, WalletUnsanctioned, WalletTierSet))
