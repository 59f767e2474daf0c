"""The monitor's Kafka loop: ``ledger.events`` (read_committed, its own consumer group) ->
rules -> alerts and cases in PostgreSQL, exactly once; then ``AlertRaised`` on
``compliance.alerts``.

A batch's alerts, the rules' state and the partition offsets are one PostgreSQL transaction
(:mod:`compliance.store`); on assignment the consumer seeks to the stored offsets and the state
is read back, so a crash anywhere replays exactly the records whose effects were lost. Records
that cannot be decoded or evaluated go to ``ledger.dlq`` before the offsets move past them.
Transient failures (database or broker away) are retried with backoff: the state is read back
and the consumer seeks to the stored offsets, so nothing is committed past.

Alerts are appended to ``compliance.alerts`` after their commit (an outbox: ``published`` in
``compliance.alerts`` the table), so a crash between the two sends an alert again, with the same
id: consumers de-duplicate by it.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from common import failures
from common.kafka import KafkaTarget, client_options
from common.ops import Health
from common.tracing import Consumer, Tracing
from compliance import store
from compliance.evaluate import State, evaluate
from compliance.metrics import MonitorMetrics
from compliance.rules import RuleSet
from events import codec, topics
from events.compliance import AlertRaised, encode_alert
from events.deadletter import dead_letter_headers
from events.keys import wallet_key
from events.messages import FreezeWallet

log = logging.getLogger("ledgerline.compliance")

#: The principal the monitor's own commands carry.
PRINCIPAL = "compliance-monitor"
_FREEZES = uuid.UUID("5c0f3b1e-8d7a-4c1e-9b2f-7a4d6e0c9f21")


def freeze_id(alert: AlertRaised) -> str:
    return str(uuid.uuid5(_FREEZES, alert.id))


def freeze_command(alert: AlertRaised) -> bytes:
    """The ordinary ``FreezeWallet`` command for an alert of a rule marked ``freeze``. Its id
    is derived from the alert's, so sending it again (after a crash, or from a monitor that
    replays the log) is the same command, which the processor decides once."""
    command_id = freeze_id(alert)
    return codec.encode(codec.envelope(
        FreezeWallet(wallet=alert.wallet, reason=f"compliance alert {alert.rule} {alert.id}"),
        key=wallet_key(alert.wallet), command_id=command_id, id=command_id, principal=PRINCIPAL,
        occurred_at=alert.window_end))


class Monitor:
    """Evaluates batches of ``ledger.events`` records against a rule set, exactly once."""

    def __init__(self, pool: asyncpg.Pool, rules: RuleSet, dead_letters: AIOKafkaProducer | None,
                 *, schema: str = store.SCHEMA, notify: bool = True,
                 metrics: MonitorMetrics | None = None, traced: Consumer | None = None) -> None:
        self.pool = pool
        self.metrics = metrics
        self.traced = traced  # spans of its batches (None: tracing is off)
        self.rules = rules
        self.dead_letters = dead_letters
        self.schema = schema
        self.notify = notify
        self.state = State()
        self.stored: dict[int, int | None] = {}
        self.already_dead: set[tuple[str, int, int]] = set()
        # A rebalance runs in the consumer's coordination task, beside the loop: reading the
        # state back while a batch's transaction is open would read it without that batch, and
        # the batch's commit would then leave the memory behind the rows. So the two take turns.
        self._turn = asyncio.Lock()

    async def load(self, partitions: list[int]) -> dict[int, int | None]:
        async with self._turn, self.pool.acquire() as conn:
            offsets = await store.load_offsets(conn, topics.EVENTS, self.schema)
            self.state = await store.load_state(conn, self.schema)
            self.stored = {p: offsets.get(p) for p in partitions}
            return dict(self.stored)

    async def forget(self, partitions: list[int]) -> None:
        async with self._turn:
            for p in partitions:
                self.stored.pop(p, None)

    async def apply(self, batches: dict[int, list[Any]]) -> store.Written:
        """Evaluate and write one batch (partition -> records in offset order); records before
        a partition's stored offset and of partitions not owned are dropped."""
        async with self._turn:
            return await self._apply(batches)

    async def _apply(self, batches: dict[int, list[Any]]) -> store.Written:
        alerts: list[AlertRaised] = []
        poison: list[tuple[Any, str]] = []
        offsets: dict[int, tuple[int | None, int]] = {}
        evaluated: list[Any] = []
        for p in sorted(batches):
            if p not in self.stored:
                continue
            start = self.stored[p] or 0
            for record in batches[p]:
                if record.offset < start:
                    continue
                try:
                    alerts.extend(evaluate(self.rules, self.state, codec.decode(record.value)))
                except Exception as exc:  # poison, whatever the reason: it must not stop the monitor
                    poison.append((record, str(exc)))
                offsets[p] = (self.stored[p], record.offset + 1)
                evaluated.append(record)
        if not offsets:
            return store.Written()
        await self._dead_letter(poison)
        started = time.monotonic()
        batch = None
        if self.traced is not None:  # the batch's span, and a span in each event's trace
            batch = self.traced.batch("evaluate", evaluated)
            for record in evaluated:
                batch.child(record, f"monitor {topics.EVENTS}")
        try:
            with batch.current() if batch is not None else contextlib.nullcontext():
                async with self.pool.acquire() as conn:
                    written = await store.write_batch(conn, topics.EVENTS, offsets,
                                                      self.state.take_changes(), alerts,
                                                      self.schema, self.notify)
        except BaseException as exc:
            if batch is not None:
                batch.end(exc)
            raise
        if batch is not None:
            batch.end()
        for p, (_, nxt) in offsets.items():
            self.stored[p] = nxt
        if self.metrics is not None:
            self.metrics.batch_seconds.observe(time.monotonic() - started)
            self.metrics.events.inc(len(evaluated))
            self.metrics.dead_letters.inc(len(poison))
            for a in written.alerts:
                self.metrics.alerts.labels(a.rule).inc()
        return written

    async def _dead_letter(self, poison: list[tuple[Any, str]]) -> None:
        if self.dead_letters is None:
            for record, error in poison:
                log.warning("poison %s[%s]@%s: %s", record.topic, record.partition, record.offset, error)
            return
        sent = []
        for record, error in poison:
            where = (record.topic, record.partition, record.offset)
            if where in self.already_dead:
                continue
            log.warning("dead-lettering %s[%s]@%s: %s", *where, error)
            headers = [*dead_letter_headers(error, *where), ("consumer", topics.COMPLIANCE_GROUP.encode())]
            sent.append((where, await self.dead_letters.send(
                topics.DLQ, record.value, key=record.key, partition=record.partition, headers=headers)))
        for where, future in sent:
            await future
            self.already_dead.add(where)


class _Seek(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka has no type hints
    def __init__(self, worker: "MonitorWorker") -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.worker.monitor.forget([tp.partition for tp in revoked])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.worker.seek_to_stored()


#: What the monitor's fetch waits for when it batches (``batch_wait_ms``): enough that only a
#: backlog fills it.
BATCH_BYTES = 512 * 1024


class MonitorWorker:
    """The live monitor: one member of consumer group ``ledger-compliance``.

    Run one instance (a second one takes over the partitions when the first dies): the rules'
    fan-in state spans partitions, so two live instances would each see half of a payee's
    payers.
    """

    def __init__(self, bootstrap: KafkaTarget, pool: asyncpg.Pool, rules: RuleSet, producer: AIOKafkaProducer,
                 *, max_records: int = 5_000, health: Health | None = None,
                 metrics: MonitorMetrics | None = None, tracing: Tracing | None = None,
                 group_instance_id: str | None = None, batch_wait_ms: int = 0) -> None:
        self.pool = pool
        self.max_records = max_records
        self.health = health or Health()
        self.consumer = AIOKafkaConsumer(
            **client_options(bootstrap), group_id=topics.COMPLIANCE_GROUP, enable_auto_commit=False,
            group_instance_id=group_instance_id,  # static membership (common.settings)
            isolation_level="read_committed", auto_offset_reset="earliest",
            session_timeout_ms=6_000, heartbeat_interval_ms=1_000,
            # Batching at low rates: the broker holds a fetch until BATCH_BYTES have gathered
            # or batch_wait_ms has passed (a backlog fills it at once). With 0, every event is
            # fetched, evaluated and written on its own (docs/compliance.md, "Performance").
            fetch_min_bytes=BATCH_BYTES if batch_wait_ms else 1,
            fetch_max_wait_ms=batch_wait_ms or 500,
        )
        self.producer = producer  # started and stopped by the caller
        self.metrics = metrics
        traced = None if tracing is None else tracing.consumer(topics.EVENTS, topics.COMPLIANCE_GROUP)
        self.monitor = Monitor(pool, rules, self.producer, metrics=metrics, traced=traced)

    async def seek_to_stored(self) -> None:
        assigned = list(self.consumer.assignment())
        offsets = await self.monitor.load([tp.partition for tp in assigned])
        for tp in assigned:
            stored = offsets[tp.partition]
            if stored is None:
                await self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, stored)
        log.info("assigned %s at %s (rules %s)", sorted(offsets), offsets, self.monitor.rules.version)

    async def run(self, stop: asyncio.Event) -> None:
        self.consumer.subscribe([topics.EVENTS], listener=_Seek(self))
        await self.consumer.start()
        backoff = failures.Backoff()
        unpublished = True  # alerts a crash left unpublished; or a publish that failed: again
        reread = False  # the positions must be read back from the database before going on
        try:
            while not stop.is_set():
                if reread:
                    # Itself a database read: the database may still be away.
                    try:
                        await self.seek_to_stored()
                        reread = False
                    except failures.TRANSIENT as exc:
                        log.warning("transient failure (%r) reading back the state; retrying", exc)
                        await backoff.sleep()
                        continue
                batches = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
                try:
                    written = await self.monitor.apply({tp.partition: r for tp, r in batches.items() if r})
                    unpublished = unpublished or bool(written.alerts)
                    if unpublished:
                        await self.publish()
                        unpublished = False
                    backoff.reset()
                except store.OffsetConflict as exc:
                    log.warning("%s: another instance moved on; re-reading the stored offsets", exc)
                    reread = True
                except failures.TRANSIENT as exc:
                    log.warning("transient failure (%r); reading back the state and retrying", exc)
                    if self.metrics is not None:
                        self.metrics.retries.inc()
                    await backoff.sleep()
                    reread = True
                self.health.turned(sorted(self.monitor.stored))
                if self.metrics is not None:
                    for tp in self.consumer.assignment():
                        end = self.consumer.last_stable_offset(tp)
                        if end is not None and tp.partition in self.monitor.stored:
                            behind = max(0, end - (self.monitor.stored[tp.partition] or 0))
                            self.metrics.lag_records.labels(str(tp.partition)).set(behind)
        finally:
            await self.consumer.stop()

    async def publish(self) -> None:
        """Append the alerts not yet on ``compliance.alerts`` (and the freezes their rules ask
        for), then mark them published."""
        async with self.pool.acquire() as conn:
            while alerts := await store.unpublished(conn):
                sends = [await self.producer.send(topics.ALERTS, encode_alert(a),
                                                  key=f"wallet:{a.wallet}".encode())
                         for a in alerts]
                sends += [await self.producer.send(topics.COMMANDS, freeze_command(a),
                                                   key=wallet_key(a.wallet).encode())
                          for a in await self._freezes_not_sent(conn, alerts)]
                for sent in sends:
                    await sent
                await store.mark_published(conn, [a.id for a in alerts])

    async def _freezes_not_sent(self, conn: asyncpg.Connection,
                                alerts: list[AlertRaised]) -> list[AlertRaised]:
        """The alerts whose rule freezes, less those whose freeze the ledger has already decided
        (its command id is in ``command_log``). A monitor replaying the log from the start (its
        schema wiped) so sends no freeze twice, even where the processor no longer remembers the
        command id; one sent moments ago and not yet in the views is dropped by the processor,
        which remembers a wallet's recent command ids."""
        freezing = [a for a in alerts if a.rule in self.monitor.rules.freezing]
        if not freezing:
            return []
        ids = {freeze_id(a): a for a in freezing}
        decided = {r[0] for r in await conn.fetch(
            "SELECT command_id FROM command_log WHERE command_id = ANY($1::text[])", list(ids))}
        return [a for i, a in ids.items() if i not in decided]
