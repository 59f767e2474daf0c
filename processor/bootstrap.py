"""The processor's composition root: metrics, health, the ops endpoint and the Kafka loop are
made here, at start, and handed in."""

import asyncio
import functools
import logging
import os
from pathlib import Path

from common import runtime
from common.kafka import uvloop_safe
from common.ops import Health, listen
from common.settings import Settings, SettingsError
from common.tracing import setup as setup_tracing
from processor.chain import Chain, Signer
from processor.faults import Fault
from processor.metrics import ProcessorMetrics
from processor.sanctions import Sanctions
from processor.worker import Processor

log = logging.getLogger("ledgerline.processor")


def chains(settings: Settings) -> "functools.partial[Chain]":
    """How each partition's writer keeps its hash chain: signed when a key is configured."""
    signer = None
    if settings.anchor_key_file:
        try:
            signer = Signer.from_file(settings.anchor_key_file)
        except (OSError, ValueError) as exc:
            raise SettingsError(f"LEDGERLINE_ANCHOR_KEY_FILE={settings.anchor_key_file!r}: "
                                f"cannot read an Ed25519 private key: {exc}") from None
        log.info("hash chain signed with key %s", signer.key_id)
    else:
        log.warning("LEDGERLINE_ANCHOR_KEY_FILE is not set: the hash chain is kept but not signed, "
                    "and no checkpoints go to ledger.anchors; `audit --verify-chain` will fail")
    return functools.partial(
        Chain, signer=signer, anchor_every=float(settings.anchor_every_seconds),
        anchor_file=Path(settings.anchor_file) if settings.anchor_file else None)


async def run_processor(settings: Settings, stop: asyncio.Event) -> None:
    metrics, health = ProcessorMetrics(), Health()
    server = None
    if settings.processor_metrics_port:
        server = await listen(metrics.registry, health, settings.processor_metrics_port,
                              "LEDGERLINE_PROCESSOR_METRICS_PORT")
    sanctions = Sanctions(settings.kafka)
    tracing = setup_tracing(os.environ, "processor")
    try:
        await sanctions.start()
        await Processor(
            settings.kafka, max_records=settings.processor_max_records,
            session_timeout_ms=settings.processor_session_timeout_ms,
            transaction_timeout_ms=settings.processor_transaction_timeout_ms,
            fault=Fault.from_env(os.environ), metrics=metrics, health=health, sanctions=sanctions,
            chains=chains(settings), tracing=tracing, group_instance_id=settings.group_instance_id,
        ).run(stop)
    finally:
        await sanctions.stop()
        if tracing is not None:
            tracing.shutdown()
        if server is not None:
            server.close()


def main(settings: Settings) -> None:
    """``ledgerline processor``: decide commands until SIGINT or SIGTERM."""
    runtime.run_worker(lambda stop: run_processor(settings, stop), uvloop=uvloop_safe(settings.kafka))
