"""The audit's bookkeeping: real histories add up, forged or miscounted ones do not."""

import json

import msgspec

from events import codec
from events.codec import Envelope
from events.messages import ApplyCredit, BurnTokens, InitiateTrade, InitiateTransfer, WalletCredited
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


def test_a_history_stopped_half_way_has_its_credits_in_the_events_already() -> None:
    ledger = history(in_flight=True)
    assert ledger.inbox
    b = books(envelopes(ledger))
    assert b.problems == [] and b.check("USDX") == [] and b.check("BOND") == []
    # The debits' transactions wrote the credits: nothing is in flight in the events, though
    # the follow-ups that bring the processors' states up to date are still to come.
    assert sum(a.in_flight() for a in b.assets.values()) == 0
    assert any(isinstance(r.command, ApplyCredit) for r in ledger.inbox)


def test_a_cut_with_a_debit_but_not_yet_its_credit_adds_up_with_the_credit_in_flight() -> None:
    envs = envelopes(history())
    n = next(n for n, e in enumerate(envs) if e.type == "WalletCredited"
             and e.payload.kind == "transfer")
    b = books(envs[:n] + envs[n + 1:])
    assert b.problems == [] and b.check("USDX") == []
    assert b.assets["USDX"].in_flight() == 50


def test_a_debit_decided_before_its_wallet_took_a_credit_is_not_a_problem() -> None:
    # sam's burn is decided on sam's state before the transfer's ApplyCredit reaches it: its
    # balance after counts less than the history, which already has the credit.
    ledger = funded(sam={"USDX": 5}, bea={"USDX": 100})
    start = len(ledger.decided)
    ledger.submit("wallet:bea", InitiateTransfer(transfer_id="x", source="bea", target="sam",
                                                 asset="USDX", amount=50))
    ledger.deliver(ledger.inbox[0])
    [apply] = ledger.inbox
    ledger.submit("wallet:sam", BurnTokens(wallet="sam", asset="USDX", amount=5))
    ledger.deliver(ledger.inbox[-1])
    ledger.drain()
    envs = envelopes(ledger)
    burned = next(e for e in envs[start:] if e.type == "TokensBurned")
    assert burned.payload.available_after == 0
    b = books(envs)
    assert b.problems == [] and b.check("USDX") == []
    assert b.balances[("sam", "USDX")] == (50, 0) and ledger.wallet("sam").balance("USDX").available == 50
    assert isinstance(apply.command, ApplyCredit)


def test_an_older_log_with_credits_decided_by_the_payee_still_adds_up() -> None:
    def old(n: int, type_: str, key: str, payload: dict[str, object]) -> Envelope:
        return codec.decode(json.dumps({
            "id": f"o{n}", "type": type_, "version": 1, "key": key, "command_id": f"c{n}",
            "occurred_at": "2025-01-01T00:00:00Z", "principal": "p", "payload": payload,
        }).encode())

    envs = [
        old(1, "AssetRegistered", "asset:USDX", {"symbol": "USDX", "name": "U", "decimals": 0,
                                                  "issuer": "t"}),
        old(2, "TokensIssued", "asset:USDX", {"symbol": "USDX", "to": "a", "amount": 10,
                                               "supply_after": 10}),
        old(3, "WalletCredited", "wallet:a", {"wallet": "a", "asset": "USDX", "amount": 10,
                                              "kind": "issue", "reference": "USDX",
                                              "available_after": 10, "held_after": 0}),
        old(4, "TransferConfirmed", "wallet:a", {"transfer_id": "x", "source": "a", "target": "b",
                                                 "asset": "USDX", "amount": 4,
                                                 "available_after": 6, "held_after": 0}),
        old(5, "WalletCredited", "wallet:b", {"wallet": "b", "asset": "USDX", "amount": 4,
                                              "kind": "transfer", "reference": "x",
                                              "available_after": 4, "held_after": 0}),
    ]
    b = books(envs)
    assert b.problems == [] and b.check("USDX") == []
    assert b.balances == {("a", "USDX"): (6, 0), ("b", "USDX"): (4, 0)}


def test_a_credit_without_a_debit_is_found() -> None:
    envs = envelopes(history())
    forged = msgspec.structs.replace(envs[-1], id="forged", payload=WalletCredited(
        wallet="eve", asset="USDX", amount=7, kind="transfer", reference="nothing"))
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


def test_a_cut_with_a_credit_but_not_yet_its_debit_is_seen_as_one_to_read_on_from() -> None:
    envs = envelopes(history())
    n = next(n for n, e in enumerate(envs) if e.type == "TransferConfirmed")
    assert books(envs[:n] + envs[n + 1:]).credits_ahead()
    assert not books(envs).credits_ahead()
    burn = next(n for n, e in enumerate(envs) if e.type == "TokensBurned")
    assert books(envs[:burn] + envs[burn + 1:]).credits_ahead()  # the supply's half alone
