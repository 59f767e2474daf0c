"""Idempotency keys: one command per key, reserved in PostgreSQL before anything reaches Kafka.

The key's row is inserted first (``ON CONFLICT DO NOTHING RETURNING``), so of any number of
concurrent requests with one key exactly one sends the command. The others read the row: a
different request body is ``409 idempotency_key_reused``; the same body waits (bounded) for
the sender to finish and gets the same answer. The row's ``state`` (see migration 0004) keeps a
failed send from either blocking the key for good or running a second command:

- failed before the record left the producer: the row is deleted, the key is free;
- failed after (the record may be in Kafka): ``unknown``. A retry takes the row over and, unless
  the read model already shows the command, sends the same command id again; the processor
  decides an id at most once (it remembers each aggregate's recent command ids);
- the sender died mid-send: the reservation goes stale after ``STALE_SECONDS`` and is taken
  over the same way.
"""

import asyncio
import json
from typing import Any

import asyncpg

from command.errors import ApiError, Code

# Longer than any send can take (the producer gives up on a request after 40 s).
STALE_SECONDS = 60.0
# How long a request waits for another with the same key and body to finish sending.
WAIT_SECONDS = 5.0

_RESERVE = ("INSERT INTO idempotency_keys (command_id, principal, request_hash, response, state) "
            "VALUES ($1, $2, $3, $4::jsonb, 'reserved') ON CONFLICT (command_id) DO NOTHING "
            "RETURNING true")
_READ = ("SELECT request_hash, response, state, "
         "updated_at < now() - make_interval(secs => $2) AS stale "
         "FROM idempotency_keys WHERE command_id = $1")
_TAKE_OVER = ("UPDATE idempotency_keys SET state = 'reserved', updated_at = now() "
              "WHERE command_id = $1 AND request_hash = $2 AND (state = 'unknown' OR "
              "(state = 'reserved' AND updated_at < now() - make_interval(secs => $3))) "
              "RETURNING true")
_IN_READ_MODEL = "SELECT true FROM command_log WHERE command_id = $1"
_SET_STATE = "UPDATE idempotency_keys SET state = $2, updated_at = now() WHERE command_id = $1"
_RELEASE = "DELETE FROM idempotency_keys WHERE command_id = $1 AND state = 'reserved'"


async def claim(pool: asyncpg.Pool, command_id: str, principal: str, request_hash: str,
                accepted: dict[str, Any]) -> dict[str, Any] | None:
    """None when this request must send the command (then :func:`sent`, :func:`unknown` or
    :func:`release` once it knows how that went); else the answer the command already got."""
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    pause = 0.005
    response = json.dumps(accepted)
    while True:
        if await pool.fetchval(_RESERVE, command_id, principal, request_hash, response):
            return None
        row = await pool.fetchrow(_READ, command_id, STALE_SECONDS)
        if row is None:
            continue  # released since the insert: try again
        if row["request_hash"] != request_hash:
            raise ApiError(409, Code.IDEMPOTENCY_KEY_REUSED,
                           "this Idempotency-Key was used for a different request")
        first: dict[str, Any] = json.loads(row["response"])
        if row["state"] == "sent":
            return first
        if row["state"] == "unknown" or row["stale"]:
            if await pool.fetchval(_TAKE_OVER, command_id, request_hash, STALE_SECONDS):
                if await pool.fetchval(_IN_READ_MODEL, command_id):
                    await sent(pool, command_id)
                    return first
                return None
            continue
        if asyncio.get_running_loop().time() + pause > deadline:
            raise ApiError(409, Code.IDEMPOTENCY_KEY_IN_PROGRESS,
                           "a request with this Idempotency-Key is still being sent; retry",
                           headers={"Retry-After": "1"})
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)


async def sent(pool: asyncpg.Pool, command_id: str) -> None:
    await pool.execute(_SET_STATE, command_id, "sent")


async def unknown(pool: asyncpg.Pool, command_id: str) -> None:
    await pool.execute(_SET_STATE, command_id, "unknown")


async def release(pool: asyncpg.Pool, command_id: str) -> None:
    await pool.execute(_RELEASE, command_id)
