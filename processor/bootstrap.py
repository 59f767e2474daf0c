"""The processor's composition root: metrics, health, the ops endpoint and the Kafka loop are
made here, at start, and handed in."""

import asyncio
import os

from common import runtime
from common.kafka import uvloop_safe
from common.ops import Health, listen
from common.settings import Settings
from processor.faults import Fault
from processor.metrics import ProcessorMetrics
from processor.worker import Processor


async def run_processor(settings: Settings, stop: asyncio.Event) -> None:
    metrics, health = ProcessorMetrics(), Health()
    server = None
    if settings.processor_metrics_port:
        server = await listen(metrics.registry, health, settings.processor_metrics_port,
                              "LEDGERLINE_PROCESSOR_METRICS_PORT")
    try:
        await Processor(
            settings.kafka, max_records=settings.processor_max_records,
            session_timeout_ms=settings.processor_session_timeout_ms,
            fault=Fault.from_env(os.environ), metrics=metrics, health=health,
        ).run(stop)
    finally:
        if server is not None:
            server.close()


def main(settings: Settings) -> None:
    """``ledgerline processor``: decide commands until SIGINT or SIGTERM."""
    runtime.run_worker(lambda stop: run_processor(settings, stop), uvloop=uvloop_safe(settings.kafka))
