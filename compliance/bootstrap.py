"""The compliance monitor's composition root: the rules, the pool, the Kafka clients and the ops
endpoint are made here, at start, and handed in."""

import asyncio
import logging
import os

import asyncpg
from aiokafka import AIOKafkaProducer

from common import runtime
from common.kafka import client_options
from common.ops import Health, listen
from common.pg import keep_session
from common.settings import Settings, SettingsError, asyncpg_dsn
from common.tracing import setup as setup_tracing
from compliance import rules as rules_file
from compliance.cases import CaseWorker
from compliance.metrics import MonitorMetrics
from compliance.worker import MonitorWorker

log = logging.getLogger("ledgerline.compliance")


def load_rules(settings: Settings) -> rules_file.RuleSet:
    """The rule set named by ``LEDGERLINE_COMPLIANCE_RULES`` (default: the shipped one); a bad
    file stops the monitor with a message naming what is wrong."""
    try:
        return rules_file.load(settings.compliance_rules)
    except rules_file.RulesError as exc:
        raise SettingsError(f"LEDGERLINE_COMPLIANCE_RULES: {exc}") from None


async def run_monitor(settings: Settings, stop: asyncio.Event) -> None:
    rules = load_rules(settings)
    log.info("compliance rules version %s (sha256 %s)", rules.version, rules.digest[:12])
    pool = await asyncpg.create_pool(asyncpg_dsn(settings.database_url), min_size=1, max_size=2,
                                     server_settings={"application_name": "ledgerline-compliance"},
                                     reset=keep_session)
    health, metrics = Health(), MonitorMetrics()
    server = None
    if settings.compliance_metrics_port:
        server = await listen(metrics.registry, health, settings.compliance_metrics_port,
                              "LEDGERLINE_COMPLIANCE_METRICS_PORT")
    producer = AIOKafkaProducer(**client_options(settings.kafka), acks="all",
                                enable_idempotence=True)
    await producer.start()
    tracing = setup_tracing(os.environ, "compliance")
    try:
        await asyncio.gather(
            MonitorWorker(settings.kafka, pool, rules, producer, health=health,
                          metrics=metrics, tracing=tracing,
                          group_instance_id=settings.group_instance_id,
                          batch_wait_ms=settings.compliance_batch_wait_ms).run(stop),
            CaseWorker(settings.kafka, pool, producer,
                       group_instance_id=settings.group_instance_id).run(stop),
        )
    finally:
        if tracing is not None:
            tracing.shutdown()
        await producer.stop()
        if server is not None:
            server.close()
        await pool.close()


def main(settings: Settings) -> None:
    """``ledgerline compliance``: evaluate the rules over the event log until SIGINT or SIGTERM."""
    load_rules(settings)  # fail fast, before any connection
    runtime.run_worker(lambda stop: run_monitor(settings, stop))
