"""``ledgerline up`` stopped by a signal (a process manager's SIGTERM, a closed terminal's
SIGHUP) stops every process it started, as Ctrl-C does; nothing is left running."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledgerline import local
from ledgerline.stack.ports import free_port
from tests.conftest import COMPLIANCE_RULES, Running

pytestmark = pytest.mark.integration


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_the_whole_local_stack(running: Running, tmp_path: Path, sig: int) -> None:
    s = running.stack.settings
    # The session's chain key: a stack with a key of its own would sign checkpoints on the shared
    # ledger.anchors that no other test's `audit --verify-chain` trusts.
    env = {**os.environ, **local.anchor_env(running.stack.home, os.environ),
           "KAFKA_BOOTSTRAP": running.stack.infra.bootstrap,
           "DATABASE_URL": running.stack.infra.database_url, "LEDGERLINE_HOME": str(tmp_path),
           "LEDGERLINE_JWT_SECRET": s.jwt_secret or "", "LEDGERLINE_QUERY_PORT": str(free_port()),
           "LEDGERLINE_COMMAND_PORT": str(free_port()),
           "LEDGERLINE_PROJECTOR_METRICS_PORT": str(free_port()),
           "LEDGERLINE_PROCESSOR_METRICS_PORT": str(free_port()),
           "LEDGERLINE_COMPLIANCE_METRICS_PORT": str(free_port()),
           "LEDGERLINE_COMPLIANCE_RULES": str(COMPLIANCE_RULES)}
    log = tmp_path / "up.log"
    started: list[int] = []
    with log.open("wb") as out:
        up = subprocess.Popen([sys.executable, "-m", "ledgerline", "up", "--no-demo"], env=env,
                              stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while "Ledgerline is running" not in log.read_text(errors="replace"):
            assert up.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.2)
        started = _children(up.pid)
        assert len(started) == 5, started  # the five processes (broker and database are ours)
        up.send_signal(sig)
        assert up.wait(60) == 0, log.read_text(errors="replace")[-3000:]
        left = [p for p in started if _alive(p)]
        assert not left, f"still running after {signal.Signals(sig).name}: {left}"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in started:  # whatever a failed stop left behind, by the pids it started
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
