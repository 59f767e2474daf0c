"""The compliance rules, pure: each fires on a movement pattern built to trip it and stays silent
on a near miss; replays give the same alerts; the rules file is checked."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compliance import rules as rules_file
from compliance.evaluate import Entry, State, evaluate
from compliance.rules import RulesError, RuleSet
from compliance.store import merge_alerts
from events.codec import Envelope, envelope
from events.compliance import AlertRaised, notify_payloads
from events.messages import Message, TokensBurned, TokensIssued, TransferConfirmed
from tests.unit.rescan import rescan

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

RULES = rules_file.parse({
    "version": "test-1",
    "large_movement": {"severity": "high", "default_threshold": 1000, "thresholds": {"BIG": 100_000}},
    "velocity": {"window_seconds": 600, "max_count": 5, "default_max_volume": 3000,
                 "max_volume": {"BIG": 10**9}},
    "structuring": {"window_seconds": 3600, "count": 3, "below_percent": 10},
    "fan_out": {"window_seconds": 600, "distinct": 4},
    "fan_in": {"window_seconds": 600, "distinct": 4},
    "watch_list": {"wallets": ["mallory"]},
})


def transfer(source: str, target: str, amount: int, seconds: float, asset: str = "USDX") -> Envelope:
    return _env(TransferConfirmed(transfer_id=f"t{seconds}{source}{target}", source=source, target=target,
                                  asset=asset, amount=amount, available_after=0, held_after=0),
                f"wallet:{source}", seconds)


def _env(message: Message, key: str, seconds: float) -> Envelope:
    return envelope(message, key=key, command_id="c", principal="p",
                    occurred_at=T0 + timedelta(seconds=seconds))


def run(events: list[Envelope], rules: RuleSet = RULES) -> list[AlertRaised]:
    state = State()
    return [a for e in events for a in evaluate(rules, state, e)]


def fired(events: list[Envelope], rules: RuleSet = RULES) -> list[tuple[str, str]]:
    return [(a.rule, a.wallet) for a in run(events, rules)]


def test_large_movement_at_the_threshold_fires_and_one_unit_under_does_not() -> None:
    assert fired([transfer("a", "b", 1000, 0)]) == [("large_movement", "a")]
    assert fired([transfer("a", "b", 999, 0)]) == []
    # Per-asset thresholds, and the default for an asset without one:
    assert fired([transfer("a", "b", 99_999, 0, asset="BIG")]) == []
    assert fired([transfer("a", "b", 100_000, 0, asset="BIG")]) == [("large_movement", "a")]
    # An issue is a movement into the wallet; a burn one out of it.
    issue = _env(TokensIssued(symbol="USDX", to="a", amount=1500, supply_after=1500), "asset:USDX", 0)
    burn = _env(TokensBurned(wallet="a", asset="USDX", amount=1500, available_after=0, held_after=0),
                "wallet:a", 1)
    assert fired([issue, burn]) == [("large_movement", "a"), ("large_movement", "a")]


def test_velocity_by_count_and_by_volume_in_a_sliding_window() -> None:
    five = [transfer("a", "b", 10, i * 100) for i in range(5)]
    assert fired(five) == [("velocity", "a")]
    # Five movements spread wider than the window: never five in one window.
    assert fired([transfer("a", "b", 10, i * 160) for i in range(5)]) == []
    assert fired([transfer("a", "b", 800, i) for i in range(4)]) == [("velocity", "a")]
    assert fired([transfer("a", "b", 800, i * 400) for i in range(4)]) == []


def test_one_velocity_alert_per_window() -> None:
    alerts = run([transfer("a", "b", 10, i * 10) for i in range(12)])
    assert [a.rule for a in alerts] == ["velocity"]
    assert len(alerts[0].evidence) == 5


def test_structuring_fires_on_three_just_under_and_not_on_two_or_far_under() -> None:
    just_under = [transfer("a", f"b{i}", 950, i * 1000) for i in range(3)]
    assert fired(just_under) == [("structuring", "a")]
    assert fired(just_under[:2]) == []
    assert fired([transfer("a", f"b{i}", 899, i * 1000) for i in range(3)]) == []  # 10% under is 900
    assert fired([transfer("a", f"b{i}", 950, i * 1900) for i in range(3)]) == []  # outside the hour


def test_fan_out_and_fan_in_count_distinct_counterparties() -> None:
    out = [transfer("hub", f"leaf{i}", 1, i) for i in range(4)]
    assert fired(out) == [("fan_out", "hub")]
    assert fired([transfer("hub", f"leaf{i % 3}", 1, i) for i in range(4)]) == []
    into = [transfer(f"leaf{i}", "sink", 1, i) for i in range(4)]
    assert fired(into) == [("fan_in", "sink")]
    assert fired([*into[:3], transfer("leaf0", "sink", 1, 5)]) == []


def test_fan_in_grows_its_window_alert_and_does_not_repeat_it() -> None:
    events = [transfer(f"leaf{i}", "sink", 1, i) for i in range(6)]
    alerts = run(events)
    assert {a.id for a in alerts} == {alerts[0].id}
    # Raised with the four payments that made it, then with each new one (the store adds it).
    assert [len(a.evidence) for a in alerts] == [4, 1, 1]
    [row] = rows(alerts).values()
    assert sorted(row.evidence) == sorted(e.id for e in events)


def test_watch_list_touches_either_side() -> None:
    assert fired([transfer("mallory", "b", 1, 0), transfer("a", "mallory", 1, 1)]) == [
        ("watch_list", "mallory"), ("watch_list", "mallory")]
    assert fired([transfer("mallor", "b", 1, 0)]) == []


def test_alert_ids_are_the_same_on_replay_and_carry_the_rule_version() -> None:
    events = [transfer("a", f"b{i}", 950, i * 100) for i in range(6)]
    first, second = run(events), run(events)
    assert first == second and first
    assert {a.rule_version for a in first} == {"test-1"}
    other = rules_file.parse({"version": "test-2", **{k: v for k, v in _raw().items() if k != "version"}})
    assert {a.id for a in run(events, other)}.isdisjoint({a.id for a in first})


def _raw() -> dict[str, object]:
    import tomllib

    return tomllib.loads(rules_file.DEFAULT_RULES.read_text())


class Stored:
    """What the store keeps of the state: the rows each batch's changes leave."""

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], Entry] = {}
        self.fired: dict[str, bytes] = {}

    def write(self, state: State) -> None:
        changes = state.take_changes()
        for where in changes.removed:
            self.entries.pop(where)
        self.entries.update(changes.added)
        for key, slot in changes.slots.items():
            if slot is None:
                self.fired.pop(key, None)
            else:
                self.fired[key] = slot

    def restored(self) -> State:
        return State.restored(self.fired.items(), self.entries.values())


def rows(alerts: list[AlertRaised]) -> dict[str, AlertRaised]:
    """The alert rows a sequence of alerts leaves (a fan-in alert raised again adds evidence)."""
    return {a.id: a for a in merge_alerts(alerts)}


def test_state_survives_being_written_and_read_back_mid_stream() -> None:
    """What the worker does across a crash: the changed rows written with the offsets, read
    back, go on."""
    events = [transfer(f"p{i % 3}", f"q{i % 5}", 300 + i * 37, i * 50) for i in range(40)]
    whole = run(events)
    state, stored = State(), Stored()
    alerts = [a for e in events[:17] for a in evaluate(RULES, state, e)]
    stored.write(state)
    restored = stored.restored()
    alerts += [a for e in events[17:] for a in evaluate(RULES, restored, e)]
    assert [a.id for a in alerts] == [a.id for a in whole]
    assert rows(alerts) == rows(whole)
    stored.write(restored)
    assert stored.entries and all(e.key in restored.slots for e in stored.entries.values())


def _movements(spec: list[tuple[str, str, int, int, str]]) -> list[Envelope]:
    """Transfers, issues (source "") and burns (target ""); gaps may go back in time (a
    partition's events are not quite in event-time order)."""
    t, events = 0, []
    for source, target, amount, gap, asset in spec:
        t += gap
        if source == target:
            continue
        if not source:
            events.append(_env(TokensIssued(symbol=asset, to=target, amount=amount, supply_after=amount),
                               f"asset:{asset}", t))
        elif not target:
            events.append(_env(TokensBurned(wallet=source, asset=asset, amount=amount, available_after=0,
                                            held_after=0), f"wallet:{source}", t))
        else:
            events.append(transfer(source, target, amount, t, asset))
    return events


parties = st.sampled_from(["a", "a", "b", "c", "d", "e", "f", "mallory", ""])
moves_in_time = st.lists(st.tuples(parties, parties,
                                   st.one_of(st.integers(1, 1500), st.integers(900, 999)),
                                   st.one_of(st.integers(0, 90), st.integers(0, 900), st.integers(-300, 0)),
                                   st.sampled_from(["USDX", "USDX", "BIG"])), min_size=40, max_size=120)


@settings(max_examples=150, deadline=None)
@given(moves_in_time, st.sets(st.integers(0, 119), max_size=4))
def test_incremental_evaluation_raises_what_a_rescan_of_every_movement_raises(
        spec: list[tuple[str, str, int, int, str]], crashes: set[int]) -> None:
    """The incremental rules against the definition: every movement kept, every window found
    again by a scan. The same alerts in the same order (a fan-in alert raised again carries its
    new evidence only: the rows they leave are the same), with the state written and read back
    at random points as a crash would."""
    events = _movements(spec)
    state, stored, alerts = State(), Stored(), []
    for i, e in enumerate(events):
        alerts += evaluate(RULES, state, e)
        if i in crashes:
            stored.write(state)
            state = stored.restored()
    expected = rescan(RULES, events)
    assert [a.id for a in alerts] == [a.id for a in expected]
    assert rows(alerts) == rows(expected)
    assert all(a == b for a, b in zip(alerts, expected, strict=True) if a.rule != "fan_in")


wallets = st.sampled_from(["a", "b", "c", "d", "e", "f", "mallory"])
moves = st.lists(st.tuples(wallets, wallets, st.integers(1, 1500), st.integers(0, 50)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(moves, st.randoms(use_true_random=False))
def test_fan_in_and_per_partition_rules_do_not_depend_on_partition_interleaving(
        spec: list[tuple[str, str, int, int]], rnd: object) -> None:
    """Each payer's movements stay in order (its partition), but partitions interleave in any
    way: the final alerts (ids and evidence, fan-in's grown) are the same."""
    t = 0
    events = []
    for source, target, amount, gap in spec:
        t += gap
        if source != target:
            events.append(transfer(source, target, amount, t))
    by_payer: dict[str, list[Envelope]] = {}
    for e in events:
        by_payer.setdefault(e.key, []).append(e)
    shuffled: list[Envelope] = []
    queues = [list(q) for q in by_payer.values()]
    while queues:
        q = rnd.choice(queues)  # type: ignore[attr-defined]
        shuffled.append(q.pop(0))
        if not q:
            queues.remove(q)

    def final(alerts: list[AlertRaised]) -> dict[str, tuple[str, frozenset[str]]]:
        out: dict[str, tuple[str, frozenset[str]]] = {}
        for a in alerts:
            old = out.get(a.id, (a.rule, frozenset()))[1]
            out[a.id] = (a.rule, old | set(a.evidence))
        return out

    assert final(run(events)) == final(run(shuffled))


def test_the_shipped_rules_load_and_bad_files_are_refused(tmp_path: Path) -> None:
    shipped = rules_file.load()
    assert shipped.version and shipped.large_movement.threshold("USDX") == 1_000_000
    for text, says in [
        ("version = 1", "version"),
        ('version = "x"\n[velocity]\nwindow_seconds = -5', "velocity.window_seconds"),
        ('version = "x"\n[large_movement]\ndefault_threshold = 10.5', "default_threshold"),
        ('version = "x"\n[sanctions]\n', "unknown rules"),
        ('version = "x"\n[fan_in]\ndistinct = 3\nwindow = 3', "unknown keys"),
        ('version = "x"\n[watch_list]\nseverity = "urgent"', "severity"),
        ('version = "x"\n[watch_list]\naction = "block"', "action"),
        ("version = ", "cannot read"),
    ]:
        path = tmp_path / "rules.toml"
        path.write_text(text)
        with pytest.raises(RulesError, match=says):
            rules_file.load(path)


def test_case_decider() -> None:
    from compliance.cases import CaseState, decide
    from events.compliance import (
        AddCaseNote,
        AssignCase,
        CaseActionRejected,
        CaseAssigned,
        CaseCleared,
        CaseEscalated,
        CaseNoteAdded,
        ClearCase,
        EscalateCase,
    )

    open_ = CaseState("open", None)
    assert decide(open_, AssignCase(case_id="c", assignee="ann")) == CaseAssigned(case_id="c", assignee="ann")
    assert isinstance(decide(open_, ClearCase(case_id="c", note="ok")), CaseCleared)
    assert isinstance(decide(CaseState("investigating", "ann"),
                             EscalateCase(case_id="c", report_reference="SAR-1")), CaseEscalated)
    closed = CaseState("cleared", "ann")
    assert decide(closed, ClearCase(case_id="c", note="again")) == CaseActionRejected(
        case_id="c", action="clear", reason="case_closed", note="again")
    assert isinstance(decide(closed, AddCaseNote(case_id="c", note="later")), CaseNoteAdded)
    assert decide(None, AddCaseNote(case_id="c", note="x")) == CaseActionRejected(
        case_id="c", action="note", reason="unknown_case", note="x")


def test_a_rule_marked_freeze_sends_one_deterministic_freeze_command() -> None:
    from compliance.worker import freeze_command
    from events.codec import decode
    from events.messages import FreezeWallet

    marked = rules_file.parse({**_raw(), "watch_list": {"wallets": ["m"], "action": "freeze"}})
    assert marked.freezing == {"watch_list"} and RULES.freezing == frozenset()
    [alert] = run([transfer("a", "m", 1, 0)], marked)
    first, again = decode(freeze_command(alert)), decode(freeze_command(alert))
    assert first.id == again.id == first.command_id
    assert first.payload == FreezeWallet(wallet="m", reason=f"compliance alert watch_list {alert.id}")
    assert (first.key, first.principal) == ("wallet:m", "compliance-monitor")


def test_the_notifications_of_a_large_batch_name_every_id_under_postgresqls_payload_limit() -> None:
    alerts, cases = [str(uuid.uuid4()) for _ in range(1_000)], [str(uuid.uuid4()) for _ in range(300)]
    payloads = list(notify_payloads(alerts, cases))
    assert len(payloads) > 2 and all(len(p.encode()) < 8_000 for p in payloads)
    named = [json.loads(p) for p in payloads]
    assert [i for n in named for i in n.get("alerts", [])] == alerts
    assert [i for n in named for i in n.get("cases", [])] == cases
