"""The command benchmark's floors measure what they say, on the real broker and database: a
record sent (plainly or in a transaction) is timed until a read_committed reader has it, a
PostgreSQL commit until a LISTENer hears its NOTIFY, and the bare server answers 202."""

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from bench import command_floor
from common.kafka import client_options
from common.settings import asyncpg_dsn
from tests.conftest import Stack

pytestmark = pytest.mark.integration


def _plausible(figures: dict[str, float]) -> None:
    assert set(figures) == {"p50_ms", "p99_ms"}
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] < 10_000


async def _hop_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if t.startswith("bench.hop.")]
    finally:
        await admin.close()


@pytest.mark.parametrize("transactional", [False, True])
async def test_a_kafka_hop_is_timed_until_a_reader_has_the_record(stack: Stack, transactional: bool) -> None:
    _plausible(await command_floor.kafka_hop(stack.infra.bootstrap, transactional=transactional,
                                             samples=20, every=0))
    assert await _hop_topics(stack.infra.bootstrap) == []  # its scratch topic is gone


async def test_a_postgres_commit_is_timed_until_its_notify_is_heard(stack: Stack) -> None:
    dsn = asyncpg_dsn(stack.infra.database_url)
    _plausible(await command_floor.notify_hop(dsn, samples=20, every=0))


async def test_the_bare_server_answers_202_whatever_the_request() -> None:
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": b'{"a"', "more_body": True},
              {"type": "http.request", "body": b": 1}", "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await command_floor.bare_app({"type": "http", "method": "POST", "path": "/anything"}, receive, send)
    assert chunks == []  # the whole body was read
    assert sent[0]["status"] == 202
    assert sent[1]["body"] == b'{"status":"accepted"}'
