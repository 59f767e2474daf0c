"""A fault-injection hook for the processor's crash and zombie tests; off unless its variable is set.

``LEDGERLINE_FAULT_AFTER_RECORDS=N`` makes the processor send itself ``LEDGERLINE_FAULT_SIGNAL``
(``KILL``, the default, or ``STOP``) once, when it has decided N records, in the middle of that
batch's transaction: the batch's records are in the log, its offsets and commit are not.
"""

import logging
import os
import signal
from collections.abc import Mapping

log = logging.getLogger("ledgerline.processor")


class Fault:
    def __init__(self, after_records: int, sig: signal.Signals) -> None:
        self.left = after_records
        self.signal = sig

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Fault | None":
        raw = env.get("LEDGERLINE_FAULT_AFTER_RECORDS")
        if not raw:
            return None
        return cls(int(raw), signal.Signals[f"SIG{env.get('LEDGERLINE_FAULT_SIGNAL', 'KILL')}"])

    def decided(self, records: int) -> None:
        fire = 0 < self.left <= records
        self.left -= records
        if fire:
            log.warning("fault injection: sending myself %s mid-transaction", self.signal.name)
            os.kill(os.getpid(), self.signal)
