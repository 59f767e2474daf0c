"""Session fixtures: one real Kafka broker and one real PostgreSQL for the whole run, started the
way the local stack starts them (or the servers named by KAFKA_BOOTSTRAP / DATABASE_URL), and,
for the end-to-end tests, the five processes as real child processes."""

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest

from common.auth import issue_token
from common.keyring import LocalKeyring
from common.settings import Settings, load
from ledgerline import local
from ledgerline.stack.ports import free_port

REPO = Path(__file__).resolve().parents[1]
COMPLIANCE_RULES = REPO / "tests" / "compliance_rules.toml"
SECRET = "test-secret-" + "x" * 40


@dataclass
class Stack:
    settings: Settings
    infra: local.Infra
    home: Path

    @property
    def env(self) -> dict[str, str]:
        env = local.process_env(self.settings, self.infra, SECRET, os.environ, self.home)
        env.setdefault("LEDGERLINE_COMPLIANCE_RULES", str(COMPLIANCE_RULES))
        return env

    @property
    def keys(self) -> LocalKeyring | None:
        """The wallets' data keys the stack's processes seal and open memos with."""
        return LocalKeyring(self.infra.keyring) if self.infra.keyring else None


def own_infra(prefix: str, *, secure: bool = False) -> tuple[Path, Settings, local.Infra]:
    """A broker and a database of a test module's own (never the ones the environment points
    at), in a scratch folder named ``prefix``: the folder, the settings to reach them (the
    database URL filled in), and what to stop afterwards."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "DATABASE_URL")}
    env["LEDGERLINE_PG_PORT"] = str(free_port())
    settings = replace(load(env), kafka_bootstrap=f"127.0.0.1:{free_port()}")
    cache = Path(env.get("LEDGERLINE_CACHE") or REPO / ".cache")
    infra = local.start_infra(settings, home, cache, env, secure=secure)
    return home, replace(settings, database_url=infra.database_url), infra


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    home = Path(tempfile.mkdtemp(prefix="ledgerline-test-"))
    env = dict(os.environ)
    settings = load(env)
    if not env.get("KAFKA_BOOTSTRAP"):
        settings = replace(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}")
    if not env.get("DATABASE_URL"):
        env["LEDGERLINE_PG_PORT"] = str(free_port())
    cache = Path(env.get("LEDGERLINE_CACHE") or REPO / ".cache")
    infra = local.start_infra(settings, home, cache, env)
    settings = replace(settings, database_url=infra.database_url, jwt_secret=SECRET,
                       query_port=free_port(), command_port=free_port(),
                       projector_metrics_port=free_port(), processor_metrics_port=free_port(),
                       compliance_metrics_port=free_port())
    try:
        yield Stack(settings, infra, home)
    finally:
        infra.stop()


@dataclass
class Running:
    stack: Stack
    services: local.Services

    @property
    def command_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.settings.command_port}"

    @property
    def graphql_url(self) -> str:
        return f"http://127.0.0.1:{self.stack.settings.query_port}/graphql"

    def alive(self) -> dict[str, bool]:
        return {n: p.poll() is None for n, p in self.services.children.items()}


@pytest.fixture(scope="session")
def running(stack: Stack) -> Iterator[Running]:
    services = local.Services(stack.env, stack.home / "logs")
    services.start()
    try:
        s = stack.settings
        services.wait_http(f"http://127.0.0.1:{s.command_port}/readyz", "command-api")
        services.wait_http(f"http://127.0.0.1:{s.query_port}/readyz", "query-api")
        yield Running(stack, services)
    finally:
        services.stop()


def token(sub: str, *, wallets: list[str] | None = None, roles: list[str] | None = None,
          assets: list[str] | None = None) -> str:
    return issue_token(SECRET, sub, wallets=wallets, roles=roles, assets=assets)


def unique(prefix: str) -> str:
    """Names no other test uses, since all tests share one broker and one database."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def unique_symbol() -> str:
    return "T" + uuid.uuid4().hex[:8].upper()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client
