"""The closed set of reasons a command can be refused or fail for, each documented.

A reason is part of the event contract (it is in every failure event's schema): add to the set
freely, but never remove or rename a member.
"""

from typing import Final, Literal

Reason = Literal[
    "insufficient_funds",
    "unknown_asset",
    "asset_exists",
    "invalid_decimals",
    "invalid_amount",
    "supply_cap_exceeded",
    "wallet_frozen",
    "duplicate_command",
    "same_wallet",
    "same_asset",
    "invalid_wallet",
    "invalid_symbol",
    "invalid_text",
    "invalid_command",
    "sanctioned_wallet",
    "limit_exceeded",
]

REASONS: Final[dict[str, str]] = {
    "insufficient_funds": "the wallet's available balance is smaller than the amount",
    "unknown_asset": "no asset is registered under that symbol",
    "asset_exists": "an asset with that symbol is already registered",
    "invalid_decimals": "an asset has between 0 and 18 decimals",
    "invalid_amount": "amounts are positive whole numbers of base units, below 10^78",
    "supply_cap_exceeded": "issuing this amount would exceed the asset's maximum supply",
    "wallet_frozen": "the wallet is frozen and cannot be debited (credits still land)",
    "duplicate_command": "a command with this id was already decided",
    "same_wallet": "the sender and the receiver (or seller and buyer) are the same wallet",
    "same_asset": "a trade must exchange two different assets",
    "invalid_wallet": "a wallet id is 1-64 letters, digits, '_', '.', '@' or '-', starting with a "
                      "letter or digit",
    "invalid_symbol": "a symbol is 1-12 capital letters and digits, starting with a letter",
    "invalid_text": "a name (up to 200 characters), memo or reason (up to 280) is not blank and "
                    "holds no control characters or unpaired surrogates",
    "invalid_command": "the command is malformed: an id that does not match its grammar, or a "
                       "record key that is not the aggregate the command is for",
    "sanctioned_wallet": "the movement touches a wallet on the sanctions list (decided before any "
                         "balance changes)",
    "limit_exceeded": "the debit would take the wallet's outgoing amount of the asset in the last 24 "
                      "hours over its KYC tier's limit",
}
