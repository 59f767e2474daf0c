"""Fault-injection hooks for the processor's crash, zombie and stop tests; off unless their
variables are set.

``LEDGERLINE_FAULT_AFTER_RECORDS=N`` makes the processor send itself ``LEDGERLINE_FAULT_SIGNAL``
(``KILL``, the default, or ``STOP``) once, when it has decided N records, in the middle of that
batch's transaction: the batch's records are in the log, its offsets and commit are not.

``LEDGERLINE_FAULT_SIGNAL_WHILE_TAKING=TERM`` makes it send itself that signal once, while it
takes partitions: after their workers have started (fenced, state read) and before they run,
pausing there long enough for the stop to reach the group member first.
"""

import asyncio
import logging
import os
import signal
from collections.abc import Mapping

log = logging.getLogger("ledgerline.processor")

#: How long taking partitions pauses after the signal (``LEDGERLINE_FAULT_SIGNAL_WHILE_TAKING``).
TAKING_PAUSE_SECONDS = 1.0


class Fault:
    def __init__(self, after_records: int, sig: signal.Signals,
                 while_taking: signal.Signals | None = None) -> None:
        self.left = after_records
        self.signal = sig
        self.while_taking = while_taking

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Fault | None":
        after = env.get("LEDGERLINE_FAULT_AFTER_RECORDS")
        taking = env.get("LEDGERLINE_FAULT_SIGNAL_WHILE_TAKING")
        if not after and not taking:
            return None
        return cls(int(after or 0), signal.Signals[f"SIG{env.get('LEDGERLINE_FAULT_SIGNAL', 'KILL')}"],
                   signal.Signals[f"SIG{taking}"] if taking else None)

    def decided(self, records: int) -> None:
        fire = 0 < self.left <= records
        self.left -= records
        if fire:
            log.warning("fault injection: sending myself %s mid-transaction", self.signal.name)
            os.kill(os.getpid(), self.signal)

    async def taking(self) -> None:
        sig, self.while_taking = self.while_taking, None
        if sig is not None:
            log.warning("fault injection: sending myself %s while taking partitions", sig.name)
            os.kill(os.getpid(), sig)
            await asyncio.sleep(TAKING_PAUSE_SECONDS)
