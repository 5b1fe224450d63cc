"""Benchmarks for the registry: `python -m bench [names...]` (see bench/README.md)."""
