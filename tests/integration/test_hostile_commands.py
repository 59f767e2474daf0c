"""Commands the API would have refused, produced straight to ``ledger.commands``: the processor
refuses them with their reason, no balance moves, the projector applies the refusal (nothing is
dead-lettered) and ``ledgerline audit`` stays clean."""

import asyncio
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer

from common.kafka import client_options
from common.settings import asyncpg_dsn
from events import codec, topics
from events.keys import asset_key, wallet_key
from events.messages import InitiateTransfer, Message, RegisterAsset
from projector import dlq
from tests.conftest import Running, token, unique_symbol
from tests.e2e.helpers import balances, funded_alice, new_asset

pytestmark = pytest.mark.integration


@pytest.fixture
async def pool(running: Running) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(asyncpg_dsn(running.stack.settings.database_url), min_size=1,
                                  max_size=2)
    yield p
    await p.close()


async def _produce(running: Running, key: str, message: Message) -> str:
    """Send ``message`` to ``ledger.commands`` as a client with broker access could; returns the
    command id."""
    command_id = str(uuid.uuid4())
    env = codec.envelope(message, key=key, command_id=command_id, principal="mallory",
                         correlation_id=getattr(message, "transfer_id", None))
    producer = AIOKafkaProducer(**client_options(running.stack.settings.kafka),
                                acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(topics.COMMANDS, codec.encode(env), key=key.encode())
    finally:
        await producer.stop()
    return command_id


async def _outcome(pool: asyncpg.Pool, command_id: str, seconds: float = 30.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = await pool.fetchrow("SELECT status, reason, type FROM command_log WHERE command_id = $1 "
                                  "AND status_rank = 3", command_id)
        if row is not None:
            return row
        await asyncio.sleep(0.2)
    raise AssertionError(f"command {command_id} not final in {seconds}s")


async def _audit(running: Running) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ledgerline", "audit", "--wait", "30", env=running.stack.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode() + err.decode()


async def _audit_clean(running: Running, dead_before: int, ours: list[str]) -> None:
    """The audit passes; if this session's other tests had already left dead letters or
    tampered events behind, at least nothing of ours is among its complaints."""
    code, out = await _audit(running)
    if dead_before == 0 and code == 0:
        assert "MISMATCH" not in out and "DEAD LETTERS" not in out, out
        return
    assert dead_before > 0, out  # nothing was dead-lettered before us: the audit must pass
    complaints = [line for line in out.splitlines() if line.startswith("MISMATCH")]
    assert not [line for line in complaints if any(name in line for name in ours)], out


async def _no_letters_for(running: Running, command_ids: list[str]) -> None:
    letters = await dlq.read_letters(running.stack.settings.kafka_bootstrap)
    mine = [x for x in letters if x.value is not None and any(c.encode() in x.value for c in command_ids)]
    assert not mine, [x.error for x in mine]


async def test_a_nul_memo_is_refused_by_the_processor_and_moves_nothing(
    running: Running, pool: asyncpg.Pool
) -> None:
    dead_before = await pool.fetchval("SELECT count(*) FROM dead_letters")
    async with httpx.AsyncClient(timeout=30) as http:
        f = await funded_alice(http, running, "100.00")
        transfer_id = str(uuid.uuid4())
        command_id = await _produce(running, wallet_key(f.alice), InitiateTransfer(
            transfer_id=transfer_id, source=f.alice, target=f.bob, asset=f.symbol, amount=4000,
            memo="lunch\x00; DROP TABLE transfers"))
        outcome = await _outcome(pool, command_id)
        assert (outcome["status"], outcome["reason"]) == ("failed", "invalid_text")
        # The sender can read her own transfer, whole, with the reason; the memo is left out.
        row = await pool.fetchrow("SELECT * FROM transfers WHERE transfer_id = $1", transfer_id)
        assert (row["source"], row["target"], row["asset"], row["amount"], row["memo"]) == (
            f.alice, f.bob, f.symbol, 4000, None)
        assert (row["status"], row["reason"]) == ("failed", "invalid_text")
        assert await balances(http, running, f.alice_token, f.alice) == {f.symbol: ("100.00", "0.00")}
        assert await pool.fetchval("SELECT count(*) FROM wallet_balances WHERE wallet = $1", f.bob) == 0
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == dead_before
    await _no_letters_for(running, [command_id])
    await _audit_clean(running, dead_before, [f.alice, f.bob, f.symbol])


async def test_a_nul_asset_name_is_rejected_and_the_symbol_stays_free(
    running: Running, pool: asyncpg.Pool
) -> None:
    dead_before = await pool.fetchval("SELECT count(*) FROM dead_letters")
    symbol = unique_symbol()
    command_id = await _produce(running, asset_key(symbol), RegisterAsset(
        symbol=symbol, name="Nul\x00Coin", decimals=2, issuer="treasury"))
    outcome = await _outcome(pool, command_id)
    assert (outcome["status"], outcome["reason"], outcome["type"]) == (
        "rejected", "invalid_text", "RegisterAsset")
    assert await pool.fetchval("SELECT count(*) FROM assets WHERE symbol = $1", symbol) == 0
    # Neither "unknown" to the API nor "taken" to the processor: it can be registered properly.
    async with httpx.AsyncClient(timeout=30) as http:
        await new_asset(http, running, token("treasury", roles=["issuer"], assets=[symbol]), symbol)
    assert await pool.fetchval("SELECT name FROM assets WHERE symbol = $1", symbol) == f"Test {symbol}"
    assert await pool.fetchval("SELECT count(*) FROM dead_letters") == dead_before
    await _no_letters_for(running, [command_id])
    await _audit_clean(running, dead_before, [symbol])


async def test_a_record_under_another_aggregate_is_refused(running: Running, pool: asyncpg.Pool) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        f = await funded_alice(http, running, "10.00")
        # Keyed as bob's command, a debit of alice would be decided on bob's (empty) state.
        command_id = await _produce(running, wallet_key(f.bob), InitiateTransfer(
            transfer_id=str(uuid.uuid4()), source=f.alice, target=f.bob, asset=f.symbol, amount=1))
        outcome = await _outcome(pool, command_id)
        assert (outcome["status"], outcome["reason"]) == ("failed", "invalid_command")
        assert await balances(http, running, f.alice_token, f.alice) == {f.symbol: ("10.00", "0.00")}
