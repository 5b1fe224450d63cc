"""`python -m bench [names...]`: run the registered benchmark modules (all, or those named)."""

from __future__ import annotations

import argparse
import sys

from bench.harness import main

# The registry of benchmark modules, run in this order. Each exposes `async def run(ctx) -> None`.
MODULES: list[str] = [
    "bench.baseline",
    "bench.ledger",
    "bench.allocation",
    "bench.transfers",
    "bench.compliance",
    "bench.auctions",
]


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        help=f"modules to run, e.g. baseline or bench.baseline (default: all of {', '.join(MODULES)})",
    )
    args = parser.parse_args(argv)
    if not args.names:
        return main(MODULES, partial=False)
    chosen = list(dict.fromkeys(n if n.startswith("bench.") else f"bench.{n}" for n in args.names))
    if unknown := [m for m in chosen if m not in MODULES]:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; registered: {', '.join(MODULES)}")
    return main(chosen, partial=True)


if __name__ == "__main__":
    sys.exit(cli())
