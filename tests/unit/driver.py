"""A pure, in-memory stand-in for the processor loop: decide -> evolve -> react, with requests
delivered in whatever order the test picks, deduplicated by request id like the processor does
(``Snapshot.recent``). A follow-up's consequences (a credit) are recorded with the decision that
sends it, as the processor writes them in its transaction, and evolve the target's state when the
follow-up is delivered. It also keeps the books the invariants are checked against."""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from events.codec import Envelope, envelope
from events.messages import (
    ApplyBurn,
    ApplyCredit,
    ApplySettlement,
    AssetTransferred,
    Command,
    CreditWallet,
    Event,
    IssueTokens,
    RegisterAsset,
    SettleTrade,
    SupplyReduced,
    TokensBurned,
    TokensIssued,
    TradeTerms,
    WalletCredited,
)
from processor.decide import (
    AssetState,
    Balance,
    WalletState,
    consequences,
    decide,
    evolve,
    react,
)
from processor.snapshots import EMPTY, Snapshot


@dataclass(frozen=True)
class Request:
    id: str
    key: str
    command: Command


@dataclass(frozen=True)
class Decided:
    key: str
    event: Event
    # Per (wallet, asset) the change of (available, held) this event made.
    changes: dict[tuple[str, str], tuple[int, int]]


@dataclass
class Ledger:
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    inbox: list[Request] = field(default_factory=list)
    delivered: list[Request] = field(default_factory=list)
    decided: list[Decided] = field(default_factory=list)
    _ids: int = 0

    def submit(self, key: str, command: Command) -> Request:
        self._ids += 1
        request = Request(f"c{self._ids}", key, command)
        self.inbox.append(request)
        return request

    def deliver(self, request: Request) -> list[Event]:
        """Decide one request; a request id seen before changes nothing."""
        if request in self.inbox:
            self.inbox.remove(request)
        snap = self.snapshots.get(request.key, EMPTY)
        if snap.seen(request.id):
            return []
        events = decide(snap.state, request.command)
        state = snap.state
        for event in consequences(request.command):  # recorded when the debit was decided
            state = evolve(state, event)
        for n, event in enumerate(events):
            before, state = state, evolve(state, event)
            self.decided.append(Decided(request.key, event, _changes(request.key, before, state)))
            for m, (key, follow_up) in enumerate(react(event)):
                self.inbox.append(Request(f"{request.id}/{n}/{m}", key, follow_up))
                for consequence in consequences(follow_up):
                    self.decided.append(Decided(key, consequence, _change_of(consequence)))
        self.snapshots[request.key] = snap.after(state, request.id)
        self.delivered.append(request)
        return events

    def drain(self) -> None:
        while self.inbox:
            self.deliver(self.inbox[0])

    # --- views for the invariants -----------------------------------------------------------

    def wallet(self, wallet: str) -> WalletState:
        state = self.snapshots.get(f"wallet:{wallet}", EMPTY).state
        return state if isinstance(state, WalletState) else WalletState()

    def asset(self, symbol: str) -> AssetState | None:
        state = self.snapshots.get(f"asset:{symbol}", EMPTY).state
        return state if isinstance(state, AssetState) else None

    def wallets(self) -> dict[str, WalletState]:
        return {key.removeprefix("wallet:"): snap.state for key, snap in self.snapshots.items()
                if isinstance(snap.state, WalletState)}

    def holdings(self, asset: str) -> int:
        return sum(w.balance(asset).available + w.balance(asset).held
                   for w in self.wallets().values())

    def in_flight(self, asset: str) -> int:
        """Amounts that have left one wallet's state and not yet reached another's. A pending
        ApplySettlement counts its quantity negative: the buyer's state has it already, the
        seller's still holds it."""
        total = self.unwritten(asset)
        for request in self.inbox:
            c = request.command
            if isinstance(c, ApplyCredit) and c.asset == asset:
                total += c.amount
            elif isinstance(c, ApplySettlement):
                total += (c.price if c.payment_asset == asset else 0) - (
                    c.quantity if c.asset == asset else 0)
        return total

    def unwritten(self, asset: str) -> int:
        """Credits not in the events yet: only follow-ups of the kind older versions sent."""
        total = 0
        for request in self.inbox:
            c = request.command
            if isinstance(c, CreditWallet) and c.asset == asset:
                total += c.amount
            elif isinstance(c, SettleTrade) and c.payment_asset == asset:
                total += c.price
        return total

    def issued(self, asset: str) -> int:
        return sum(d.event.amount for d in self.decided
                   if isinstance(d.event, TokensIssued) and d.event.symbol == asset)

    def burned(self, asset: str) -> int:
        return sum(d.event.amount for d in self.decided
                   if isinstance(d.event, TokensBurned) and d.event.asset == asset)

    def supply_reduced(self, asset: str) -> int:
        return sum(d.event.amount for d in self.decided
                   if isinstance(d.event, SupplyReduced) and d.event.symbol == asset)

    def burns_on_their_way(self, asset: str) -> int:
        """Burns written to the asset's events that its state has not taken yet."""
        return sum(r.command.amount for r in self.inbox
                   if isinstance(r.command, ApplyBurn) and r.command.symbol == asset)

    def trade_changes(self) -> dict[str, dict[tuple[str, str], tuple[int, int]]]:
        """Per trade id, the summed (available, held) changes of every event it caused."""
        totals: dict[str, dict[tuple[str, str], tuple[int, int]]] = defaultdict(dict)
        for d in self.decided:
            trade_id = _trade_of(d.event)
            if trade_id is None:
                continue
            for key, (da, dh) in d.changes.items():
                a, h = totals[trade_id].get(key, (0, 0))
                totals[trade_id][key] = (a + da, h + dh)
        return totals


def _trade_of(event: Event) -> str | None:
    if isinstance(event, TradeTerms):
        return event.trade_id
    if isinstance(event, WalletCredited) and event.kind in ("trade_payment", "trade_delivery"):
        return event.reference
    return None


def _change_of(event: Event) -> dict[tuple[str, str], tuple[int, int]]:
    if isinstance(event, WalletCredited):
        return {(event.wallet, event.asset): (event.amount, 0)}
    if isinstance(event, AssetTransferred):
        return {(event.seller, event.asset): (0, -event.quantity)}
    return {}


def _changes(key: str, before: object, after: object) -> dict[tuple[str, str], tuple[int, int]]:
    if not isinstance(after, WalletState):
        return {}
    old = before if isinstance(before, WalletState) else WalletState()
    wallet = key.removeprefix("wallet:")
    out = {}
    for asset in set(old.balances) | set(after.balances):
        b, a = old.balances.get(asset, Balance()), after.balances.get(asset, Balance())
        if (a.available, a.held) != (b.available, b.held):
            out[(wallet, asset)] = (a.available - b.available, a.held - b.held)
    return out


T0 = datetime(2025, 1, 1, tzinfo=UTC)


def funded(**balances: dict[str, int]) -> Ledger:
    """A ledger with USDX and BOND registered and each wallet issued what it is given."""
    ledger = Ledger()
    for symbol in ("USDX", "BOND"):
        ledger.submit(f"asset:{symbol}", RegisterAsset(symbol=symbol, name=symbol, decimals=2,
                                                       issuer="treasury"))
    for wallet, amounts in balances.items():
        for symbol, amount in amounts.items():
            ledger.submit(f"asset:{symbol}", IssueTokens(symbol=symbol, to=wallet, amount=amount))
    ledger.drain()
    return ledger


def envelopes(ledger: Ledger, command_id: str = "cmd", skip: int = 0) -> list[Envelope]:
    """The ledger's events from ``skip`` on, as the processor would write them."""
    return [
        envelope(d.event, key=d.key, command_id=command_id, principal="ops",
                 correlation_id=getattr(d.event, "trade_id", None), id=f"e{n}",
                 occurred_at=T0 + timedelta(seconds=n))
        for n, d in enumerate(ledger.decided[skip:], start=skip)
    ]
