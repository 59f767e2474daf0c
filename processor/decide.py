"""Pure deciders: ``decide(state, command) -> events``, ``evolve(state, event) -> state``,
``react(event) -> follow-up requests`` for anything that touches a second aggregate, and
``consequences(follow-up) -> events`` for the follow-ups that decide nothing.

No I/O here; the processor loop feeds these functions and writes what they return.

A credit is a consequence, not a decision: it cannot fail. So the debit's transaction writes the
payee's ``WalletCredited`` itself, and sends the payee an ``ApplyCredit`` that only brings the
payee's state up to date (``consequences`` gives the events it stands for; ``decide`` gives
nothing). docs/processor.md, "The live path", has why that is sound.

A trade (delivery versus payment) is two decisions, each by one wallet, like two-phase holds:
the seller locks the asset (``InitiateTrade``), then the buyer pays (``PayForTrade``). The lock
means the seller's side can no longer fail, so the payment decides the settlement: the buyer
is credited with the asset in the same decision, and the seller's side (delivery, payment,
``TradeSettled``) is written for the seller with an ``ApplySettlement``. If the buyer cannot pay,
the seller's lock is released (``ReleaseTradeAsset``): all legs or none. A freeze stops new
debits; a trade whose asset is already locked still settles. ``SettleTrade`` and
``CreditWallet``, which earlier versions sent, are still decided as they were.
"""

from collections.abc import Container
from typing import Any

import msgspec

from events import grammar
from events.keys import asset_key, wallet_key
from events.messages import (
    ApplyBurn,
    ApplyCredit,
    ApplySettlement,
    AssetRegistered,
    AssetRegistrationRejected,
    AssetTransferred,
    BurnFailed,
    BurnTokens,
    Command,
    CreditKind,
    CreditWallet,
    EraseWalletData,
    Event,
    FreezeRejected,
    FreezeWallet,
    InitiateTrade,
    InitiateTransfer,
    IssueRejected,
    IssueTokens,
    PayForTrade,
    PaymentReceived,
    ReduceSupply,
    RegisterAsset,
    ReleaseTradeAsset,
    SettleTrade,
    SupplyReduced,
    TokensBurned,
    TokensIssued,
    TradeAssetLocked,
    TradeAssetReleased,
    TradeFailed,
    TradeInitiated,
    TradeSettled,
    TradeTerms,
    TransferConfirmed,
    TransferFailed,
    TransferInitiated,
    UnfreezeWallet,
    WalletCredited,
    WalletDataErased,
    WalletFrozen,
    WalletUnfrozen,
)
from events.reasons import Reason
from processor import wellformed
from processor.wellformed import Refusal, refusal, shown, shown_units

MAX_DECIMALS = wellformed.MAX_DECIMALS


class AssetState(msgspec.Struct, frozen=True, kw_only=True, tag="asset"):
    symbol: str
    name: str
    decimals: int
    issuer: str
    max_supply: int | None
    supply: int = 0
    burned: int = 0


class Balance(msgspec.Struct, frozen=True):
    available: int = 0
    held: int = 0


class Hold(msgspec.Struct, frozen=True, array_like=True):
    """The part of a wallet's ``held`` balance that one open trade has locked."""

    asset: str
    quantity: int


class WalletState(msgspec.Struct, frozen=True, kw_only=True, tag="wallet"):
    balances: dict[str, Balance] = msgspec.field(default_factory=dict)
    frozen: bool = False
    holds: dict[str, Hold] = msgspec.field(default_factory=dict)

    def balance(self, asset: str) -> Balance:
        return self.balances.get(asset, Balance())


State = AssetState | WalletState

EMPTY_WALLET = WalletState()


def decide(state: State | None, command: Command, key: str | None = None) -> list[Event]:
    """The events ``command`` causes on the aggregate in ``state`` (whose record key, when
    given, must be the aggregate the command is for).

    Domain refusals are events with a reason; so is a malformed command (see
    :mod:`processor.wellformed`). A follow-up that is malformed or contradicts the aggregate's
    state (which the flows never send) raises ``ValueError``, so the processor dead-letters it.
    """
    refused = refusal(command, key)
    if refused is not None:
        return _refused(command, refused)
    match command:
        case RegisterAsset():
            return _register(state, command)
        case IssueTokens():
            return _issue(state, command)
        case ReduceSupply():
            return _reduce_supply(_asset(state), command)
        case ApplyBurn():
            _asset(state)
            return []  # decided already, by the burn's transaction: see consequences()
        case InitiateTransfer():
            return _transfer(_wallet(state), command)
        case CreditWallet():
            _wallet(state)
            return [_credit(command.wallet, command.asset, command.amount, command.kind,
                            command.reference)]
        case ApplyCredit() | ApplySettlement():
            _wallet(state)
            return []  # decided already, by the debit's transaction: see consequences()
        case InitiateTrade():
            return _lock(_wallet(state), command)
        case PayForTrade():
            return _pay(_wallet(state), command)
        case SettleTrade():
            return _settle(_wallet(state), command)
        case ReleaseTradeAsset():
            return _release(_wallet(state), command)
        case BurnTokens():
            return _burn(_wallet(state), command)
        case FreezeWallet():
            return [WalletFrozen(wallet=command.wallet, reason=command.reason)]
        case UnfreezeWallet():
            return [WalletUnfrozen(wallet=command.wallet, reason=command.reason)]
        case EraseWalletData():
            return [WalletDataErased(wallet=command.wallet)]
    raise TypeError(f"no decider for {type(command).__name__}")


def _refused(c: Command, refused: Refusal) -> list[Event]:
    """The command's ordinary refusal events; what they repeat of it is made safe to store."""
    reason = refused.reason
    match c:
        case RegisterAsset():
            return [AssetRegistrationRejected(symbol=shown(c.symbol), reason=reason)]
        case IssueTokens():
            return [IssueRejected(symbol=shown(c.symbol), to=shown(c.to),
                                  amount=shown_units(c.amount), reason=reason)]
        case InitiateTransfer():
            ids: dict[str, Any] = dict(
                transfer_id=shown(c.transfer_id), source=shown(c.source), target=shown(c.target),
                asset=shown(c.asset), amount=shown_units(c.amount))
            memo = c.memo if grammar.is_memo(c.memo) else None
            return [TransferInitiated(**ids, memo=memo), TransferFailed(**ids, reason=reason)]
        case InitiateTrade():
            terms: dict[str, Any] = {k: shown(v) if isinstance(v, str) else shown_units(v)
                                     for k, v in _terms(c).items()}
            return [TradeInitiated(**terms), TradeFailed(**terms, party="seller", reason=reason)]
        case BurnTokens():
            return [BurnFailed(wallet=shown(c.wallet), asset=shown(c.asset),
                               amount=shown_units(c.amount), reason=reason)]
        case FreezeWallet() | UnfreezeWallet():
            return [FreezeRejected(wallet=shown(c.wallet), freeze=isinstance(c, FreezeWallet),
                                   reason=reason)]
    # A follow-up request comes from the processor itself: a malformed one was forged or is a bug.
    raise ValueError(f"malformed {type(c).__name__}: {refused.detail}")


def _wallet(state: State | None) -> WalletState:
    if state is None:
        return EMPTY_WALLET
    if not isinstance(state, WalletState):
        raise TypeError("a wallet command reached a non-wallet aggregate")
    return state


def _asset(state: State | None) -> AssetState:
    if not isinstance(state, AssetState):
        raise TypeError("an asset follow-up reached an aggregate that is not a registered asset")
    return state


def _terms(message: TradeTerms) -> dict[str, Any]:
    return {name: getattr(message, name) for name in TradeTerms.__struct_fields__}


def _debit_refusal(wallet: WalletState, asset: str, amount: int) -> Reason | None:
    """Why ``wallet`` may not give up ``amount`` of ``asset`` from its available balance."""
    if amount <= 0:
        return "invalid_amount"
    if wallet.frozen:
        return "wallet_frozen"
    if wallet.balance(asset).available < amount:
        return "insufficient_funds"
    return None


def _register(state: State | None, c: RegisterAsset) -> list[Event]:
    if state is not None:
        return [AssetRegistrationRejected(symbol=c.symbol, reason="asset_exists")]
    if not 0 <= c.decimals <= MAX_DECIMALS:
        return [AssetRegistrationRejected(symbol=c.symbol, reason="invalid_decimals")]
    if c.max_supply is not None and c.max_supply <= 0:
        return [AssetRegistrationRejected(symbol=c.symbol, reason="invalid_amount")]
    return [
        AssetRegistered(
            symbol=c.symbol,
            name=c.name,
            decimals=c.decimals,
            issuer=c.issuer,
            max_supply=c.max_supply,
        )
    ]


def _issue(state: State | None, c: IssueTokens) -> list[Event]:
    def reject(reason: Reason) -> list[Event]:
        return [IssueRejected(symbol=c.symbol, to=c.to, amount=c.amount, reason=reason)]

    if not isinstance(state, AssetState):
        return reject("unknown_asset")
    if c.amount <= 0:
        return reject("invalid_amount")
    supply_after = state.supply + c.amount
    # Without a cap of its own, an asset's supply is still bounded by what the views can hold.
    cap = grammar.MAX_UNITS if state.max_supply is None else state.max_supply
    if supply_after > cap:
        return reject("supply_cap_exceeded")
    return [TokensIssued(symbol=c.symbol, to=c.to, amount=c.amount, supply_after=supply_after)]


def _reduce_supply(asset: AssetState, c: ReduceSupply) -> list[Event]:
    if not 0 < c.amount <= asset.supply:
        raise ValueError(f"cannot reduce the supply {asset.supply} of {asset.symbol} by {c.amount}")
    return [SupplyReduced(symbol=c.symbol, wallet=c.wallet, amount=c.amount)]


def _transfer(wallet: WalletState, c: InitiateTransfer) -> list[Event]:
    initiated = TransferInitiated(
        transfer_id=c.transfer_id,
        source=c.source,
        target=c.target,
        asset=c.asset,
        amount=c.amount,
        memo=c.memo,
    )
    reason: Reason | None = None
    if c.amount <= 0:
        reason = "invalid_amount"
    elif c.source == c.target:
        reason = "same_wallet"
    else:
        reason = _debit_refusal(wallet, c.asset, c.amount)
    if reason is not None:
        failed = TransferFailed(
            transfer_id=c.transfer_id,
            source=c.source,
            target=c.target,
            asset=c.asset,
            amount=c.amount,
            reason=reason,
        )
        return [initiated, failed]
    balance = wallet.balance(c.asset)
    confirmed = TransferConfirmed(
        transfer_id=c.transfer_id,
        source=c.source,
        target=c.target,
        asset=c.asset,
        amount=c.amount,
        available_after=balance.available - c.amount,
        held_after=balance.held,
    )
    return [initiated, confirmed]


def _credit(wallet_id: str, asset: str, amount: int, kind: CreditKind,
            reference: str) -> WalletCredited:
    # A credit always lands, on a frozen wallet too: the amount has left another wallet already.
    # No wallet can exceed 10^78 - 1: no supply can (the issue's cap check).
    return WalletCredited(wallet=wallet_id, asset=asset, amount=amount, kind=kind,
                          reference=reference)


def _lock(wallet: WalletState, c: InitiateTrade) -> list[Event]:
    terms = _terms(c)
    reason: Reason | None = None
    if c.quantity <= 0 or c.price <= 0:
        reason = "invalid_amount"
    elif c.seller == c.buyer:
        reason = "same_wallet"
    elif c.asset == c.payment_asset:
        reason = "same_asset"
    else:
        reason = _debit_refusal(wallet, c.asset, c.quantity)
    if reason is not None:
        return [TradeInitiated(**terms), TradeFailed(**terms, party="seller", reason=reason)]
    balance = wallet.balance(c.asset)
    locked = TradeAssetLocked(
        **terms,
        available_after=balance.available - c.quantity,
        held_after=balance.held + c.quantity,
    )
    return [TradeInitiated(**terms), locked]


def _pay(wallet: WalletState, c: PayForTrade) -> list[Event]:
    terms = _terms(c)
    reason = _debit_refusal(wallet, c.payment_asset, c.price)
    if reason is not None:
        return [TradeFailed(**terms, party="buyer", reason=reason)]
    balance = wallet.balance(c.payment_asset)
    # The seller's asset is locked for this trade, so the payment settles it: the buyer takes
    # the asset now, and the seller's side follows as consequences (react -> ApplySettlement).
    return [
        PaymentReceived(**terms, available_after=balance.available - c.price, held_after=balance.held),
        _credit(c.buyer, c.asset, c.quantity, "trade_delivery", c.trade_id),
    ]


def _locked(wallet: WalletState, c: TradeTerms) -> Balance:
    hold = wallet.holds.get(c.trade_id)
    if hold != Hold(c.asset, c.quantity):
        raise ValueError(f"trade {c.trade_id} holds {hold}, not {c.quantity} {c.asset}")
    return wallet.balance(c.asset)


def _settle(wallet: WalletState, c: SettleTrade) -> list[Event]:
    _locked(wallet, c)
    return _seller_settles(c)


def _seller_settles(c: TradeTerms) -> list[Event]:
    """The seller's side of a settlement: the held asset leaves, the payment arrives."""
    terms = _terms(c)
    paid = _credit(c.seller, c.payment_asset, c.price, "trade_payment", c.trade_id)
    return [AssetTransferred(**terms), paid, TradeSettled(**terms)]


def consequences(command: Command) -> list[Event]:
    """The events a follow-up that decides nothing stands for: the debit's transaction writes
    them to the target's events, and the target's processor evolves its state with them when the
    follow-up arrives. Empty for every command that is decided."""
    match command:
        case ApplyCredit():
            return [_credit(command.wallet, command.asset, command.amount, command.kind,
                            command.reference)]
        case ApplySettlement():
            return _seller_settles(command)
        case ApplyBurn():
            return [SupplyReduced(symbol=command.symbol, wallet=command.wallet, amount=command.amount)]
    return []


def _release(wallet: WalletState, c: ReleaseTradeAsset) -> list[Event]:
    balance = _locked(wallet, c)
    return [
        TradeAssetReleased(
            **_terms(c),
            reason=c.reason,
            available_after=balance.available + c.quantity,
            held_after=balance.held - c.quantity,
        )
    ]


def _burn(wallet: WalletState, c: BurnTokens) -> list[Event]:
    reason = _debit_refusal(wallet, c.asset, c.amount)
    if reason is not None:
        return [BurnFailed(wallet=c.wallet, asset=c.asset, amount=c.amount, reason=reason)]
    balance = wallet.balance(c.asset)
    return [
        TokensBurned(
            wallet=c.wallet,
            asset=c.asset,
            amount=c.amount,
            available_after=balance.available - c.amount,
            held_after=balance.held,
        )
    ]


def evolve(state: State | None, event: Event) -> State | None:
    match event:
        case AssetRegistered():
            return AssetState(
                symbol=event.symbol,
                name=event.name,
                decimals=event.decimals,
                issuer=event.issuer,
                max_supply=event.max_supply,
            )
        case TokensIssued() if isinstance(state, AssetState):
            return msgspec.structs.replace(state, supply=event.supply_after)
        case SupplyReduced() if isinstance(state, AssetState):
            # A running sum: the burn's transaction, which writes it, cannot know the supply.
            return msgspec.structs.replace(
                state, supply=state.supply - event.amount, burned=state.burned + event.amount
            )
        case TransferConfirmed() | TokensBurned():
            return _set_balance(_wallet(state), event.asset, event.available_after, event.held_after)
        case WalletCredited():
            wallet = _wallet(state)
            balance = wallet.balance(event.asset)
            return _set_balance(wallet, event.asset, balance.available + event.amount, balance.held)
        case PaymentReceived():
            return _set_balance(
                _wallet(state), event.payment_asset, event.available_after, event.held_after
            )
        case TradeAssetLocked():
            wallet = _wallet(state)
            holds = {**wallet.holds, event.trade_id: Hold(event.asset, event.quantity)}
            return _set_balance(
                msgspec.structs.replace(wallet, holds=holds),
                event.asset, event.available_after, event.held_after,
            )
        case AssetTransferred():
            wallet = _wallet(state)
            holds = {k: v for k, v in wallet.holds.items() if k != event.trade_id}
            balance = wallet.balance(event.asset)
            return _set_balance(
                msgspec.structs.replace(wallet, holds=holds),
                event.asset, balance.available, balance.held - event.quantity,
            )
        case TradeAssetReleased():
            wallet = _wallet(state)
            holds = {k: v for k, v in wallet.holds.items() if k != event.trade_id}
            return _set_balance(
                msgspec.structs.replace(wallet, holds=holds),
                event.asset, event.available_after, event.held_after,
            )
        case WalletFrozen():
            return msgspec.structs.replace(_wallet(state), frozen=True)
        case WalletUnfrozen():
            return msgspec.structs.replace(_wallet(state), frozen=False)
    return state


def _set_balance(wallet: WalletState, asset: str, available: int, held: int) -> WalletState:
    return msgspec.structs.replace(
        wallet, balances={**wallet.balances, asset: Balance(available, held)}
    )


def react(event: Event) -> list[tuple[str, Command]]:
    """Follow-up requests an event asks of other aggregates, as ``(aggregate key, command)``.

    Only for events the processor decided; a follow-up with :func:`consequences` takes its events
    along to the target's events partition, in the same transaction."""
    match event:
        case TokensIssued():
            return [_follow_credit(event.to, event.symbol, event.amount, "issue", event.symbol)]
        case TransferConfirmed():
            return [_follow_credit(event.target, event.asset, event.amount, "transfer", event.transfer_id)]
        case TradeAssetLocked():
            return [(wallet_key(event.buyer), PayForTrade(**_terms(event)))]
        case PaymentReceived():
            return [(wallet_key(event.seller), ApplySettlement(**_terms(event)))]
        case TradeFailed(party="buyer"):
            release = ReleaseTradeAsset(**_terms(event), reason=event.reason)
            return [(wallet_key(event.seller), release)]
        case TradeSettled():
            # Decided only from a SettleTrade of an older log: the buyer's asset follows as on
            # the live path.
            return [_follow_credit(event.buyer, event.asset, event.quantity, "trade_delivery",
                            event.trade_id)]
        case TokensBurned():
            reduce = ApplyBurn(symbol=event.asset, wallet=event.wallet, amount=event.amount)
            return [(asset_key(event.asset), reduce)]
    return []


def _follow_credit(wallet: str, asset: str, amount: int, kind: CreditKind,
                   reference: str) -> tuple[str, Command]:
    """The payee's follow-up: apply a credit already written, decide nothing."""
    return wallet_key(wallet), ApplyCredit(wallet=wallet, asset=asset, amount=amount,
                                           kind=kind, reference=reference)


def screened(command: Command, listed: Container[str]) -> list[Event] | None:
    """The refusal (``sanctioned_wallet``) of a transfer, issue or trade one of whose parties is
    on the sanctions list, decided before any balance changes; None when it may be decided."""
    match command:
        case InitiateTransfer():
            parties: tuple[str, ...] = (command.source, command.target)
        case IssueTokens():
            parties = (command.to,)
        case InitiateTrade():
            parties = (command.seller, command.buyer)
        case _:
            return None
    hit = [p for p in parties if p in listed]
    if not hit:
        return None
    return _refused(command, Refusal("sanctioned_wallet", f"{hit[0]} is on the sanctions list"))


def limited(command: Command, why: str) -> list[Event]:
    """The refusal (``limit_exceeded``) of a debit over the wallet's KYC limit."""
    return _refused(command, Refusal("limit_exceeded", why))
