"""The secure local stack's certificate authority: made on first run, kept in the stack's home.

One CA signs the broker's and PostgreSQL's server certificates; clients trust the CA's
certificate (``ca.pem``) and check the server's name (``127.0.0.1``, ``localhost``). Private keys
are written 0600 in one step, as the stack's other secrets are.
"""

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
_VALID = datetime.timedelta(days=825)  # the longest browsers and TLS stacks accept for a leaf


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only, never wider even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".new")
    scratch.unlink(missing_ok=True)
    fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    scratch.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(common_name: str) -> x509.Name:
    # The common name alone: the broker's subject is its principal on the controller listener.
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Issued:
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class CertificateAuthority:
    folder: Path

    @property
    def cert_path(self) -> Path:
        return self.folder / CA_CERT

    @classmethod
    def ensure(cls, folder: Path) -> "CertificateAuthority":
        """The CA in ``folder``, made there (key 0600, certificate 0644) if it is not yet."""
        ca = cls(Path(folder).absolute())
        if (ca.folder / CA_KEY).is_file() and ca.cert_path.is_file():
            return ca
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("Ledgerline local CA"))
            .issuer_name(_name("Ledgerline local CA"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_private(ca.folder / CA_KEY, _key_pem(key))
        ca.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return ca

    def issue(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
              folder: Path | None = None) -> Issued:
        """A server (and client) certificate for ``hosts``, ``name.pem`` and ``name.key`` in
        ``folder`` (default: the CA's), made if missing or no longer valid for ``hosts``."""
        folder = self.folder if folder is None else Path(folder)
        issued = Issued(folder / f"{name}.pem", folder / f"{name}.key")
        if self._still_good(issued, hosts):
            return issued
        ca_key = serialization.load_pem_private_key((self.folder / CA_KEY).read_bytes(), None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for host in hosts:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                alt.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write_private(issued.key_path, _key_pem(key))
        issued.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return issued

    def _still_good(self, issued: Issued, hosts: tuple[str, ...]) -> bool:
        if not (issued.cert_path.is_file() and issued.key_path.is_file()):
            return False
        cert = x509.load_pem_x509_certificate(issued.cert_path.read_bytes())
        ca_cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        if cert.issuer != ca_cert.subject:
            return False
        if cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < datetime.timedelta(days=30):
            return False
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(v) for v in names.get_values_for_type(x509.IPAddress)} | \
            set(names.get_values_for_type(x509.DNSName))
        return set(hosts) <= have
