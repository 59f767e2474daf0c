"""Aggregate ids, which are also the Kafka record keys."""


def asset_key(symbol: str) -> str:
    return f"asset:{symbol}"


def wallet_key(wallet: str) -> str:
    return f"wallet:{wallet}"
