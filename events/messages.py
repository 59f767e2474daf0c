"""Commands (imperative) and events (past tense) as frozen, typed values.

Amounts are whole numbers of base units (Python ``int``; an 18-decimal asset overflows int64).
Each class carries its schema ``VERSION``; the codec puts it in the envelope.
"""

from typing import ClassVar

import msgspec

from events.reasons import Reason


class Message(msgspec.Struct, frozen=True, kw_only=True):
    VERSION: ClassVar[int] = 1


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
    """Follow-up request: one aggregate asks a wallet to take an amount it has already debited."""

    wallet: str
    asset: str
    amount: int
    kind: str
    reference: str


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
    wallet: str
    asset: str
    amount: int
    kind: str
    reference: str
    available_after: int
    held_after: int


Command = RegisterAsset | IssueTokens | InitiateTransfer | CreditWallet
Event = (
    AssetRegistered
    | AssetRegistrationRejected
    | TokensIssued
    | IssueRejected
    | TransferInitiated
    | TransferConfirmed
    | TransferFailed
    | WalletCredited
)

COMMANDS: tuple[type[Message], ...] = (RegisterAsset, IssueTokens, InitiateTransfer, CreditWallet)
EVENTS: tuple[type[Message], ...] = (
    AssetRegistered,
    AssetRegistrationRejected,
    TokensIssued,
    IssueRejected,
    TransferInitiated,
    TransferConfirmed,
    TransferFailed,
    WalletCredited,
)
