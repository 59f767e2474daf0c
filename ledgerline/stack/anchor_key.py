"""The processor's signing key for the hash chain's checkpoints, made once by the local stack.

``anchor-key.pem`` (Ed25519 private key, PKCS#8 PEM, mode 0600) beside the stack's other
secrets, and ``anchor-key.pub`` (its public key, PEM, readable by all): the file to hand
verifiers (``ledgerline audit --verify-chain --public-key``).
"""

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledgerline.stack.secret_files import write_new

PRIVATE_FILE = "anchor-key.pem"
PUBLIC_FILE = "anchor-key.pub"


def kept_signing_key(home: Path) -> tuple[Path, Path]:
    """(private, public) key files in ``home``, made on first use; the private one 0600."""
    home.mkdir(parents=True, exist_ok=True)
    private, public = home / PRIVATE_FILE, home / PUBLIC_FILE
    made = Ed25519PrivateKey.generate()
    if write_new(private, made.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())):
        key = made
    else:
        kept = serialization.load_pem_private_key(private.read_bytes(), password=None)
        if not isinstance(kept, Ed25519PrivateKey):
            raise ValueError(f"{private} does not hold an Ed25519 private key") from None
        key = kept
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    if not public.is_file() or public.read_bytes() != pem:
        public.write_bytes(pem)
    return private, public
