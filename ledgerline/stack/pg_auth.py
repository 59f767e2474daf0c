"""Who may connect to the local PostgreSQL, and as what.

Every connection, over TCP or the socket, authenticates with a password (SCRAM-SHA-256). Two
login roles: the superuser made by ``initdb``, used only to set the server up, and the
application role, which owns the application's database (so it can migrate and rebuild its own
schema) but is not a superuser and can make neither roles nor databases.

Passwords reach the server only as SCRAM verifiers (salted hashes), never in clear, so neither a
statement in the server log nor one in flight gives them away.
"""

import base64
import hashlib
import hmac
import secrets

import asyncpg

# The contents of pg_hba.conf, written on every start: no "trust", no "peer".
HBA = """\
# Written by ledgerline's local stack on every start; edits are overwritten.
# Every connection authenticates with a password (SCRAM-SHA-256).
# TYPE  DATABASE     USER  ADDRESS        METHOD
local   all          all                  scram-sha-256
host    all          all   127.0.0.1/32   scram-sha-256
host    all          all   ::1/128        scram-sha-256
local   replication  all                  scram-sha-256
host    replication  all   127.0.0.1/32   scram-sha-256
host    replication  all   ::1/128        scram-sha-256
"""

# The secure profile: TCP connections only over TLS; the socket (local only) keeps passwords.
HBA_TLS = """\
# Written by ledgerline's local stack (secure profile) on every start; edits are overwritten.
# TCP connections only over TLS, and every connection authenticates with a password.
# TYPE     DATABASE     USER  ADDRESS        METHOD
local      all          all                  scram-sha-256
hostssl    all          all   127.0.0.1/32   scram-sha-256
hostssl    all          all   ::1/128        scram-sha-256
hostnossl  all          all   all            reject
local      replication  all                  scram-sha-256
"""

# Made by the reporting migration when the migrating role may create roles; the application role
# may not, so the stack makes it first (migrations/versions/0002_reporting.py).
REPORTING_ROLE = "ledgerline_reporting"

_APP_ROLE_OPTIONS = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802/7677), made client-side."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def set_password_sql(role: str, password: str) -> str:
    return f"ALTER ROLE {ident(role)} PASSWORD '{scram_verifier(password)}'"


async def ensure_roles(conn: asyncpg.Connection, app_user: str, app_password: str) -> None:
    """Make (or correct) the application role and the reporting role; connected as superuser."""
    verb = "ALTER" if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", app_user) \
        else "CREATE"
    await conn.execute(f"{verb} ROLE {ident(app_user)} {_APP_ROLE_OPTIONS} "
                       f"PASSWORD '{scram_verifier(app_password)}'")
    if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", REPORTING_ROLE):
        try:
            await conn.execute(f"CREATE ROLE {ident(REPORTING_ROLE)} NOLOGIN")
        except asyncpg.DuplicateObjectError:
            pass


async def ensure_database(conn: asyncpg.Connection, database: str, owner: str) -> bool:
    """Create ``database`` owned by ``owner``, or give it to ``owner``; True if it was created."""
    current = await conn.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database)
    if current is None:
        try:
            await conn.execute(f"CREATE DATABASE {ident(database)} OWNER {ident(owner)}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    if current != owner:
        await conn.execute(f"ALTER DATABASE {ident(database)} OWNER TO {ident(owner)}")
    return False


# What the superuser still owns in the application's database: left by versions of the stack
# that migrated as the superuser. Sequences that belong to a table column follow their table.
_OWNED_BY_ME = """
WITH me AS (SELECT oid FROM pg_roles WHERE rolname = current_user),
app_schemas AS (
    SELECT oid, nspname, nspowner FROM pg_namespace
    WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
)
SELECT 'SCHEMA', format('%I', n.nspname) FROM app_schemas n, me WHERE n.nspowner = me.oid
UNION ALL
SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                      WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       format('%I.%I', n.nspname, c.relname)
FROM pg_class c JOIN app_schemas n ON n.oid = c.relnamespace, me
WHERE c.relowner = me.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND NOT (c.relkind = 'S' AND EXISTS (
      SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
        AND d.deptype IN ('a', 'i')))
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
       format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid))
FROM pg_proc p JOIN app_schemas n ON n.oid = p.pronamespace, me
WHERE p.proowner = me.oid AND p.prokind IN ('f', 'p')
UNION ALL
SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, t.typname)
FROM pg_type t JOIN app_schemas n ON n.oid = t.typnamespace, me
WHERE t.typowner = me.oid AND t.typtype IN ('e', 'd', 'r')
"""


async def hand_over(conn: asyncpg.Connection, owner: str) -> int:
    """Give ``owner`` what the connected superuser owns in this database; how many objects.

    ``REASSIGN OWNED`` cannot do it: it refuses to touch the bootstrap superuser's objects.
    """
    owned = await conn.fetch(_OWNED_BY_ME)
    async with conn.transaction():
        for kind, name in owned:
            await conn.execute(f"ALTER {kind} {name} OWNER TO {ident(owner)}")
        if owned and await conn.fetchval(
                "SELECT 1 FROM pg_namespace WHERE nspname = 'reporting'") and await conn.fetchval(
                "SELECT 1 FROM pg_roles WHERE rolname = $1", REPORTING_ROLE):
            # The reporting migration's default grant was made for the role that ran it.
            await conn.execute(f"ALTER DEFAULT PRIVILEGES FOR ROLE {ident(owner)} IN SCHEMA reporting "
                               f"GRANT SELECT ON TABLES TO {ident(REPORTING_ROLE)}")
    return len(owned)
