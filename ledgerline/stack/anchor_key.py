"""The processor's signing key for the hash chain's checkpoints, made once by the local stack.

``anchor-key.pem`` (Ed25519 private key, PKCS#8 PEM, mode 0600) beside the stack's other
secrets, and ``anchor-key.pub`` (its public key, PEM, readable by all): the file to hand
verifiers (``ledgerline audit --verify-chain --public-key``).
"""

import contextlib
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

PRIVATE_FILE = "anchor-key.pem"
PUBLIC_FILE = "anchor-key.pub"


def kept_signing_key(home: Path) -> tuple[Path, Path]:
    """(private, public) key files in ``home``, made on first use; the private one 0600."""
    home.mkdir(parents=True, exist_ok=True)
    private, public = home / PRIVATE_FILE, home / PUBLIC_FILE
    try:
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if stat.S_IMODE(private.stat().st_mode) & 0o077:
            private.chmod(0o600)
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{private} does not hold an Ed25519 private key") from None
    else:
        key = Ed25519PrivateKey.generate()
        try:
            os.write(fd, key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                private.unlink()
            raise
        os.close(fd)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    if not public.is_file() or public.read_bytes() != pem:
        public.write_bytes(pem)
    return private, public
