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

An alert's id is derived from rule, version, wallet, asset and the trigger (an event or a
window), so evaluating the same events twice gives the same ids: the store keeps one row each.
"""

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


class Move(msgspec.Struct, frozen=True, array_like=True):
    event_id: str
    at: datetime
    amount: str  # decimal digits: an 18-decimal amount overflows what JSON numbers keep exactly
    counterparty: str | None


class Outgoing(msgspec.Struct, kw_only=True):
    """A payer's recent movements in one asset, and when each windowed rule last fired."""

    moves: list[Move] = msgspec.field(default_factory=list)
    fired: dict[str, datetime] = msgspec.field(default_factory=dict)


class Incoming(msgspec.Struct, kw_only=True):
    """A payee's payments in one asset per fixed window (start, seconds since the epoch):
    payer -> event ids."""

    windows: dict[int, dict[str, list[str]]] = msgspec.field(default_factory=dict)


Slot = Outgoing | Incoming


class State:
    """The monitor's state: one slot per key (``out|wallet|asset``, ``in|wallet|asset``).

    ``touched`` names the slots changed since the last :meth:`take_touched`, which the worker
    writes with the batch's offsets.
    """

    def __init__(self, slots: dict[str, Slot] | None = None) -> None:
        self.slots: dict[str, Slot] = slots or {}
        self.touched: set[str] = set()

    def outgoing(self, wallet: str, asset: str) -> Outgoing:
        key = f"out|{wallet}|{asset}"
        slot = self.slots.get(key)
        if not isinstance(slot, Outgoing):
            slot = self.slots[key] = Outgoing()
        self.touched.add(key)
        return slot

    def incoming(self, wallet: str, asset: str) -> Incoming:
        key = f"in|{wallet}|{asset}"
        slot = self.slots.get(key)
        if not isinstance(slot, Incoming):
            slot = self.slots[key] = Incoming()
        self.touched.add(key)
        return slot

    def take_touched(self) -> dict[str, Slot | None]:
        """The changed slots (None: emptied, to delete) since the last call."""
        out: dict[str, Slot | None] = {}
        for key in sorted(self.touched):
            slot = self.slots.get(key)
            if slot is not None and _empty(slot):
                del self.slots[key]
                slot = None
            out[key] = slot
        self.touched.clear()
        return out


def _empty(slot: Slot) -> bool:
    if isinstance(slot, Outgoing):
        return not slot.moves and not slot.fired
    return not slot.windows


_slot_encoder = msgspec.json.Encoder()


def encode_slot(slot: Slot) -> bytes:
    return _slot_encoder.encode(slot)


def decode_slot(key: str, data: bytes | str) -> Slot:
    cls: type[Slot] = Outgoing if key.startswith("out|") else Incoming
    return msgspec.json.decode(data, type=cls)


def alert_id(*parts: str) -> str:
    return str(uuid.uuid5(_ALERTS, "|".join(parts)))


def _alert(rules: RuleSet, rule: str, wallet: str, asset: str, trigger: str,
           evidence: list[str], start: datetime, end: datetime) -> AlertRaised:
    return AlertRaised(
        id=alert_id(rule, rules.version, wallet, asset, trigger),
        signature=alert_id(rule, wallet, asset, trigger), rule=rule,
        rule_version=rules.version, wallet=wallet, asset=asset, severity=rules.severity(rule),
        evidence=tuple(evidence), window_start=start, window_end=end,
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
    for wallet in sorted({w for w in (m.payer, m.payee) if w in rules.watch_list.wallets}):
        yield _alert(rules, "watch_list", wallet, m.asset, m.event_id, [m.event_id], m.at, m.at)
    if m.payer is not None:
        yield from _outgoing(rules, state.outgoing(m.payer, m.asset), m.payer, m)
    if m.payer is not None and m.payee is not None:
        yield from _fan_in(rules, state.incoming(m.payee, m.asset), m.payee, m)


def _outgoing(rules: RuleSet, slot: Outgoing, payer: str, m: Movement) -> Iterator[AlertRaised]:
    slot.moves.append(Move(m.event_id, m.at, str(m.amount), m.payee))
    horizon = m.at - timedelta(seconds=rules.longest_window)
    slot.moves = [x for x in slot.moves if x.at > horizon]
    slot.fired = {r: t for r, t in slot.fired.items() if t > horizon}

    def window(seconds: int) -> list[Move]:
        since = m.at - timedelta(seconds=seconds)
        return [x for x in slot.moves if since < x.at <= m.at]

    def fire(rule: str, seconds: int, evidence: list[Move]) -> AlertRaised | None:
        last = slot.fired.get(rule)
        if last is not None and last > m.at - timedelta(seconds=seconds):
            return None  # one alert per window: the one already raised covers this movement
        slot.fired[rule] = m.at
        return _alert(rules, rule, payer, m.asset, m.event_id, [x.event_id for x in evidence],
                      min(x.at for x in evidence), m.at)

    ve = rules.velocity
    moves = window(ve.window_seconds)
    if len(moves) >= ve.max_count or sum(int(x.amount) for x in moves) >= ve.volume_limit(m.asset):
        if (a := fire("velocity", ve.window_seconds, moves)) is not None:
            yield a

    st = rules.structuring
    threshold = rules.large_movement.threshold(m.asset)
    if _just_under(m.amount, threshold, st.below_percent):
        under = [x for x in window(st.window_seconds)
                 if _just_under(int(x.amount), threshold, st.below_percent)]
        if len(under) >= st.count and (a := fire("structuring", st.window_seconds, under)) is not None:
            yield a

    fo = rules.fan_out
    if m.payee is not None:
        spread = [x for x in window(fo.window_seconds) if x.counterparty is not None]
        if len({x.counterparty for x in spread}) >= fo.distinct:
            if (a := fire("fan_out", fo.window_seconds, spread)) is not None:
                yield a


def _just_under(amount: int, threshold: int, below_percent: int) -> bool:
    return amount < threshold and amount * 100 >= threshold * (100 - below_percent)


def _fan_in(rules: RuleSet, slot: Incoming, payee: str, m: Movement) -> Iterator[AlertRaised]:
    fi = rules.fan_in
    seconds = int((m.at - _EPOCH).total_seconds())
    start = seconds - seconds % fi.window_seconds
    payers = slot.windows.setdefault(start, {})
    ids = payers.setdefault(m.payer or "", [])
    if m.event_id in ids:
        return
    ids.append(m.event_id)
    # Keep the last few windows: payments of an older window can still arrive from a partition
    # that is read behind the others.
    slot.windows = {w: p for w, p in slot.windows.items() if w > start - 3 * fi.window_seconds}
    if len(payers) >= fi.distinct:
        evidence = sorted(i for ids in payers.values() for i in ids)
        begin = _EPOCH + timedelta(seconds=start)
        yield _alert(rules, "fan_in", payee, m.asset, f"window:{start}", evidence, begin,
                     begin + timedelta(seconds=fi.window_seconds))
