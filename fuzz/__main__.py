"""`python -m fuzz [--budget S] [--examples N] [--only REGEX]`: schemathesis over every route of the
gateway's OpenAPI document with every role's token and none (see fuzz/run.py); exit 0 only without
findings."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from fuzz.run import ROLES, STOP, Options, fuzz


def cli(argv: list[str] | None = None) -> int:
    # A TERM (a time limit, a supervisor) ends the run at its next request: its system is stopped and dropped.
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--budget", type=float, default=float(os.environ.get("FUZZ_SECONDS", "420")),
                        help="seconds of fuzzing after setup (default 420; env FUZZ_SECONDS; at most 540)")
    parser.add_argument("--examples", type=int, default=int(os.environ.get("FUZZ_EXAMPLES", "3")),
                        help="examples per operation, role and generation mode (default 3)")
    parser.add_argument("--only", default=None, help='a regular expression on "METHOD /path"')
    parser.add_argument("--roles", default=",".join(ROLES), help=f"comma-separated, of {', '.join(ROLES)}")
    args = parser.parse_args(argv)
    roles = tuple(r for r in args.roles.split(",") if r)
    if unknown := set(roles) - set(ROLES):
        parser.error(f"unknown roles {sorted(unknown)}")
    if not 5 <= args.budget <= 540 or args.examples < 1:
        parser.error("--budget must be 5..540 seconds and --examples at least 1")
    admin = os.environ.get("REGISTRY_ADMIN_DATABASE_URL") or os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    amqp = os.environ.get("REGISTRY_AMQP_URL") or os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
    return fuzz(Options(budget=args.budget, examples=args.examples, only=args.only, roles=roles, admin_dsn=admin,
                        amqp_url=amqp))


if __name__ == "__main__":
    sys.exit(cli())
