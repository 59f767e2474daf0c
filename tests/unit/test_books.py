"""The audit's bookkeeping: real histories add up, forged or miscounted ones do not."""

import msgspec

from events.codec import Envelope
from events.messages import BurnTokens, InitiateTrade, InitiateTransfer, WalletCredited
from processor.books import Books
from tests.unit.driver import Ledger, envelopes, funded


def history(in_flight: bool = False) -> Ledger:
    ledger = funded(sam={"BOND": 10, "USDX": 5}, bea={"USDX": 1000})
    ledger.submit("wallet:sam", InitiateTrade(trade_id="t1", seller="sam", buyer="bea",
                                              asset="BOND", quantity=3, payment_asset="USDX",
                                              price=300))
    ledger.submit("wallet:sam", InitiateTrade(trade_id="t2", seller="sam", buyer="bea",
                                              asset="BOND", quantity=1, payment_asset="USDX",
                                              price=5000))
    ledger.submit("wallet:bea", InitiateTransfer(transfer_id="x", source="bea", target="sam",
                                                 asset="USDX", amount=50))
    ledger.submit("wallet:sam", BurnTokens(wallet="sam", asset="USDX", amount=5))
    if in_flight:
        for _ in range(4):  # stop half way: debits made, credits still to come
            ledger.deliver(ledger.inbox[0])
    else:
        ledger.drain()
    return ledger


def books(envs: list[Envelope]) -> Books:
    b = Books()
    for env in envs:
        b.add(env)
    return b


def test_a_finished_history_adds_up() -> None:
    b = books(envelopes(history()))
    assert b.problems == [] and b.check("USDX") == [] and b.check("BOND") == []
    usdx = b.assets["USDX"]
    assert (usdx.issued, usdx.burned, usdx.supply, usdx.in_flight()) == (1005, 5, 1000, 0)
    assert b.holdings()["USDX"] == 1000


def test_a_history_stopped_half_way_adds_up_with_credits_in_flight() -> None:
    ledger = history(in_flight=True)
    assert ledger.inbox
    b = books(envelopes(ledger))
    assert b.problems == [] and b.check("USDX") == [] and b.check("BOND") == []
    assert sum(a.in_flight() for a in b.assets.values()) > 0


def test_a_credit_without_a_debit_is_found() -> None:
    envs = envelopes(history())
    forged = msgspec.structs.replace(envs[-1], id="forged", payload=WalletCredited(
        wallet="eve", asset="USDX", amount=7, kind="transfer", reference="nothing",
        available_after=7, held_after=0))
    b = books([*envs, forged])
    # The sum alone still balances (the forged credit counts as a credit no longer in flight);
    # the debits and credits of each kind do not.
    assert b.check("USDX") == ["transfer credits of 57 exceed the debits of 50 that send them"]


def test_a_balance_that_does_not_follow_from_the_history_is_pinned_to_its_event() -> None:
    envs = envelopes(history())
    n, env = next((n, e) for n, e in enumerate(envs) if e.type == "PaymentReceived")
    wrong = msgspec.structs.replace(
        env, payload=msgspec.structs.replace(env.payload, available_after=env.payload.available_after + 1))
    b = books([*envs[:n], wrong, *envs[n + 1:]])
    assert len(b.problems) >= 1
    assert b.problems[0].startswith(f"PaymentReceived {env.id} (wallet:bea): wallet bea USDX: "
                                    "the event says available 651 held 0, the history gives 650 0")
