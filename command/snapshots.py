"""Per-aggregate snapshots kept in the compacted state topic: the state and recent command ids."""

import msgspec

from command.decide import State

RECENT_COMMANDS = 256


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    state: State | None = None
    recent: tuple[str, ...] = ()

    def seen(self, command_id: str) -> bool:
        return command_id in self.recent

    def after(self, state: State | None, command_id: str) -> "Snapshot":
        return Snapshot(state=state, recent=(*self.recent[-(RECENT_COMMANDS - 1) :], command_id))


EMPTY = Snapshot()

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Snapshot)


def encode(snapshot: Snapshot) -> bytes:
    return _encoder.encode(snapshot)


def decode(data: bytes) -> Snapshot:
    return _decoder.decode(data)
