"""Pure deciders: ``decide(state, command) -> events``, ``evolve(state, event) -> state``,
and ``react(event) -> follow-up requests`` for anything that touches a second aggregate.

No I/O here; the processor loop feeds these functions and writes what they return.
"""

import msgspec

from events.keys import wallet_key
from events.messages import (
    AssetRegistered,
    AssetRegistrationRejected,
    Command,
    CreditWallet,
    Event,
    InitiateTransfer,
    IssueRejected,
    IssueTokens,
    RegisterAsset,
    TokensIssued,
    TransferConfirmed,
    TransferFailed,
    TransferInitiated,
    WalletCredited,
)

MAX_DECIMALS = 18


class AssetState(msgspec.Struct, frozen=True, kw_only=True, tag="asset"):
    symbol: str
    name: str
    decimals: int
    issuer: str
    max_supply: int | None
    supply: int = 0


class Balance(msgspec.Struct, frozen=True):
    available: int = 0
    held: int = 0


class WalletState(msgspec.Struct, frozen=True, kw_only=True, tag="wallet"):
    balances: dict[str, Balance] = msgspec.field(default_factory=dict)
    frozen: bool = False

    def balance(self, asset: str) -> Balance:
        return self.balances.get(asset, Balance())


State = AssetState | WalletState

EMPTY_WALLET = WalletState()


def decide(state: State | None, command: Command) -> list[Event]:
    match command:
        case RegisterAsset():
            return _register(state, command)
        case IssueTokens():
            return _issue(state, command)
        case InitiateTransfer():
            return _transfer(_wallet(state), command)
        case CreditWallet():
            after = _wallet(state).balance(command.asset)
            return [
                WalletCredited(
                    wallet=command.wallet,
                    asset=command.asset,
                    amount=command.amount,
                    kind=command.kind,
                    reference=command.reference,
                    available_after=after.available + command.amount,
                    held_after=after.held,
                )
            ]
    raise TypeError(f"no decider for {type(command).__name__}")


def _wallet(state: State | None) -> WalletState:
    if state is None:
        return EMPTY_WALLET
    if not isinstance(state, WalletState):
        raise TypeError("a wallet command reached a non-wallet aggregate")
    return state


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
    def reject(reason: str) -> list[Event]:
        return [IssueRejected(symbol=c.symbol, to=c.to, amount=c.amount, reason=reason)]  # type: ignore[arg-type]

    if not isinstance(state, AssetState):
        return reject("unknown_asset")
    if c.amount <= 0:
        return reject("invalid_amount")
    supply_after = state.supply + c.amount
    if state.max_supply is not None and supply_after > state.max_supply:
        return reject("supply_cap_exceeded")
    return [TokensIssued(symbol=c.symbol, to=c.to, amount=c.amount, supply_after=supply_after)]


def _transfer(wallet: WalletState, c: InitiateTransfer) -> list[Event]:
    initiated = TransferInitiated(
        transfer_id=c.transfer_id,
        source=c.source,
        target=c.target,
        asset=c.asset,
        amount=c.amount,
        memo=c.memo,
    )
    reason = None
    balance = wallet.balance(c.asset)
    if c.amount <= 0:
        reason = "invalid_amount"
    elif c.source == c.target:
        reason = "same_wallet"
    elif wallet.frozen:
        reason = "wallet_frozen"
    elif balance.available < c.amount:
        reason = "insufficient_funds"
    if reason is not None:
        failed = TransferFailed(
            transfer_id=c.transfer_id,
            source=c.source,
            target=c.target,
            asset=c.asset,
            amount=c.amount,
            reason=reason,  # type: ignore[arg-type]
        )
        return [initiated, failed]
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
        case TransferConfirmed():
            return _set_balance(state, event.asset, event.available_after, event.held_after)
        case WalletCredited():
            return _set_balance(state, event.asset, event.available_after, event.held_after)
    return state


def _set_balance(state: State | None, asset: str, available: int, held: int) -> WalletState:
    wallet = _wallet(state)
    return msgspec.structs.replace(
        wallet, balances={**wallet.balances, asset: Balance(available, held)}
    )


def react(event: Event) -> list[tuple[str, Command]]:
    """Follow-up requests an event asks of other aggregates, as ``(aggregate key, command)``."""
    match event:
        case TokensIssued():
            credit = CreditWallet(
                wallet=event.to,
                asset=event.symbol,
                amount=event.amount,
                kind="issue",
                reference=event.symbol,
            )
            return [(wallet_key(event.to), credit)]
        case TransferConfirmed():
            credit = CreditWallet(
                wallet=event.target,
                asset=event.asset,
                amount=event.amount,
                kind="transfer",
                reference=event.transfer_id,
            )
            return [(wallet_key(event.target), credit)]
    return []
