"""The one codec: envelopes to and from JSON bytes.

Decoding ignores unknown fields (forward compatible) and raises :class:`DecodeError` for
anything it cannot turn into a known message, so callers can dead-letter it.
"""

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from events.messages import COMMANDS, EVENTS, Message

_TYPES: dict[str, type[Message]] = {cls.__name__: cls for cls in (*COMMANDS, *EVENTS)}


class DecodeError(ValueError):
    """A record that is not a valid envelope of a known message type and version."""


class Envelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    version: int
    key: str
    command_id: str
    correlation_id: str | None
    occurred_at: datetime
    principal: str
    payload: Any


class _RawEnvelope(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: str
    version: int
    key: str
    command_id: str
    correlation_id: str | None = None
    occurred_at: datetime
    principal: str
    payload: msgspec.Raw


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(_RawEnvelope)


def new_id() -> str:
    return str(uuid.uuid4())


def envelope(
    message: Message,
    *,
    key: str,
    command_id: str,
    principal: str,
    correlation_id: str | None = None,
    id: str | None = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    return Envelope(
        id=id or new_id(),
        type=type(message).__name__,
        version=message.VERSION,
        key=key,
        command_id=command_id,
        correlation_id=correlation_id,
        occurred_at=occurred_at or datetime.now(UTC),
        principal=principal,
        payload=message,
    )


def encode(env: Envelope) -> bytes:
    return _encoder.encode(env)


def decode(data: bytes | None) -> Envelope:
    if data is None:
        raise DecodeError("empty record value")
    try:
        raw = _envelope_decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(f"not an envelope: {exc}") from exc
    cls = _TYPES.get(raw.type)
    if cls is None:
        raise DecodeError(f"unknown message type {raw.type!r}")
    if raw.version > cls.VERSION or raw.version < 1:
        raise DecodeError(f"{raw.type} version {raw.version} is not supported")
    try:
        payload = msgspec.json.decode(raw.payload, type=cls)
    except msgspec.ValidationError as exc:
        raise DecodeError(f"invalid {raw.type} payload: {exc}") from exc
    return Envelope(
        id=raw.id,
        type=raw.type,
        version=cls.VERSION,
        key=raw.key,
        command_id=raw.command_id,
        correlation_id=raw.correlation_id,
        occurred_at=raw.occurred_at,
        principal=raw.principal,
        payload=payload,
    )
