"""The secure profile of the local stack (``ledgerline up --secure``): what it makes on first run.

In the stack's home, next to its other secrets: a certificate authority (``tls/ca.pem``, its key
0600), the broker's keystore and PostgreSQL's server certificate signed by it, and a password per
SCRAM user and per database role, each in a file of its own readable by its owner only (0600).
Each process is then handed only its own credentials (:meth:`SecureProfile.process_env`).
"""

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from common.kafka import KafkaSecurity, security_env
from ledgerline.stack.kafka import BROKER_PRINCIPAL, BrokerSecurity
from ledgerline.stack.kafka_acl import ADMIN_USER, USERS
from ledgerline.stack.pg_roles import PROCESS_ROLES
from ledgerline.stack.secret_files import kept_secret
from ledgerline.stack.tls import CertificateAuthority, Issued, write_private

TLS_DIR = "tls"


@dataclass(frozen=True)
class SecureProfile:
    home: Path
    ca: CertificateAuthority

    @classmethod
    def prepare(cls, home: Path) -> "SecureProfile":
        """The CA and every password, made where missing."""
        home = Path(home).absolute()
        return cls(home, CertificateAuthority.ensure(home / TLS_DIR))

    @property
    def ca_file(self) -> Path:
        return self.ca.cert_path

    def _secret(self, name: str) -> str:
        return kept_secret(self.home / name)[0]

    # -- Kafka --------------------------------------------------------------------------------

    def kafka_password(self, user: str) -> str:
        return self._secret(f"kafka-{user}-password")

    def broker(self) -> BrokerSecurity:
        """The broker's keystore (PKCS#12, made from the CA-signed certificate) and SCRAM users."""
        issued = self.ca.issue(BROKER_PRINCIPAL.removeprefix("CN="))
        password = self._secret("kafka-keystore-password")
        keystore = self.home / TLS_DIR / "broker.p12"
        _write_keystore(issued, self.ca_file, keystore, password)
        users = {user: self.kafka_password(user) for user in (ADMIN_USER, *USERS.values())}
        return BrokerSecurity(keystore, password, self.ca_file, ADMIN_USER, users)

    def broker_users_security(self, user: str) -> KafkaSecurity:
        return KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username=user,
                             sasl_password=self.kafka_password(user), ssl_cafile=str(self.ca_file))

    # -- PostgreSQL ---------------------------------------------------------------------------

    def postgres_tls(self) -> Issued:
        return self.ca.issue("ledgerline-postgres")

    def role_password(self, role: str) -> str:
        return self._secret(f"pg-{role}-password")

    def database_url(self, url: str, role: str | None = None) -> str:
        """``url`` (the owner's) as ``role`` (with its password), over verified TLS."""
        parts = urlsplit(url)
        netloc = parts.netloc
        if role is not None:
            host = netloc.rpartition("@")[2]
            netloc = f"{quote(role, safe='')}:{quote(self.role_password(role), safe='')}@{host}"
        query = f"sslmode=verify-full&sslrootcert={quote(str(self.ca_file), safe='/')}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    # -- the processes ------------------------------------------------------------------------

    def write_admin_env(self, bootstrap: str, owner_url: str) -> Path:
        """``admin.env`` (0600): the stack admin's Kafka credentials and the owner's database URL,
        for operator commands in another shell (``set -a; . .ledgerline/admin.env; set +a``)."""
        import shlex

        env = {"KAFKA_BOOTSTRAP": bootstrap, **security_env(self.broker_users_security(ADMIN_USER)),
               "DATABASE_URL": self.database_url(owner_url)}
        path = self.home / "admin.env"
        write_private(path, "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()).encode())
        return path

    def process_env(self, process: str, owner_url: str) -> dict[str, str]:
        """What ``process`` is handed on top of the common environment: its own Kafka user and
        database role, and nothing of the others'."""
        env: dict[str, str] = {}
        user = USERS.get(process)
        env.update(security_env(self.broker_users_security(user) if user else KafkaSecurity()))
        role = PROCESS_ROLES.get(process, "")
        # The projector rebuilds and swaps the views, so it is their owner; the processor has no
        # business with the database at all.
        env["DATABASE_URL"] = self.database_url(owner_url, role or None) if process != "processor" else ""
        if process not in ("command-api", "projector"):
            env["LEDGERLINE_KEYRING"] = ""  # only they seal and open memos
        return env


def _write_keystore(issued: Issued, ca_file: Path, keystore: Path, password: str) -> None:
    key = serialization.load_pem_private_key(issued.key_path.read_bytes(), None)
    cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    data = pkcs12.serialize_key_and_certificates(
        b"ledgerline-broker", key, cert, [ca],  # type: ignore[arg-type]  # an EC key, made by tls
        serialization.BestAvailableEncryption(password.encode()))
    write_private(keystore, data)
