"""Per-aggregate snapshots kept in the compacted state topic: the state and recent command ids,
and :func:`restore`, which reads one partition of them back into memory."""

import uuid

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition

from common.kafka import KafkaTarget, client_options
from events import topics
from processor.decide import State
from processor.limits import Debit

RECENT_COMMANDS = 256

# The reserved key of the checkpoint record: the first input offset not decided yet, written in
# the same transaction as the snapshots. Aggregate keys always have a prefix (``wallet:``), so it
# cannot collide with one.
CHECKPOINT_KEY = b"__input_offset__"


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    state: State | None = None
    #: Recent command ids not in canonical UUID form, and all of them in snapshots written before
    #: ``ids`` existed (read as they are; the oldest go first as new ids come).
    recent: tuple[str, ...] = ()
    #: A wallet's debits of the last 24 hours, for its KYC limits (:mod:`processor.limits`).
    debits: tuple[Debit, ...] = ()
    #: The recent command ids in UUID form (all the API and the processor make), 16 raw bytes each,
    #: oldest first: base64 in the JSON, 22 characters an id instead of 39. A snapshot is written
    #: whole with every transaction that touches its aggregate, and a busy one's ids were 10 of
    #: its 16 KB (docs/processor.md, "What a transaction writes besides events").
    ids: bytes = b""

    def seen(self, command_id: str) -> bool:
        packed = _packed(command_id)
        if packed is not None:
            at = self.ids.find(packed)
            while at != -1:
                if at % _ID_BYTES == 0:
                    return True
                at = self.ids.find(packed, at + 1)
        return command_id in self.recent

    def after(self, state: State | None, command_id: str,
              debits: tuple[Debit, ...] | None = None) -> "Snapshot":
        """The snapshot after deciding ``command_id``, which joins the recent ids; they stay
        ``RECENT_COMMANDS`` in all, the oldest of ``recent`` (ids from before ``ids``) dropped
        first, then the oldest of ``ids``."""
        packed = _packed(command_id)
        ids, recent = self.ids, self.recent
        if packed is not None:
            ids += packed
        else:
            recent = (*recent, command_id)
        excess = len(ids) // _ID_BYTES + len(recent) - RECENT_COMMANDS
        if excess > 0:
            drop = min(excess, len(recent) - (packed is None))  # never the id just added
            recent = recent[drop:]
            ids = ids[(excess - drop) * _ID_BYTES :]
        return Snapshot(state=state, recent=recent, ids=ids,
                        debits=self.debits if debits is None else debits)


_ID_BYTES = 16


def _packed(command_id: str) -> bytes | None:
    """``command_id``'s 16 bytes if it is a UUID in canonical form (what ``str(uuid)`` gives)."""
    if len(command_id) != 36:
        return None
    try:
        parsed = uuid.UUID(command_id)
    except ValueError:
        return None
    return parsed.bytes if str(parsed) == command_id else None


EMPTY = Snapshot()

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Snapshot)


def encode(snapshot: Snapshot) -> bytes:
    return _encoder.encode(snapshot)


def decode(data: bytes) -> Snapshot:
    return _decoder.decode(data)


def encode_checkpoint(next_offset: int) -> bytes:
    return _encoder.encode({"next_offset": next_offset})


class Restored(dict[str, Snapshot]):
    """The snapshots of one partition, and the input offset they are complete up to (if any)."""

    checkpoint: int | None = None

    def __init__(self) -> None:
        super().__init__()
        # Other reserved keys (``__chain__``: the hash chain's heads), as written.
        self.reserved: dict[bytes, bytes] = {}


async def restore(bootstrap: KafkaTarget, partition: int) -> Restored:
    """Read one partition of the snapshot topic, start to end, into memory.

    The checkpoint it carries is the input offset the snapshots cover. It, not the consumer
    group's committed offset, is where the processor resumes: both are written in one
    transaction, but right after a broker restart the group coordinator may still be loading
    and answer "no committed offset", which would replay the partition from the start.

    Called after ``init_transactions`` for the partition's transactional id, so no transaction of
    an earlier owner is still open on it and the end offset is final.
    """
    tp = TopicPartition(topics.STATE, partition)
    consumer = AIOKafkaConsumer(
        **client_options(bootstrap),
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        # Snapshots are small and many: fetch them in large slices.
        max_partition_fetch_bytes=32 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    states = Restored()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        while await consumer.position(tp) < end:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=100_000)
            for record in batch.get(tp, ()):
                if record.key == CHECKPOINT_KEY:
                    states.checkpoint = int(msgspec.json.decode(record.value)["next_offset"])
                elif record.key.startswith(b"__"):
                    states.reserved[record.key] = record.value
                elif record.value is None:
                    states.pop(record.key.decode(), None)
                else:
                    states[record.key.decode()] = _decoder.decode(record.value)
    finally:
        await consumer.stop()
    return states
