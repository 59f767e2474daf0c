"""Plain query functions over the views; the resolvers stay thin."""

from typing import Any

import asyncpg

Row = dict[str, Any]

_ASSET_COLUMNS = "a.symbol, a.name, a.decimals, a.issuer, a.max_supply, a.supply"


async def balances(pool: asyncpg.Pool, wallet: str) -> list[Row]:
    rows = await pool.fetch(
        f"""SELECT b.available, b.held, b.updated_at, {_ASSET_COLUMNS}
            FROM wallet_balances b JOIN assets a ON a.symbol = b.asset
            WHERE b.wallet = $1 ORDER BY b.asset""",
        wallet,
    )
    return [dict(r) for r in rows]


async def asset(pool: asyncpg.Pool, symbol: str) -> Row | None:
    row = await pool.fetchrow(f"SELECT {_ASSET_COLUMNS} FROM assets a WHERE a.symbol = $1", symbol)
    return None if row is None else dict(row)


async def assets(pool: asyncpg.Pool) -> list[Row]:
    rows = await pool.fetch(f"SELECT {_ASSET_COLUMNS} FROM assets a ORDER BY a.symbol")
    return [dict(r) for r in rows]


async def transfer(pool: asyncpg.Pool, transfer_id: str) -> Row | None:
    row = await pool.fetchrow(
        """SELECT t.*, a.decimals FROM transfers t LEFT JOIN assets a ON a.symbol = t.asset
           WHERE t.transfer_id = $1""",
        transfer_id,
    )
    return None if row is None else dict(row)


async def trade(pool: asyncpg.Pool, trade_id: str) -> Row | None:
    row = await pool.fetchrow("SELECT * FROM trades WHERE trade_id = $1", trade_id)
    return None if row is None else dict(row)


async def command(pool: asyncpg.Pool, command_id: str) -> Row | None:
    row = await pool.fetchrow("SELECT * FROM command_log WHERE command_id = $1", command_id)
    return None if row is None else dict(row)
