"""The hash chain, pure: the processor's sealing of a batch (processor.chain) and the verifier
(processor.verify) over records as they would sit in Kafka or in the events table. Each
tampering (edit, delete, reorder, forge, truncate) is named at its own position."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events import chain, codec, topics
from events.messages import WalletCredited
from processor.chain import Chain, Sealed, Signer
from processor.verify import Entry, Verifier, content_or_problem

KEY = Signer(Ed25519PrivateKey.generate())
KEYS = {KEY.key_id: KEY.key.public_key()}


@dataclass
class FakeOutbox:
    """What Chain.seal needs of processor.outbox.Outbox."""

    held: list[Any] = field(default_factory=list)
    added: list[tuple[str, int, bytes | None, bytes | None, list[tuple[str, bytes]]]] = field(
        default_factory=list)

    def take_held(self) -> list[Any]:
        held, self.held = self.held, []
        return held

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
            headers: list[tuple[str, bytes]] | None = None, *, hold: bool = True) -> None:
        self.added.append((topic, partition, key, value, headers or []))


def event(n: int, wallet: str = "alice") -> bytes:
    payload = WalletCredited(wallet=wallet, asset="USDX", amount=n + 1, kind="transfer",
                             reference=f"t{n}")
    return codec.encode(codec.envelope(payload, key=f"wallet:{wallet}", command_id=f"c{n}",
                                       principal="p", correlation_id=f"t{n}", id=f"e{n}",
                                       occurred_at=datetime(2026, 1, 1, tzinfo=UTC)))


@dataclass
class Log:
    """Partitions of an events topic, as lists of (value, headers); anchors beside."""

    partitions: dict[int, list[tuple[bytes, list[tuple[str, bytes]]]]] = field(default_factory=dict)
    anchors: list[bytes] = field(default_factory=list)


def write(log: Log, writer: Chain, batches: list[list[tuple[int, bytes]]], *,
          commit: bool = True) -> None:
    for batch in batches:
        out = FakeOutbox(held=[(p, b"k", v, []) for p, v in batch])
        sealed: Sealed = writer.seal(out, 0)
        if not commit:
            continue  # aborted: nothing visible, heads not moved
        for topic, p, _, value, headers in out.added:
            assert value is not None
            if topic == topics.EVENTS:
                log.partitions.setdefault(p, []).append((value, headers))
            elif topic == topics.ANCHORS:
                log.anchors.append(value)
        writer.committed(sealed)


def verify(log: Log, *, scoped: bool = False, keys: dict[str, Any] | None = None) -> list[str]:
    v = Verifier(KEYS if keys is None else keys, scoped=scoped)
    for i, a in enumerate(log.anchors):
        assert v.pin(chain.decode_anchor(a), f"anchor {i}")
    for p, records in sorted(log.partitions.items()):
        for offset, (value, headers) in enumerate(records):
            content, problem = content_or_problem(value)
            try:
                link = chain.read_headers(headers)
            except ValueError as exc:
                link, problem = None, str(exc)
            v.add(Entry(f"{p}@{offset}", p, offset, link, content, problem))
    return [b.where for b in v.finish()]


def two_writers() -> tuple[Log, Chain, Chain]:
    """Two writers appending to partition 0 (and one of them to 1), batches interleaved."""
    log = Log()
    a = Chain("tx-0", signer=KEY, anchor_every=0)
    b = Chain("tx-1", signer=KEY, anchor_every=0)
    n = iter(range(1000))
    for _ in range(3):
        write(log, a, [[(0, event(next(n))), (0, event(next(n))), (1, event(next(n)))]])
        write(log, b, [[(0, event(next(n), "bob")), (0, event(next(n), "bob"))]])
    return log, a, b


def test_an_untouched_log_verifies_with_several_writers_per_partition() -> None:
    log, a, b = two_writers()
    assert len(log.partitions[0]) == 12 and len(log.anchors) == 6
    assert verify(log) == []
    assert a.heads[0][0] == 6 and a.heads[1][0] == 3 and b.heads[0][0] == 6


def test_an_aborted_batch_is_linked_again_from_the_committed_heads() -> None:
    log, a, _ = two_writers()
    write(log, a, [[(0, event(900)), (0, event(901))]], commit=False)
    write(log, a, [[(0, event(902))]])
    assert verify(log) == []


def test_a_restored_writer_goes_on_with_its_chain() -> None:
    log, a, _ = two_writers()
    out = FakeOutbox(held=[(0, b"k", event(500), [])])
    a.seal(out, 0)  # sealed, never committed
    [(key, raw)] = [(key, value) for topic, _, key, value, _ in out.added if topic == topics.STATE]
    assert key == a.state_key
    again = Chain("tx-0", signer=KEY, anchor_every=0)
    again.restore(raw)  # had it committed, its heads would be the restored ones
    assert again.heads[0][0] == a.heads[0][0] + 1
    other = Chain("tx-9")
    other.restore(raw)  # another writer's record is not its chain
    assert other.heads == {}
    fresh = Chain("tx-0", signer=KEY, anchor_every=0)
    fresh.restore(msgspec.json.encode({"writer": "tx-0", "heads": chain.anchor_heads(a.heads)}))
    write(log, fresh, [[(0, event(501))]])
    assert verify(log) == []


def test_an_edited_record_is_named() -> None:
    log, _, _ = two_writers()
    value, headers = log.partitions[0][4]
    log.partitions[0][4] = (value.replace(b'"amount":6', b'"amount":7'), headers)
    assert value != log.partitions[0][4][0]
    assert verify(log)[0] == "0@4"


def test_a_deleted_record_is_named_where_the_chain_breaks() -> None:
    log, _, _ = two_writers()
    del log.partitions[0][5]
    assert verify(log)[0] == "0@4"  # the last record before the gap is the first left unconfirmed


def test_reordered_records_are_named() -> None:
    log, _, _ = two_writers()
    p = log.partitions[0]
    p[6], p[7] = p[7], p[6]
    assert verify(log)[0] == "0@6"


def test_a_record_without_a_link_is_named() -> None:
    log, _, _ = two_writers()
    log.partitions[0].insert(3, (event(77), []))
    assert verify(log) == ["0@3"]


def test_a_forged_record_with_a_well_formed_link_is_named_not_the_genuine_one() -> None:
    log, a, _ = two_writers()
    seq, head = a.heads[0]
    forged = event(666)
    link = chain.link("tx-0", 0, seq + 1, head, chain.content(forged))
    log.partitions[0].append((forged, chain.headers("tx-0", seq + 1, head)))
    forged_at = len(log.partitions[0]) - 1
    assert verify(log) == [f"0@{forged_at}"]  # not confirmed by any signature
    write(log, a, [[(0, event(1)), (0, event(2))]])  # the writer goes on from its real head
    assert verify(log) == [f"0@{forged_at}"]
    # A forger with a key of their own does no better.
    other = Signer(Ed25519PrivateKey.generate())
    sig = other.sign(chain.signed_message("tx-0", 0, seq + 1, link))
    log.partitions[0][forged_at] = (forged, chain.headers("tx-0", seq + 1, head, sig))
    assert verify(log) == [f"0@{forged_at}"]


def test_a_truncated_log_is_caught_by_the_signed_checkpoint() -> None:
    log, _, _ = two_writers()
    del log.partitions[0][-2:]  # the last transaction of tx-1: nothing after it to break
    assert verify(log) == ["0@7"]  # where its chain now ends


def test_a_forged_checkpoint_is_refused() -> None:
    log, _, _ = two_writers()
    anchor = chain.decode_anchor(log.anchors[0])
    forged = msgspec.structs.replace(anchor, heads={"0": (1, "00" * 32)})
    v = Verifier(KEYS)
    assert not v.pin(forged, "forged")
    assert v.pin(anchor, "genuine")


def test_without_the_public_key_nothing_is_confirmed() -> None:
    log, _, _ = two_writers()
    log.anchors.clear()
    assert len(verify(log, keys={})) == 15


def test_a_scoped_run_starts_mid_chain() -> None:
    log, _, _ = two_writers()
    for p in log.partitions:
        del log.partitions[p][:2]
    assert verify(log) != []
    assert verify(log, scoped=True) == []


def test_a_forgery_at_the_start_of_a_scoped_run_is_told_from_the_genuine_record() -> None:
    log, a, _ = two_writers()
    seq, head = a.heads[0]
    forged = event(666)
    log.partitions[0].append((forged, chain.headers("tx-0", seq + 1, head)))
    write(log, a, [[(0, event(1)), (0, event(2))]])
    scoped = Log({0: log.partitions[0][-3:]}, log.anchors)
    assert verify(scoped, scoped=True) == ["0@0"]


def test_a_transaction_cut_at_the_end_of_what_was_read_waits_for_its_signature() -> None:
    log, _, b = two_writers()
    write(log, b, [[(0, event(700, "bob")), (0, event(701, "bob"))]])
    cut = Log({0: log.partitions[0][:-1]}, log.anchors)  # the signed record lies beyond the cut
    v = Verifier(KEYS)
    for offset, (value, headers) in enumerate(cut.partitions[0]):
        v.add(Entry(f"0@{offset}", 0, offset, chain.read_headers(headers), chain.content(value)))
    assert v.pending() == {("tx-1", 0)}
    value, headers = log.partitions[0][-1]  # reading on finds it
    v.add(Entry("0@13", 0, 13, chain.read_headers(headers), chain.content(value)))
    assert not v.pending() and v.finish() == []
    table = Verifier(KEYS)
    table.tail_pending = True  # a copy that stops mid-transaction does not ask for it
    for offset, (value, headers) in enumerate(cut.partitions[0]):
        table.add(Entry(f"0@{offset}", 0, offset, chain.read_headers(headers), chain.content(value)))
    assert table.finish() == []


def test_the_local_stack_keeps_one_signing_key_readable_by_its_owner_only(tmp_path: Any) -> None:
    import stat

    from ledgerline.stack.anchor_key import kept_signing_key
    from processor.chain_audit import public_keys

    private, public = kept_signing_key(tmp_path)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    signer = Signer.from_file(private)
    assert list(public_keys([public])) == [signer.key_id]
    assert kept_signing_key(tmp_path) == (private, public)  # made once, kept
    assert Signer.from_file(private).key_id == signer.key_id


def test_a_processor_with_a_key_it_cannot_read_refuses_to_start(tmp_path: Any) -> None:
    import pytest

    from common.settings import SettingsError, load
    from processor.bootstrap import chains

    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    with pytest.raises(SettingsError, match="LEDGERLINE_ANCHOR_KEY_FILE"):
        chains(load({"LEDGERLINE_ANCHOR_KEY_FILE": str(bad)}))
    with pytest.raises(SettingsError, match="LEDGERLINE_ANCHOR_EVERY_SECONDS"):
        load({"LEDGERLINE_ANCHOR_EVERY_SECONDS": "0"})
    assert chains(load({}))("w").signer is None  # linked, not signed (and warned)


def test_an_idle_writer_checkpoints_heads_no_checkpoint_names_yet() -> None:
    writer = Chain("tx-0", signer=KEY, anchor_every=60)
    assert writer.quiet_for() is None  # nothing written: nothing to checkpoint
    log = Log()
    write(log, writer, [[(0, event(1))]])  # the first batch carries a checkpoint
    assert len(log.anchors) == 1 and writer.quiet_for() is None
    write(log, writer, [[(0, event(2))]])  # too soon for another
    assert len(log.anchors) == 1
    quiet = writer.quiet_for()
    assert quiet is not None and 0 < quiet <= 60
    assert Chain("tx-0", anchor_every=60).quiet_for() is None  # unsigned: never
