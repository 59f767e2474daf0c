"""The hash chain over ``ledger.events``: what a link hashes, the record headers that carry it,
and the signed checkpoints (anchors) of ``ledger.anchors``. The processor writes it, the
projector stores it, ``ledgerline audit --verify-chain`` checks it; docs/audit.md explains why.

A *chain* is one writer's records in one events partition: the writer is the processor worker
of one input partition (named by its transactional id), so several writers may append to one
events partition, each extending its own chain. A record's link is

    link = SHA-256(DOMAIN || canonical([writer, partition, seq, prev, id, type, version, key,
                                        command_id, correlation_id, principal, occurred_at,
                                        payload]))

where ``prev`` is the link of the writer's previous record in that partition (32 zero bytes
before the first, seq 1), and ``canonical`` is compact JSON with object keys sorted and
``null`` payload fields left out, so it can be computed again from the record in Kafka and from
its row in PostgreSQL (``jsonb`` keeps neither key order nor spacing). The writer's last record
per partition in each transaction also carries an Ed25519 signature of its link.
"""

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

#: Record headers of a chained event.
WRITER = "chain"
SEQ = "chain_seq"
PREV = "chain_prev"  # hex
SIG = "chain_sig"  # hex; on a writer's last record per partition in a transaction
NAMES = frozenset((WRITER, SEQ, PREV, SIG))

GENESIS = bytes(32)
_DOMAIN = b"ledgerline.chain.v1\n"
_SIGNED = b"ledgerline.chain.sig.v1\n"
_ANCHOR = b"ledgerline.anchor.v1\n"

_sorted = msgspec.json.Encoder(order="sorted")


class Content(msgspec.Struct, frozen=True, kw_only=True):
    """What of an event the link covers: the envelope, its payload as plain JSON values."""

    id: str
    type: str
    version: int
    key: str
    command_id: str
    correlation_id: str | None = None
    occurred_at: datetime
    principal: str
    payload: Any


_content = msgspec.json.Decoder(Content)


def content(value: bytes) -> Content:
    """The linked content of a record value (raises ``msgspec.DecodeError`` if it has none)."""
    return _content.decode(value)


def link(writer: str, partition: int, seq: int, prev: bytes, c: Content) -> bytes:
    return link_after(writer, partition, seq, prev.hex(), c)


def link_after(writer: str, partition: int, seq: int, prev_hex: str, c: Content) -> bytes:
    """:func:`link` with ``prev`` in hex, as the headers carry it (the processor's hot path)."""
    payload = c.payload
    if isinstance(payload, dict) and None in payload.values():
        payload = {k: v for k, v in payload.items() if v is not None}
    at = c.occurred_at
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return hashlib.sha256(_DOMAIN + _sorted.encode((
        writer, partition, seq, prev_hex, c.id, c.type, c.version, c.key, c.command_id,
        c.correlation_id, c.principal, at, payload,
    ))).digest()


def signed_message(writer: str, partition: int, seq: int, link_hash: bytes) -> bytes:
    """What a record's signature signs: its place in its chain and its link."""
    return _SIGNED + _sorted.encode((writer, partition, seq, link_hash.hex()))


class Link(msgspec.Struct, frozen=True):
    """A record's chain headers, read back."""

    writer: str
    seq: int
    prev: bytes
    sig: bytes | None = None


def headers(writer: str, seq: int, prev: bytes, sig: bytes | None = None) -> list[tuple[str, bytes]]:
    found = [(WRITER, writer.encode()), (SEQ, str(seq).encode()), (PREV, prev.hex().encode())]
    if sig is not None:
        found.append((SIG, sig.hex().encode()))
    return found


def read_headers(given: Iterable[tuple[str, bytes]] | None) -> Link | None:
    """The chain link in a record's headers; None if it has none; ValueError if malformed."""
    found = {k: v for k, v in given or () if k in NAMES}
    if not found:
        return None
    try:
        prev = bytes.fromhex(found[PREV].decode())
        sig = bytes.fromhex(found[SIG].decode()) if SIG in found else None
        seq = int(found[SEQ].decode())
        writer = found[WRITER].decode()
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed chain headers: {exc!r}") from None
    if len(prev) != 32 or seq < 1 or (sig is not None and len(sig) != 64):
        raise ValueError("malformed chain headers")
    return Link(writer, seq, prev, sig)


class Anchor(msgspec.Struct, frozen=True, kw_only=True):
    """A signed checkpoint of one writer's chain heads: partition -> (seq, link hex)."""

    writer: str
    at: datetime
    heads: dict[str, tuple[int, str]]
    key_id: str
    signature: str = ""

    def message(self) -> bytes:
        """What the signature signs: everything but the signature."""
        return _ANCHOR + _sorted.encode((self.writer, self.at.astimezone(UTC), self.heads, self.key_id))


_anchor_decoder = msgspec.json.Decoder(Anchor)


def encode_anchor(anchor: Anchor) -> bytes:
    return _sorted.encode(anchor)


def decode_anchor(value: bytes) -> Anchor:
    return _anchor_decoder.decode(value)


def anchor_heads(heads: Mapping[int, tuple[int, bytes]]) -> dict[str, tuple[int, str]]:
    return {str(p): (seq, h.hex()) for p, (seq, h) in sorted(heads.items())}
