"""Ledgerline's Kafka topics, created with aiokafka's admin client.

Commands, events and state are co-partitioned (same key, same partition count), so one
partition's command handler, event stream and state snapshot line up.
"""

import asyncio
import logging
import time
from typing import Any

from common.kafka import KafkaTarget, client_options
from ledgerline.stack.errors import StackError

COMMANDS_TOPIC = "ledger.commands"
EVENTS_TOPIC = "ledger.events"
STATE_TOPIC = "ledger.state"
DLQ_TOPIC = "ledger.dlq"
ALERTS_TOPIC = "compliance.alerts"
CASE_COMMANDS_TOPIC = "compliance.commands"
CASE_EVENTS_TOPIC = "compliance.events"
SANCTIONS_TOPIC = "compliance.sanctions"
KYC_TOPIC = "compliance.kyc"
ANCHORS_TOPIC = "ledger.anchors"

#: topic name -> topic configuration used when the topic is created.
TOPICS: dict[str, dict[str, str]] = {
    COMMANDS_TOPIC: {},
    EVENTS_TOPIC: {"retention.ms": "-1"},
    # Compaction cleans only segments that are no longer written to: with Kafka's 1 GiB
    # segments a busy partition was never compacted, and a restarted processor read every
    # snapshot ever written (700 MB a partition after a 15-minute soak, minutes to restore).
    # Small segments keep the log near one snapshot per aggregate.
    STATE_TOPIC: {"cleanup.policy": "compact", "segment.bytes": str(16 * 1024 * 1024)},
    DLQ_TOPIC: {"retention.ms": "-1"},
    ALERTS_TOPIC: {"retention.ms": "-1"},
    CASE_COMMANDS_TOPIC: {},
    CASE_EVENTS_TOPIC: {"retention.ms": "-1"},
    SANCTIONS_TOPIC: {"cleanup.policy": "compact"},
    KYC_TOPIC: {"cleanup.policy": "compact"},
    ANCHORS_TOPIC: {"retention.ms": "-1"},
}

#: Topics with one partition whatever the count asked for: the hash chain's checkpoints are
#: few, and one partition keeps them in one order.
SINGLE_PARTITION: tuple[str, ...] = (ANCHORS_TOPIC,)

#: Topics that must have the same number of partitions.
CO_PARTITIONED: tuple[str, ...] = (COMMANDS_TOPIC, EVENTS_TOPIC, STATE_TOPIC)

log = logging.getLogger("ledgerline.stack")

_UNKNOWN_TOPIC = 3
_TOPIC_ALREADY_EXISTS = 36


def _partition_counts(topics: list[dict[str, Any]]) -> tuple[dict[str, int], set[str]]:
    """(name -> partition count of our topics that are ready, names that exist but are not)."""
    ready: dict[str, int] = {}
    pending: set[str] = set()
    for topic in topics:
        name = topic["topic"]
        if name not in TOPICS:
            continue
        partitions = topic.get("partitions") or []
        leaders_known = all(p.get("leader", -1) >= 0 for p in partitions)
        if topic.get("error_code", 0) == 0 and partitions and leaders_known:
            ready[name] = len(partitions)
        elif topic.get("error_code", 0) != _UNKNOWN_TOPIC:
            pending.add(name)
    return ready, pending


def _check_co_partitioned(ready: dict[str, int]) -> None:
    counts = {name: ready[name] for name in CO_PARTITIONED if name in ready}
    if len(set(counts.values())) > 1:
        details = ", ".join(f"{name} has {count}" for name, count in counts.items())
        raise StackError(
            f"the ledger topics disagree on their partition count ({details}): commands, events "
            "and state must be co-partitioned; recreate them with one partition count"
        )


async def ensure_topics(bootstrap: KafkaTarget, partitions: int, *, wait_seconds: float = 30.0) -> None:
    """Create the missing ledger topics; leave existing ones alone.

    New topics get ``partitions`` partitions, except that a missing co-partitioned topic gets the
    count of the co-partitioned topics that already exist. Replication factor is
    ``min(3, brokers)``. Returns when every topic has a leader for each partition. Raises
    StackError if existing co-partitioned topics disagree on their partition count, or if the
    cluster cannot be reached or refuses within ``wait_seconds``.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import for_code

    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, not {partitions}")
    deadline = time.monotonic() + wait_seconds
    last_problem = "no answer yet"
    admin: AIOKafkaAdminClient | None = None
    try:
        while True:
            if time.monotonic() >= deadline:
                raise StackError(
                    f"could not ensure the ledger topics on {bootstrap} "
                    f"within {wait_seconds:.0f} s: {last_problem}"
                )
            try:
                if admin is None:
                    candidate = AIOKafkaAdminClient(
                        **client_options(bootstrap), client_id="ledgerline-topics"
                    )
                    try:
                        await candidate.start()
                    except BaseException:
                        await _close(candidate)
                        raise
                    admin = candidate
                cluster = await admin.describe_cluster()
                brokers = len(cluster.get("brokers") or [])
                if brokers == 0:
                    last_problem = "the cluster lists no live broker"
                    await asyncio.sleep(0.2)
                    continue
                ready, pending = _partition_counts(await admin.describe_topics())
                _check_co_partitioned(ready)
                missing = [name for name in TOPICS if name not in ready and name not in pending]
                if not missing and not pending:
                    break
                if pending:
                    # Created a moment ago (maybe by us): wait for their leaders before
                    # deciding anything from partition counts.
                    last_problem = f"waiting for partition leaders of {', '.join(sorted(pending))}"
                else:
                    existing = [ready[name] for name in CO_PARTITIONED if name in ready]
                    co_count = existing[0] if existing else partitions
                    replication = min(3, brokers)
                    new_topics = [
                        NewTopic(
                            name,
                            co_count if name in CO_PARTITIONED
                            else 1 if name in SINGLE_PARTITION else partitions,
                            replication,
                            topic_configs=TOPICS[name],
                        )
                        for name in missing
                    ]
                    log.info(
                        "creating topics %s (replication factor %d)",
                        ", ".join(f"{t.name}[{t.num_partitions}]" for t in new_topics),
                        replication,
                    )
                    response = await admin.create_topics(new_topics)
                    for entry in response.topic_errors:
                        name, code = entry[0], entry[1]
                        message = entry[2] if len(entry) > 2 else None
                        if code in (0, _TOPIC_ALREADY_EXISTS):
                            continue
                        error = for_code(code)
                        last_problem = f"creating {name}: {error.__name__} {message or ''}".strip()
                        if not error.retriable:
                            raise StackError(f"could not create topic {name}: {last_problem}")
            except StackError:
                raise
            except Exception as exc:  # connection refused, controller moving, timeouts
                last_problem = repr(exc)
                log.debug("ensure_topics retrying: %r", exc)
            await asyncio.sleep(0.2)
    finally:
        if admin is not None:
            await _close(admin)

    if ready[COMMANDS_TOPIC] != partitions:
        log.warning(
            "the ledger topics exist with %d partitions, not the %d requested; keeping them",
            ready[COMMANDS_TOPIC],
            partitions,
        )


async def _close(admin: Any) -> None:
    try:
        await admin.close()
    except Exception as exc:
        log.debug("closing the admin client failed: %r", exc)
