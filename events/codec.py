"""The one codec: envelopes to and from JSON bytes.

Decoding ignores unknown fields (forward compatible), upcasts a payload written under an older
schema version to the current one (see :mod:`events.upcasts`), and raises :class:`DecodeError`
for anything it cannot turn into a known message, so callers can dead-letter it.
"""

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from events.messages import COMMANDS, EVENTS, Message
from events.upcasts import UPCASTERS, Upcaster


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


class Codec:
    """Decodes the message types it is given, upcasting old versions with ``upcasters``.

    ``upcasters`` maps ``(type name, version N)`` to the function that turns a version N payload
    into version N + 1; a chain of them brings any supported version to the current one.
    """

    def __init__(
        self,
        types: Iterable[type[Message]],
        upcasters: Mapping[tuple[str, int], Upcaster] | None = None,
    ) -> None:
        self.types = {cls.__name__: cls for cls in types}
        self.upcasters = dict(upcasters or {})
        self._decoders = {name: msgspec.json.Decoder(cls) for name, cls in self.types.items()}

    def decode(self, data: bytes | None) -> Envelope:
        if data is None:
            raise DecodeError("empty record value")
        try:
            raw = _envelope_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"not an envelope: {exc}") from exc
        cls = self.types.get(raw.type)
        if cls is None:
            raise DecodeError(f"unknown message type {raw.type!r}")
        if raw.version > cls.VERSION or raw.version < 1:
            raise DecodeError(f"{raw.type} version {raw.version} is not supported")
        try:
            if raw.version == cls.VERSION:
                payload = self._decoders[raw.type].decode(raw.payload)
            else:
                payload = msgspec.convert(self._upcast(raw), cls)
        except msgspec.ValidationError as exc:
            raise DecodeError(f"invalid {raw.type} payload: {exc}") from exc
        except msgspec.DecodeError as exc:
            raise DecodeError(f"{raw.type} payload is not JSON: {exc}") from exc
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

    def _upcast(self, raw: _RawEnvelope) -> dict[str, Any]:
        payload: dict[str, Any] = msgspec.json.decode(raw.payload)
        if not isinstance(payload, dict):
            raise DecodeError(f"{raw.type} payload is not an object")
        for version in range(raw.version, self.types[raw.type].VERSION):
            upcaster = self.upcasters.get((raw.type, version))
            if upcaster is None:
                raise DecodeError(f"no upcaster for {raw.type} from version {version}")
            try:
                payload = upcaster(payload)
            except (KeyError, TypeError, ValueError) as exc:
                raise DecodeError(f"cannot upcast {raw.type} v{version}: {exc!r}") from exc
        return payload


CODEC = Codec((*COMMANDS, *EVENTS), UPCASTERS)


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
    """Decode with the project's message types and upcasters (see :class:`Codec`)."""
    return CODEC.decode(data)
