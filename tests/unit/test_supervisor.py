"""The supervisor's decisions, on parts that are plain flags: restart what died, back off from
what will not start or keeps dying, report every part."""

import json
from pathlib import Path

import pytest

from common.failures import Backoff
from ledgerline.stack import supervisor as sup
from ledgerline.stack.supervisor import Part, Supervisor


class Fake:
    def __init__(self, fail_starts: int = 0) -> None:
        self.up, self.pid, self.starts, self.fail_starts = True, 100, 0, fail_starts

    def restart(self) -> None:
        self.starts += 1
        if self.fail_starts:
            self.fail_starts -= 1
            raise RuntimeError("port in use")
        self.up, self.pid = True, self.pid + 1

    def part(self, name: str) -> Part:
        return Part(name, lambda: self.up, self.restart, lambda: self.pid if self.up else None,
                    backoff=Backoff(first=10.0, cap=40.0))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(sup.time, "monotonic", c)
    return c


def test_a_dead_part_is_restarted_and_reported(clock: Clock, tmp_path: Path) -> None:
    broker, db = Fake(), Fake()
    s = Supervisor([broker.part("kafka"), db.part("postgres")], tmp_path / "health.json")
    clock.now += 60
    broker.up = False
    s.tick()
    assert broker.starts == 1 and db.starts == 0 and s.all_up()
    report = json.loads((tmp_path / "health.json").read_text())["parts"]
    assert report["kafka"]["restarts"] == 1 and report["kafka"]["pid"] == 101
    assert report["postgres"]["restarts"] == 0


def test_a_part_that_will_not_start_is_retried_with_backoff(clock: Clock) -> None:
    broker = Fake(fail_starts=2)
    s = Supervisor([broker.part("kafka")])
    clock.now += 60
    broker.up = False
    s.tick()
    assert broker.starts == 1 and s.health()["kafka"]["state"] == "down"
    clock.now += 5  # the first backoff is 10 s (±20 %)
    s.tick()
    assert broker.starts == 1
    clock.now += 8
    s.tick()
    assert broker.starts == 2  # failed again: the next wait is longer
    clock.now += 15
    s.tick()
    assert broker.starts == 2
    clock.now += 10
    s.tick()
    assert broker.starts == 3 and s.all_up()


def test_a_part_that_dies_soon_after_coming_back_waits(clock: Clock) -> None:
    proc = Fake()
    s = Supervisor([proc.part("projector")])
    clock.now += 60
    proc.up = False
    s.tick()
    assert proc.starts == 1
    clock.now += 1
    proc.up = False  # crashing at start
    s.tick()
    assert proc.starts == 1
    clock.now += 12
    s.tick()
    assert proc.starts == 2


def test_a_stopped_supervisor_restarts_nothing(clock: Clock, tmp_path: Path) -> None:
    proc = Fake()
    s = Supervisor([proc.part("processor")], tmp_path / "health.json")
    s.stop()
    proc.up = False
    s.tick()
    assert proc.starts == 0
    assert json.loads((tmp_path / "health.json").read_text())["parts"]["processor"]["state"] == "stopped"
