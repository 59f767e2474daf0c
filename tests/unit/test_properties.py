"""Property tests of the deciders: random commands, follow-ups delivered in random order and
redelivered at random, and after every step: no negative balance, conservation per asset, locks
that match the held balances, and the audit's books (built from the events alone) agreeing with
the driver's; at the end every failed trade has netted to nothing."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from events.codec import envelope
from events.messages import (
    BurnTokens,
    FreezeWallet,
    InitiateTrade,
    InitiateTransfer,
    IssueTokens,
    RegisterAsset,
    TradeFailed,
    TradeSettled,
    UnfreezeWallet,
)
from processor.books import Books
from processor.decide import WalletState
from tests.unit.driver import Ledger

WALLETS = ("w0", "w1", "w2", "w3")
ASSETS = {"USDX": None, "BOND": 500}  # BOND has a supply cap, so some issues are refused

wallets = st.sampled_from(WALLETS)
assets = st.sampled_from(sorted(ASSETS))
amounts = st.integers(min_value=-1, max_value=120)


def _registered() -> Ledger:
    ledger = Ledger()
    for symbol, cap in ASSETS.items():
        ledger.submit(f"asset:{symbol}", RegisterAsset(symbol=symbol, name=symbol, decimals=2,
                                                       issuer="treasury", max_supply=cap))
    ledger.drain()
    return ledger


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = _registered()
        self.trades = 0
        self.books = Books()
        self.fed = 0

    @rule(asset=assets, to=wallets, amount=amounts)
    def issue(self, asset: str, to: str, amount: int) -> None:
        self.ledger.submit(f"asset:{asset}", IssueTokens(symbol=asset, to=to, amount=amount))

    @rule(source=wallets, receiver=wallets, asset=assets, amount=amounts)
    def transfer(self, source: str, receiver: str, asset: str, amount: int) -> None:
        self.ledger.submit(f"wallet:{source}", InitiateTransfer(
            transfer_id=f"x{len(self.ledger.inbox)}", source=source, target=receiver, asset=asset,
            amount=amount))

    @rule(seller=wallets, buyer=wallets, asset=assets, payment=assets, quantity=amounts,
          price=amounts)
    def trade(self, seller: str, buyer: str, asset: str, payment: str, quantity: int,
              price: int) -> None:
        self.trades += 1
        self.ledger.submit(f"wallet:{seller}", InitiateTrade(
            trade_id=f"t{self.trades}", seller=seller, buyer=buyer, asset=asset,
            quantity=quantity, payment_asset=payment, price=price))

    @rule(wallet=wallets, asset=assets, amount=amounts)
    def burn(self, wallet: str, asset: str, amount: int) -> None:
        self.ledger.submit(f"wallet:{wallet}", BurnTokens(wallet=wallet, asset=asset, amount=amount))

    @rule(wallet=wallets, freeze=st.booleans())
    def freeze(self, wallet: str, freeze: bool) -> None:
        command = (FreezeWallet if freeze else UnfreezeWallet)(wallet=wallet, reason="test")
        self.ledger.submit(f"wallet:{wallet}", command)

    @precondition(lambda self: self.ledger.inbox)
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        inbox = self.ledger.inbox
        self.ledger.deliver(inbox[data.draw(st.integers(0, len(inbox) - 1), label="which")])

    @precondition(lambda self: self.ledger.delivered)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        done = self.ledger.delivered
        request = done[data.draw(st.integers(0, len(done) - 1), label="again")]
        snapshots, decided, inbox = dict(self.ledger.snapshots), len(self.ledger.decided), \
            list(self.ledger.inbox)
        assert self.ledger.deliver(request) == []
        assert self.ledger.snapshots == snapshots
        assert len(self.ledger.decided) == decided and self.ledger.inbox == inbox

    @invariant()
    def no_negative_balance(self) -> None:
        for name, wallet in self.ledger.wallets().items():
            for asset, b in wallet.balances.items():
                assert b.available >= 0 and b.held >= 0, (name, asset, b)

    @invariant()
    def conservation(self) -> None:
        ledger = self.ledger
        for asset in ASSETS:
            issued, burned = ledger.issued(asset), ledger.burned(asset)
            assert ledger.holdings(asset) + ledger.in_flight(asset) == issued - burned, asset
            state = ledger.asset(asset)
            assert state is not None
            # The asset's state takes a burn when its ApplyBurn arrives; the events have it already.
            on_their_way = ledger.burns_on_their_way(asset)
            assert state.supply == issued - ledger.supply_reduced(asset) + on_their_way
            assert state.burned == ledger.supply_reduced(asset) - on_their_way
            cap = ASSETS[asset]
            assert cap is None or state.supply <= cap

    @invariant()
    def held_is_the_sum_of_open_locks(self) -> None:
        for wallet in self.ledger.wallets().values():
            for asset, b in wallet.balances.items():
                assert b.held == sum(h.quantity for h in wallet.holds.values() if h.asset == asset)

    @invariant()
    def the_audit_agrees_from_the_events_alone(self) -> None:
        for d in self.ledger.decided[self.fed:]:
            self.fed += 1
            self.books.add(envelope(d.event, key=d.key, command_id="c", principal="p",
                                    id=str(self.fed)))
        assert self.books.problems == []
        for asset in ASSETS:
            assert self.books.check(asset) == []
            # The events hold every credit as soon as its debit is decided; the processor
            # states take it when the follow-up arrives.
            assert self.books.assets[asset].in_flight() == self.ledger.unwritten(asset)
            assert self.books.holdings().get(asset, 0) == self.ledger.holdings(asset) + \
                self.ledger.in_flight(asset) - self.ledger.unwritten(asset)

    def teardown(self) -> None:
        ledger = self.ledger
        ledger.drain()
        self.conservation()
        self.the_audit_agrees_from_the_events_alone()
        for asset in ASSETS:
            assert ledger.in_flight(asset) == 0
            state = ledger.asset(asset)
            assert state is not None and state.supply == ledger.holdings(asset)
            assert state.supply == ledger.issued(asset) - ledger.burned(asset)
        assert all(not w.holds for w in ledger.wallets().values())
        failed = {d.event.trade_id for d in ledger.decided if isinstance(d.event, TradeFailed)}
        settled = {d.event.trade_id for d in ledger.decided if isinstance(d.event, TradeSettled)}
        assert not failed & settled
        assert len(failed | settled) == self.trades  # every trade reached an end
        for trade_id, changes in ledger.trade_changes().items():
            if trade_id in failed:
                assert all(change == (0, 0) for change in changes.values()), (trade_id, changes)


LedgerMachine.TestCase.settings = settings(
    max_examples=120, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedger = LedgerMachine.TestCase


@settings(max_examples=200, deadline=None)
@given(
    seller_has=st.integers(0, 20), buyer_has=st.integers(0, 2000),
    quantity=st.integers(1, 20), price=st.integers(1, 2000),
    seller_frozen=st.booleans(), buyer_frozen=st.booleans(),
)
def test_a_trade_moves_both_legs_or_leaves_both_wallets_exactly_as_they_were(
    seller_has: int, buyer_has: int, quantity: int, price: int, seller_frozen: bool,
    buyer_frozen: bool,
) -> None:
    ledger = _registered()
    for wallet, asset, amount in (("sam", "BOND", seller_has), ("bea", "USDX", buyer_has)):
        if amount:
            ledger.submit(f"asset:{asset}", IssueTokens(symbol=asset, to=wallet, amount=amount))
    for wallet, frozen in (("sam", seller_frozen), ("bea", buyer_frozen)):
        if frozen:
            ledger.submit(f"wallet:{wallet}", FreezeWallet(wallet=wallet, reason="test"))
    ledger.drain()
    before = ledger.wallet("sam"), ledger.wallet("bea")

    ledger.submit("wallet:sam", InitiateTrade(
        trade_id="t", seller="sam", buyer="bea", asset="BOND", quantity=quantity,
        payment_asset="USDX", price=price))
    ledger.drain()

    sam, bea = ledger.wallet("sam"), ledger.wallet("bea")
    can_settle = (not seller_frozen and not buyer_frozen and seller_has >= quantity
                  and buyer_has >= price)
    if not can_settle:
        assert (sam, bea) == before
        return
    assert _totals(sam) == {"BOND": seller_has - quantity, "USDX": price}
    assert _totals(bea) == {"BOND": quantity, "USDX": buyer_has - price}
    assert sam.balance("BOND").held == 0 and not sam.holds


def _totals(wallet: WalletState) -> dict[str, int]:
    return {a: b.available + b.held for a, b in wallet.balances.items()}
