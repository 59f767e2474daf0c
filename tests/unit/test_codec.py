"""The codec: round trips, unknown fields ignored, old versions upcast, bad records refused."""

import json
from typing import Any, ClassVar

import pytest

from events import codec
from events.codec import Codec, DecodeError
from events.messages import (
    COMMANDS,
    EVENTS,
    AssetTransferred,
    Message,
    SupplyReduced,
    TradeFailed,
    WalletCredited,
)
from events.upcasts import UPCASTERS

RAW: dict[str, Any] = {
    "id": "e1", "type": "WalletCredited", "version": 2, "key": "wallet:alice",
    "command_id": "c1", "correlation_id": None, "occurred_at": "2025-01-02T03:04:05Z",
    "principal": "ops",
    "payload": {"wallet": "alice", "asset": "USDX", "amount": 5, "kind": "transfer",
                "reference": "t1"},
}


def _bytes(raw: dict[str, Any]) -> bytes:
    return json.dumps(raw).encode()


def test_round_trip_keeps_every_field_and_big_amounts() -> None:
    big = 10**40 + 7  # beyond int64: 18 decimals and a large supply
    message = TradeFailed(trade_id="t", seller="s", buyer="b", asset="BOND", quantity=big,
                          payment_asset="USDX", price=3, party="buyer", reason="wallet_frozen")
    env = codec.envelope(message, key="wallet:b", command_id="c", principal="p", correlation_id="t")
    assert codec.decode(codec.encode(env)) == env


def test_unknown_fields_are_ignored_in_the_envelope_and_the_payload() -> None:
    raw = {**RAW, "trace": "x", "payload": {**RAW["payload"], "added_later": [1, 2]}}
    env = codec.decode(_bytes(raw))
    assert env.payload == WalletCredited(**RAW["payload"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "Nope"}, "unknown message type"),
        ({"version": 3}, "version 3 is not supported"),
        ({"version": 0}, "version 0 is not supported"),
        ({"payload": {"wallet": "alice"}}, "invalid WalletCredited payload"),
        ({"payload": {**RAW["payload"], "kind": "gift"}}, "invalid WalletCredited payload"),
        ({"payload": {**RAW["payload"], "amount": 1.5}}, "invalid WalletCredited payload"),
    ],
)
def test_bad_records_raise_decode_error(change: dict[str, Any], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        codec.decode(_bytes({**RAW, **change}))


@pytest.mark.parametrize("data", [None, b"", b"not json", b"[]", b'{"id": "x"}'])
def test_non_envelopes_raise_decode_error(data: bytes | None) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


def test_credits_and_deliveries_of_older_logs_are_read_without_their_balance_after() -> None:
    # Written by the payee's own decision before the live path: the amount is the change.
    old = {**RAW, "version": 1, "payload": {**RAW["payload"], "available_after": 15, "held_after": 0}}
    env = codec.decode(_bytes(old))
    assert env.payload == WalletCredited(**RAW["payload"]) and env.version == 2
    terms = {"trade_id": "t", "seller": "s", "buyer": "b", "asset": "BOND", "quantity": 3,
             "payment_asset": "USDX", "price": 9}
    delivered = codec.decode(_bytes({**RAW, "type": "AssetTransferred", "version": 1, "payload": {
        **terms, "available_after": 7, "held_after": 0}}))
    assert delivered.payload == AssetTransferred(**terms)
    reduced = codec.decode(_bytes({**RAW, "type": "SupplyReduced", "version": 1, "payload": {
        "symbol": "USDX", "wallet": "w", "amount": 4, "supply_after": 6, "burned_after": 4}}))
    assert reduced.payload == SupplyReduced(symbol="USDX", wallet="w", amount=4)


def test_the_project_codec_knows_every_message_type() -> None:
    assert set(codec.CODEC.types) == {c.__name__ for c in (*COMMANDS, *EVENTS)}
    assert codec.CODEC.upcasters == UPCASTERS


# A message at version 3 whose history is: v1 {amount}, v2 adds a required "currency",
# v3 renames "amount" to "units" and adds an optional "memo". Registered only in this test.
class Payment(Message, frozen=True, kw_only=True):
    VERSION: ClassVar[int] = 3
    units: int
    currency: str
    memo: str | None = None


def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "currency": "USDX"}  # everything before v2 was in the one currency


def _v2_to_v3(payload: dict[str, Any]) -> dict[str, Any]:
    rest = {k: v for k, v in payload.items() if k != "amount"}
    return {**rest, "units": payload["amount"]}


TEST_CODEC = Codec([Payment], {("Payment", 1): _v1_to_v2, ("Payment", 2): _v2_to_v3})


def _payment(version: int, payload: dict[str, Any]) -> bytes:
    return _bytes({**RAW, "type": "Payment", "version": version, "payload": payload})


@pytest.mark.parametrize(
    ("version", "payload"),
    [
        (1, {"amount": 7}),
        (1, {"amount": 7, "extra": True}),
        (2, {"amount": 7, "currency": "USDX"}),
        (3, {"units": 7, "currency": "USDX"}),
    ],
)
def test_old_versions_are_upcast_to_the_current_one(version: int, payload: dict[str, Any]) -> None:
    env = TEST_CODEC.decode(_payment(version, payload))
    assert env.payload == Payment(units=7, currency="USDX")
    assert env.version == 3


def test_a_missing_upcaster_or_one_that_fails_is_a_decode_error() -> None:
    partial = Codec([Payment], {("Payment", 2): _v2_to_v3})
    with pytest.raises(DecodeError, match="no upcaster for Payment from version 1"):
        partial.decode(_payment(1, {"amount": 7}))
    with pytest.raises(DecodeError, match="cannot upcast Payment v2"):
        TEST_CODEC.decode(_payment(2, {"currency": "USDX"}))
    with pytest.raises(DecodeError, match="invalid Payment payload"):
        TEST_CODEC.decode(_payment(1, {"amount": "seven"}))
    with pytest.raises(DecodeError, match="not an object"):
        TEST_CODEC.decode(_payment(1, [7]))  # type: ignore[arg-type]
