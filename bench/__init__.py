"""Benchmarks: each module with a ``main(argv)`` prints its figures beside a baseline measured in
the same run. ``python -m bench`` runs them all; ``python -m bench.processor --help`` runs one."""
