"""An Idempotency-Key whose send failed: never a second command, never a key blocked for good.

Real PostgreSQL (``idempotency_keys`` and ``command_log`` copied into the test's own schema);
a producer that fails where it is told to, in the two ways that matter: before the record is
handed over (nothing can be in Kafka) and after (it may be).
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError

from command import api, availability, idempotency, outcomes
from common.auth import TokenKeys
from common.settings import asyncpg_dsn, load
from common.tokens import Verified
from events import codec
from tests.conftest import SECRET, Stack, token

pytestmark = pytest.mark.integration

BODY = {"from": "alice", "to": "bob", "asset": "USDX", "amount": "1.00"}
ALICE = token("alice", wallets=["alice"])


class Producer:
    """Records what it was given; ``refuse`` sends fail before, ``lose`` sends after handing over."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.refuse = 0
        self.lose = 0

    async def send(self, _topic: str, value: bytes, key: bytes,
                   headers: list[tuple[str, bytes]] | None = None) -> "asyncio.Future[None]":
        if self.refuse:
            self.refuse -= 1
            raise KafkaConnectionError("broker away")
        self.records.append(value)
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.lose:
            self.lose -= 1
            delivery.set_exception(KafkaTimeoutError())
        else:
            delivery.set_result(None)
        return delivery


@contextlib.asynccontextmanager
async def _api(stack: Stack) -> AsyncIterator[tuple[httpx.AsyncClient, Producer, asyncpg.Pool]]:
    dsn = asyncpg_dsn(stack.infra.database_url)
    schema = f"idem_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(
        f"CREATE SCHEMA {schema}; "
        f"CREATE TABLE {schema}.command_log (LIKE command_log INCLUDING ALL); "
        f"CREATE TABLE {schema}.idempotency_keys (LIKE public.idempotency_keys INCLUDING ALL)")
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4,
                                     server_settings={"search_path": schema})
    producer = Producer()
    box = api.Box()
    box.wiring = api.Wiring(load({"LEDGERLINE_JWT_SECRET": SECRET}), pool, producer,  # type: ignore[arg-type]
                            outcomes.Waiters(pool), {"USDX": 2}, Verified(TokenKeys(secret=SECRET)))
    endpoint = api.Endpoint(api.transfer, box)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint),
                                     base_url="http://api") as client:
            yield client, producer, pool
    finally:
        await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


async def _post(client: httpx.AsyncClient, key: str, **change: Any) -> httpx.Response:
    return await client.post("/v1/transfers", json={**BODY, **change},
                             headers={"Authorization": f"Bearer {ALICE}", "Idempotency-Key": key})


async def _state(pool: asyncpg.Pool, command_id: str) -> str | None:
    state: str | None = await pool.fetchval(
        "SELECT state FROM idempotency_keys WHERE command_id = $1", command_id)
    return state


def _ids(producer: Producer) -> list[str]:
    return [codec.decode(r).id for r in producer.records]


async def test_a_send_refused_before_the_producer_took_it_frees_the_key(stack: Stack) -> None:
    async with _api(stack) as (client, producer, pool):
        producer.refuse = 1
        failed = await _post(client, "k1")
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"]["code"] == "unavailable"
        assert failed.headers["retry-after"] == str(availability.RETRY_AFTER_SECONDS)
        assert failed.json()["error"]["outcome"] == "not_sent"
        assert producer.records == []
        assert await pool.fetchval("SELECT count(*) FROM idempotency_keys") == 0
        # Nothing ran, so the key may carry another request now.
        other = await _post(client, "k1", amount="2.00")
        assert other.status_code == 202, other.text
        assert await _state(pool, other.json()["command_id"]) == "sent"
        assert len(producer.records) == 1


async def test_a_send_that_may_have_landed_is_resent_with_the_same_id_only(stack: Stack) -> None:
    async with _api(stack) as (client, producer, pool):
        producer.lose = 1
        failed = await _post(client, "k2")
        assert failed.status_code == 503, failed.text
        command_id = codec.decode(producer.records[0]).id
        assert await _state(pool, command_id) == "unknown"
        # Another body cannot take the key: the first command may be in Kafka.
        other = await _post(client, "k2", amount="2.00")
        assert other.status_code == 409
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        # The same body sends the same command id again (the processor decides an id once).
        again = await _post(client, "k2")
        assert again.status_code == 202, again.text
        assert again.json()["command_id"] == command_id
        assert _ids(producer) == [command_id, command_id]
        assert codec.decode(producer.records[0]).payload == codec.decode(producer.records[1]).payload
        assert await _state(pool, command_id) == "sent"
        # From then on it is answered, not sent.
        third = await _post(client, "k2")
        assert third.status_code == 202 and len(producer.records) == 2


async def test_an_unknown_send_the_read_model_shows_is_not_sent_again(stack: Stack) -> None:
    async with _api(stack) as (client, producer, pool):
        producer.lose = 1
        await _post(client, "k3")
        command_id = codec.decode(producer.records[0]).id
        await pool.execute(
            "INSERT INTO command_log (command_id, type, principal, status, status_rank, updated_at) "
            "VALUES ($1, 'InitiateTransfer', 'alice', 'completed', 3, now())", command_id)
        again = await _post(client, "k3")
        assert again.status_code == 202 and again.json()["command_id"] == command_id
        assert len(producer.records) == 1
        assert await _state(pool, command_id) == "sent"


async def test_a_reservation_whose_sender_died_is_taken_over_once_stale(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(idempotency, "WAIT_SECONDS", 0.3)
    async with _api(stack) as (client, producer, pool):
        first = await _post(client, "k4")
        command_id = first.json()["command_id"]
        # As if a sender had reserved the key and died before sending.
        await pool.execute("UPDATE idempotency_keys SET state = 'reserved', updated_at = now() "
                           "WHERE command_id = $1", command_id)
        busy = await _post(client, "k4")
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["code"] == "idempotency_key_in_progress"
        assert busy.headers["retry-after"] == "1"
        await pool.execute("UPDATE idempotency_keys SET updated_at = now() - interval '10 minutes' "
                           "WHERE command_id = $1", command_id)
        taken = await _post(client, "k4")
        assert taken.status_code == 202 and taken.json()["command_id"] == command_id
        assert _ids(producer) == [command_id, command_id]


async def test_racing_requests_on_one_key_send_once(stack: Stack) -> None:
    async with _api(stack) as (client, producer, _pool):
        amounts = [f"{1 + n % 3}.00" for n in range(30)]
        answers = await asyncio.gather(*(_post(client, "k5", amount=a) for a in amounts))
        assert len(producer.records) == 1
        won = {a for a, r in zip(amounts, answers, strict=True) if r.status_code == 202}
        assert len(won) == 1, won
        for amount, answer in zip(amounts, answers, strict=True):
            if amount in won:
                assert answer.status_code == 202
                assert answer.json()["command_id"] == codec.decode(producer.records[0]).id
            else:
                assert answer.status_code == 409
                assert answer.json()["error"]["code"] == "idempotency_key_reused"
