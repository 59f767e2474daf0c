"""The secure profile, end to end: a second broker (TLS + SASL/SCRAM-SHA-512, ACLs) and a second
PostgreSQL (TLS only, a role per process), started the way ``ledgerline up --secure`` starts them,
the four processes each with its own credentials; a transfer goes through, and every credential
is refused what its process has no business doing."""

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from common.kafka import Kafka, KafkaSecurity, client_options
from events import topics
from ledgerline import local
from ledgerline.stack.kafka_acl import USERS
from ledgerline.stack.pg_roles import COMMAND_ROLE, QUERY_ROLE
from ledgerline.stack.ports import free_port
from tests.conftest import SECRET, Running, Stack, own_infra, token
from tests.e2e.helpers import balances, funded_alice, graphql, post

pytestmark = pytest.mark.e2e

REFUSED = (TopicAuthorizationFailedError, GroupAuthorizationFailedError,
           TransactionalIdAuthorizationFailed)


@pytest.fixture(scope="module")
def secure() -> Iterator[Running]:
    home, settings, infra = own_infra("ledgerline-secure-test-", secure=True)
    settings = replace(settings, jwt_secret=SECRET,
                       query_port=free_port(), command_port=free_port(),
                       projector_metrics_port=free_port(), processor_metrics_port=free_port(),
                       compliance_metrics_port=free_port())
    stack = Stack(settings, infra, home)
    services = local.Services(stack.env, home / "logs", overlays=infra.process_envs())
    try:
        services.start()
        services.wait_http(f"http://127.0.0.1:{settings.command_port}/readyz", "command-api")
        services.wait_http(f"http://127.0.0.1:{settings.query_port}/readyz", "query-api")
        _wait_for_log(home / "logs" / "processor.log", "assigned partitions [0, 1, 2, 3]")
        _wait_for_log(home / "logs" / "projector.log", "assigned [")
        yield Running(stack, services)
    finally:
        services.stop()
        infra.stop()


def _wait_for_log(path: Path, text: str, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while text not in path.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not log {text!r} in {within}s")
        time.sleep(0.2)


def _as(running: Running, process: str) -> Kafka:
    """The broker as ``process``'s SCRAM user reaches it (what the stack hands that process)."""
    profile = running.stack.infra.profile
    assert profile is not None
    return Kafka(running.stack.infra.bootstrap, profile.broker_users_security(USERS[process]))


async def test_a_transfer_goes_through_over_tls_and_sasl(http: httpx.AsyncClient, secure: Running) -> None:
    funded = await funded_alice(http, secure, "100.00")
    sent = await post(http, secure, "/v1/transfers", funded.alice_token,
                      {"from": funded.alice, "to": funded.bob, "asset": funded.symbol, "amount": "40.00",
                       "memo": "sealed over TLS"})
    assert sent.status_code == 200, sent.text
    assert sent.json()["status"] == "completed", sent.text
    auditor = token("auditor", roles=["auditor"])
    assert await balances(http, secure, auditor, funded.bob) == {funded.symbol: ("40.00", "0.00")}
    assert await balances(http, secure, auditor, funded.alice) == {funded.symbol: ("60.00", "0.00")}
    memo = await graphql(http, secure, auditor, "query($id: ID!) { transfer(id: $id) { memo } }",
                         id=sent.json()["transfer_id"])
    assert memo["transfer"]["memo"] == "sealed over TLS"
    assert all(secure.alive().values()), secure.alive()


def test_each_process_is_handed_only_its_own_credentials(secure: Running) -> None:
    profile = secure.stack.infra.profile
    assert profile is not None
    passwords = {u: profile.kafka_password(u) for u in (*USERS.values(), "ledgerline-admin")}
    for name, proc in secure.services.children.items():
        environ = dict(kv.split("=", 1) for kv in
                       Path(f"/proc/{proc.pid}/environ").read_text().split("\0") if "=" in kv)
        own = USERS.get(name)
        assert environ.get("KAFKA_SASL_USERNAME", "") == (own or "")
        held = {u for u, pw in passwords.items() if pw in environ.values()}
        assert held == ({own} if own else set()), (name, held)
        if name == "processor":
            assert environ["DATABASE_URL"] == ""
        else:
            assert "sslmode=verify-full" in environ["DATABASE_URL"]
        # Only the command API (seals memos) and the projector (opens them) hold the data keys.
        assert bool(environ["LEDGERLINE_KEYRING"]) == (name in ("command-api", "projector"))


async def _produce(kafka: Kafka, topic: str, **options: Any) -> None:
    producer = AIOKafkaProducer(**client_options(kafka), acks="all", request_timeout_ms=10_000,
                                **options)
    try:
        async with asyncio.timeout(30):
            await producer.start()
            if options.get("transactional_id"):
                async with producer.transaction():
                    await producer.send_and_wait(topic, b"{}", key=b"wallet:nobody")
            else:
                await producer.send_and_wait(topic, b"{}", key=b"wallet:nobody")
    finally:
        await producer.stop()


async def _consume(kafka: Kafka, topic: str, group: str | None = None) -> None:
    """Read ``topic`` as ``kafka``'s user. A fetch the broker refuses raises; a topic the user
    may not even describe is left out of its metadata, which aiokafka only notes (it then waits
    for a leader forever): that is reported as the refusal it is."""
    consumer = AIOKafkaConsumer(**client_options(kafka), group_id=group, enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(30):
            await consumer.start()
            if group is None:
                tp = TopicPartition(topic, 0)
                consumer.assign([tp])
                consumer.seek(tp, 0)
            else:
                consumer.subscribe([topic])
            await consumer.getmany(timeout_ms=3000)
            await consumer.getmany(timeout_ms=1000)
            if topic in consumer._client.cluster.unauthorized_topics:
                raise TopicAuthorizationFailedError(topic)
    finally:
        await consumer.stop()


# (process, what it tries) -> refused by the ACLs.
REFUSALS = [
    ("command-api", "produce", topics.EVENTS),
    ("command-api", "produce", topics.STATE),
    ("command-api", "consume", topics.COMMANDS),
    ("command-api", "consume", topics.EVENTS),
    ("projector", "produce", topics.EVENTS),
    ("projector", "produce", topics.COMMANDS),
    ("projector", "consume", topics.COMMANDS),
    ("projector", "consume", topics.STATE),
    ("compliance", "produce", topics.EVENTS),
    ("compliance", "consume", topics.COMMANDS),
    ("processor", "produce", topics.EVENTS),  # only inside its transactions of its own ids
]


@pytest.mark.parametrize(("process", "action", "topic"), REFUSALS)
async def test_acls_refuse_what_a_process_has_no_business_doing(
        secure: Running, process: str, action: str, topic: str) -> None:
    kafka = _as(secure, process)
    with pytest.raises(REFUSED):
        if action == "produce":
            transactional = {"transactional_id": "intruder-tx"} if process == "processor" else {}
            await _produce(kafka, topic, **transactional)
        else:
            await _consume(kafka, topic)


async def test_acls_refuse_another_process_s_group(secure: Running) -> None:
    with pytest.raises(REFUSED):
        await _consume(_as(secure, "projector"), topics.EVENTS, group=topics.PROCESSOR_GROUP)
    with pytest.raises(REFUSED):
        await _consume(_as(secure, "compliance"), topics.EVENTS, group=topics.PROJECTOR_GROUP)


async def test_what_a_process_may_do_it_can(secure: Running) -> None:
    # The refusals above are ACLs, not a broken connection: the same users may do their work.
    await _produce(_as(secure, "command-api"), topics.COMMANDS)
    await _consume(_as(secure, "projector"), topics.EVENTS)
    await _produce(_as(secure, "projector"), topics.DLQ)


async def test_the_broker_refuses_a_client_without_credentials_or_tls(secure: Running) -> None:
    infra = secure.stack.infra
    profile = infra.profile
    assert profile is not None
    wrong = replace(profile.broker_users_security(USERS["command-api"]), sasl_password="not-it")
    tls_only = KafkaSecurity(protocol="SSL", ssl_cafile=str(profile.ca_file))
    for security in (wrong, tls_only, KafkaSecurity()):
        with pytest.raises((KafkaError, OSError, TimeoutError)):
            await _produce(Kafka(infra.bootstrap, security), topics.COMMANDS)


def _role_url(secure: Running, role: str) -> str:
    profile = secure.stack.infra.profile
    assert profile is not None
    return profile.database_url(secure.stack.infra.database_url, role)


@pytest.fixture
async def query_role(secure: Running) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_role_url(secure, QUERY_ROLE))
    yield conn
    await conn.close()


@pytest.fixture
async def command_role(secure: Running) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(_role_url(secure, COMMAND_ROLE))
    yield conn
    await conn.close()


async def test_the_query_role_reads_and_writes_nothing(query_role: asyncpg.Connection) -> None:
    assert await query_role.fetchval("SELECT count(*) FROM transfers") >= 0
    assert await query_role.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    for statement in (
        "INSERT INTO transfers SELECT * FROM transfers WHERE false",
        "UPDATE wallet_balances SET available = 0",
        "DELETE FROM events",
        "INSERT INTO idempotency_keys (command_id, principal, request_hash, response) "
        "VALUES ('x', 'p', 'h', '{}')",
        "CREATE TABLE public.mine (x int)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await query_role.execute(statement)


async def test_the_command_role_writes_only_idempotency_keys(command_role: asyncpg.Connection) -> None:
    async with command_role.transaction():
        await command_role.execute(
            "INSERT INTO idempotency_keys (command_id, principal, request_hash, response) "
            "VALUES ('secure-test', 'p', 'h', '{}')")
        await command_role.execute("DELETE FROM idempotency_keys WHERE command_id = 'secure-test'")
    assert await command_role.fetchval("SELECT count(*) FROM command_log") >= 0
    for statement in (
        "UPDATE wallet_balances SET available = 0",
        "INSERT INTO command_log SELECT * FROM command_log WHERE false",
        "DELETE FROM transfers",
        "TRUNCATE events",
        "CREATE TABLE public.mine (x int)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await command_role.execute(statement)


async def test_the_database_refuses_connections_without_tls(secure: Running) -> None:
    url = _role_url(secure, QUERY_ROLE).split("?")[0]
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(url, ssl=False)
    # ...and the server's certificate is checked against the stack's CA, by name.
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncpg.connect(url, ssl=ssl.create_default_context())


def test_secrets_and_keys_are_readable_by_their_owner_only(secure: Running) -> None:
    home = secure.stack.home
    private = [*home.glob("*password"), *home.glob("tls/*.key"), home / "tls" / "broker.p12",
               home / "admin.env", home / "kafka-secure" / "server.properties", home / "keyring.json"]
    assert len(private) >= 10
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in private} == \
        {p.name: "0o600" for p in private}


def test_no_password_is_on_any_command_line(secure: Running) -> None:
    """Command lines are anybody's to read (ps): none on this machine, the broker's, the
    database's and the five processes' included, holds a password of the profile. (Formatting
    the broker's storage, over before this runs: tests/unit/test_stack_secrets.py.)"""
    home = secure.stack.home
    secrets = [p.read_text().strip() for p in home.glob("*password")]
    assert len(secrets) >= 5
    infra = secure.stack.infra
    started = [infra.broker.pid if infra.broker else None,
               *(p.pid for p in secure.services.children.values())]
    assert all(started)
    seen = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        seen += 1
        leaked = [s[:4] + "…" for s in secrets if s and s in line]
        assert not leaked, f"{cmdline}: {line[:200]!r} holds a password ({leaked})"
    assert seen >= len(started)
