"""The sanctions list, held by every processor: the compacted topic ``compliance.sanctions``
read from its start and followed. The processor starts deciding only once it has read the
list to the end offsets it found at start, so a listing acknowledged before a processor
started is always in force there.

Screening is decided before any balance changes: a transfer, an issue or a trade whose parties
include a listed wallet is refused ``sanctioned_wallet`` with the command's ordinary refusal
events (:func:`processor.decide.screened`).
"""

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from common import failures
from common.failures import Backoff
from common.kafka import KafkaTarget, client_options
from common.topic_reader import partitions_of
from events import topics
from events.codec import DecodeError
from events.compliance import SANCTIONS_CODEC, WalletSanctioned, WalletTierSet, WalletUnsanctioned
from events.messages import Command, Event
from processor.decide import limited, screened
from processor.limits import Debit, over_limit

log = logging.getLogger("ledgerline.processor.sanctions")


class Sanctions:
    """The sanctions list and the KYC tiers' limits (wallet -> asset -> base units)."""

    def __init__(self, bootstrap: KafkaTarget) -> None:
        self.bootstrap = bootstrap
        self.listed: set[str] = set()
        self.limits: dict[str, dict[str, int]] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def __contains__(self, wallet: object) -> bool:
        return wallet in self.listed

    def screen(self, command: Command, debits: Sequence[Debit], now: datetime) -> list[Event] | None:
        """The refusal of a command screening stops, decided before any balance changes; None
        when it may be decided as usual."""
        refused = screened(command, self)
        if refused is not None:
            return refused
        wallet = getattr(command, "source", None) or getattr(command, "seller", None)
        why = over_limit(debits, self.limits.get(wallet) if wallet else None, command, now)
        return None if why is None else limited(command, why)

    async def start(self, wait_seconds: float = 60.0) -> None:
        """Read the list to its current end, then keep following it."""
        self._task = asyncio.create_task(self._follow(), name="sanctions")
        await asyncio.wait_for(self.ready.wait(), wait_seconds)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._read()
                return
            except failures.TRANSIENT as exc:  # the broker away: read the whole list again
                log.warning("cannot follow the sanctions list (%r); retrying", exc)
                await backoff.sleep()

    async def _read(self) -> None:
        tps = [TopicPartition(topic, p) for topic in (topics.SANCTIONS, topics.KYC)
               for p in await partitions_of(self.bootstrap, topic)]
        consumer = AIOKafkaConsumer(**client_options(self.bootstrap), enable_auto_commit=False,
                                    isolation_level="read_committed", auto_offset_reset="earliest")
        await consumer.start()
        try:
            if not tps:
                log.warning("no topic %s: nothing is screened", topics.SANCTIONS)
                self.ready.set()
                return
            consumer.assign(tps)
            # Read again after a failure, every wallet ends as its latest record says.
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                if not self.ready.is_set() and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    log.info("sanctions list read: %d wallets", len(self.listed))
                    self.ready.set()
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        self._apply(record)
        finally:
            await consumer.stop()

    def _apply(self, record: Any) -> None:
        try:
            env = SANCTIONS_CODEC.decode(record.value)
        except DecodeError as exc:
            log.warning("unreadable sanctions record at %s@%s: %s", record.partition, record.offset, exc)
            return
        wallet = env.payload.wallet
        match env.payload:
            case WalletSanctioned():
                self.listed.add(wallet)
            case WalletUnsanctioned():
                self.listed.discard(wallet)
            case WalletTierSet():
                self.limits[wallet] = {a: int(v) for a, v in env.payload.daily_limits.items()}
