"""Print the GraphQL schema: ``python -m query.print_schema > schema.graphql`` (``--check`` to
compare with the file in the repository and fail when they differ)."""

import argparse
import sys
from pathlib import Path

from query.schema import schema

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "schema.graphql"


def sdl() -> str:
    return schema.as_str() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help=f"fail if {SCHEMA_FILE.name} differs")
    parser.add_argument("--write", action="store_true", help=f"write {SCHEMA_FILE.name}")
    args = parser.parse_args(argv)
    if args.check:
        if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text() != sdl():
            print(f"{SCHEMA_FILE.name} is out of date: run python -m query.print_schema --write",
                  file=sys.stderr)
            return 1
        return 0
    if args.write:
        SCHEMA_FILE.write_text(sdl())
        return 0
    sys.stdout.write(sdl())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
