"""Stop: a SIGTERM that reaches the processor while it is taking its partitions (fenced and
recovered, not yet running) -> it exits promptly and cleanly, with no partition worker left
running after the group member stopped and no producer left open."""

import pytest

from tests.conftest import Running
from tests.integration.processes import own_processors, wait_for_exit, wait_for_log

pytestmark = pytest.mark.integration


async def test_a_stop_signal_while_taking_partitions_leaves_nothing_running(running: Running) -> None:
    with own_processors(running, "stop-while-taking") as procs:
        proc = procs.start("stop-while-taking", LEDGERLINE_FAULT_SIGNAL_WHILE_TAKING="TERM")
        await wait_for_log(proc, "sending myself SIGTERM while taking partitions", within=60)
        assert await wait_for_exit(proc, 20) == 0, proc.text()[-3000:]
    text = proc.text()
    assert "recovered" in text, "the signal was meant to come after the partitions were fenced"
    assert "assigned partitions" not in text, "workers were registered after the stop signal"
    for sign in ("still running after the work ended", "Unclosed AIOKafkaProducer",
                 "ignored their cancellation", "still stopping"):
        assert sign not in text, text[-3000:]
