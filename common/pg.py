"""What the processes' asyncpg pools share."""

import asyncpg


async def keep_session(_conn: asyncpg.Connection) -> None:
    """A pool's ``reset``: nothing beyond asyncpg's own rollback of an open transaction.

    asyncpg's default sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` every time a connection goes back to its pool: a round trip and four statements per
    projector batch, per monitor batch, per API request. A pool may skip it when its users never
    change a session: no ``SET`` (only ``SET LOCAL``), no session advisory locks (only
    ``pg_advisory_xact_lock``), no cursors outside a transaction, and no ``LISTEN`` (listeners
    have connections of their own)."""
