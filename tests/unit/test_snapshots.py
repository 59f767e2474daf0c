"""State snapshots: what the processor recovers from, including open trade locks."""

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
