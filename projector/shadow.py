"""The shadow schema a rebuild replays into, the atomic swap, and table checksums.

The live views are the tables of schema ``ledger`` (clients find them through the database's
``search_path``). A rebuild copies their definitions into ``ledger_rebuild`` — columns,
defaults, checks, primary and unique keys, storage parameters; the other indexes are added
after the bulk load — replays into it, then, in one transaction, moves each rebuilt table into
``ledger`` in place of the live one. Moving or dropping a table invalidates every cached plan that uses it, so
prepared statements of long-lived connections are re-planned, by name, onto the new tables.
Views of other schemas (``reporting``) that read a swapped table are re-created from their own
definitions, and the table's grants are carried over.
"""

import asyncpg

LIVE = "ledger"
SHADOW = "ledger_rebuild"
RETIRED = "ledger_retired"
OFFSETS = "projection_offsets"
#: NOTIFY channel told after a swap, for pools that want to drop their cached statements.
SWAPPED = "ledger_swapped"

# Columns holding the wall-clock time of a write rather than a fact from the events: they
# legitimately differ between a live table and its replay. wallet_balances.updated_at is the
# time of the balance's last event, so it stays in the comparison.
BOOKKEEPING = {"updated_at"}
EVENT_TIMED = {"wallet_balances"}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def tables(conn: asyncpg.Connection, schema: str = LIVE) -> list[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname", schema)
    return [r[0] for r in rows]


async def create_shadow(conn: asyncpg.Connection) -> list[str]:
    """(Re)create the shadow schema with an empty copy of every live table, keys included."""
    names = await tables(conn)
    async with conn.transaction():
        await conn.execute("SET LOCAL search_path = pg_catalog")  # definitions fully qualified
        await conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")
        await conn.execute(f"CREATE SCHEMA {SHADOW}")
        for t in names:
            await conn.execute(
                f"CREATE TABLE {SHADOW}.{_q(t)} (LIKE {LIVE}.{_q(t)} INCLUDING DEFAULTS "
                "INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING IDENTITY INCLUDING STORAGE "
                "INCLUDING COMMENTS)")
            for name, definition in await conn.fetch(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x') ORDER BY conname",
                f"{LIVE}.{_q(t)}"):
                await conn.execute(
                    f"ALTER TABLE {SHADOW}.{_q(t)} ADD CONSTRAINT {_q(name)} {definition}")
            # Storage parameters (fillfactor) are not part of LIKE.
            options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE oid = $1::regclass",
                                          f"{LIVE}.{_q(t)}")
            if options:
                await conn.execute(f"ALTER TABLE {SHADOW}.{_q(t)} SET ({', '.join(options)})")
            # Triggers are not part of LIKE either: the append-only guard of events and
            # ledger_entries (migration 0006) must hold for the tables a rebuild swaps in.
            for (definition,) in await conn.fetch(
                "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::regclass "
                "AND NOT tgisinternal ORDER BY tgname", f"{LIVE}.{_q(t)}"):
                await conn.execute(definition.replace(f" ON {LIVE}.", f" ON {SHADOW}.", 1))
    return names


async def create_indexes(conn: asyncpg.Connection) -> int:
    """Add the live tables' other indexes to the shadow (after the bulk load: faster)."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "JOIN pg_class c ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid)", LIVE)
    for table, definition in rows:
        live_on = f" ON {LIVE}.{table} "
        if live_on not in definition:
            live_on = f" ON {LIVE}.{_q(table)} "
        await conn.execute(definition.replace(live_on, f" ON {SHADOW}.{_q(table)} ", 1))
    await conn.execute(f"ANALYZE {', '.join(f'{SHADOW}.{_q(t)}' for t in await tables(conn, SHADOW))}")
    return len(rows)


async def offsets(conn: asyncpg.Connection, schema: str, projection: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        f"SELECT partition, next_offset FROM {schema}.{OFFSETS} WHERE projection = $1 AND topic = $2",
        projection, topic)
    return {r[0]: r[1] for r in rows}


_DEPENDENT_VIEWS = """
SELECT DISTINCT v.oid::regclass::text, vn.nspname, v.relname
FROM pg_depend d
JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class
JOIN pg_namespace vn ON vn.oid = v.relnamespace
WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
  AND d.refobjid = ANY($1::regclass[]) AND v.oid <> d.refobjid AND v.relkind = 'v'
"""

_GRANTS = """
SELECT a.privilege_type, a.is_grantable, CASE WHEN a.grantee = 0 THEN 'PUBLIC'
       ELSE quote_ident(pg_get_userbyid(a.grantee)) END
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = $1::regclass AND a.grantee <> c.relowner
"""


async def swap(conn: asyncpg.Connection, names: list[str]) -> None:
    """In one transaction: each named shadow table replaces its live twin; the rest is dropped.

    The caller holds the live projector paused and has checked that the shadow's offsets are
    the live ones, so the tables kept and the tables swapped in agree on what they contain.
    """
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '5s'")
        await conn.execute("SET LOCAL search_path = pg_catalog")  # view texts fully qualified
        live = [f"{LIVE}.{_q(t)}" for t in names]
        views = [(name, await conn.fetchval("SELECT pg_get_viewdef($1::regclass)", name))
                 for name, _, _ in await conn.fetch(_DEPENDENT_VIEWS, live)]
        await conn.execute(f"DROP SCHEMA IF EXISTS {RETIRED} CASCADE")
        await conn.execute(f"CREATE SCHEMA {RETIRED}")
        for t in names:
            for privilege, grantable, grantee in await conn.fetch(_GRANTS, f"{LIVE}.{_q(t)}"):
                await conn.execute(f"GRANT {privilege} ON {SHADOW}.{_q(t)} TO {grantee}"
                                   + (" WITH GRANT OPTION" if grantable else ""))
            await conn.execute(f"ALTER TABLE {LIVE}.{_q(t)} SET SCHEMA {RETIRED}")
            await conn.execute(f"ALTER TABLE {SHADOW}.{_q(t)} SET SCHEMA {LIVE}")
        for name, definition in views:
            await conn.execute(f"CREATE OR REPLACE VIEW {name} AS {definition}")
        await conn.execute(f"DROP SCHEMA {RETIRED} CASCADE")
        await conn.execute(f"DROP SCHEMA {SHADOW} CASCADE")
        await conn.execute("SELECT pg_notify($1, $2)", SWAPPED, ",".join(names))


async def drop_shadow(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {SHADOW} CASCADE")


async def checksums(conn: asyncpg.Connection, schema: str = LIVE,
                    names: list[str] | None = None) -> dict[str, tuple[int, str]]:
    """(rows, md5 of the rows in primary-key order) per table, bookkeeping columns left out."""
    result: dict[str, tuple[int, str]] = {}
    for t in names or await tables(conn, schema):
        columns = [r[0] for r in await conn.fetch(
            "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum", f"{schema}.{_q(t)}")
            if t in EVENT_TIMED or r[0] not in BOOKKEEPING]
        key = [r[0] for r in await conn.fetch(
            "SELECT a.attname FROM pg_index x JOIN pg_attribute a ON a.attrelid = x.indrelid "
            "AND a.attnum = ANY(x.indkey) WHERE x.indrelid = $1::regclass AND x.indisprimary "
            "ORDER BY array_position(x.indkey::int2[], a.attnum)", f"{schema}.{_q(t)}")] or columns
        row = ", ".join(_q(c) for c in columns)
        order = ", ".join(_q(c) for c in key)
        count, digest = await conn.fetchrow(
            f"SELECT count(*), coalesce(md5(string_agg(ROW({row})::text, E'\\n' ORDER BY {order})), '') "
            f"FROM {schema}.{_q(t)}")
        result[t] = (count, digest)
    return result


async def follow_swaps(pool: asyncpg.Pool, dsn: str) -> asyncpg.Connection:
    """Expire ``pool``'s connections whenever a rebuild swaps tables in; close the returned
    listener on shutdown. Cached plans are re-planned onto the new tables by PostgreSQL anyway;
    this also drops client-side statement caches that remember the old tables' types."""
    listener: asyncpg.Connection = await asyncpg.connect(dsn)

    def swapped(*_: object) -> None:
        pool.expire_connections()

    await listener.add_listener(SWAPPED, swapped)
    return listener
