"""The hash chain's cost in the processor's hot path, per event: ``python -m bench.chain``.

Seals batches of real event records with the processor's own code (``processor.chain.Chain``)
and prints the CPU time per event, beside the baseline of encoding the same events with the
codec (what the processor already spends per event), measured in the same run. Batches of
1, 10 and 1,000 events show the signature (one per partition per transaction) being spread;
the verifier's cost per record is printed too.
"""

import argparse
import time
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from events import chain, codec, topics
from events.messages import TransferConfirmed, WalletCredited
from processor.chain import Chain, Signer
from processor.verify import Entry, Verifier
from projector.chain import bytea, columns


class _Outbox:
    """The part of processor.outbox.Outbox a seal uses, without a producer."""

    def __init__(self, held: list[Any]) -> None:
        self.held = held
        self.added: list[tuple[str, int, Any, Any, Any]] = []

    def take_held(self) -> list[Any]:
        held, self.held = self.held, []
        return held

    def add(self, topic: str, partition: int, key: Any, value: Any, headers: Any = None, *,
            hold: bool = True) -> None:
        self.added.append((topic, partition, key, value, headers))


def _events(n: int) -> list[Any]:
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        if i % 2:
            payload: Any = WalletCredited(wallet=f"w{i % 4000}", asset="USDX", amount=1250,
                                          kind="transfer", reference=f"tr-{i}",
                                          available_after=10_000 + i, held_after=0)
        else:
            payload = TransferConfirmed(transfer_id=f"tr-{i}", source=f"w{i % 4000}",
                                        target=f"w{(i + 7) % 4000}", asset="USDX", amount=1250,
                                        available_after=5_000 + i, held_after=0)
        out.append(codec.envelope(payload, key=f"wallet:w{i % 4000}", command_id=f"c-{i}",
                                  principal="alice", correlation_id=f"tr-{i}", occurred_at=now))
    return out


def _cpu(fn: Any) -> float:
    started = time.process_time()
    fn()
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    n = parser.parse_args().events
    envelopes = _events(n)
    values = [codec.encode(e) for e in envelopes]
    signer = Signer(Ed25519PrivateKey.generate())

    encode = _cpu(lambda: [codec.encode(e) for e in envelopes]) / n
    print(f"baseline: codec.encode of an event        {encode * 1e6:6.2f} µs/event")

    def seal(batch: int, with_signer: bool) -> float:
        writer = Chain("ledger-processor-tx-0", signer=signer if with_signer else None,
                       anchor_every=10.0)
        count = n if batch > 1 else n // 10  # single-event batches: a tenth is plenty

        def run() -> None:
            for start in range(0, count, batch):
                out = _Outbox([(0, b"k", v, []) for v in values[start:start + batch]])
                writer.committed(writer.seal(out, 0))
        return _cpu(run) / count

    print(f"chain, hashing only (no key), batch 1000  {seal(1000, False) * 1e6:6.2f} µs/event")
    for batch in (1000, 10, 1):
        print(f"chain, signed, batch {batch:<5}               {seal(batch, True) * 1e6:6.2f} µs/event")
    sign = _cpu(lambda: [signer.sign(b"x" * 100) for _ in range(2000)]) / 2000
    print(f"one Ed25519 signature                     {sign * 1e6:6.2f} µs")

    writer = Chain("ledger-processor-tx-0", signer=signer, anchor_every=1e9)
    out = _Outbox([(0, b"k", v, []) for v in values])
    writer.seal(out, 0)
    records = [(value, headers) for topic, _, _, value, headers in out.added if topic == topics.EVENTS]

    def verify() -> None:
        v = Verifier({signer.key_id: signer.key.public_key()})
        for offset, (value, headers) in enumerate(records):
            v.add(Entry("", 0, offset, chain.read_headers(headers), chain.content(value)))
        assert not v.finish()
    print(f"verify, one signature per {n} events   {_cpu(verify) / n * 1e6:6.2f} µs/event")

    def store() -> None:  # what the projector adds per event: read the headers, write 4 columns
        for _, headers in records:
            row = columns(headers)
            f"{row['chain_writer']}\t{row['chain_seq']}\t{bytea(row['chain_prev'])}\t{bytea(row['chain_sig'])}"
    print(f"projector: chain columns of an event      {_cpu(store) / n * 1e6:6.2f} µs/event")


if __name__ == "__main__":
    main()
