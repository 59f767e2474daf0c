"""Commands (imperative) and events (past tense) as frozen, typed values.

Amounts are whole numbers of base units (Python ``int``; an 18-decimal asset overflows int64).
Each class carries its schema ``VERSION``; the codec puts it in the envelope. A snapshot of each
version's schema is committed under ``events/schemas/`` (see :mod:`events.schema`).

A wallet event that its own wallet decided carries ``available_after``/``held_after``: the
balance the deciding processor holds after it. A credit (``WalletCredited`` v2) and a trade's
delivery (``AssetTransferred`` v2) may be written by another wallet's transaction, which cannot
know the balance, so they carry only the amount; so does a burn's ``SupplyReduced`` (v2).
Balances (and supplies) in the views are the running sum of every event's change in the order
of the aggregate's events partition (docs/processor.md, "The live path"); the deciding
processor's ``available_after`` is never more than that sum, its ``supply_after`` never less.
"""

from typing import ClassVar, Literal

import msgspec

from events.reasons import Reason

CreditKind = Literal["issue", "transfer", "trade_payment", "trade_delivery"]
"""Why a wallet was credited; each kind settles one kind of debit made elsewhere."""

TradeParty = Literal["seller", "buyer"]


class Message(msgspec.Struct, frozen=True, kw_only=True):
    VERSION: ClassVar[int] = 1


class TradeTerms(Message, frozen=True, kw_only=True):
    """What every trade message carries, so each step can send the next one on.

    ``price`` is the whole payment for ``quantity`` (in the payment asset's base units), not a
    price per unit: a unit price times a quantity could need more decimals than either asset has.
    """

    trade_id: str
    seller: str
    buyer: str
    asset: str
    quantity: int
    payment_asset: str
    price: int


# --- commands -------------------------------------------------------------------------------


class RegisterAsset(Message, frozen=True, kw_only=True):
    symbol: str
    name: str
    decimals: int
    issuer: str
    max_supply: int | None = None


class IssueTokens(Message, frozen=True, kw_only=True):
    symbol: str
    to: str
    amount: int


class InitiateTransfer(Message, frozen=True, kw_only=True):
    transfer_id: str
    source: str
    target: str
    asset: str
    amount: int
    memo: str | None = None


class CreditWallet(Message, frozen=True, kw_only=True):
    """Follow-up request: one aggregate asks a wallet to take an amount it has already debited.

    What the flows sent before the live path (now :class:`ApplyCredit`); one in an old log is
    still decided as before."""

    wallet: str
    asset: str
    amount: int
    kind: CreditKind
    reference: str


class ApplyCredit(Message, frozen=True, kw_only=True):
    """Follow-up that decides nothing: the credit a debit's transaction already wrote to this
    wallet's events (a ``WalletCredited``), for the wallet's processor to add to its state."""

    wallet: str
    asset: str
    amount: int
    kind: CreditKind
    reference: str


class InitiateTrade(TradeTerms, frozen=True, kw_only=True):
    """Decided by the seller's wallet: lock the asset, then ask the buyer to pay."""


class PayForTrade(TradeTerms, frozen=True, kw_only=True):
    """Follow-up to the buyer's wallet once the seller's asset is locked."""


class SettleTrade(TradeTerms, frozen=True, kw_only=True):
    """Follow-up to the seller's wallet once the buyer has paid: deliver and take the payment."""


class ApplySettlement(TradeTerms, frozen=True, kw_only=True):
    """Follow-up that decides nothing: the seller's side of a settlement the buyer's payment
    decided and already wrote to the seller's events (``AssetTransferred``, the payment's
    ``WalletCredited``, ``TradeSettled``), for the seller's processor to add to its state."""


class ReleaseTradeAsset(TradeTerms, frozen=True, kw_only=True):
    """Follow-up to the seller's wallet when the buyer could not pay: undo the lock."""

    reason: Reason


class BurnTokens(Message, frozen=True, kw_only=True):
    wallet: str
    asset: str
    amount: int


class ReduceSupply(Message, frozen=True, kw_only=True):
    """Follow-up to the asset once a wallet has burned ``amount`` of it.

    What the flows sent before the live path (now :class:`ApplyBurn`); one in an old log is still
    decided as before."""

    symbol: str
    wallet: str
    amount: int


class ApplyBurn(Message, frozen=True, kw_only=True):
    """Follow-up that decides nothing: the ``SupplyReduced`` a burn's transaction already wrote to
    the asset's events, for the asset's processor to take off its supply."""

    symbol: str
    wallet: str
    amount: int


class FreezeWallet(Message, frozen=True, kw_only=True):
    wallet: str
    reason: str


class UnfreezeWallet(Message, frozen=True, kw_only=True):
    wallet: str
    reason: str


class EraseWalletData(Message, frozen=True, kw_only=True):
    """The wallet's personal data was erased (its data key destroyed): record it in the log, so
    the views forget what they show of it."""

    wallet: str


# --- events ---------------------------------------------------------------------------------


class AssetRegistered(Message, frozen=True, kw_only=True):
    symbol: str
    name: str
    decimals: int
    issuer: str
    max_supply: int | None = None


class AssetRegistrationRejected(Message, frozen=True, kw_only=True):
    symbol: str
    reason: Reason


class TokensIssued(Message, frozen=True, kw_only=True):
    symbol: str
    to: str
    amount: int
    supply_after: int


class IssueRejected(Message, frozen=True, kw_only=True):
    symbol: str
    to: str
    amount: int
    reason: Reason


class TransferInitiated(Message, frozen=True, kw_only=True):
    transfer_id: str
    source: str
    target: str
    asset: str
    amount: int
    memo: str | None = None


class TransferConfirmed(Message, frozen=True, kw_only=True):
    """The sender was debited; ``available_after``/``held_after`` are the sender's balance after."""

    transfer_id: str
    source: str
    target: str
    asset: str
    amount: int
    available_after: int
    held_after: int


class TransferFailed(Message, frozen=True, kw_only=True):
    transfer_id: str
    source: str
    target: str
    asset: str
    amount: int
    reason: Reason


class WalletCredited(Message, frozen=True, kw_only=True):
    """``amount`` added to the wallet's available balance. Version 2 carries no balance after:
    the transaction that writes it is usually the payer's, which does not know it."""

    VERSION: ClassVar[int] = 2

    wallet: str
    asset: str
    amount: int
    kind: CreditKind
    reference: str


class TradeInitiated(TradeTerms, frozen=True, kw_only=True):
    pass


class TradeAssetLocked(TradeTerms, frozen=True, kw_only=True):
    """The seller's ``quantity`` moved from available to held; the balance is the seller's."""

    available_after: int
    held_after: int


class PaymentReceived(TradeTerms, frozen=True, kw_only=True):
    """The buyer was debited ``price``; the balance is the buyer's, in the payment asset."""

    available_after: int
    held_after: int


class TradeFailed(TradeTerms, frozen=True, kw_only=True):
    """The ``party`` could not take part. When it is the buyer, the seller's lock is released."""

    party: TradeParty
    reason: Reason


class TradeAssetReleased(TradeTerms, frozen=True, kw_only=True):
    """The seller's lock undone (held back to available) after the buyer failed for ``reason``."""

    reason: Reason
    available_after: int
    held_after: int


class AssetTransferred(TradeTerms, frozen=True, kw_only=True):
    """The seller's held ``quantity`` left the wallet for the buyer. Version 2 carries no balance
    after: the buyer's transaction, which decides the settlement, writes it."""

    VERSION: ClassVar[int] = 2


class TradeSettled(TradeTerms, frozen=True, kw_only=True):
    """Both legs are done on the seller's side (written with the buyer's credit with the asset,
    by the buyer's payment; by the seller's ``SettleTrade`` in logs from before)."""


class TokensBurned(Message, frozen=True, kw_only=True):
    wallet: str
    asset: str
    amount: int
    available_after: int
    held_after: int


class BurnFailed(Message, frozen=True, kw_only=True):
    wallet: str
    asset: str
    amount: int
    reason: Reason


class SupplyReduced(Message, frozen=True, kw_only=True):
    """``amount`` burned by ``wallet`` taken off the supply. Version 2 carries no supply after:
    the burn's transaction, which writes it, does not know it."""

    VERSION: ClassVar[int] = 2

    symbol: str
    wallet: str
    amount: int


class WalletFrozen(Message, frozen=True, kw_only=True):
    wallet: str
    reason: str


class WalletUnfrozen(Message, frozen=True, kw_only=True):
    wallet: str
    reason: str


class WalletDataErased(Message, frozen=True, kw_only=True):
    """The wallet's data key is destroyed: its sealed memos can never be read again."""

    wallet: str


class FreezeRejected(Message, frozen=True, kw_only=True):
    """A freeze (``freeze`` true) or unfreeze of ``wallet`` refused, e.g. for a malformed reason
    text produced straight to Kafka; the wallet's frozen flag is unchanged."""

    wallet: str
    freeze: bool
    reason: Reason


Command = (
    RegisterAsset
    | IssueTokens
    | InitiateTransfer
    | CreditWallet
    | ApplyCredit
    | InitiateTrade
    | PayForTrade
    | SettleTrade
    | ApplySettlement
    | ReleaseTradeAsset
    | BurnTokens
    | ReduceSupply
    | ApplyBurn
    | FreezeWallet
    | UnfreezeWallet
    | EraseWalletData
)
Event = (
    AssetRegistered
    | AssetRegistrationRejected
    | TokensIssued
    | IssueRejected
    | TransferInitiated
    | TransferConfirmed
    | TransferFailed
    | WalletCredited
    | TradeInitiated
    | TradeAssetLocked
    | PaymentReceived
    | TradeFailed
    | TradeAssetReleased
    | AssetTransferred
    | TradeSettled
    | TokensBurned
    | BurnFailed
    | SupplyReduced
    | WalletFrozen
    | WalletUnfrozen
    | FreezeRejected
    | WalletDataErased
)

COMMANDS: tuple[type[Message], ...] = (
    RegisterAsset,
    IssueTokens,
    InitiateTransfer,
    CreditWallet,
    ApplyCredit,
    InitiateTrade,
    PayForTrade,
    SettleTrade,
    ApplySettlement,
    ReleaseTradeAsset,
    BurnTokens,
    ReduceSupply,
    ApplyBurn,
    FreezeWallet,
    UnfreezeWallet,
    EraseWalletData,
)
EVENTS: tuple[type[Message], ...] = (
    AssetRegistered,
    AssetRegistrationRejected,
    TokensIssued,
    IssueRejected,
    TransferInitiated,
    TransferConfirmed,
    TransferFailed,
    WalletCredited,
    TradeInitiated,
    TradeAssetLocked,
    PaymentReceived,
    TradeFailed,
    TradeAssetReleased,
    AssetTransferred,
    TradeSettled,
    TokensBurned,
    BurnFailed,
    SupplyReduced,
    WalletFrozen,
    WalletUnfrozen,
    FreezeRejected,
    WalletDataErased,
)
