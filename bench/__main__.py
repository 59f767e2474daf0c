"""Run every benchmark in this package (``make bench``), one after the other."""

import importlib
import pkgutil
import sys

import bench


def main() -> None:
    names = [m.name for m in pkgutil.iter_modules(bench.__path__)
             if not m.name.startswith("_") and not m.ispkg]
    for name in sorted(names):
        module = importlib.import_module(f"bench.{name}")
        run = getattr(module, "main", None)
        if run is None:
            continue
        print(f"== bench.{name}", flush=True)
        run(sys.argv[1:])


if __name__ == "__main__":
    main()
