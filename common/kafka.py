"""How every Kafka client of the project reaches the brokers: address and security, in one place.

Every producer, consumer and admin client is made with ``**client_options(kafka)``, so a broker
that asks for TLS and SASL is spoken to the same way by every process, tool and test. The
settings mirror the Java clients' names (``security.protocol``, ``sasl.mechanism``,
``ssl.cafile``…) as environment variables: ``KAFKA_SECURITY_PROTOCOL``, ``KAFKA_SASL_MECHANISM``,
``KAFKA_SASL_USERNAME``, ``KAFKA_SASL_PASSWORD``, ``KAFKA_SSL_CAFILE``, ``KAFKA_SSL_CERTFILE``,
``KAFKA_SSL_KEYFILE``, ``KAFKA_SSL_KEY_PASSWORD``, ``KAFKA_SSL_CHECK_HOSTNAME``.
"""

import functools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: What aiokafka can speak without extra packages (no Kerberos, no OAuth token provider here).
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSettingsError(RuntimeError):
    """A Kafka security setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class KafkaSecurity:
    """``security.protocol`` and what it needs: SASL credentials, TLS trust and client keys."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class Kafka:
    """A Kafka cluster as one client sees it: where it is, and how to prove who we are."""

    bootstrap: str
    security: KafkaSecurity = field(default_factory=KafkaSecurity)


#: A cluster, or only its address (plaintext; tests and benchmarks against the local broker).
KafkaTarget = Kafka | str


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on", "https"):
        return True
    if raw in ("0", "false", "no", "off", "none"):
        return False
    raise KafkaSettingsError(f"{name}={env.get(name)!r} is neither true nor false")


def security_from_env(env: Mapping[str, str]) -> KafkaSecurity:
    """The ``KAFKA_*`` security settings; fails fast on a combination a broker would refuse."""
    protocol = (env.get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT").strip().upper()
    if protocol not in PROTOCOLS:
        raise KafkaSettingsError(f"KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    security = KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=(env.get("KAFKA_SASL_MECHANISM") or "").strip().upper() or None,
        sasl_username=env.get("KAFKA_SASL_USERNAME") or None,
        sasl_password=env.get("KAFKA_SASL_PASSWORD") or None,
        ssl_cafile=env.get("KAFKA_SSL_CAFILE") or None,
        ssl_certfile=env.get("KAFKA_SSL_CERTFILE") or None,
        ssl_keyfile=env.get("KAFKA_SSL_KEYFILE") or None,
        ssl_key_password=env.get("KAFKA_SSL_KEY_PASSWORD") or None,
        ssl_check_hostname=_flag(env, "KAFKA_SSL_CHECK_HOSTNAME", True),
    )
    check(security)
    return security


def check(security: KafkaSecurity) -> None:
    """Raise KafkaSettingsError, naming the variable, if ``security`` cannot work."""
    s = security
    if s.uses_sasl:
        if s.sasl_mechanism is None:
            raise KafkaSettingsError(f"KAFKA_SECURITY_PROTOCOL={s.protocol} needs KAFKA_SASL_MECHANISM")
        if s.sasl_mechanism not in MECHANISMS:
            raise KafkaSettingsError(
                f"KAFKA_SASL_MECHANISM={s.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}")
        for name, value in (("KAFKA_SASL_USERNAME", s.sasl_username),
                            ("KAFKA_SASL_PASSWORD", s.sasl_password)):
            if not value:
                raise KafkaSettingsError(f"KAFKA_SECURITY_PROTOCOL={s.protocol} needs {name}")
    elif s.sasl_mechanism or s.sasl_username or s.sasl_password:
        raise KafkaSettingsError(
            f"KAFKA_SASL_* is set but KAFKA_SECURITY_PROTOCOL={s.protocol} does not use SASL "
            "(SASL_SSL or SASL_PLAINTEXT)")
    tls_files = (("KAFKA_SSL_CAFILE", s.ssl_cafile), ("KAFKA_SSL_CERTFILE", s.ssl_certfile),
                 ("KAFKA_SSL_KEYFILE", s.ssl_keyfile))
    if not s.uses_ssl and any(value for _, value in tls_files):
        raise KafkaSettingsError(
            f"KAFKA_SSL_* is set but KAFKA_SECURITY_PROTOCOL={s.protocol} does not use TLS (SSL or SASL_SSL)")
    if s.ssl_keyfile and not s.ssl_certfile:
        raise KafkaSettingsError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE")
    for name, value in tls_files:
        if value and not Path(value).is_file():
            raise KafkaSettingsError(f"{name}={value!r} is not a readable file")


@functools.lru_cache(maxsize=8)
def ssl_context(security: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context: the given CA (else the system's), hostname checked unless turned off,
    a client certificate when one is given (mutual TLS). One per setting, shared by clients."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_cafile)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not security.ssl_check_hostname:
        context.check_hostname = False
    if security.ssl_certfile:
        context.load_cert_chain(security.ssl_certfile, security.ssl_keyfile,
                                password=security.ssl_key_password)
    return context


def client_options(kafka: KafkaTarget) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (producer, consumer, admin) to reach ``kafka``."""
    if isinstance(kafka, str):
        return {"bootstrap_servers": kafka}
    security = kafka.security
    options: dict[str, Any] = {"bootstrap_servers": kafka.bootstrap,
                               "security_protocol": security.protocol}
    if security.uses_ssl:
        options["ssl_context"] = ssl_context(security)
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    return options


def uvloop_safe(kafka: KafkaTarget) -> bool:
    """Whether a process whose Kafka clients reach ``kafka`` may run on uvloop.

    Not over TLS: uvloop waits for the peer's TLS close_notify before it reports a connection
    closed, up to its 30 s shutdown timeout, and a Kafka broker closes without one. Every
    ``stop()`` of an aiokafka client then takes 30 s (measured: a consumer's ``stop()`` 30.0 s on
    uvloop, a few ms on asyncio's loop), and the processor, which opens and closes a consumer
    for each partition it takes, outlives its rebalance timeout before it owns any.
    """
    return isinstance(kafka, str) or not kafka.security.uses_ssl


def bootstrap_of(kafka: KafkaTarget) -> str:
    """The address alone, for messages."""
    return kafka if isinstance(kafka, str) else kafka.bootstrap


def security_env(security: KafkaSecurity) -> dict[str, str]:
    """The environment that makes a child process's :func:`security_from_env` give ``security``."""
    pairs = {
        "KAFKA_SECURITY_PROTOCOL": security.protocol,
        "KAFKA_SASL_MECHANISM": security.sasl_mechanism,
        "KAFKA_SASL_USERNAME": security.sasl_username,
        "KAFKA_SASL_PASSWORD": security.sasl_password,
        "KAFKA_SSL_CAFILE": security.ssl_cafile,
        "KAFKA_SSL_CERTFILE": security.ssl_certfile,
        "KAFKA_SSL_KEYFILE": security.ssl_keyfile,
        "KAFKA_SSL_KEY_PASSWORD": security.ssl_key_password,
        "KAFKA_SSL_CHECK_HOSTNAME": "true" if security.ssl_check_hostname else "false",
    }
    return {name: value or "" for name, value in pairs.items()}
