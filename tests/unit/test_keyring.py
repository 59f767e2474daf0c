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


def test_the_longest_memo_sealed_is_still_a_memo_the_processor_takes(tmp_path: Path) -> None:
    from events import grammar

    ring = LocalKeyring(tmp_path / "keyring.json")
    longest = "\U0001f600" * grammar.TEXT_LIMIT  # four bytes each in UTF-8
    assert grammar.is_memo(seal(ring, "alice", longest)) and grammar.is_memo(seal(ring, "alice", "x"))
    assert grammar.is_memo("plain memo") and grammar.is_memo("")
    assert not grammar.is_memo("sealed:v1:not base64!") and not grammar.is_memo("sealed:v1:" + "A" * 1601)


def test_an_erasure_is_decided_without_touching_the_wallet_and_blanks_its_memos() -> None:
    from datetime import UTC, datetime

    from events.codec import Envelope
    from events.messages import EraseWalletData, WalletDataErased
    from processor.decide import decide, evolve
    from projector.fold import Position, RowChanges, apply

    [event] = decide(None, EraseWalletData(wallet="alice"), "wallet:alice")
    assert event == WalletDataErased(wallet="alice")
    assert evolve(None, event) is None
    changes = RowChanges()
    env = Envelope(id="e1", type="WalletDataErased", version=1, key="wallet:alice", command_id="c1",
                   correlation_id=None, occurred_at=datetime.now(UTC), principal="compliance", payload=event)
    apply(changes, env, Position("ledger.events", 0, 7))
    assert changes.erased == ["alice"]
    assert changes.commands["c1"]["status"] == "completed"


def test_a_keyring_that_read_the_key_before_sees_its_destruction_by_another(tmp_path: Path) -> None:
    """Keys are held in memory between changes of the file: a destruction by another process
    (another command API, the compliance officer's) must still be seen at once."""
    api, projector = LocalKeyring(tmp_path / "keyring.json"), LocalKeyring(tmp_path / "keyring.json")
    sealed = seal(api, "alice", "rent")
    assert unseal(projector, "alice", sealed) == "rent"  # read, and held, by the projector
    assert seal(api, "alice", "again")  # held by the API
    assert LocalKeyring(tmp_path / "keyring.json").destroy("alice") is True
    with pytest.raises(Erased):
        unseal(projector, "alice", sealed)
    with pytest.raises(Erased):
        seal(api, "alice", "after")
    # A wallet another process made a key for is found, not made twice.
    other = seal(LocalKeyring(tmp_path / "keyring.json"), "bob", "hi")
    assert unseal(api, "bob", other) == "hi"
