"""No password on a command line: what the stack starts is visible to every user of the machine
(``ps``, ``/proc/PID/cmdline``). The broker's storage is formatted with the SCRAM users'
passwords read from a Java argument file only the owner can read, removed afterwards. (The
running secure stack's command lines: ``tests/e2e/test_secure_profile.py``.)"""

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ledgerline.stack import kafka as kafka_stack
from ledgerline.stack.kafka import BrokerSecurity, KafkaBroker


def test_formatting_a_secure_broker_puts_no_password_on_the_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    users = {"ledgerline-admin": "admin-pw-Zq81xQ", "ledgerline-processor": 'proc-pw-"quoted"\\x'}
    security = BrokerSecurity(tmp_path / "broker.p12", "keystore-pw-7Hk2", tmp_path / "ca.pem",
                              "ledgerline-admin", users)
    broker = KafkaBroker(tmp_path / "jars", tmp_path / "kafka", port=19092, controller_port=19093,
                         security=security)
    broker.data_dir.mkdir(parents=True)
    seen: list[tuple[list[str], str, int]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        argfile = Path(command[-1].removeprefix("@"))
        seen.append((command, argfile.read_text(), stat.S_IMODE(argfile.stat().st_mode)))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(kafka_stack.subprocess, "run", run)
    broker._format(["java", "-cp"], str(tmp_path / "jars" / "*"), tmp_path / "server.properties")

    ((command, content, mode),) = seen
    line = "\0".join(command)
    for secret in (*users.values(), security.keystore_password):
        assert secret not in line
    assert "kafka.tools.StorageTool" not in command  # the whole tool invocation is in the file
    assert mode == 0o600
    for user in users:
        assert f"name={user}," in content
    # The launcher's quoting: backslashes and quotes escaped inside a quoted argument.
    assert '"SCRAM-SHA-512=[name=ledgerline-processor,password=proc-pw-\\"quoted\\"\\\\x]"' in content
    assert not Path(command[-1].removeprefix("@")).exists()  # removed once the tool has run


def test_the_argument_file_is_removed_when_formatting_fails(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    security = BrokerSecurity(tmp_path / "broker.p12", "k", tmp_path / "ca.pem", "admin", {"admin": "pw"})
    broker = KafkaBroker(tmp_path / "jars", tmp_path / "kafka", port=19092, controller_port=19093,
                         security=security)
    broker.data_dir.mkdir(parents=True)
    monkeypatch.setattr(kafka_stack.subprocess, "run",
                        lambda command, **_: subprocess.CompletedProcess(command, 1))
    with pytest.raises(kafka_stack.StackError):
        broker._format(["java", "-cp"], "jars/*", tmp_path / "server.properties")
    assert not (broker.data_dir / "format.args").exists()
