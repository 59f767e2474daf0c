"""The tree is the architecture: no process package imports another, the contract imports
nothing of the project, and the shared ground imports only the contract."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = ("command", "processor", "projector", "query", "compliance")
PROJECT = (*PROCESSES, "events", "common", "ledgerline", "bench", "tests", "migrations")
# What each package may import of the project, besides itself.
ALLOWED = {
    "events": set(),
    "common": {"events"},
    **{p: {"events", "common"} for p in PROCESSES},
}


def imports_of(package: str) -> list[tuple[str, int, str]]:
    """Every project package a module of ``package`` imports, function-level imports included."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in PROJECT and top != package:
                    found.append((str(path.relative_to(ROOT)), node.lineno, name))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_what_lies_beneath_it(package: str) -> None:
    crossing = [f"{where}:{line} imports {name}" for where, line, name in imports_of(package)
                if name.split(".")[0] not in ALLOWED[package]]
    assert crossing == []


def test_the_scan_sees_function_level_imports() -> None:
    # The launcher imports every process inside its subcommands: the scan must find those.
    found = {name.split(".")[0] for _, _, name in imports_of("ledgerline")}
    assert set(PROCESSES) <= found
