"""Schema snapshots: every message version is committed, and a version only changes compatibly."""

from pathlib import Path
from typing import Literal

import pytest

from events import schema
from events.codec import CODEC
from events.messages import COMMANDS, EVENTS, Message

MESSAGES = [*COMMANDS, *EVENTS]


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
def test_current_version_has_a_snapshot_and_is_compatible_with_it(cls: type[Message]) -> None:
    snapshots = schema.committed()
    old = snapshots.get((cls.__name__, cls.VERSION))
    assert old is not None, f"run `python -m events.schema` to commit {cls.__name__} v{cls.VERSION}"
    assert schema.incompatibilities(old, schema.schema_of(cls)) == []


def test_every_older_version_can_be_upcast_and_no_snapshot_is_from_the_future() -> None:
    current = {cls.__name__: cls.VERSION for cls in MESSAGES}
    for name, version in schema.committed():
        assert name in current, f"a snapshot of {name}, which is no message type"
        assert version <= current[name], f"{name} v{version} is newer than the class"
        if version < current[name]:
            assert (name, version) in CODEC.upcasters, f"no upcaster for {name} v{version}"


# Versions of one made-up message, to show what the check lets through and what it stops.
class V1(Message, frozen=True, kw_only=True):
    amount: int
    memo: str | None = None
    kind: Literal["a", "b"] = "a"


class AddsOptional(Message, frozen=True, kw_only=True):
    amount: int
    memo: str | None = None
    kind: Literal["a", "b"] = "a"
    note: str | None = None


class WidensEnum(Message, frozen=True, kw_only=True):
    amount: int
    memo: str | None = None
    kind: Literal["a", "b", "c"] = "a"


class RemovesField(Message, frozen=True, kw_only=True):
    amount: int
    kind: Literal["a", "b"] = "a"


class RetypesField(Message, frozen=True, kw_only=True):
    amount: str
    memo: str | None = None
    kind: Literal["a", "b"] = "a"


class AddsRequired(Message, frozen=True, kw_only=True):
    amount: int
    memo: str | None = None
    kind: Literal["a", "b"] = "a"
    fee: int


class MakesRequired(Message, frozen=True, kw_only=True):
    amount: int
    memo: str | None
    kind: Literal["a", "b"] = "a"


class NarrowsEnum(Message, frozen=True, kw_only=True):
    amount: int
    memo: str | None = None
    kind: Literal["a"] = "a"


@pytest.mark.parametrize("new", [V1, AddsOptional, WidensEnum], ids=lambda c: c.__name__)
def test_compatible_changes_pass(new: type[Message]) -> None:
    assert schema.incompatibilities(schema.schema_of(V1), schema.schema_of(new)) == []


@pytest.mark.parametrize(
    ("new", "problem"),
    [
        (RemovesField, "field 'memo' was removed"),
        (RetypesField, "field 'amount' changed type"),
        (AddsRequired, "new field 'fee' is required"),
        (MakesRequired, "field 'memo' became required"),
        (NarrowsEnum, "field 'kind' changed type"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else "",
)
def test_incompatible_changes_are_named(new: type[Message], problem: str) -> None:
    problems = schema.incompatibilities(schema.schema_of(V1), schema.schema_of(new))
    assert len(problems) == 1 and problems[0].startswith(problem), problems


def test_the_writer_refuses_an_incompatible_overwrite_and_accepts_a_compatible_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema, "COMMANDS", (V1,))
    monkeypatch.setattr(schema, "EVENTS", ())
    assert schema.write(tmp_path) == []
    assert schema.check(tmp_path) == []
    written = (tmp_path / "V1.v1.json").read_text()

    monkeypatch.setattr(schema, "COMMANDS", (RetypesField,))
    (tmp_path / "V1.v1.json").rename(tmp_path / "RetypesField.v1.json")
    refused = schema.write(tmp_path)
    assert len(refused) == 1 and "amount" in refused[0]
    assert (tmp_path / "RetypesField.v1.json").read_text() == written  # left as it was

    monkeypatch.setattr(schema, "COMMANDS", (AddsOptional,))
    (tmp_path / "RetypesField.v1.json").rename(tmp_path / "AddsOptional.v1.json")
    assert schema.check(tmp_path) == ["AddsOptional v1: snapshot is out of date "
                                      "(run python -m events.schema)"]
    assert schema.write(tmp_path) == []
    assert schema.check(tmp_path) == []
