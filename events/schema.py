"""Committed schema snapshots of every message version, and the rule for changing them.

``events/schemas/<Type>.v<N>.json`` holds the JSON Schema of version N of a message type, as
msgspec generates it. Within one version only compatible changes are allowed: new optional
fields, and new values of an enumeration. Anything else (a field removed or retyped, an optional
field made required, a new required field) needs a new version and an upcaster.

``python -m events.schema`` writes the snapshots of the current versions, refusing to overwrite
one incompatibly; ``python -m events.schema --check`` only reports.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from events.messages import COMMANDS, EVENTS, Message

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

Schema = dict[str, Any]
_IGNORED = frozenset({"title", "description", "default", "examples"})


def schema_of(cls: type[Message]) -> Schema:
    return msgspec.json.schema(cls)


def snapshot_path(name: str, version: int, directory: Path = SCHEMA_DIR) -> Path:
    return directory / f"{name}.v{version}.json"


def dumps(schema: Schema) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def committed(directory: Path = SCHEMA_DIR) -> dict[tuple[str, int], Schema]:
    """Every committed snapshot, keyed ``(type name, version)``."""
    found = {}
    for path in sorted(directory.glob("*.v*.json")):
        name, _, version = path.name.removesuffix(".json").rpartition(".v")
        found[(name, int(version))] = json.loads(path.read_text())
    return found


def _resolve(node: Any, defs: Schema) -> Any:
    """``node`` with every ``$ref`` replaced by its definition and descriptive keys dropped."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _resolve(defs[ref.removeprefix("#/$defs/")], defs)
        return {k: _resolve(v, defs) for k, v in node.items() if k not in _IGNORED}
    if isinstance(node, list):
        return [_resolve(v, defs) for v in node]
    return node


def _object(schema: Schema) -> Schema:
    resolved: Schema = _resolve(schema, schema.get("$defs", {}))
    resolved.pop("$defs", None)
    return resolved


def _widened(old: Any, new: Any) -> bool:
    """``new`` accepts every value ``old`` accepts, by the rules snapshots can show."""
    if old == new:
        return True
    if isinstance(old, dict) and isinstance(new, dict):
        if set(old) == {"enum"} and set(new) == {"enum"}:
            return set(old["enum"]) <= set(new["enum"])
        if set(old) == set(new):
            return all(_widened(old[k], new[k]) for k in old)
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return all(_widened(o, n) for o, n in zip(old, new, strict=True))
    return False


def incompatibilities(old: Schema, new: Schema) -> list[str]:
    """Why a reader of schema ``new`` cannot take data written under ``old``; empty if it can."""
    o, n = _object(old), _object(new)
    o_props, n_props = o.get("properties", {}), n.get("properties", {})
    o_required, n_required = set(o.get("required", [])), set(n.get("required", []))
    problems = []
    for name, prop in sorted(o_props.items()):
        if name not in n_props:
            problems.append(f"field {name!r} was removed")
        elif not _widened(prop, n_props[name]):
            problems.append(f"field {name!r} changed type: {prop} -> {n_props[name]}")
        elif name in n_required and name not in o_required:
            problems.append(f"field {name!r} became required")
    for name in sorted(n_required - set(o_props)):
        problems.append(f"new field {name!r} is required")
    return problems


def check(directory: Path = SCHEMA_DIR) -> list[str]:
    """Problems between the messages as defined and their committed snapshots."""
    snapshots = committed(directory)
    problems = []
    for cls in (*COMMANDS, *EVENTS):
        name, version = cls.__name__, cls.VERSION
        old = snapshots.get((name, version))
        if old is None:
            problems.append(f"{name} v{version}: no snapshot (run python -m events.schema)")
            continue
        for problem in incompatibilities(old, schema_of(cls)):
            problems.append(f"{name} v{version}: {problem} (bump VERSION and add an upcaster)")
        if old != schema_of(cls):
            problems.append(f"{name} v{version}: snapshot is out of date (run python -m events.schema)")
    return problems


def write(directory: Path = SCHEMA_DIR) -> list[str]:
    """Write the snapshot of every current version; never overwrite one incompatibly."""
    directory.mkdir(parents=True, exist_ok=True)
    snapshots = committed(directory)
    refused = []
    for cls in (*COMMANDS, *EVENTS):
        name, version, schema = cls.__name__, cls.VERSION, schema_of(cls)
        old = snapshots.get((name, version))
        problems = [] if old is None else incompatibilities(old, schema)
        if problems:
            refused.append(f"{name} v{version}: {'; '.join(problems)} (bump VERSION, add an upcaster)")
            continue
        path = snapshot_path(name, version, directory)
        text = dumps(schema)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(directory.parent)}")
    return refused


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m events.schema", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="report, write nothing")
    args = parser.parse_args(argv)
    problems = check() if args.check else write()
    for problem in problems:
        print(problem, file=sys.stderr)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
