"""The local stack: a real Kafka broker and PostgreSQL, the schema, the five processes.

Used by ``ledgerline up`` and by the test fixtures, so both start the system the same way.
``KAFKA_BOOTSTRAP`` / ``DATABASE_URL``, when set, point at existing servers instead.

The stack's secrets live in its home folder (``.ledgerline``), each in a file only its owner can
read: ``jwt-secret`` (signs the tokens), ``pg-superuser-password`` and ``pg-app-password`` (the
PostgreSQL superuser, used only to set the server up, and the role the processes connect as),
``anchor-key.pem`` (signs the hash chain's checkpoints; ``anchor-key.pub`` is its public key,
for verifiers, and ``anchors.jsonl`` the checkpoints to copy off-site: docs/audit.md).
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from common.auth import issue_token
from common.kafka import Kafka
from common.settings import Settings
from ledgerline.stack import StackError
from ledgerline.stack._aio import run_sync
from ledgerline.stack.anchor_key import kept_signing_key
from ledgerline.stack.child import ChildServer
from ledgerline.stack.kafka import STARTUP_JVM_OPTS, THROUGHPUT_JVM_OPTS, KafkaBroker, ensure_kafka_jars
from ledgerline.stack.postgres import APP_PASSWORD_FILE, LocalPostgres
from ledgerline.stack.secret_files import kept_secret
from ledgerline.stack.supervisor import Part, Supervisor
from ledgerline.stack.topics import ensure_topics

if TYPE_CHECKING:
    from ledgerline.stack.secure import SecureProfile

log = logging.getLogger("ledgerline.local")

PROCESSES = ("processor", "projector", "command-api", "query-api", "compliance")
#: The processes that consume in a Kafka group: each is a static member (KIP-345) with an id of
#: its slot, so a restarted one takes its partitions back at once instead of after the dead
#: member's session timeout.
GROUP_MEMBERS = ("processor", "projector", "compliance")
DEFAULT_PG_PORT = 55432


def home_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("LEDGERLINE_HOME") or ".ledgerline").absolute()


def cache_dir(env: Mapping[str, str]) -> Path:
    return Path(env.get("LEDGERLINE_CACHE") or ".cache").absolute()


@dataclass
class Infra:
    """The broker and database the processes use, and the servers this stack started.

    ``admin_url``: the database's superuser when this stack started the server (to make roles,
    say), else the same as ``database_url``."""

    bootstrap: str
    database_url: str
    admin_url: str
    broker: KafkaBroker | None = None
    postgres: LocalPostgres | None = None
    #: The broker as the stack's admin reaches it (its super user in the secure profile).
    kafka: Kafka | None = None
    #: The secure profile's certificates and credentials (``ledgerline up --secure``).
    profile: "SecureProfile | None" = None
    #: The wallets' data keys (memos are sealed with them): a file in the stack's home.
    keyring: Path | None = None

    def process_envs(self) -> dict[str, dict[str, str]]:
        """Per process, what it is handed on top of the common environment: in the secure
        profile, its own Kafka user and database role."""
        if self.profile is None:
            return {}
        return {name: self.profile.process_env(name, self.database_url) for name in PROCESSES}

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()


def start_infra(settings: Settings, home: Path, cache: Path, env: Mapping[str, str], *,
                jvm_opts: Sequence[str] = STARTUP_JVM_OPTS, secure: bool = False) -> Infra:
    """Start what ``env`` does not point at (the broker, the database), create the topics and
    migrate. ``jvm_opts``: the broker's JVM, quick to start by default (tests); ``make up`` and
    the benchmarks pass :data:`THROUGHPUT_JVM_OPTS`. ``secure``: the secure profile (docs/security.md): TLS and
    SASL/SCRAM with ACLs on the broker, TLS and a role per process on the database, each in a
    folder of its own (``kafka-secure``, ``postgres-secure``)."""
    infra = Infra(settings.kafka_bootstrap, settings.database_url, settings.database_url,
                  kafka=settings.kafka, keyring=home / "keyring.json")
    suffix = "-secure" if secure else ""
    try:
        if secure:
            from ledgerline.stack.pg_roles import PROCESS_ROLES
            from ledgerline.stack.secure import SecureProfile

            infra.profile = SecureProfile.prepare(home)
        if env.get("KAFKA_BOOTSTRAP"):
            log.info("using the Kafka broker at %s", settings.kafka_bootstrap)
        else:
            host, _, port = settings.kafka_bootstrap.rpartition(":")
            jars = ensure_kafka_jars(cache)
            infra.broker = KafkaBroker(jars, home / f"kafka{suffix}", host=host or "127.0.0.1",
                                       port=int(port), jvm_opts=jvm_opts,
                                       security=infra.profile.broker() if infra.profile else None)
            started = time.monotonic()
            infra.broker.start()
            infra.kafka = infra.broker.kafka
            log.info("Kafka broker up at %s in %.1fs", infra.broker.bootstrap,
                     time.monotonic() - started)
        if env.get("DATABASE_URL"):
            log.info("using the PostgreSQL server named by DATABASE_URL")
        else:
            profile = infra.profile
            infra.postgres = LocalPostgres(
                home / f"postgres{suffix}", port=_pg_port(env), secrets_dir=home,
                tls=profile.postgres_tls() if profile else None,
                ca_file=profile.ca_file if profile else None,
                process_roles={r: profile.role_password(r) for r in PROCESS_ROLES.values()} if profile else None)
            started = time.monotonic()
            infra.postgres.start()
            infra.database_url, infra.admin_url = infra.postgres.url, infra.postgres.admin_url
            log.info("PostgreSQL up at 127.0.0.1:%d in %.1fs", infra.postgres.port,
                     time.monotonic() - started)
        kafka = infra.kafka or infra.bootstrap
        run_sync(lambda: ensure_topics(kafka, settings.partitions))
        from ledgerline.migrate import upgrade

        upgrade(infra.database_url)
        if infra.profile is not None:
            _secure_grants(infra)
            infra.profile.write_admin_env(infra.bootstrap, infra.database_url)
        log.info("topics created and schema migrated")
    except BaseException:
        infra.stop()
        raise
    return infra


def _secure_grants(infra: Infra) -> None:
    """The secure profile's ACLs on the broker and privileges in the database."""
    import asyncpg

    from ledgerline.stack.kafka_acl import apply_acls
    from ledgerline.stack.pg_roles import grant

    if infra.broker is not None and infra.kafka is not None:
        kafka = infra.kafka
        run_sync(lambda: apply_acls(kafka))

    async def grants() -> None:
        conn = await asyncpg.connect(infra.database_url)
        try:
            await grant(conn, await conn.fetchval("SELECT current_user"))
        finally:
            await conn.close()

    if infra.postgres is not None:
        run_sync(grants)


def _pg_port(env: Mapping[str, str]) -> int:
    return int(env.get("LEDGERLINE_PG_PORT") or DEFAULT_PG_PORT)


def _server_part(name: str, server: ChildServer) -> Part:
    def restart() -> None:
        server.reap()  # what a crash left: the old process group, the shared memory it holds
        server.start()

    return Part(name, server.is_running, restart, lambda: server.pid)


def _process_part(name: str, services: "Services") -> Part:
    def restart() -> None:
        services.start_one(name)

    return Part(name, lambda: services.children[name].poll() is None, restart,
                lambda: services.children[name].pid)


def supervisor(infra: Infra, services: "Services | None", home: Path) -> Supervisor:
    """A supervisor of the servers this stack started and of ``services``' processes."""
    parts = []
    if infra.broker is not None:
        parts.append(_server_part("kafka", infra.broker))
    if infra.postgres is not None:
        parts.append(_server_part("postgres", infra.postgres))
    if services is not None:
        for name in services.children:
            parts.append(_process_part(name, services))
    home.mkdir(parents=True, exist_ok=True)
    return Supervisor(parts, home / "health.json")


def jwt_secret(home: Path, env: Mapping[str, str]) -> str:
    if env.get("LEDGERLINE_JWT_SECRET"):
        return env["LEDGERLINE_JWT_SECRET"]
    return kept_secret(home / "jwt-secret", nbytes=48)[0]


def local_database_url(env: Mapping[str, str]) -> str | None:
    """The local stack's database as its application role, when ``DATABASE_URL`` is not set and
    the stack has made its password: so ``ledgerline audit`` (or ``migrate``, ``rebuild``) in
    another shell reaches the database ``make up`` runs."""
    home = home_dir(env)
    if env.get("DATABASE_URL") or not (home / APP_PASSWORD_FILE).is_file():
        return None
    return LocalPostgres(home / "postgres", port=_pg_port(env), secrets_dir=home).url


@dataclass
class Services:
    """The five processes (the compliance monitor the fifth) as child processes, restarted if one dies."""

    env: dict[str, str]
    log_dir: Path
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: name -> what that process alone is handed on top of ``env`` (its own credentials).
    overlays: dict[str, dict[str, str]] = field(default_factory=dict)

    def start(self, names: tuple[str, ...] = PROCESSES) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            self.start_one(name)

    def start_one(self, name: str) -> subprocess.Popen[bytes]:
        env = {**self.env, **instance_env(name), **self.overlays.get(name, {})}
        with open(self.log_dir / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ledgerline", name], env=env,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.children[name] = proc
        return proc

    def restart_dead(self) -> list[str]:
        dead = [n for n, p in self.children.items() if p.poll() is not None]
        for name in dead:
            log.warning("%s exited with %s; restarting it (log: %s)", name,
                        self.children[name].returncode, self.log_dir / f"{name}.log")
            self.start_one(name)
        return dead

    def stop(self, timeout: float = 15.0) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.children.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_http(self, url: str, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self.children[name]
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise StackError(f"{name} exited with {proc.returncode} while starting:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise StackError(f"{name} did not become ready at {url} within {timeout:.0f}s")


def instance_env(name: str, slot: int = 0) -> dict[str, str]:
    """The static group membership of the process ``name`` in ``slot`` (one slot per process
    here): the same id at every restart, a different one for every process that runs at once.
    A static member does not leave its group when it stops: its partitions wait for it (or for
    its session timeout), which is what makes a restart quick."""
    if name not in GROUP_MEMBERS:
        return {}
    return {"LEDGERLINE_GROUP_INSTANCE_ID": f"{name}-{slot}"}


def anchor_env(home: Path, base: Mapping[str, str]) -> dict[str, str]:
    """The hash chain's key files in ``home`` (made on first start), unless ``base`` names them."""
    if base.get("LEDGERLINE_ANCHOR_KEY_FILE"):
        return {}
    private, public = kept_signing_key(home)
    return {"LEDGERLINE_ANCHOR_KEY_FILE": str(private),
            "LEDGERLINE_ANCHOR_PUBLIC_KEY_FILE": base.get("LEDGERLINE_ANCHOR_PUBLIC_KEY_FILE") or str(public),
            "LEDGERLINE_ANCHOR_FILE": base.get("LEDGERLINE_ANCHOR_FILE") or str(home / "anchors.jsonl")}


def process_env(settings: Settings, infra: Infra, secret: str, base: Mapping[str, str],
                home: Path | None = None) -> dict[str, str]:
    """The processes' environment; with ``home``, the hash chain's signing key kept there."""
    env = dict(base)
    if home is not None:
        env.update(anchor_env(home, base))
    env.update(
        KAFKA_BOOTSTRAP=infra.bootstrap,
        DATABASE_URL=infra.database_url,
        LEDGERLINE_JWT_SECRET=secret,
        LEDGERLINE_QUERY_PORT=str(settings.query_port),
        LEDGERLINE_COMMAND_PORT=str(settings.command_port),
        LEDGERLINE_PARTITIONS=str(settings.partitions),
        LEDGERLINE_PROJECTOR_METRICS_PORT=str(settings.projector_metrics_port),
        LEDGERLINE_PROCESSOR_METRICS_PORT=str(settings.processor_metrics_port),
        LEDGERLINE_COMPLIANCE_METRICS_PORT=str(settings.compliance_metrics_port),
    )
    if infra.keyring is not None and not base.get("LEDGERLINE_KEYRING"):
        env["LEDGERLINE_KEYRING"] = str(infra.keyring)
    return env


def demo_tokens(secret: str) -> dict[str, str]:
    return {
        "operator": issue_token(secret, "ops", roles=["operator"]),
        "compliance": issue_token(secret, "compliance", roles=["compliance"]),
        "auditor": issue_token(secret, "auditor", roles=["auditor"]),
        "issuer": issue_token(secret, "treasury", roles=["issuer"], wallets=["treasury"],
                              assets=["USDX", "BOND"]),
        "alice": issue_token(secret, "alice", wallets=["alice"]),
        "bob": issue_token(secret, "bob", wallets=["bob"]),
    }


def _post(url: str, token: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}",
                 "Prefer": "wait=10"},
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def load_demo(command_url: str, tokens: dict[str, str]) -> None:
    """A little demo data: two assets, an issue to alice, a transfer to bob. Loaded once."""
    status, _ = _post(f"{command_url}/v1/assets", tokens["issuer"], {
        "symbol": "USDX", "name": "Demo dollar", "decimals": 2, "issuer": "treasury",
        "max_supply": "10000000.00"})
    if status == 409:
        log.info("demo data already loaded")
        return
    _post(f"{command_url}/v1/assets", tokens["issuer"], {
        "symbol": "BOND", "name": "Demo bond", "decimals": 0, "issuer": "treasury",
        "max_supply": None})
    _post(f"{command_url}/v1/assets/USDX/issue", tokens["issuer"], {"to": "alice", "amount": "1000.00"})
    _post(f"{command_url}/v1/assets/BOND/issue", tokens["issuer"], {"to": "bob", "amount": "10"})
    status, answer = _post(f"{command_url}/v1/transfers", tokens["alice"], {
        "from": "alice", "to": "bob", "asset": "USDX", "amount": "25.00", "memo": "demo"})
    log.info("demo transfer alice -> bob: %s %s", status, answer.get("status"))


def _metrics(settings: Settings) -> str:
    ports = [("processor", settings.processor_metrics_port), ("projector", settings.projector_metrics_port),
             ("compliance", settings.compliance_metrics_port)]
    shown = [f"http://127.0.0.1:{port}/metrics ({name})" for name, port in ports if port]
    return ", ".join(shown) or "off"


def _shown_database(infra: Infra, home: Path) -> str:
    if infra.postgres is None:
        return "the server named by DATABASE_URL"
    return f"{infra.postgres.display_url}   (password in {home / APP_PASSWORD_FILE})"


def _secure_note(infra: Infra, home: Path) -> str:
    if infra.profile is None:
        return ""
    return (f"   (TLS + SASL/SCRAM-SHA-512, ACLs; CA {infra.profile.ca_file})\n"
            f"  Operator env  set -a; . {home / 'admin.env'}; set +a   (the stack admin, for audit, dlq, rebuild)")


def _banner(settings: Settings, infra: Infra, tokens: dict[str, str], home: Path) -> str:
    q = f"http://{settings.query_host}:{settings.query_port}/graphql"
    c = f"http://{settings.command_host}:{settings.command_port}"
    token_lines = "\n".join(f"  {role:<11} {tok}" for role, tok in tokens.items())
    return f"""
Ledgerline is running.

  GraphQL API   {q}   (GraphiQL in the browser; send a token as 'Authorization: Bearer ...')
  Console       {q.removesuffix("/graphql")}/console   (compliance: paste the compliance token below)
  Command API   {c}
  Kafka         {infra.bootstrap}{_secure_note(infra, home)}
  PostgreSQL    {_shown_database(infra, home)}
  Metrics       {_metrics(settings)}
  Logs          {home / "logs"}
  Health        ledgerline health   (every part is restarted if it dies: {home / "health.json"})
  Chain key     {home / "anchor-key.pub"}   (public key for `ledgerline audit --verify-chain`)

Tokens (valid 30 days):
{token_lines}

Try it:
  export ALICE='{tokens["alice"]}'
  curl -s -X POST {c}/v1/transfers -H "Authorization: Bearer $ALICE" \\
       -H 'Content-Type: application/json' -H 'Prefer: wait=5' \\
       -d '{{"from": "alice", "to": "bob", "asset": "USDX", "amount": "10.00"}}'
  curl -s {q} -H "Authorization: Bearer $ALICE" -H 'Content-Type: application/json' \\
       -d '{{"query": "{{ wallet(id: \\"alice\\") {{ balances {{ asset {{ symbol }} available held }} }} }}"}}'

Press Ctrl-C to stop everything.
"""


def _stop_on_signals() -> None:
    """SIGTERM (a process manager, ``kill``) and SIGHUP (the terminal went away) stop the stack
    as Ctrl-C does: the processes, the broker and the database are stopped, never left running.
    SIGINT too when the shell that started us ignores it (a background job)."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_local_stack(settings: Settings, *, demo: bool = True, secure: bool = False) -> None:
    env = dict(os.environ)
    home = home_dir(env)
    started = time.monotonic()
    _stop_on_signals()
    try:
        # stops what it started if stopped
        # The broker in its steady-state JVM: under a second more to start, and then faster for as
        # long as the stack runs (ledgerline.stack.kafka).
        infra = start_infra(settings, home, cache_dir(env), env, jvm_opts=THROUGHPUT_JVM_OPTS,
                            secure=secure)
    except KeyboardInterrupt:
        log.info("stopped while starting")
        return
    secret = jwt_secret(home, env)
    settings = replace(settings, jwt_secret=secret, database_url=infra.database_url)
    services = Services(process_env(settings, infra, secret, env, home), home / "logs",
                        overlays=infra.process_envs())
    watch: Supervisor | None = None
    try:
        services.start()
        watch = supervisor(infra, services, home)
        command_url = f"http://{settings.command_host}:{settings.command_port}"
        services.wait_http(f"{command_url}/readyz", "command-api")
        services.wait_http(f"http://{settings.query_host}:{settings.query_port}/readyz", "query-api")
        tokens = demo_tokens(secret)
        if demo:
            load_demo(command_url, tokens)
        print(_banner(settings, infra, tokens, home), flush=True)
        log.info("stack ready in %.1fs", time.monotonic() - started)
        while True:
            time.sleep(0.5)
            watch.tick()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        if watch is not None:
            watch.stop()
        services.stop()
        infra.stop()
        log.info("stopped")
