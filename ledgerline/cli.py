"""``ledgerline``: one console script, a subcommand per process."""

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable

from ledgerline import logs
from ledgerline.settings import Settings, SettingsError, asyncpg_dsn, load

log = logging.getLogger("ledgerline")


async def _until_signalled(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


def _serve(app_factory: Callable[[Settings], object], host: str, port: int, settings: Settings) -> None:
    import uvicorn

    uvicorn.run(app_factory(settings), host=host, port=port, log_level="warning",  # type: ignore[arg-type]
                access_log=False, lifespan="on")


def command_api(settings: Settings, _args: argparse.Namespace) -> None:
    from command.api import create_app

    log.info("command API on http://%s:%d", settings.command_host, settings.command_port)
    _serve(create_app, settings.command_host, settings.command_port, settings)


def query_api(settings: Settings, _args: argparse.Namespace) -> None:
    from query.app import create_app

    log.info("GraphQL API on http://%s:%d/graphql", settings.query_host, settings.query_port)
    _serve(create_app, settings.query_host, settings.query_port, settings)


def processor(settings: Settings, _args: argparse.Namespace) -> None:
    from command.faults import Fault
    from command.processor import Processor

    async def run(stop: asyncio.Event) -> None:
        await Processor(
            settings.kafka_bootstrap, max_records=settings.processor_max_records,
            session_timeout_ms=settings.processor_session_timeout_ms, fault=Fault.from_env(os.environ),
        ).run(stop)

    asyncio.run(_until_signalled(run))


def projector(settings: Settings, _args: argparse.Namespace) -> None:
    import asyncpg

    from projector.worker import Projector

    async def run(stop: asyncio.Event) -> None:
        pool = await asyncpg.create_pool(asyncpg_dsn(settings.database_url), min_size=1, max_size=2)
        try:
            await Projector(settings.kafka_bootstrap, pool).run(stop)
        finally:
            await pool.close()

    asyncio.run(_until_signalled(run))


def migrate(settings: Settings, _args: argparse.Namespace) -> None:
    from ledgerline.migrate import upgrade

    upgrade(settings.database_url)
    log.info("database schema is at head")


def topics(settings: Settings, _args: argparse.Namespace) -> None:
    from ledgerline.stack.topics import ensure_topics

    asyncio.run(ensure_topics(settings.kafka_bootstrap, settings.partitions))
    log.info("topics ready with %d partitions", settings.partitions)


def token(settings: Settings, args: argparse.Namespace) -> None:
    from ledgerline.auth import issue_token

    print(issue_token(settings.require_jwt_secret(), args.sub, wallets=args.wallet,
                      roles=args.role, assets=args.asset, ttl_seconds=args.ttl))


def up(settings: Settings, args: argparse.Namespace) -> None:
    from ledgerline.local import run_local_stack

    run_local_stack(settings, demo=not args.no_demo)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ledgerline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="run the whole local stack: broker, database, all processes, demo data") \
        .add_argument("--no-demo", action="store_true", help="do not load demo data")
    sub.add_parser("command-api", help="the HTTP command API (default 127.0.0.1:8001)")
    sub.add_parser("query-api", help="the GraphQL API (default 127.0.0.1:8000/graphql)")
    sub.add_parser("processor", help="the ledger processor: decides commands")
    sub.add_parser("projector", help="the projector: builds the Postgres views")
    sub.add_parser("migrate", help="bring the database schema to the latest version")
    sub.add_parser("topics", help="create the Kafka topics if they are missing")
    t = sub.add_parser("token", help="print a bearer token signed with LEDGERLINE_JWT_SECRET")
    t.add_argument("--sub", required=True, help="the principal's name")
    t.add_argument("--wallet", action="append", default=[], help="a wallet it owns (repeatable)")
    t.add_argument("--role", action="append", default=[],
                   choices=["operator", "compliance", "auditor", "issuer"])
    t.add_argument("--asset", action="append", default=[], help="an asset it may issue")
    t.add_argument("--ttl", type=int, default=24 * 3600, help="seconds until it expires")
    args = parser.parse_args(argv)
    handlers = {
        "up": up, "command-api": command_api, "query-api": query_api, "processor": processor,
        "projector": projector, "migrate": migrate, "topics": topics, "token": token,
    }
    try:
        settings = load()
        logs.setup(args.command, settings.log_level)
        handlers[args.command](settings, args)
    except SettingsError as exc:
        print(f"ledgerline: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):
            log.info("interrupted")


if __name__ == "__main__":
    main()
