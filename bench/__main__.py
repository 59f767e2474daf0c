"""Run the benchmarks of this package (``make bench``), one after the other: every module with a
``main()``, or only those named (``python -m bench processor projector``), each with its defaults."""

import importlib
import pkgutil
import sys

import bench


def main() -> None:
    names = sys.argv[1:] or sorted(m.name for m in pkgutil.iter_modules(bench.__path__)
                                   if not m.name.startswith("_") and not m.ispkg)
    sys.argv[1:] = []  # each benchmark parses its own (empty) command line
    for name in names:
        run = getattr(importlib.import_module(f"bench.{name}"), "main", None)
        if run is None:
            continue
        print(f"== bench.{name}", flush=True)
        run()


if __name__ == "__main__":
    main()
