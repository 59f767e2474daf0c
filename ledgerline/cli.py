"""``ledgerline``: one console script, a subcommand per process."""

import argparse
import contextlib
import logging
import os
import sys
from dataclasses import replace

from common import logs, runtime
from common.kafka import uvloop_safe
from common.settings import Settings, SettingsError, asyncpg_dsn, load

log = logging.getLogger("ledgerline")


def command_api(settings: Settings, _args: argparse.Namespace) -> None:
    from command.bootstrap import main as run

    run(settings)


def query_api(settings: Settings, _args: argparse.Namespace) -> None:
    from query.bootstrap import main as run

    run(settings)


def processor(settings: Settings, _args: argparse.Namespace) -> None:
    from processor.bootstrap import main as run

    run(settings)


def projector(settings: Settings, _args: argparse.Namespace) -> None:
    from projector.bootstrap import main as run

    run(settings)


def compliance(settings: Settings, args: argparse.Namespace) -> None:
    if getattr(args, "compliance_command", None) == "backtest":
        from compliance.backtest import main as backtest

        raise SystemExit(backtest(settings, args.rules))
    from compliance.bootstrap import main as run

    run(settings)


def dlq(settings: Settings, args: argparse.Namespace) -> None:
    from projector.bootstrap import dlq_list, dlq_redrive

    if args.dlq_command == "list":
        runtime.run(dlq_list(settings, as_json=args.json), uvloop=uvloop_safe(settings.kafka))
    else:
        if not args.all and not args.letter:
            raise SettingsError("name the dead letters to re-drive (PARTITION:OFFSET ...) or pass --all")
        code = runtime.run(dlq_redrive(settings, None if args.all else args.letter,
                                       force=args.force, dry_run=args.dry_run),
                           uvloop=uvloop_safe(settings.kafka))
        raise SystemExit(code)


def rebuild(settings: Settings, args: argparse.Namespace) -> None:
    from projector.bootstrap import run_rebuild

    runtime.run(run_rebuild(settings, args.projection or None, swap=not args.no_swap),
                uvloop=uvloop_safe(settings.kafka))


def migrate(settings: Settings, _args: argparse.Namespace) -> None:
    from ledgerline.migrate import upgrade

    upgrade(settings.database_url)
    log.info("database schema is at head")


def topics(settings: Settings, _args: argparse.Namespace) -> None:
    from ledgerline.stack.topics import ensure_topics

    runtime.run(ensure_topics(settings.kafka, settings.partitions), uvloop=uvloop_safe(settings.kafka))
    log.info("topics ready with %d partitions", settings.partitions)


def token(settings: Settings, args: argparse.Namespace) -> None:

    from common.auth import issue_token
    from ledgerline import local

    # Without LEDGERLINE_JWT_SECRET, sign with the local stack's own secret.
    secret = settings.jwt_secret or local.jwt_secret(local.home_dir(os.environ), os.environ)
    print(issue_token(secret, args.sub, wallets=args.wallet, roles=args.role, assets=args.asset,
                      ttl_seconds=args.ttl))


def _positions(option: str, given: list[str]) -> dict[int, int]:
    found: dict[int, int] = {}
    for position in given:
        partition, _, offset = position.partition(":")
        if not (partition.isdigit() and offset.isdigit()):
            raise SettingsError(f"{option} {position!r}: expected PARTITION:OFFSET")
        found[int(partition)] = int(offset)
    return found


def verify_chain(settings: Settings, args: argparse.Namespace) -> None:
    from aiokafka.errors import KafkaError

    from ledgerline import local
    from ledgerline.stack.anchor_key import PUBLIC_FILE
    from processor.chain_audit import public_keys
    from processor.chain_audit import verify_chain as run_verify

    paths = args.public_key or ([settings.anchor_public_key_file] if settings.anchor_public_key_file
                                else [])
    if not paths and (local.home_dir(os.environ) / PUBLIC_FILE).is_file():
        paths = [str(local.home_dir(os.environ) / PUBLIC_FILE)]  # the local stack's key
    if not paths:
        raise SettingsError("no public key to check the chain's signatures with: pass --public-key "
                            "or set LEDGERLINE_ANCHOR_PUBLIC_KEY_FILE")
    start, until = _positions("--from", args.start), _positions("--to", args.until)
    dsn = None if args.events_only else asyncpg_dsn(settings.database_url)
    try:
        keys = public_keys(paths)
        code = runtime.run(run_verify(settings.kafka_bootstrap, dsn, keys, start=start, until=until,
                                      wait=args.wait))
    except (ValueError, KafkaError, OSError) as exc:
        print(f"ledgerline audit: cannot run: {exc!r}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


def audit(settings: Settings, args: argparse.Namespace) -> None:
    from aiokafka.errors import KafkaError

    if args.verify_chain:
        verify_chain(settings, args)

    from processor.audit import AuditError
    from processor.audit import audit as run_audit

    dsn = None if args.events_only else asyncpg_dsn(settings.database_url)
    try:
        scope = frozenset(args.asset) if args.asset else None
        code = runtime.run(run_audit(settings.kafka, dsn, wait=args.wait, assets=scope),
                           uvloop=uvloop_safe(settings.kafka))
    except (AuditError, KafkaError, OSError) as exc:
        print(f"ledgerline audit: cannot run: {exc!r}", file=sys.stderr)
        code = 2
    raise SystemExit(code)


def up(settings: Settings, args: argparse.Namespace) -> None:
    from ledgerline.local import run_local_stack

    secure = args.secure or os.environ.get("LEDGERLINE_SECURE", "") in ("1", "true", "yes")
    run_local_stack(settings, demo=not args.no_demo, secure=secure)


def _with_local_database(settings: Settings, command: str) -> Settings:
    """Without DATABASE_URL, the local stack's database (its password is in its home folder)."""
    if command in ("up", "token", "topics") or os.environ.get("DATABASE_URL"):
        return settings
    from ledgerline import local

    url = local.local_database_url(os.environ)
    return settings if url is None else replace(settings, database_url=url)


def health(_settings: Settings, _args: argparse.Namespace) -> None:
    """Each part of a running ``ledgerline up``, from the supervisor's ``health.json``."""
    import json

    from ledgerline.local import home_dir

    path = home_dir(os.environ) / "health.json"
    try:
        parts = json.loads(path.read_text())["parts"]
    except (OSError, ValueError, KeyError):
        print(f"no health report at {path}: is `ledgerline up` running here?", file=sys.stderr)
        raise SystemExit(2) from None
    for name, part in parts.items():
        outage = part["last_outage_seconds"]
        print(f"{name:<12} {part['state']:<5} pid {part['pid'] or '-':<8} restarts {part['restarts']}"
              + ("" if outage is None else f", last outage {outage:.1f}s"))
    raise SystemExit(0 if all(p["state"] == "up" for p in parts.values()) else 1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="ledgerline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    u = sub.add_parser("up", help="run the whole local stack: broker, database, all processes, demo data")
    u.add_argument("--no-demo", action="store_true", help="do not load demo data")
    u.add_argument("--secure", action="store_true",
                   help="the secure profile: TLS, SASL/SCRAM and ACLs on Kafka, TLS and a role per "
                        "process on PostgreSQL (also LEDGERLINE_SECURE=1)")
    sub.add_parser("health", help="each part of the running local stack: up or down, pid, restarts")
    sub.add_parser("command-api", help="the HTTP command API (default 127.0.0.1:8001)")
    sub.add_parser("query-api", help="the GraphQL API (default 127.0.0.1:8000/graphql)")
    sub.add_parser("processor", help="the ledger processor: decides commands")
    sub.add_parser("projector", help="the projector: builds the Postgres views")
    c = sub.add_parser("compliance", help="the compliance monitor: rules over the events, alerts, cases")
    csub = c.add_subparsers(dest="compliance_command", metavar="ACTION")
    csub.add_parser("backtest", help="replay the event log through a candidate rule set into a shadow "
                                     "schema; print per rule the alerts new, gone and unchanged") \
        .add_argument("rules", metavar="RULES_FILE", help="the candidate rules (TOML)")
    sub.add_parser("migrate", help="bring the database schema to the latest version")
    sub.add_parser("topics", help="create the Kafka topics if they are missing")
    a = sub.add_parser("audit", help="check conservation per asset from the events, and the views "
                                     "against them; exit 1 on any mismatch")
    a.add_argument("--wait", type=float, default=30.0,
                   help="seconds to wait for the projector to reach the events read (default 30)")
    a.add_argument("--events-only", action="store_true", help="do not compare with the views")
    a.add_argument("--asset", action="append", default=[], metavar="SYMBOL",
                   help="check only this asset (repeatable; default every asset)")
    a.add_argument("--verify-chain", action="store_true",
                   help="instead: verify the hash chain and its signatures in ledger.events, "
                        "ledger.anchors and the events table; name the first broken record")
    a.add_argument("--public-key", action="append", default=[], metavar="PEM",
                   help="with --verify-chain: a trusted public key (repeatable; default "
                        "LEDGERLINE_ANCHOR_PUBLIC_KEY_FILE, else the local stack's)")
    a.add_argument("--from", dest="start", action="append", default=[], metavar="PARTITION:OFFSET",
                   help="with --verify-chain: start this partition of ledger.events there "
                        "(repeatable; others from 0); a chain's first record there is taken as it is")
    a.add_argument("--to", dest="until", action="append", default=[], metavar="PARTITION:OFFSET",
                   help="with --verify-chain: stop this partition of ledger.events before there "
                        "(repeatable; others at their end)")
    d = sub.add_parser("dlq", help="list and re-drive dead letters (ledger.dlq)")
    dsub = d.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dsub.add_parser("list", help="every dead letter: position, time, source, type, error") \
        .add_argument("--json", action="store_true", help="one JSON object a line")
    r = dsub.add_parser("redrive", help="send dead letters back to their topic, once each")
    r.add_argument("letter", nargs="*", help="a dead letter as PARTITION:OFFSET in ledger.dlq")
    r.add_argument("--all", action="store_true", help="every dead letter not re-driven yet")
    r.add_argument("--force", action="store_true",
                   help="re-drive events even when later events of their aggregate are in the views")
    r.add_argument("--dry-run", action="store_true", help="say what would be re-driven, send nothing")
    b = sub.add_parser("rebuild", help="replay the views from offset 0 into a shadow schema, then swap")
    b.add_argument("--projection", action="append", default=[], metavar="VIEW",
                   help="a view (table) to rebuild, repeatable; default: all")
    b.add_argument("--no-swap", action="store_true",
                   help="leave the rebuilt copy in schema ledger_rebuild, compare, do not swap")
    t = sub.add_parser("token", help="print a bearer token (LEDGERLINE_JWT_SECRET, else the local stack's)")
    t.add_argument("--sub", required=True, help="the principal's name")
    t.add_argument("--wallet", action="append", default=[], help="a wallet it owns (repeatable)")
    t.add_argument("--role", action="append", default=[],
                   choices=["operator", "compliance", "auditor", "issuer"])
    t.add_argument("--asset", action="append", default=[], help="an asset it may issue")
    t.add_argument("--ttl", type=int, default=24 * 3600, help="seconds until it expires")
    args = parser.parse_args(argv)
    handlers = {
        "up": up, "command-api": command_api, "query-api": query_api, "processor": processor,
        "projector": projector, "compliance": compliance, "dlq": dlq, "rebuild": rebuild,
        "migrate": migrate, "topics": topics, "token": token, "audit": audit, "health": health,
    }
    try:
        settings = _with_local_database(load(), args.command)
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
