"""The local stack's PostgreSQL asks every connection for a password, the processes' role is no
superuser, and a data folder left by an earlier version (trust authentication, no passwords, the
schema owned by the superuser) is brought to the same state on start."""

import asyncio
import stat
from pathlib import Path

import asyncpg
import pytest

from ledgerline.migrate import upgrade
from ledgerline.stack.pg_auth import REPORTING_ROLE
from ledgerline.stack.ports import free_port
from ledgerline.stack.postgres import APP_PASSWORD_FILE, SUPERUSER_PASSWORD_FILE, LocalPostgres

pytestmark = pytest.mark.integration

# What initdb --auth=trust wrote, and earlier versions of the stack ran with.
TRUST_HBA = """\
local   all             all                                     trust
host    all             all             127.0.0.1/32            trust
host    all             all             ::1/128                 trust
local   replication     all                                     trust
host    replication     all             127.0.0.1/32            trust
host    replication     all             ::1/128                 trust
"""


def _local_postgres(home: Path) -> LocalPostgres:
    return LocalPostgres(home / "postgres", port=free_port(), secrets_dir=home)


async def _assert_passwords_needed(pg: LocalPostgres) -> None:
    for user in (pg.user, pg.app_user):
        for password in (None, "", "not-the-password"):
            with pytest.raises(asyncpg.InvalidPasswordError):
                conn = await asyncpg.connect(host=pg.host, port=pg.port, user=user, password=password,
                                             database=pg.database)
                await conn.close()
    admin = await asyncpg.connect(pg.admin_url)
    try:
        rules = await admin.fetch("SELECT type, auth_method, error FROM pg_hba_file_rules")
    finally:
        await admin.close()
    assert {r["type"] for r in rules} == {"local", "host"}
    assert {(r["auth_method"], r["error"]) for r in rules} == {("scram-sha-256", None)}


async def _assert_app_role_is_no_superuser(pg: LocalPostgres) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        role = await conn.fetchrow(
            "SELECT current_user AS name, rolsuper, rolcreaterole, rolcreatedb, rolreplication, "
            "rolbypassrls, pg_get_userbyid(d.datdba) AS database_owner "
            "FROM pg_roles, pg_database d WHERE rolname = current_user AND d.datname = current_database()")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE ROLE intruder SUPERUSER LOGIN")
    finally:
        await conn.close()
    assert dict(role) == {"name": pg.app_user, "rolsuper": False, "rolcreaterole": False,
                          "rolcreatedb": False, "rolreplication": False, "rolbypassrls": False,
                          "database_owner": pg.app_user}


async def test_every_connection_needs_a_password_and_the_app_role_is_no_superuser(
        tmp_path: Path) -> None:
    home = tmp_path / "home"
    pg = _local_postgres(home)
    try:
        await asyncio.to_thread(pg.start)
        for name in (SUPERUSER_PASSWORD_FILE, APP_PASSWORD_FILE):
            assert stat.S_IMODE((home / name).stat().st_mode) == 0o600, name
        await _assert_passwords_needed(pg)
        await _assert_app_role_is_no_superuser(pg)
        assert "password" not in repr(pg) and pg.app_password not in repr(pg)

        # A restart keeps the passwords: what the files say still lets the roles in.
        url = pg.url
        await asyncio.to_thread(pg.stop)
        await asyncio.to_thread(pg.start)
        assert pg.url == url
        conn = await asyncpg.connect(url)
        await conn.close()
    finally:
        await asyncio.to_thread(pg.stop)


async def _make_it_an_earlier_version(pg: LocalPostgres, home: Path) -> None:
    """Trust everyone, no passwords, everything owned by the superuser, no application role."""
    admin = await asyncpg.connect(pg.admin_url)
    try:
        await admin.execute(f"ALTER DATABASE {pg.database} OWNER TO {pg.user}")
        await admin.execute(f"DROP ROLE {pg.app_user}")
    finally:
        await admin.close()
    await asyncio.to_thread(upgrade, pg.admin_url)  # earlier versions migrated as the superuser
    admin = await asyncpg.connect(pg.admin_url)
    try:
        await admin.execute("INSERT INTO ledger.assets (symbol, name, decimals, issuer, registered_at) "
                            "VALUES ('OLD', 'from before', 2, 'treasury', now())")
        await admin.execute(f"ALTER ROLE {pg.user} PASSWORD NULL")
    finally:
        await admin.close()
    await asyncio.to_thread(pg.stop)
    (pg.pgdata / "pg_hba.conf").write_text(TRUST_HBA)
    (home / SUPERUSER_PASSWORD_FILE).unlink()
    (home / APP_PASSWORD_FILE).unlink()


async def test_a_data_folder_from_an_earlier_version_is_upgraded_on_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    pg = _local_postgres(home)
    try:
        await asyncio.to_thread(pg.start)
        await _make_it_an_earlier_version(pg, home)

        await asyncio.to_thread(pg.start)
        await _assert_passwords_needed(pg)
        await _assert_app_role_is_no_superuser(pg)

        app = await asyncpg.connect(pg.url)
        try:
            left = await app.fetch(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname IN ('public', 'ledger', 'reporting') AND c.relowner <> "
                "(SELECT oid FROM pg_roles WHERE rolname = current_user)")
            assert left == [], "objects the application role does not own"
            assert await app.fetchval("SELECT name FROM assets WHERE symbol = 'OLD'") == "from before"
            await app.execute("UPDATE assets SET name = 'kept' WHERE symbol = 'OLD'")
            # It can change its own schema (a later migration, a rebuild's shadow schema).
            await app.execute("CREATE SCHEMA scratch; DROP SCHEMA scratch")
        finally:
            await app.close()
        await asyncio.to_thread(upgrade, pg.url)

        # The reporting role still reads its views, and nothing else.
        admin = await asyncpg.connect(pg.admin_url)
        try:
            await admin.execute(f"CREATE ROLE analyst LOGIN PASSWORD 'analyst-pw' IN ROLE {REPORTING_ROLE}")
        finally:
            await admin.close()
        analyst = await asyncpg.connect(pg.url.replace(f"{pg.app_user}:{pg.app_password}",
                                                       "analyst:analyst-pw"))
        try:
            assert await analyst.fetchval("SELECT name FROM reporting.assets WHERE symbol = 'OLD'") == "kept"
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await analyst.fetch("SELECT * FROM ledger.assets")
        finally:
            await analyst.close()
    finally:
        await asyncio.to_thread(pg.stop)
