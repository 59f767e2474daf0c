"""Runs migrations on an async engine; the URL comes from the caller or ``DATABASE_URL``."""

import asyncio

import asyncpg
from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from common.settings import asyncpg_dsn, load


def _do_run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        # Migrations alone may rewrite the append-only tables (migration 0006's trigger).
        context.execute("SET LOCAL ledgerline.rewrite = 'allowed'")
        context.run_migrations()


async def _run() -> None:
    url = context.config.get_main_option("sqlalchemy.url") or load().database_url
    # asyncpg reads the whole URL, TLS parameters included (sslmode=verify-full&sslrootcert=…),
    # which SQLAlchemy would hand it as keyword arguments it does not take.
    dsn = asyncpg_dsn(url)
    engine = create_async_engine("postgresql+asyncpg://", async_creator=lambda: asyncpg.connect(dsn))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_do_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `ledgerline migrate`")
asyncio.run(_run())
