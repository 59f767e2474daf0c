"""One processor writer's hash chains (:mod:`events.chain`), kept inside its transactions.

The writer is the worker of one input partition; it keeps a chain per events partition it
appends to. A batch's events are linked when the batch is sealed, just before its transaction
commits: each gets its link headers, the writer's last record per partition a signature, and
the new heads go to ``ledger.state`` (key ``__chain__:<writer>``) in the same transaction, with, every
``anchor_every`` seconds, a signed checkpoint of all heads on ``ledger.anchors`` (in a
transaction of its own when the writer has gone idle). The heads in
memory move only once the transaction has committed, so an aborted batch is linked again from
the last committed heads; after a crash or a takeover the new owner restores them from
``ledger.state``, which holds exactly what was committed.
"""

import hashlib
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, ProducerFenced
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from events import chain, topics
from processor.outbox import Outbox

log = logging.getLogger("ledgerline.processor")

#: The key of a writer's chain heads in its partition of ``ledger.state``, followed by its name.
STATE_KEY = b"__chain__:"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class Signer:
    """The processor's Ed25519 signing key (a PEM file only its owner can read)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self.key = key
        self.key_id = key_id(key.public_key())

    @classmethod
    def from_file(cls, path: str | Path) -> "Signer":
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)


class _State(msgspec.Struct, frozen=True):
    writer: str
    heads: dict[str, tuple[int, str]]


_state_decoder = msgspec.json.Decoder(_State)


@dataclass
class Sealed:
    """A batch's chain heads and anchor, to keep once its transaction has committed."""

    heads: dict[int, tuple[int, bytes]]
    anchor: bytes | None = None


@dataclass
class Chain:
    writer: str
    signer: Signer | None = None
    anchor_every: float = 10.0
    anchor_file: Path | None = None
    heads: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # partition -> (seq, link)
    last_anchor: float = 0.0
    anchored: dict[int, tuple[int, bytes]] = field(default_factory=dict)  # heads last checkpointed

    @property
    def state_key(self) -> bytes:
        return STATE_KEY + self.writer.encode()

    def restore(self, raw: bytes | None) -> None:
        """The heads committed last, from the writer's ``__chain__`` record (None: no chain yet)."""
        self.heads, self.anchored = {}, {}
        if raw is not None:
            state = _state_decoder.decode(raw)
            if state.writer == self.writer:
                self.heads = {int(p): (seq, bytes.fromhex(h)) for p, (seq, h) in state.heads.items()}

    def seal(self, out: Outbox, state_partition: int) -> Sealed:
        """Link the events held in ``out``, release them to it, and add the new heads (and, when
        one is due, a signed anchor). Nothing here touches the committed heads."""
        heads = dict(self.heads)
        held = out.take_held()
        if not held:
            return Sealed(heads)
        last = {entry[0]: i for i, entry in enumerate(held)}  # a writer signs its last record
        writer, named = self.writer, (chain.WRITER, self.writer.encode())
        content, link_after, add, events = chain.content, chain.link_after, out.add, topics.EVENTS
        for i, (partition, key, value, given) in enumerate(held):
            seq, prev = heads.get(partition, (0, chain.GENESIS))
            seq += 1
            prev_hex = prev.hex()
            assert value is not None
            this = link_after(writer, partition, seq, prev_hex, content(value))
            heads[partition] = (seq, this)
            headers = [*given, named, (chain.SEQ, str(seq).encode()), (chain.PREV, prev_hex.encode())]
            if self.signer is not None and last[partition] == i:
                headers.append((chain.SIG, self.signer.sign(
                    chain.signed_message(writer, partition, seq, this)).hex().encode()))
            add(events, partition, key, value, headers, hold=False)
        out.add(topics.STATE, state_partition, self.state_key, msgspec.json.encode(
            _State(self.writer, chain.anchor_heads(heads))))
        sealed = Sealed(heads)
        if self.signer is not None and time.monotonic() - self.last_anchor >= self.anchor_every:
            sealed.anchor = self._anchor(heads)
            out.add(topics.ANCHORS, 0, self.writer.encode(), sealed.anchor)
        return sealed

    def _anchor(self, heads: dict[int, tuple[int, bytes]]) -> bytes:
        assert self.signer is not None
        unsigned = chain.Anchor(writer=self.writer, at=datetime.now(UTC),
                                heads=chain.anchor_heads(heads), key_id=self.signer.key_id)
        signature = self.signer.sign(unsigned.message()).hex()
        return chain.encode_anchor(msgspec.structs.replace(unsigned, signature=signature))

    def quiet_for(self) -> float | None:
        """How long an idle writer may wait before it checkpoints heads no checkpoint names
        (None: nothing to checkpoint)."""
        if self.signer is None or self.heads == self.anchored:
            return None
        return max(0.0, self.last_anchor + self.anchor_every - time.monotonic())

    async def checkpoint(self, producer: AIOKafkaProducer) -> None:
        """Publish a checkpoint of the committed heads in a transaction of its own (a writer gone
        idle: its last batches would otherwise wait for the next one). A failure is logged and
        left for the next quiet moment; a fenced producer raises ``ProducerFenced``."""
        out = Outbox(producer)
        sealed = Sealed(dict(self.heads), self._anchor(self.heads))
        assert sealed.anchor is not None
        out.add(topics.ANCHORS, 0, self.writer.encode(), sealed.anchor)
        try:
            async with producer.transaction():
                await out.flush()
        except ProducerFenced:
            raise
        except KafkaError as exc:
            log.warning("checkpoint of %s not published (%r); trying again later", self.writer, exc)
            self.last_anchor = time.monotonic()
            return
        self.committed(sealed)

    def committed(self, sealed: Sealed) -> None:
        """The batch's transaction has committed: its heads are now the writer's."""
        self.heads = sealed.heads
        if sealed.anchor is not None:
            self.anchored = sealed.heads
            self.last_anchor = time.monotonic()
            if self.anchor_file is not None:
                _append_line(self.anchor_file, sealed.anchor)


def _append_line(path: Path, line: bytes) -> None:
    """Append one anchor to the operator's file (a copy; ``ledger.anchors`` is the record)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line + b"\n")
        finally:
            os.close(fd)
    except OSError as exc:  # the topic has it; a full disk must not stop deciding
        log.error("could not append an anchor to %s: %r", path, exc)
