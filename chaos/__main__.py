"""`python -m chaos [--seconds N] [--seed S]`: the load-and-fault run (see chaos/run.py); exit 0 only
when every invariant held."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from chaos.run import Config, main


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("CHAOS_SECONDS", "150")),
                        help="how long the load and the faults last (default 150; env CHAOS_SECONDS)")
    parser.add_argument("--seed", type=int, default=None, help="the random seed (default: a fresh one, printed)")
    parser.add_argument("--installations", type=int, default=10)
    parser.add_argument("--intermediaries", type=int, default=4)
    args = parser.parse_args(argv)
    if not 20 <= args.seconds <= 900:
        parser.error("--seconds must be between 20 and 900")
    config = Config(seconds=args.seconds, seed=args.seed, installations=args.installations,
                    intermediaries=args.intermediaries)
    return asyncio.run(main(config))


if __name__ == "__main__":
    sys.exit(cli())
