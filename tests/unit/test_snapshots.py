"""State snapshots: what the processor recovers from, including open trade locks."""

import json
import uuid

from processor import snapshots
from processor.decide import AssetState, Balance, Hold, WalletState


def test_a_wallet_with_open_locks_round_trips() -> None:
    wallet = WalletState(balances={"BOND": Balance(7, 3)}, frozen=True,
                         holds={"t1": Hold("BOND", 3)})
    snap = snapshots.EMPTY.after(wallet, "c1")
    assert snapshots.decode(snapshots.encode(snap)) == snap


def test_snapshots_written_before_locks_and_burns_still_decode() -> None:
    wallet = snapshots.decode(b'{"state": {"type": "wallet", "balances": '
                              b'{"USDX": {"available": 5, "held": 0}}}, "recent": ["c1"]}')
    assert wallet.state == WalletState(balances={"USDX": Balance(5, 0)})
    asset = snapshots.decode(b'{"state": {"type": "asset", "symbol": "USDX", "name": "d", '
                             b'"decimals": 2, "issuer": "t", "max_supply": null, "supply": 9}}')
    assert asset.state == AssetState(symbol="USDX", name="d", decimals=2, issuer="t",
                                     max_supply=None, supply=9, burned=0)


def test_recent_command_ids_are_packed_bounded_and_seen() -> None:
    from processor.snapshots import EMPTY, RECENT_COMMANDS

    ids = [str(uuid.uuid4()) for _ in range(RECENT_COMMANDS + 10)]
    snap = EMPTY
    for command_id in ids:
        snap = snap.after(None, command_id)
    assert len(snap.ids) == 16 * RECENT_COMMANDS and snap.recent == ()
    assert all(snap.seen(i) for i in ids[10:])
    assert not any(snap.seen(i) for i in ids[:10])  # the oldest made room
    assert not snap.seen(str(uuid.uuid4()))
    assert not snap.seen(ids[-1].upper())  # another spelling is another id
    # An id the API would not make is kept as text, and counts toward the bound.
    odd = snap.after(None, "not-a-uuid")
    assert odd.seen("not-a-uuid") and not odd.seen(ids[10]) and odd.seen(ids[11])
    assert len(odd.ids) // 16 + len(odd.recent) == RECENT_COMMANDS
    full = snapshots.decode(snapshots.encode(snap))
    assert full == snap and all(full.seen(i) for i in ids[10:])
    assert len(snapshots.encode(snap)) < 6_000  # 39 characters an id as text: over 10,000


def test_ids_of_a_snapshot_from_before_packing_are_still_seen_and_make_room() -> None:
    from processor.snapshots import RECENT_COMMANDS

    old = [str(uuid.uuid4()) for _ in range(RECENT_COMMANDS)]
    snap = snapshots.decode(json.dumps({"state": None, "recent": old}).encode())
    assert all(snap.seen(i) for i in old)
    new = str(uuid.uuid4())
    after = snap.after(None, new)
    assert after.seen(new) and not after.seen(old[0]) and all(after.seen(i) for i in old[1:])
    assert len(after.recent) == RECENT_COMMANDS - 1
