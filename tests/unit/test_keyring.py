"""Per-wallet data keys: sealed memos read back with the wallet's key, and never again once the
key is destroyed (crypto-shredding)."""

from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag

from common.keyring import Erased, LocalKeyring, is_sealed, seal, unseal


def test_a_sealed_memo_reads_back_and_hides_its_text(tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "keyring.json")
    sealed = seal(ring, "alice", "rent for März")
    assert is_sealed(sealed) and "rent" not in sealed
    assert unseal(ring, "alice", sealed) == "rent for März"
    assert unseal(ring, "alice", "not sealed") == "not sealed"
    assert seal(ring, "alice", "rent for März") != sealed  # a fresh nonce each time
    assert oct((tmp_path / "keyring.json").stat().st_mode & 0o777) == "0o600"


def test_a_memo_is_bound_to_its_wallet(tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "keyring.json")
    sealed = seal(ring, "alice", "x")
    seal(ring, "bob", "y")
    with pytest.raises(InvalidTag):
        unseal(ring, "bob", sealed)


def test_destroying_the_key_erases_every_copy_for_good(tmp_path: Path) -> None:
    ring = LocalKeyring(tmp_path / "keyring.json")
    sealed, other = seal(ring, "alice", "secret"), seal(ring, "bob", "kept")
    assert ring.destroy("alice") is True
    # Another process with the same file (the projector, a rebuild) sees it gone too.
    again = LocalKeyring(tmp_path / "keyring.json")
    with pytest.raises(Erased):
        unseal(again, "alice", sealed)
    with pytest.raises(Erased):
        seal(again, "alice", "new")  # no new key is made for an erased wallet
    assert unseal(again, "bob", other) == "kept"
    assert "secret" not in (tmp_path / "keyring.json").read_text()
    assert ring.destroy("alice") is False
