"""A database role per process (the secure profile): each may do what its process needs, no more.

- the projector connects as the owner of the views (``ledgerline_app``): it writes them, and
  rebuilds and swaps them; the migrations run as it too;
- ``ledgerline_query`` (the GraphQL API) reads, and writes nothing;
- ``ledgerline_command`` (the command API) reads (assets, outcomes) and writes ``idempotency_keys``
  only;
- the processor does not connect to the database at all.

Roles are made by the superuser (:func:`ensure_process_roles`); the grants by the owner after
migrating (:func:`grant`), with default privileges so that tables made later — a rebuild's
shadow copies, a new migration's — are readable too. The same statements set up a managed
PostgreSQL (docs/security.md).
"""

import asyncpg

from ledgerline.stack.pg_auth import ident, scram_verifier

COMMAND_ROLE = "ledgerline_command"
QUERY_ROLE = "ledgerline_query"
#: process -> its own database role (processes not named connect as the owner, or not at all).
PROCESS_ROLES = {"command-api": COMMAND_ROLE, "query-api": QUERY_ROLE}
#: Tables the command API writes.
COMMAND_WRITES = ("public.idempotency_keys",)
SCHEMAS = ("public", "ledger")

_OPTIONS = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


async def ensure_process_roles(conn: asyncpg.Connection, passwords: dict[str, str], database: str) -> None:
    """Make (or correct) each role with its password; connected as a superuser."""
    for role, password in passwords.items():
        verb = "ALTER" if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role) else "CREATE"
        await conn.execute(f"{verb} ROLE {ident(role)} {_OPTIONS} PASSWORD '{scram_verifier(password)}'")
        await conn.execute(f"GRANT CONNECT ON DATABASE {ident(database)} TO {ident(role)}")


async def grant(conn: asyncpg.Connection, owner: str) -> None:
    """Give the process roles their privileges; connected as ``owner``, after migrating."""
    readers = f"{ident(COMMAND_ROLE)}, {ident(QUERY_ROLE)}"
    async with conn.transaction():
        for schema in SCHEMAS:
            await conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {readers}")
            await conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {readers}")
            await conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {readers}")
        for table in COMMAND_WRITES:
            await conn.execute(f"GRANT INSERT, UPDATE, DELETE ON {table} TO {ident(COMMAND_ROLE)}")
        # Tables the owner makes later (in any schema: a rebuild makes its copies elsewhere and
        # moves them in) are readable by both, writable by neither.
        await conn.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {ident(owner)} "
                           f"GRANT SELECT ON TABLES TO {readers}")
