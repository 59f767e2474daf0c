"""Typed settings read from the environment, once, in a process's ``main``.

A missing required key or a malformed value fails fast with a message that names the key.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from common.kafka import Kafka, KafkaSecurity, KafkaSettingsError, security_from_env

if TYPE_CHECKING:
    from common.auth import TokenKeys

DEFAULT_DATABASE_URL = "postgresql://ledgerline_app@127.0.0.1:55432/ledgerline"


class SettingsError(RuntimeError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str
    database_url: str
    jwt_secret: str | None
    jwt_public_key: str | None
    jwt_jwks_url: str | None
    query_host: str
    query_port: int
    command_host: str
    command_port: int
    partitions: int
    max_body_bytes: int
    max_wait_seconds: float
    log_level: str
    processor_max_records: int = 10_000
    processor_session_timeout_ms: int = 10_000
    processor_transaction_timeout_ms: int = 60_000
    projector_metrics_port: int = 9101  # 0: no /metrics endpoint
    processor_metrics_port: int = 9102  # 0: no /metrics endpoint
    jwt_max_lifetime_seconds: int = 366 * 24 * 3600
    max_header_bytes: int = 32 * 1024
    unavailable_seconds: float = 5.0  # the longest an API waits for an absent broker or database
    compliance_metrics_port: int = 9103  # 0: no /metrics endpoint
    compliance_rules: str | None = None  # the monitor's rules file; None: the one it ships with
    # How long the broker may hold the monitor's fetch to gather more events (0: answer at once).
    compliance_batch_wait_ms: int = 100
    # The hash chain's signed checkpoints (docs/audit.md): the processor's Ed25519 private key
    # (PEM), the file it appends each checkpoint to, how often; the public key verifiers trust.
    anchor_key_file: str | None = None
    anchor_file: str | None = None
    anchor_every_seconds: int = 10
    anchor_public_key_file: str | None = None
    # KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_* (common/kafka.py).
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)
    # LEDGERLINE_KEYRING: the wallets' data keys (common/keyring.py); unset: memos in clear.
    keyring_path: str | None = None
    # LEDGERLINE_GROUP_INSTANCE_ID: static membership of the process's consumer groups (KIP-345).
    group_instance_id: str | None = None

    @property
    def kafka(self) -> Kafka:
        """The cluster every Kafka client of the process connects to (``common.kafka``)."""
        return Kafka(self.kafka_bootstrap, self.kafka_security)

    def token_keys(self) -> "TokenKeys":
        """How the APIs verify bearer tokens; fails fast when nothing (or too much) is set."""
        from common.auth import TokenKeys

        given = [n for n, v in (("LEDGERLINE_JWT_SECRET", self.jwt_secret),
                                ("LEDGERLINE_JWT_PUBLIC_KEY", self.jwt_public_key),
                                ("LEDGERLINE_JWT_JWKS_URL", self.jwt_jwks_url)) if v]
        if len(given) > 1:
            raise SettingsError(f"set only one of {', '.join(given)}")
        if self.jwt_public_key:
            if "BEGIN PUBLIC KEY" not in self.jwt_public_key:
                raise SettingsError("LEDGERLINE_JWT_PUBLIC_KEY must be a PEM public key")
            return TokenKeys(public_key=self.jwt_public_key,
                             max_lifetime_seconds=self.jwt_max_lifetime_seconds)
        if self.jwt_jwks_url:
            if not self.jwt_jwks_url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
                raise SettingsError("LEDGERLINE_JWT_JWKS_URL must be an https:// URL")
            return TokenKeys.jwks(self.jwt_jwks_url, self.jwt_max_lifetime_seconds)
        return TokenKeys(secret=self.require_jwt_secret(),
                         max_lifetime_seconds=self.jwt_max_lifetime_seconds)

    def require_jwt_secret(self) -> str:
        if not self.jwt_secret:
            raise SettingsError(
                "LEDGERLINE_JWT_SECRET is not set (nor LEDGERLINE_JWT_PUBLIC_KEY or "
                "LEDGERLINE_JWT_JWKS_URL): the APIs refuse to start without a key to verify "
                "bearer tokens (the local stack sets one for you)"
            )
        if len(self.jwt_secret) < 32:
            raise SettingsError("LEDGERLINE_JWT_SECRET must be at least 32 characters long")
        return self.jwt_secret


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={value} is out of range {low}..{high}")
    return value


def load(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    try:
        kafka_security = security_from_env(env)
    except KafkaSettingsError as exc:
        raise SettingsError(str(exc)) from None
    return Settings(
        kafka_bootstrap=env.get("KAFKA_BOOTSTRAP") or "127.0.0.1:9092",
        database_url=env.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
        jwt_secret=env.get("LEDGERLINE_JWT_SECRET") or None,
        jwt_public_key=env.get("LEDGERLINE_JWT_PUBLIC_KEY") or None,
        jwt_jwks_url=env.get("LEDGERLINE_JWT_JWKS_URL") or None,
        query_host=env.get("LEDGERLINE_QUERY_HOST") or "127.0.0.1",
        query_port=_int(env, "LEDGERLINE_QUERY_PORT", 8000, 1, 65535),
        command_host=env.get("LEDGERLINE_COMMAND_HOST") or "127.0.0.1",
        command_port=_int(env, "LEDGERLINE_COMMAND_PORT", 8001, 1, 65535),
        partitions=_int(env, "LEDGERLINE_PARTITIONS", 4, 1, 1024),
        max_body_bytes=_int(env, "LEDGERLINE_MAX_BODY_BYTES", 64 * 1024, 256, 16 * 1024 * 1024),
        max_wait_seconds=float(_int(env, "LEDGERLINE_MAX_WAIT_SECONDS", 30, 0, 300)),
        log_level=(env.get("LEDGERLINE_LOG_LEVEL") or "INFO").upper(),
        # Records per processor transaction (across its partitions).
        processor_max_records=_int(env, "LEDGERLINE_PROCESSOR_MAX_RECORDS", 10_000, 1, 100_000),
        # How long a silent processor keeps its partitions; the broker allows 6 s at least.
        processor_session_timeout_ms=_int(env, "LEDGERLINE_PROCESSOR_SESSION_TIMEOUT_MS", 10_000,
                                          6_000, 300_000),
        # How long the broker lets a processor transaction stay open before it ends it (and
        # fences the producer): the processor then starts its partitions again from Kafka.
        processor_transaction_timeout_ms=_int(env, "LEDGERLINE_PROCESSOR_TRANSACTION_TIMEOUT_MS",
                                              60_000, 1_000, 900_000),
        projector_metrics_port=_int(env, "LEDGERLINE_PROJECTOR_METRICS_PORT", 9101, 0, 65535),
        processor_metrics_port=_int(env, "LEDGERLINE_PROCESSOR_METRICS_PORT", 9102, 0, 65535),
        # The furthest ahead a bearer token's 'exp' may lie (default 366 days, at most 10 years).
        jwt_max_lifetime_seconds=_int(env, "LEDGERLINE_JWT_MAX_LIFETIME_SECONDS", 366 * 24 * 3600,
                                      60, 3653 * 24 * 3600),
        # The request line and headers of one HTTP request, on both APIs; more is 431.
        max_header_bytes=_int(env, "LEDGERLINE_MAX_HEADER_BYTES", 32 * 1024, 4096, 1024 * 1024),
        unavailable_seconds=float(_int(env, "LEDGERLINE_UNAVAILABLE_SECONDS", 5, 1, 60)),
        compliance_metrics_port=_int(env, "LEDGERLINE_COMPLIANCE_METRICS_PORT", 9103, 0, 65535),
        compliance_rules=env.get("LEDGERLINE_COMPLIANCE_RULES") or None,
        # At low rates the monitor would otherwise fetch, evaluate and write once per event:
        # waiting up to this long for more is most of its cost saved, for as much alert latency.
        compliance_batch_wait_ms=_int(env, "LEDGERLINE_COMPLIANCE_BATCH_WAIT_MS", 100, 0, 5_000),
        anchor_key_file=env.get("LEDGERLINE_ANCHOR_KEY_FILE") or None,
        anchor_file=env.get("LEDGERLINE_ANCHOR_FILE") or None,
        anchor_every_seconds=_int(env, "LEDGERLINE_ANCHOR_EVERY_SECONDS", 10, 1, 24 * 3600),
        anchor_public_key_file=env.get("LEDGERLINE_ANCHOR_PUBLIC_KEY_FILE") or None,
        kafka_security=kafka_security,
        keyring_path=env.get("LEDGERLINE_KEYRING") or None,
        group_instance_id=_instance_id(env, "LEDGERLINE_GROUP_INSTANCE_ID"),
    )


_INSTANCE_ID = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _instance_id(env: Mapping[str, str], name: str) -> str | None:
    """A consumer's ``group.instance.id``: Kafka's legal characters, at most 249 of them."""
    raw = env.get(name) or None
    if raw is not None and not _INSTANCE_ID.fullmatch(raw):
        raise SettingsError(f"{name}={raw!r} must be 1-249 of A-Z a-z 0-9 . _ -")
    return raw


def asyncpg_dsn(url: str) -> str:
    """asyncpg wants ``postgresql://``; SQLAlchemy URLs may name a driver."""
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def sqlalchemy_url(url: str) -> str:
    if url.startswith("postgresql://"):
        return "postgresql+asyncpg://" + url[len("postgresql://") :]
    return url
