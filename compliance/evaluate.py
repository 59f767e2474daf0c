"""Pure rule evaluation: ``evaluate(rules, state, event) -> alerts``, state changed in place.

Everything runs on event time (``occurred_at``), never on the clock, and every windowed rule
keeps its state where the events it counts are totally ordered, so a replay (or a backtest of a
candidate rule set) gives the same alerts whatever the interleaving of partitions:

- velocity, structuring and fan-out count a payer's outgoing movements, and every debit of a
  wallet is decided in the wallet's own partition (``TransferConfirmed``, ``PaymentReceived``,
  ``AssetTransferred``, ``TokensBurned``): sliding windows, one alert per window (after an
  alert the rule is quiet for one window length for that wallet and asset);
- fan-in counts the payers of one payee, whose payments come from many partitions, so it counts
  in fixed windows aligned to the epoch: the alert of a window is identified by the window, and
  its evidence is every payment in it, whichever partition was read first;
- large movement and the watch list look at one event at a time.

Evaluation is incremental: an event costs the same however busy its wallet has been. Each
sliding window keeps its movements in a deque in event-time order with a running count, volume
and counted set of counterparties; a new movement is appended and those that fell out of the
window are popped from the front. A movement older than its payer's newest (occurred_at is the
command's, so a partition's events are not quite in time order) is inserted in its place, and
its own windows are counted by a scan: the answer is the one a re-scan of every movement gives
(``tests/unit/test_compliance_rules.py`` checks it against one over random sequences). A fan-in
window counts its payers once; once it has fired, a further payment raises the same alert with
that payment alone as new evidence, and the store adds it to the row.

An alert's id is derived from rule, version, wallet, asset and the trigger (an event or a
window), so evaluating the same events twice gives the same ids: the store keeps one row each.
"""

import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec

from compliance.rules import RuleSet
from events.codec import Envelope
from events.compliance import AlertRaised
from events.messages import (
    AssetTransferred,
    PaymentReceived,
    TokensBurned,
    TokensIssued,
    TransferConfirmed,
)

_ALERTS = uuid.UUID("6a1f0d0e-6c43-4b0b-9a57-2f1e6f3c8a11")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Movement:
    """Value leaving ``payer`` for ``payee`` (None: minted by an issue, or destroyed by a burn)."""

    event_id: str
    at: datetime
    kind: str
    payer: str | None
    payee: str | None
    asset: str
    amount: int


def movement(env: Envelope) -> Movement | None:
    """The movement an event records, or None for the events that move nothing."""
    p = env.payload
    match p:
        case TransferConfirmed():
            return Movement(env.id, env.occurred_at, "transfer", p.source, p.target, p.asset, p.amount)
        case PaymentReceived():
            return Movement(env.id, env.occurred_at, "trade_payment", p.buyer, p.seller,
                            p.payment_asset, p.price)
        case AssetTransferred():
            return Movement(env.id, env.occurred_at, "trade_delivery", p.seller, p.buyer, p.asset,
                            p.quantity)
        case TokensIssued():
            return Movement(env.id, env.occurred_at, "issue", None, p.to, p.symbol, p.amount)
        case TokensBurned():
            return Movement(env.id, env.occurred_at, "burn", p.wallet, None, p.asset, p.amount)
    return None


class Entry(NamedTuple):
    """One movement a slot holds: a row of ``compliance.state_entries``. In a payer's slot the
    counterparty is the payee (None: a burn); in a payee's, the payer."""

    key: str
    event_id: str
    at: datetime
    amount: int
    counterparty: str | None


class Move(NamedTuple):
    at: datetime
    event_id: str
    amount: int
    counterparty: str | None


class _Sliding:
    """The moves of one rule's window, ``(newest - seconds, newest]``, in time order, with
    their count (``len(moves)``), volume and counted counterparties kept as they come and go."""

    __slots__ = ("moves", "parties", "seconds", "takes", "volume")

    def __init__(self, seconds: int, takes: Callable[[Move], bool]) -> None:
        self.seconds = timedelta(seconds=seconds)
        self.takes = takes
        self.moves: deque[Move] = deque()
        self.volume = 0
        self.parties: Counter[str] = Counter()

    def add(self, x: Move) -> None:
        if not self.takes(x):
            return
        _in_time_order(self.moves, x)
        self.volume += x.amount
        if x.counterparty is not None:
            self.parties[x.counterparty] += 1

    def expire(self, newest: datetime) -> None:
        since, moves, parties = newest - self.seconds, self.moves, self.parties
        while moves and moves[0].at <= since:
            x = moves.popleft()
            self.volume -= x.amount
            if x.counterparty is not None:
                left = parties[x.counterparty] - 1
                if left:
                    parties[x.counterparty] = left
                else:
                    del parties[x.counterparty]


class Outgoing:
    """A payer's movements in one asset within the longest window (in time order), when each
    windowed rule last fired, and each rule's sliding window over them (made for one rule set,
    again from the movements when another comes)."""

    __slots__ = ("fan_out", "fired", "for_rules", "moves", "structuring", "velocity")

    def __init__(self, moves: Iterable[Move] = (), fired: dict[str, datetime] | None = None) -> None:
        self.moves: deque[Move] = deque(sorted(moves))
        self.fired: dict[str, datetime] = fired or {}
        self.for_rules: RuleSet | None = None
        self.velocity = self.structuring = self.fan_out = _Sliding(0, bool)

    def windows(self, rules: RuleSet, asset: str) -> None:
        if self.for_rules is rules:
            return
        threshold, below = rules.large_movement.threshold(asset), rules.structuring.below_percent
        self.velocity = _Sliding(rules.velocity.window_seconds, lambda x: True)
        self.structuring = _Sliding(rules.structuring.window_seconds,
                                    lambda x: _just_under(x.amount, threshold, below))
        self.fan_out = _Sliding(rules.fan_out.window_seconds, lambda x: x.counterparty is not None)
        if self.moves:
            newest = self.moves[-1].at
            for sliding in (self.velocity, self.structuring, self.fan_out):
                for x in self.moves:
                    if x.at > newest - sliding.seconds:
                        sliding.add(x)
        self.for_rules = rules


class _FanInWindow:
    __slots__ = ("ids", "payers", "raised")

    def __init__(self) -> None:
        self.payers: dict[str, list[str]] = {}
        self.ids: set[str] = set()
        self.raised = False  # its alert went out with the whole evidence: now only what is new


class Incoming:
    """A payee's payments in one asset per fixed window (start, seconds since the epoch). Read
    back from the store as payments, sorted into the windows of the rule set that first uses
    them."""

    __slots__ = ("loaded", "windows")

    def __init__(self, loaded: Iterable[Entry] = ()) -> None:
        self.windows: dict[int, _FanInWindow] = {}
        self.loaded = list(loaded)

    def ready(self, rules: RuleSet) -> None:
        if not self.loaded:
            return
        for e in sorted(self.loaded, key=lambda e: (e.at, e.event_id)):
            w = self.windows.setdefault(_window_start(e.at, rules.fan_in.window_seconds), _FanInWindow())
            w.payers.setdefault(e.counterparty or "", []).append(e.event_id)
            w.ids.add(e.event_id)
        self.loaded = []


Slot = Outgoing | Incoming


@dataclass
class Changes:
    """What a batch changed in the stored state: movements to add and to drop (by key and
    event id), and the slots' small rows (the payer's ``fired``) to write or delete."""

    added: dict[tuple[str, str], Entry] = field(default_factory=dict)
    removed: set[tuple[str, str]] = field(default_factory=set)
    slots: dict[str, bytes | None] = field(default_factory=dict)


class State:
    """The monitor's state: one slot per key (``out|wallet|asset``, ``in|wallet|asset``), and
    what changed since the last :meth:`take_changes`, which the worker writes with the batch's
    offsets."""

    def __init__(self, slots: dict[str, Slot] | None = None) -> None:
        self.slots: dict[str, Slot] = slots or {}
        self._added: dict[tuple[str, str], Entry] = {}
        self._removed: set[tuple[str, str]] = set()
        self._fired: set[str] = set()

    def outgoing(self, wallet: str, asset: str) -> tuple[str, Outgoing]:
        key = f"out|{wallet}|{asset}"
        slot = self.slots.get(key)
        if not isinstance(slot, Outgoing):
            slot = self.slots[key] = Outgoing()
        return key, slot

    def incoming(self, wallet: str, asset: str) -> tuple[str, Incoming]:
        key = f"in|{wallet}|{asset}"
        slot = self.slots.get(key)
        if not isinstance(slot, Incoming):
            slot = self.slots[key] = Incoming()
        return key, slot

    def added(self, entry: Entry) -> None:
        where = (entry.key, entry.event_id)
        self._removed.discard(where)
        self._added[where] = entry

    def removed(self, key: str, event_id: str) -> None:
        where = (key, event_id)
        if self._added.pop(where, None) is None:
            self._removed.add(where)

    def fired_changed(self, key: str) -> None:
        self._fired.add(key)

    def take_changes(self) -> Changes:
        """The changes since the last call; slots left empty are forgotten."""
        slots: dict[str, bytes | None] = {}
        for key in sorted(self._fired):
            slot = self.slots.get(key)
            fired = slot.fired if isinstance(slot, Outgoing) else {}
            slots[key] = _fired_encoder.encode(fired) if fired else None
        for key in {k for k, _ in self._added} | {k for k, _ in self._removed} | self._fired:
            slot = self.slots.get(key)
            if isinstance(slot, Outgoing) and not slot.moves and not slot.fired:
                del self.slots[key]
            elif isinstance(slot, Incoming) and not slot.windows and not slot.loaded:
                del self.slots[key]
        changes = Changes(self._added, self._removed, slots)
        self._added, self._removed, self._fired = {}, set(), set()
        return changes

    @classmethod
    def restored(cls, fired: Iterable[tuple[str, bytes | str]], entries: Iterable[Entry]) -> "State":
        """The state as stored: the payers' ``fired`` rows and every slot's movements."""
        by_key: dict[str, list[Entry]] = {}
        for e in entries:
            by_key.setdefault(e.key, []).append(e)
        fired_by_key = {k: decode_fired(v) for k, v in fired}
        slots: dict[str, Slot] = {}
        for key in sorted(set(by_key) | set(fired_by_key)):
            held = by_key.get(key, [])
            if key.startswith("out|"):
                slots[key] = Outgoing((Move(e.at, e.event_id, e.amount, e.counterparty) for e in held),
                                      fired_by_key.get(key))
            else:
                slots[key] = Incoming(held)
        return cls(slots)


_fired_encoder = msgspec.json.Encoder()
_fired_decoder = msgspec.json.Decoder(dict[str, datetime])


def _in_time_order(moves: deque[Move], x: Move) -> None:
    """Put ``x`` after every move not later than it: at the end, unless the command's time goes
    back (the log's order then breaks a tie)."""
    i = len(moves)
    while i and moves[i - 1].at > x.at:
        i -= 1
    moves.insert(i, x)


def decode_fired(data: bytes | str) -> dict[str, datetime]:
    return _fired_decoder.decode(data)


def alert_id(*parts: str) -> str:
    return str(uuid.uuid5(_ALERTS, "|".join(parts)))


def _alert(rules: RuleSet, rule: str, wallet: str, asset: str, trigger: str,
           evidence: Iterable[str], start: datetime, end: datetime) -> AlertRaised:
    return AlertRaised(
        id=alert_id(rule, rules.version, wallet, asset, trigger),
        signature=alert_id(rule, wallet, asset, trigger), rule=rule,
        rule_version=rules.version, wallet=wallet, asset=asset, severity=rules.severity(rule),
        evidence=tuple(sorted(evidence)), window_start=start, window_end=end,
    )


def evaluate(rules: RuleSet, state: State, env: Envelope) -> list[AlertRaised]:
    """The alerts ``env`` raises (or, for fan-in, grows), given and updating ``state``."""
    m = movement(env)
    if m is None:
        return []
    return list(_evaluate(rules, state, m))


def _evaluate(rules: RuleSet, state: State, m: Movement) -> Iterator[AlertRaised]:
    lm = rules.large_movement
    subject = m.payer or m.payee
    if subject is not None and m.amount >= lm.threshold(m.asset):
        yield _alert(rules, "large_movement", subject, m.asset, m.event_id, [m.event_id], m.at, m.at)
    watched = rules.watch_list.wallets
    if watched:
        for wallet in sorted({w for w in (m.payer, m.payee) if w in watched}):
            yield _alert(rules, "watch_list", wallet, m.asset, m.event_id, [m.event_id], m.at, m.at)
    if m.payer is not None:
        yield from _outgoing(rules, state, m.payer, m)
    if m.payer is not None and m.payee is not None:
        yield from _fan_in(rules, state, m.payee, m)


def _outgoing(rules: RuleSet, state: State, payer: str, m: Movement) -> Iterator[AlertRaised]:
    key, slot = state.outgoing(payer, m.asset)
    slot.windows(rules, m.asset)
    x = Move(m.at, m.event_id, m.amount, m.payee)
    moves = slot.moves
    in_order = not moves or moves[-1].at <= m.at
    newest = m.at if in_order else moves[-1].at
    _in_time_order(moves, x)
    state.added(Entry(key, m.event_id, m.at, m.amount, m.payee))
    horizon = m.at - timedelta(seconds=rules.longest_window)
    while moves[0].at <= horizon:
        state.removed(key, moves.popleft().event_id)
    if slot.fired and any(t <= horizon for t in slot.fired.values()):
        slot.fired = {r: t for r, t in slot.fired.items() if t > horizon}
        state.fired_changed(key)
    for sliding in (slot.velocity, slot.structuring, slot.fan_out):
        if m.at > newest - sliding.seconds:
            sliding.add(x)
        sliding.expire(newest)

    def window(sliding: _Sliding) -> list[Move]:
        if in_order:
            return list(sliding.moves)
        since = m.at - sliding.seconds  # an older movement: its own windows, by a scan
        return [y for y in moves if since < y.at <= m.at and sliding.takes(y)]

    def fire(rule: str, sliding: _Sliding) -> AlertRaised | None:
        last = slot.fired.get(rule)
        if last is not None and last > m.at - sliding.seconds:
            return None  # one alert per window: the one already raised covers this movement
        slot.fired[rule] = m.at
        state.fired_changed(key)
        evidence = window(sliding)
        return _alert(rules, rule, payer, m.asset, m.event_id, [y.event_id for y in evidence],
                      min(y.at for y in evidence), m.at)

    ve = slot.velocity
    if in_order:
        count, volume = len(ve.moves), ve.volume
    else:
        scanned = window(ve)
        count, volume = len(scanned), sum(y.amount for y in scanned)
    if count >= rules.velocity.max_count or volume >= rules.velocity.volume_limit(m.asset):
        if (a := fire("velocity", ve)) is not None:
            yield a

    st = slot.structuring
    if st.takes(x):
        under = len(st.moves) if in_order else len(window(st))
        if under >= rules.structuring.count and (a := fire("structuring", st)) is not None:
            yield a

    fo = slot.fan_out
    if m.payee is not None:
        spread = len(fo.parties) if in_order else len({y.counterparty for y in window(fo)})
        if spread >= rules.fan_out.distinct and (a := fire("fan_out", fo)) is not None:
            yield a


def _just_under(amount: int, threshold: int, below_percent: int) -> bool:
    return amount < threshold and amount * 100 >= threshold * (100 - below_percent)


def _window_start(at: datetime, window_seconds: int) -> int:
    seconds = int((at - _EPOCH).total_seconds())
    return seconds - seconds % window_seconds


def _fan_in(rules: RuleSet, state: State, payee: str, m: Movement) -> Iterator[AlertRaised]:
    fi = rules.fan_in
    key, slot = state.incoming(payee, m.asset)
    slot.ready(rules)
    start = _window_start(m.at, fi.window_seconds)
    window = slot.windows.get(start)
    if window is None:
        window = slot.windows[start] = _FanInWindow()
    if m.event_id in window.ids:
        return
    window.ids.add(m.event_id)
    window.payers.setdefault(m.payer or "", []).append(m.event_id)
    state.added(Entry(key, m.event_id, m.at, m.amount, m.payer))
    # Keep the last few windows: payments of an older window can still arrive from a partition
    # that is read behind the others.
    for old in [w for w in slot.windows if w <= start - 3 * fi.window_seconds]:
        for event_id in slot.windows.pop(old).ids:
            state.removed(key, event_id)
    if len(window.payers) >= fi.distinct:
        if window.raised:
            evidence: Iterable[str] = (m.event_id,)
        else:
            evidence = window.ids
            window.raised = True
        begin = _EPOCH + timedelta(seconds=start)
        yield _alert(rules, "fan_in", payee, m.asset, f"window:{start}", evidence, begin,
                     begin + timedelta(seconds=fi.window_seconds))
