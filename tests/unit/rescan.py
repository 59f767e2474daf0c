"""The rules by their definition, for tests to hold the incremental evaluation against: every
movement of a payer within the longest window kept in a list, and each rule's window found again
by a scan of it at every movement; a fan-in window's alert raised again, with all its evidence,
on every further payment. Slow (a movement costs what its wallet did in the window) and plain."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from compliance.evaluate import Movement, alert_id, movement
from compliance.rules import RuleSet
from events.codec import Envelope
from events.compliance import AlertRaised

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class _Out:
    moves: list[tuple[str, datetime, int, str | None]] = field(default_factory=list)
    fired: dict[str, datetime] = field(default_factory=dict)


def rescan(rules: RuleSet, events: list[Envelope]) -> list[AlertRaised]:
    outgoing: dict[tuple[str, str], _Out] = {}
    incoming: dict[tuple[str, str], dict[int, dict[str, list[str]]]] = {}
    alerts: list[AlertRaised] = []
    for env in events:
        m = movement(env)
        if m is not None:
            alerts += _evaluate(rules, outgoing, incoming, m)
    return alerts


def _alert(rules: RuleSet, rule: str, wallet: str, asset: str, trigger: str, evidence: list[str],
           start: datetime, end: datetime) -> AlertRaised:
    return AlertRaised(
        id=alert_id(rule, rules.version, wallet, asset, trigger),
        signature=alert_id(rule, wallet, asset, trigger), rule=rule, rule_version=rules.version,
        wallet=wallet, asset=asset, severity=rules.severity(rule), evidence=tuple(sorted(evidence)),
        window_start=start, window_end=end)


def _evaluate(rules: RuleSet, outgoing: dict[tuple[str, str], _Out],
              incoming: dict[tuple[str, str], dict[int, dict[str, list[str]]]],
              m: Movement) -> Iterator[AlertRaised]:
    subject = m.payer or m.payee
    if subject is not None and m.amount >= rules.large_movement.threshold(m.asset):
        yield _alert(rules, "large_movement", subject, m.asset, m.event_id, [m.event_id], m.at, m.at)
    for wallet in sorted({w for w in (m.payer, m.payee) if w in rules.watch_list.wallets}):
        yield _alert(rules, "watch_list", wallet, m.asset, m.event_id, [m.event_id], m.at, m.at)
    if m.payer is not None:
        yield from _outgoing(rules, outgoing.setdefault((m.payer, m.asset), _Out()), m.payer, m)
    if m.payer is not None and m.payee is not None:
        yield from _fan_in(rules, incoming.setdefault((m.payee, m.asset), {}), m.payee, m)


def _outgoing(rules: RuleSet, slot: _Out, payer: str, m: Movement) -> Iterator[AlertRaised]:
    slot.moves.append((m.event_id, m.at, m.amount, m.payee))
    horizon = m.at - timedelta(seconds=rules.longest_window)
    slot.moves = [x for x in slot.moves if x[1] > horizon]
    slot.fired = {r: t for r, t in slot.fired.items() if t > horizon}

    def window(seconds: int) -> list[tuple[str, datetime, int, str | None]]:
        since = m.at - timedelta(seconds=seconds)
        return [x for x in slot.moves if since < x[1] <= m.at]

    def fire(rule: str, seconds: int, evidence: list[tuple[str, datetime, int, str | None]]
             ) -> AlertRaised | None:
        last = slot.fired.get(rule)
        if last is not None and last > m.at - timedelta(seconds=seconds):
            return None
        slot.fired[rule] = m.at
        return _alert(rules, rule, payer, m.asset, m.event_id, [x[0] for x in evidence],
                      min(x[1] for x in evidence), m.at)

    ve = rules.velocity
    moves = window(ve.window_seconds)
    if len(moves) >= ve.max_count or sum(x[2] for x in moves) >= ve.volume_limit(m.asset):
        if (a := fire("velocity", ve.window_seconds, moves)) is not None:
            yield a
    st = rules.structuring
    threshold = rules.large_movement.threshold(m.asset)

    def just_under(amount: int) -> bool:
        return amount < threshold and amount * 100 >= threshold * (100 - st.below_percent)

    if just_under(m.amount):
        under = [x for x in window(st.window_seconds) if just_under(x[2])]
        if len(under) >= st.count and (a := fire("structuring", st.window_seconds, under)) is not None:
            yield a
    fo = rules.fan_out
    if m.payee is not None:
        spread = [x for x in window(fo.window_seconds) if x[3] is not None]
        if len({x[3] for x in spread}) >= fo.distinct:
            if (a := fire("fan_out", fo.window_seconds, spread)) is not None:
                yield a


def _fan_in(rules: RuleSet, windows: dict[int, dict[str, list[str]]], payee: str,
            m: Movement) -> Iterator[AlertRaised]:
    fi = rules.fan_in
    seconds = int((m.at - _EPOCH).total_seconds())
    start = seconds - seconds % fi.window_seconds
    payers = windows.setdefault(start, {})
    ids = payers.setdefault(m.payer or "", [])
    if m.event_id in ids:
        return
    ids.append(m.event_id)
    for old in [w for w in windows if w <= start - 3 * fi.window_seconds]:
        del windows[old]
    if len(payers) >= fi.distinct:
        begin = _EPOCH + timedelta(seconds=start)
        yield _alert(rules, "fan_in", payee, m.asset, f"window:{start}",
                     [i for ids in payers.values() for i in ids], begin,
                     begin + timedelta(seconds=fi.window_seconds))
