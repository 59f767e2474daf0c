"""Kafka client security: read from the environment under the Java clients' names, checked at
start, and applied to every aiokafka client the project makes (through one helper)."""

import ast
import ssl
from pathlib import Path

import pytest

from common.kafka import Kafka, KafkaSecurity, client_options, security_env, security_from_env
from common.settings import SettingsError, load

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
SCANNED = ("command", "processor", "projector", "query", "common", "ledgerline", "bench", "tests",
           "compliance")


def test_plaintext_by_default() -> None:
    s = load({})
    assert s.kafka_security == KafkaSecurity()
    assert client_options(s.kafka) == {"bootstrap_servers": "127.0.0.1:9092",
                                       "security_protocol": "PLAINTEXT"}


def test_sasl_scram_over_tls_from_the_environment(tmp_path: Path) -> None:
    ca = _a_ca_file(tmp_path)
    env = {"KAFKA_BOOTSTRAP": "broker:9093", "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
           "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": "ledgerline-command",
           "KAFKA_SASL_PASSWORD": "pw", "KAFKA_SSL_CAFILE": str(ca)}
    options = client_options(load(env).kafka)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) \
        == ("SCRAM-SHA-512", "ledgerline-command", "pw")
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert "pw" not in repr(load(env).kafka_security)  # secrets stay out of logs
    # What the local stack hands a child process reads back as the same settings.
    assert security_from_env(security_env(load(env).kafka_security)) == load(env).kafka_security


@pytest.mark.parametrize(("env", "named"), [
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
      "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_"),
    ({"KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "KAFKA_SSL_CAFILE"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME"),
])
def test_a_setting_a_broker_would_refuse_fails_at_start_naming_it(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load(env)


def test_hostname_checks_can_be_turned_off_for_a_broker_addressed_by_ip() -> None:
    security = load({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CHECK_HOSTNAME": "false"}).kafka_security
    context = client_options(Kafka("10.0.0.1:9093", security))["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


def _calls_without_the_helper(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else \
            node.func.attr if isinstance(node.func, ast.Attribute) else None
        if name not in CLIENTS:
            continue
        spread = [k.value for k in node.keywords if k.arg is None]
        helped = any(isinstance(v, ast.Call) and isinstance(v.func, ast.Name)
                     and v.func.id == "client_options" for v in spread)
        if not helped or any(k.arg == "bootstrap_servers" for k in node.keywords):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_every_kafka_client_is_made_through_client_options() -> None:
    paths = [p for top in SCANNED if (ROOT / top).is_dir() for p in sorted((ROOT / top).rglob("*.py"))]
    clients = [p for p in paths if any(c + "(" in p.read_text() for c in CLIENTS)]
    assert len(clients) > 10  # the scan sees them
    assert [bad for p in clients for bad in _calls_without_the_helper(p)] == []


def _a_ca_file(tmp_path: Path) -> Path:
    from ledgerline.stack.tls import CertificateAuthority

    return CertificateAuthority.ensure(tmp_path).cert_path


def test_clients_that_speak_tls_to_kafka_run_on_asyncio_s_loop() -> None:
    from common.kafka import uvloop_safe

    assert uvloop_safe("127.0.0.1:9092") and uvloop_safe(load({}).kafka)
    sasl_plain = load({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
                       "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"})
    assert uvloop_safe(sasl_plain.kafka)
    assert not uvloop_safe(load({"KAFKA_SECURITY_PROTOCOL": "SSL"}).kafka)


def test_the_acls_grant_each_process_only_its_own_topics() -> None:
    from events import topics
    from ledgerline.stack.kafka_acl import GROUP, READ, TOPIC, TRANSACTIONAL_ID, USERS, WRITE, acls

    def granted(process: str, kind: int, operation: int) -> set[str]:
        return {a.name for a in acls() if a.user == USERS[process] and a.resource_type == kind
                and a.operation == operation}

    assert granted("command-api", TOPIC, WRITE) == {topics.COMMANDS, topics.CASE_COMMANDS,
                                                    topics.SANCTIONS, topics.KYC}
    assert granted("command-api", TOPIC, READ) == set()
    assert granted("processor", TOPIC, WRITE) == {topics.EVENTS, topics.STATE, topics.COMMANDS, topics.DLQ,
                                                  topics.ANCHORS}
    assert granted("projector", TOPIC, WRITE) == {topics.DLQ}
    assert granted("compliance", TOPIC, WRITE) == {topics.DLQ, topics.ALERTS, topics.CASE_EVENTS,
                                                   topics.COMMANDS}
    assert topics.EVENTS in granted("projector", TOPIC, READ) & granted("compliance", TOPIC, READ)
    writers_of_events = {a.user for a in acls() if a.name == topics.EVENTS and a.operation == WRITE}
    assert writers_of_events == {USERS["processor"]}
    assert granted("processor", TRANSACTIONAL_ID, WRITE) == {topics.PROCESSOR_GROUP}
    assert {p: granted(p, GROUP, READ) for p in USERS} == {
        "command-api": set(), "processor": {topics.PROCESSOR_GROUP},
        "projector": {topics.PROJECTOR_GROUP}, "compliance": {"ledger-compliance"}}
