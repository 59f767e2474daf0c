"""Two projector instances in one consumer group share the partitions and build the same tables
as one instance (a replay from offset 0 is one instance)."""

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from common.settings import asyncpg_dsn
from ledgerline.stack.ports import free_port
from projector import dlq
from tests.conftest import Running
from tests.integration.projector_support import (
    ExtraProjector,
    Workload,
    caught_up,
    no_double_counting,
    replay_matches_live,
    settled,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(running: Running) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(asyncpg_dsn(running.stack.settings.database_url), min_size=1, max_size=4)
    yield p
    await p.close()


def _partitions(port: int) -> list[int] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return list(json.loads(answer.read())["partitions"])
    except (urllib.error.URLError, OSError):
        return None


async def _shared(ports: list[int], seconds: float = 40.0) -> list[list[int]]:
    deadline = time.monotonic() + seconds
    while True:
        owned = [await asyncio.to_thread(_partitions, port) or [] for port in ports]
        if all(owned) and sum(len(o) for o in owned) == len({p for o in owned for p in o}):
            return owned
        if time.monotonic() > deadline:
            raise AssertionError(f"partitions never shared: {owned}")
        await asyncio.sleep(0.5)


async def test_two_instances_build_the_same_tables_as_one(
    http: httpx.AsyncClient, running: Running, pool: asyncpg.Pool
) -> None:
    s = running.stack.settings
    letters_before = len(await dlq.read_letters(s.kafka_bootstrap))
    second = ExtraProjector(running, free_port())
    try:
        owned = await _shared([s.projector_metrics_port, second.metrics_port])
        assert len({p for o in owned for p in o}) == s.partitions, owned
        work = Workload(http, running, seed=4, wallets=20)
        await work.start()
        await work.run(300)
        await settled(pool, work.command_ids)
        await caught_up(pool, s.kafka_bootstrap)
        # Both really worked: each committed batches for the partitions it owns.
        for port in (s.projector_metrics_port, second.metrics_port):
            text = await asyncio.to_thread(
                lambda p=port: urllib.request.urlopen(f"http://127.0.0.1:{p}/metrics", timeout=5).read())
            applied = [line for line in text.decode().splitlines()
                       if line.startswith("ledgerline_projector_events_total")]
            assert applied and float(applied[0].split()[-1]) > 0, applied
    finally:
        second.stop()
    # Handing partitions over (twice: on start and on stop) applied nothing twice.
    await caught_up(pool, s.kafka_bootstrap)
    assert len(await dlq.read_letters(s.kafka_bootstrap)) == letters_before
    await no_double_counting(pool, s.kafka_bootstrap)
    await replay_matches_live(running, pool)
