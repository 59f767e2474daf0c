"""Pure bookkeeping over the event history, for the audit: per asset, what was issued, burned,
held in wallets and in flight between wallets, and whether it adds up.

Conservation (docs/architecture.md, guarantee 3), per asset: issued - burned = Σ(available + held) over all
wallets + credits in flight. A credit is in flight from the debit that sent it (a confirmed
transfer, an issue, a trade's payment or delivery) until the ``WalletCredited`` of its kind. On
the live path the debit's transaction writes the credit too, so a credit is in flight only in a
cut that takes one partition of a transaction and not yet the other, or for a ``CreditWallet`` of
an older log not decided yet. (The ``ApplyCredit`` that brings the payee's processor state up to
date is not in the events: that state is the processor's business, not the books'.)

A wallet's balance is the running sum of its events' changes, in the order of its events
partition (docs/processor.md, "The live path"); it must never go below zero. An event its own
wallet decided also says what the deciding processor held after it: never more available, and
never less held, than the history gives (a credit or a delivery written by another partition's
transaction may not have reached that processor yet; one decided twice, or on a stale state,
shows as more). An asset's supply is likewise the running sum of its issues and of the burns
that burns' transactions write to its partition. So an error is pinned to the event that made
it.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from events.codec import Envelope
from events.messages import (
    AssetRegistered,
    AssetTransferred,
    PaymentReceived,
    SupplyReduced,
    TokensBurned,
    TokensIssued,
    TradeAssetLocked,
    TradeAssetReleased,
    TransferConfirmed,
    WalletCredited,
)


@dataclass
class AssetBooks:
    symbol: str
    decimals: int = 0
    registered: bool = False
    max_supply: int | None = None
    issued: int = 0
    burned: int = 0  # debited from wallets by TokensBurned
    supply: int = 0  # the asset's own count, after its last TokensIssued / SupplyReduced
    supply_burned: int = 0  # what the asset has taken off its supply (SupplyReduced)
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    received: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def in_flight(self) -> int:
        return sum(self.sent.values()) - sum(self.received.values())


@dataclass
class Books:
    assets: dict[str, AssetBooks] = field(default_factory=dict)
    balances: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    problem_assets: list[str] = field(default_factory=list)  # the asset of each problem, in order
    events: int = 0

    def asset(self, symbol: str) -> AssetBooks:
        if symbol not in self.assets:
            self.assets[symbol] = AssetBooks(symbol)
        return self.assets[symbol]

    def add(self, env: Envelope) -> None:
        self.events += 1
        e = env.payload
        match e:
            case AssetRegistered():
                a = self.asset(e.symbol)
                a.registered, a.decimals, a.max_supply = True, e.decimals, e.max_supply
            case TokensIssued():
                a = self.asset(e.symbol)
                a.issued += e.amount
                a.supply += e.amount
                a.sent["issue"] += e.amount
                # Decided on the asset's supply, which counts only the burns its processor has
                # taken: never less than the history's (the cap check is on the safe side).
                if e.supply_after < a.supply:
                    self._problem(env, e.symbol, f"the event says supply {e.supply_after}, the history "
                                       f"gives {a.supply}")
            case SupplyReduced():
                a = self.asset(e.symbol)
                a.supply_burned += e.amount
                a.supply -= e.amount
            case TransferConfirmed():
                self.asset(e.asset).sent["transfer"] += e.amount
                self._balance(env, e.source, e.asset, -e.amount, 0, e.available_after, e.held_after)
            case WalletCredited():
                self.asset(e.asset).received[e.kind] += e.amount
                self._balance(env, e.wallet, e.asset, e.amount, 0)
            case TradeAssetLocked():
                self._balance(env, e.seller, e.asset, -e.quantity, e.quantity, e.available_after,
                              e.held_after)
            case TradeAssetReleased():
                self._balance(env, e.seller, e.asset, e.quantity, -e.quantity, e.available_after,
                              e.held_after)
            case PaymentReceived():
                self.asset(e.payment_asset).sent["trade_payment"] += e.price
                self._balance(env, e.buyer, e.payment_asset, -e.price, 0, e.available_after,
                              e.held_after)
            case AssetTransferred():
                self.asset(e.asset).sent["trade_delivery"] += e.quantity
                self._balance(env, e.seller, e.asset, 0, -e.quantity)
            case TokensBurned():
                self.asset(e.asset).burned += e.amount
                self._balance(env, e.wallet, e.asset, -e.amount, 0, e.available_after, e.held_after)

    def _balance(self, env: Envelope, wallet: str, asset: str, d_available: int, d_held: int,
                 available: int | None = None, held: int | None = None) -> None:
        before = self.balances.get((wallet, asset), (0, 0))
        after = (before[0] + d_available, before[1] + d_held)
        if available is not None and held is not None and (
                available > after[0] or held < after[1] or min(available, held) < 0):
            self._problem(env, asset, f"wallet {wallet} {asset}: the event says available {available} "
                               f"held {held}, the history gives {after[0]} {after[1]}")
        if min(after) < 0:
            self._problem(env, asset, f"wallet {wallet} {asset}: negative balance {after[0]} {after[1]}")
        self.balances[(wallet, asset)] = after

    def _problem(self, env: Envelope, asset: str, text: str) -> None:
        self.problems.append(f"{env.type} {env.id} ({env.key}): {text}")
        self.problem_assets.append(asset)

    def credits_ahead(self) -> bool:
        """Whether some credit (or a supply's burn) is here without the debit that sends it: a
        cut of the log taken while a transaction's commit markers were being written to its
        partitions, one by one."""
        return any(a.received[kind] > a.sent[kind] for a in self.assets.values()
                   for kind in a.received) or any(a.supply_burned > a.burned
                                                  for a in self.assets.values())

    def holdings(self) -> dict[str, int]:
        """Per asset, Σ(available + held) over all wallets."""
        totals: dict[str, int] = defaultdict(int)
        for (_, asset), (available, held) in self.balances.items():
            totals[asset] += available + held
        return totals

    def check(self, symbol: str) -> list[str]:
        """Why the books of ``symbol`` do not add up; empty if they do."""
        a = self.asset(symbol)
        held = self.holdings().get(symbol, 0)
        problems = []
        if not a.registered:
            problems.append("events name this asset but it was never registered")
        if a.issued - a.burned != held + a.in_flight():
            problems.append(
                f"issued - burned = {a.issued - a.burned}, but balances + in flight = "
                f"{held} + {a.in_flight()} = {held + a.in_flight()}"
            )
        for kind in sorted(set(a.sent) | set(a.received)):
            if a.received[kind] > a.sent[kind]:
                problems.append(f"{kind} credits of {a.received[kind]} exceed the debits of "
                                f"{a.sent[kind]} that send them")
        if a.supply != a.issued - a.supply_burned:
            problems.append(f"supply {a.supply}, but issued - burned by the asset = "
                            f"{a.issued - a.supply_burned}")
        if not 0 <= a.supply_burned <= a.burned:
            problems.append(f"the asset took {a.supply_burned} off its supply for {a.burned} burned")
        if a.max_supply is not None and a.supply > a.max_supply:
            problems.append(f"supply {a.supply} exceeds the cap {a.max_supply}")
        return problems
