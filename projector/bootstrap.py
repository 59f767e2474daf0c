"""The projector's composition root, for its commands: the worker, ``dlq``, ``rebuild``.

Pools, Kafka clients and the metrics registry are made here, at start, and passed in.
"""

import asyncio
import logging
import os
import sys
from pathlib import Path

import asyncpg

from common import runtime
from common.kafka import uvloop_safe
from common.keyring import LocalKeyring
from common.ops import Health, listen
from common.pg import keep_session
from common.settings import Settings, SettingsError, asyncpg_dsn
from common.tracing import setup as setup_tracing
from projector import dlq, metrics, rebuild, shadow
from projector.worker import SESSION, Projector

log = logging.getLogger("ledgerline.projector")


async def run_projector(settings: Settings, stop: asyncio.Event) -> None:
    dsn = asyncpg_dsn(settings.database_url)
    # keep_session: a batch only sets what it needs with SET LOCAL and takes transaction-level
    # advisory locks; the swap listener has its own connection.
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3, server_settings=SESSION,
                                     reset=keep_session)
    listener = await shadow.follow_swaps(pool, dsn)
    registry = metrics.ProjectorMetrics()
    health = Health()
    server = None
    if settings.projector_metrics_port:
        server = await listen(registry.registry, health, settings.projector_metrics_port,
                              "LEDGERLINE_PROJECTOR_METRICS_PORT")
    tracing = setup_tracing(os.environ, "projector")
    try:
        await Projector(settings.kafka, pool, metrics=registry, health=health,
                        keys=_keys(settings), tracing=tracing,
                        group_instance_id=settings.group_instance_id).run(stop)
    finally:
        if tracing is not None:
            tracing.shutdown()
        if server is not None:
            server.close()
        await listener.close()
        await pool.close()


def _keys(settings: Settings) -> LocalKeyring | None:
    """The wallets' data keys, to show sealed memos in clear (read-only use: keys are made by the
    command API and destroyed by an erasure)."""
    return LocalKeyring(Path(settings.keyring_path)) if settings.keyring_path else None


def main(settings: Settings) -> None:
    """``ledgerline projector``: project events into the views until SIGINT or SIGTERM."""
    runtime.run_worker(lambda stop: run_projector(settings, stop), uvloop=uvloop_safe(settings.kafka))


async def dlq_list(settings: Settings, *, as_json: bool) -> None:
    pool = await asyncpg.create_pool(asyncpg_dsn(settings.database_url), min_size=1, max_size=1)
    try:
        letters = await dlq.read_letters(settings.kafka)
        print(dlq.render(letters, await dlq.redriven(pool), as_json=as_json))
    finally:
        await pool.close()


def _letter_position(text: str) -> tuple[int, int]:
    try:
        partition, offset = text.split(":")
        return int(partition), int(offset)
    except ValueError:
        raise SettingsError(f"{text!r} is not a dead letter position PARTITION:OFFSET") from None


async def dlq_redrive(settings: Settings, letters: list[str] | None, *, force: bool,
                      dry_run: bool) -> int:
    """Re-drive and print one line per letter; 1 if any was refused, else 0."""
    selected = None if letters is None else {_letter_position(t) for t in letters}
    pool = await asyncpg.create_pool(asyncpg_dsn(settings.database_url), min_size=1, max_size=1)
    try:
        outcomes = await dlq.redrive(settings.kafka, pool, selected, force=force,
                                     dry_run=dry_run)
    finally:
        await pool.close()
    for o in outcomes:
        print(f"{o.letter.partition}:{o.letter.offset} {o.status} {o.detail}".rstrip())
    if selected is not None:
        for missing in sorted(selected - {(o.letter.partition, o.letter.offset) for o in outcomes}):
            print(f"{missing[0]}:{missing[1]} not found in the dead-letter topic", file=sys.stderr)
    return 1 if any(o.status == "refused" for o in outcomes) else 0


async def run_rebuild(settings: Settings, views: list[str] | None, *, swap: bool) -> None:
    try:
        await rebuild.rebuild(settings.kafka, asyncpg_dsn(settings.database_url), views,
                              swap=swap, keys=_keys(settings))
    except rebuild.RebuildError as exc:
        print(f"ledgerline rebuild: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
