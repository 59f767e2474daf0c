"""A command workload produced straight to Kafka, and the ledger's facts read back from it.

The checks read the system of record (``ledger.events``, ``read_committed``) and replay it: each
command decided once, each balance change made on the balance before it (so nothing was decided
twice or on a stale state), no credit lost, and conservation per asset.

A wallet's balance is the running sum of its events' changes, in its partition's order. A debit
its own processor decided says what that processor held after it: never more available, or less
held, than the history (credits written by other partitions' transactions reach that processor
later; a decision made twice, or on a stale state, shows as more).
"""

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from common.kafka import client_options
from common.settings import asyncpg_dsn
from common.topic_reader import read_to_end
from events import codec, topics
from events.codec import Envelope
from events.keys import asset_key, wallet_key
from events.messages import (
    AssetTransferred,
    InitiateTrade,
    InitiateTransfer,
    IssueRejected,
    IssueTokens,
    Message,
    PaymentReceived,
    RegisterAsset,
    TokensIssued,
    TradeAssetLocked,
    TradeAssetReleased,
    TradeFailed,
    TradeInitiated,
    TradeSettled,
    TransferConfirmed,
    TransferFailed,
    TransferInitiated,
    WalletCredited,
)
from tests.conftest import Running, unique_symbol

# --- workload -------------------------------------------------------------------------------------


def _env(message: Message, key: str, command_id: str | None = None,
         correlation_id: str | None = None) -> Envelope:
    command_id = command_id or codec.new_id()
    return codec.envelope(message, key=key, command_id=command_id, id=command_id,
                          principal="fault-test", correlation_id=correlation_id)


@dataclass
class Workload:
    """Commands as clients send them: two assets registered and issued to a few wallets, then a
    stream of transfers and trades (delivery versus payment) among them, with issues mixed in.
    Some are meant to fail (too little to send, sell or pay with)."""

    cash: str
    bond: str
    wallets: list[str]
    setup: list[Envelope] = field(default_factory=list)
    stream: list[Envelope] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    trades: list[str] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)

    @property
    def assets(self) -> set[str]:
        return {self.cash, self.bond}

    @classmethod
    def build(cls, wallets: list[str], *, transfers: int, trades: int = 0, seed: int,
              cash: int = 1_000, bonds: int = 10) -> "Workload":
        rng = random.Random(seed)
        w = cls(unique_symbol(), unique_symbol(), wallets)
        for symbol in (w.cash, w.bond):
            w.setup.append(_env(RegisterAsset(symbol=symbol, name=symbol, decimals=0, issuer="treasury"),
                                asset_key(symbol)))
        for wallet in wallets:
            w.setup += [w._issue(w.cash, wallet, cash), w._issue(w.bond, wallet, bonds)]
        kinds = ["transfer"] * transfers + ["trade"] * trades
        rng.shuffle(kinds)
        for n, kind in enumerate(kinds):
            if n % 10 == 9:
                w.stream.append(w._issue(w.cash, rng.choice(wallets), rng.randint(1, 300)))
            one, other = rng.sample(wallets, 2)
            if kind == "transfer":
                w.stream.append(w.transfer(one, other, rng.randint(1, 400)))
            else:
                w.stream.append(w.trade(one, other, rng.randint(1, 6), rng.randint(50, 600)))
        return w

    def _issue(self, symbol: str, wallet: str, amount: int) -> Envelope:
        env = _env(IssueTokens(symbol=symbol, to=wallet, amount=amount), asset_key(symbol))
        self.issues.append(env.command_id)
        return env

    def transfer(self, source: str, target: str, amount: int) -> Envelope:
        transfer_id = codec.new_id()
        self.transfers.append(transfer_id)
        return _env(InitiateTransfer(transfer_id=transfer_id, source=source, target=target,
                                     asset=self.cash, amount=amount),
                    wallet_key(source), correlation_id=transfer_id)

    def trade(self, seller: str, buyer: str, quantity: int, price: int) -> Envelope:
        trade_id = codec.new_id()
        self.trades.append(trade_id)
        return _env(InitiateTrade(trade_id=trade_id, seller=seller, buyer=buyer, asset=self.bond,
                                  quantity=quantity, payment_asset=self.cash, price=price),
                    wallet_key(seller), correlation_id=trade_id)


async def produce(bootstrap: str, envelopes: list[Envelope]) -> None:
    producer = AIOKafkaProducer(**client_options(bootstrap), acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send(topics.COMMANDS, codec.encode(env), key=env.key.encode())
                for env in envelopes]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


# --- the ledger's facts ---------------------------------------------------------------------------


async def read_events(bootstrap: str, isolation: str = "read_committed") -> list[Envelope]:
    """Every event in ``ledger.events``, partition by partition, each in log order."""
    read = await read_to_end(bootstrap, topics.EVENTS, isolation=isolation)
    return [codec.decode(r.value) for p in sorted(read) for r in read[p]]


@dataclass
class Facts:
    """What ``ledger.events`` says about some assets. Transfers and trades are keyed by their id."""

    initiated: Counter[str] = field(default_factory=Counter)
    terminal: Counter[str] = field(default_factory=Counter)  # confirmed/failed, settled/failed
    confirmed: dict[str, int] = field(default_factory=dict)  # transfer -> amount debited
    failed: dict[str, str] = field(default_factory=dict)  # transfer or trade -> reason
    settled: set[str] = field(default_factory=set)
    steps: Counter[tuple[str, str]] = field(default_factory=Counter)  # (trade, event type)
    credited: Counter[tuple[str, str]] = field(default_factory=Counter)  # (kind, reference)
    issued: Counter[str] = field(default_factory=Counter)  # issue command -> decisions
    supply: Counter[str] = field(default_factory=Counter)
    balances: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)  # available, held
    stale: list[str] = field(default_factory=list)  # changes not made on the balance before them
    event_ids: Counter[str] = field(default_factory=Counter)
    in_flight: Counter[str] = field(default_factory=Counter)  # issued or debited, not yet credited
    after: dict[str, tuple[int, int]] = field(default_factory=dict)  # event id -> balance after
    # Decisions made before their wallet's processor had taken a credit already in the history.
    decided_behind: int = 0

    def change(self, wallet: str, asset: str, available: int, held: int,
               seen: tuple[int, int] | None, event_id: str) -> None:
        was = self.balances.get((wallet, asset), (0, 0))
        after = (was[0] + available, was[1] + held)
        if min(after) < 0 or (seen is not None and (seen[0] > after[0] or seen[1] < after[1]
                                                    or min(seen) < 0)):
            self.stale.append(f"{event_id}: {wallet} {asset} {was} + ({available}, {held}) -> "
                              f"{after}, decided as {seen}")
        if seen is not None and seen != after:
            self.decided_behind += 1
        self.balances[(wallet, asset)] = after
        self.after[event_id] = after

    def undecided(self, workload: Workload) -> int:
        """Commands of the workload (and their follow-ups) without their final outcome yet."""
        return (sum(1 for t in workload.transfers if not self.terminal[t])
                + sum(1 for t in workload.trades
                      if not self.terminal[t] or (self.steps[(t, "TradeAssetLocked")]
                                                  and t not in self.settled
                                                  and not self.steps[(t, "TradeAssetReleased")]))
                + sum(1 for c in workload.issues if not self.issued[c])
                + sum(1 for n in self.in_flight.values() if n))

    def total(self, asset: str) -> int:
        return sum(a + h for (_, x), (a, h) in self.balances.items() if x == asset)


def facts(events: list[Envelope], assets: set[str]) -> Facts:
    f = Facts()
    for env in events:
        e: Any = env.payload
        if not {getattr(e, n, None) for n in ("asset", "symbol", "payment_asset")} & assets:
            continue
        f.event_ids[env.id] += 1
        match e:
            case TransferInitiated() | TradeInitiated():
                f.initiated[e.transfer_id if isinstance(e, TransferInitiated) else e.trade_id] += 1
            case TransferConfirmed():
                f.terminal[e.transfer_id] += 1
                f.confirmed[e.transfer_id] = e.amount
                f.change(e.source, e.asset, -e.amount, 0, (e.available_after, e.held_after), env.id)
                f.in_flight[e.asset] += e.amount
            case TransferFailed():
                f.terminal[e.transfer_id] += 1
                f.failed[e.transfer_id] = e.reason
            case WalletCredited():
                f.credited[(e.kind, e.reference)] += 1
                f.change(e.wallet, e.asset, e.amount, 0, None, env.id)
                f.in_flight[e.asset] -= e.amount
            case TradeAssetLocked():
                f.steps[(e.trade_id, "TradeAssetLocked")] += 1
                f.change(e.seller, e.asset, -e.quantity, e.quantity, (e.available_after, e.held_after),
                         env.id)
            case PaymentReceived():
                f.steps[(e.trade_id, "PaymentReceived")] += 1
                f.change(e.buyer, e.payment_asset, -e.price, 0, (e.available_after, e.held_after), env.id)
                f.in_flight[e.payment_asset] += e.price
            case AssetTransferred():
                f.steps[(e.trade_id, "AssetTransferred")] += 1
                f.change(e.seller, e.asset, 0, -e.quantity, None, env.id)
                f.in_flight[e.asset] += e.quantity
            case TradeAssetReleased():
                f.steps[(e.trade_id, "TradeAssetReleased")] += 1
                f.change(e.seller, e.asset, e.quantity, -e.quantity, (e.available_after, e.held_after),
                         env.id)
            case TradeSettled():
                f.terminal[e.trade_id] += 1
                f.settled.add(e.trade_id)
            case TradeFailed():
                f.terminal[e.trade_id] += 1
                f.failed[e.trade_id] = e.reason
            case TokensIssued():
                f.issued[env.command_id] += 1
                f.supply[e.symbol] += e.amount
                f.in_flight[e.symbol] += e.amount
            case IssueRejected():
                f.issued[env.command_id] += 1
    return f


def assert_decided_once(f: Facts, workload: Workload) -> None:
    """Every command of the workload decided exactly once; nothing lost; conservation."""
    assert not f.stale, f"balance changes not made on the balance before them: {f.stale[:5]}"
    twice = [i for i, n in f.event_ids.items() if n > 1]
    assert not twice, f"event ids written more than once: {twice[:5]}"
    wrong = {i: (f.initiated[i], f.terminal[i]) for i in workload.transfers + workload.trades
             if (f.initiated[i], f.terminal[i]) != (1, 1)}
    assert not wrong, f"not decided exactly once (initiated, outcome): {list(wrong.items())[:5]}"
    assert all(f.credited[("transfer", t)] == 1 for t in f.confirmed), "a transfer's credit lost or doubled"
    for t in workload.trades:
        steps = {s: f.steps[(t, s)] for s in ("TradeAssetLocked", "PaymentReceived",
                                               "AssetTransferred", "TradeAssetReleased")}
        credits = (f.credited[("trade_payment", t)], f.credited[("trade_delivery", t)])
        if t in f.settled:
            assert (list(steps.values()), credits) == ([1, 1, 1, 0], (1, 1)), (t, steps, credits)
        else:  # failed at the seller (nothing locked) or at the buyer (lock released)
            locked = steps["TradeAssetLocked"]
            assert (list(steps.values()), credits) == ([locked, 0, 0, locked], (0, 0)), (t, steps, credits)
    assert all(f.issued[c] == 1 for c in workload.issues), "an issue not decided exactly once"
    assert sum(n for (kind, _), n in f.credited.items() if kind == "issue") == sum(
        1 for c in workload.issues if f.issued[c]), "an issue's credit lost or doubled"
    for asset in workload.assets:  # conservation
        assert f.total(asset) + f.in_flight[asset] == f.supply[asset], asset
    assert sum(h for a, h in f.balances.values()) == 0, "a hold left behind"


async def wait_decided(bootstrap: str, workload: Workload, within: float = 40.0) -> Facts:
    """Read the events until every command of the workload has its outcome and every credit."""
    deadline = time.monotonic() + within
    while True:
        f = facts(await read_events(bootstrap), workload.assets)
        if not f.undecided(workload) or time.monotonic() > deadline:
            return f
        await asyncio.sleep(0.5)


async def assert_views_agree(running: Running, f: Facts, assets: set[str], within: float = 30.0) -> None:
    """The projected balances equal the replayed ones, and sum to the supply (conservation)."""
    expected = ({k: v for k, v in f.balances.items() if v != (0, 0)},
                {a: f.supply[a] for a in assets})
    conn = await asyncpg.connect(asyncpg_dsn(running.stack.settings.database_url))
    try:
        deadline = time.monotonic() + within
        while True:
            rows = await conn.fetch("SELECT wallet, asset, available, held FROM wallet_balances "
                                    "WHERE asset = ANY($1)", list(assets))
            supply = await conn.fetch("SELECT symbol, supply FROM assets WHERE symbol = ANY($1)",
                                      list(assets))
            views = ({(r["wallet"], r["asset"]): (int(r["available"]), int(r["held"])) for r in rows
                      if r["available"] or r["held"]},
                     {r["symbol"]: int(r["supply"]) for r in supply})
            if views == expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.3)
    finally:
        await conn.close()
    assert views == expected


def unique_wallets(prefix: str, n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"{prefix}{tag}-{i}" for i in range(n)]
