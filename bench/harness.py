"""The benchmark harness: figures, the context handed to each module, and the results file."""

from __future__ import annotations

import datetime as dt
import importlib
import inspect
import json
import os
import platform
import secrets
import socket
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import uvloop

RESULTS_FILE = Path(__file__).parent / "results" / "latest.json"
SCRATCH_PREFIX = "bench_"
SCRATCH_PATTERN = r"^bench_[0-9a-f]{8}$"
DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"

BenchRun = Callable[["Context"], Awaitable[None]]


class BenchError(Exception):
    """A benchmark cannot run as configured; the message says why (printed without a traceback)."""


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    goal: float | None = None
    higher_is_better: bool = True
    notes: str = ""

    @property
    def met(self) -> bool | None:
        if self.goal is None:
            return None
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def line(self) -> str:
        if self.goal is None:
            verdict = "(no goal)"
        else:
            sign = ">=" if self.higher_is_better else "<="
            verdict = f"goal {sign} {self.goal:,.6g}  {'met' if self.met else 'MISSED'}"
        return f"{self.name:<44} {self.value:>14,.2f} {self.unit:<8} {verdict}"

    def as_json(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "unit": self.unit,
            "goal": self.goal,
            "met": self.met,
            "notes": self.notes,
        }


def asyncpg_dsn(url: str) -> str:
    """Accept SQLAlchemy-style URLs too: `postgresql+asyncpg://` becomes `postgresql://`."""
    scheme, sep, rest = url.partition("://")
    return scheme.split("+", 1)[0] + sep + rest


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + database))


class Context:
    """What a benchmark module's `run(ctx)` gets: server addresses, scratch databases, `record`."""

    def __init__(self, admin_dsn: str, amqp_url: str) -> None:
        self.admin_dsn = admin_dsn
        self.amqp_url = amqp_url
        self.figures: dict[str, Figure] = {}

    @property
    def seconds(self) -> float:
        """The measurement window: env BENCH_SECONDS, default 10."""
        raw = os.environ.get("BENCH_SECONDS", "10")
        try:
            seconds = float(raw)
        except ValueError:
            seconds = 0.0
        if not 0 < seconds < float("inf"):
            raise BenchError(f"BENCH_SECONDS must be a positive number of seconds, not {raw!r}")
        return seconds

    def record(self, figure: Figure) -> None:
        self.figures[figure.name] = figure
        print(figure.line(), flush=True)

    async def admin_connection(self) -> asyncpg.Connection:
        try:
            return await asyncpg.connect(self.admin_dsn)
        except (OSError, asyncpg.PostgresError) as exc:
            raise BenchError(
                f"cannot connect to PostgreSQL at {self.admin_dsn} ({exc}); "
                "start it or set REGISTRY_ADMIN_DATABASE_URL"
            ) from exc

    @asynccontextmanager
    async def scratch_database(self) -> AsyncIterator[str]:
        """Create `bench_<8 hex>`, yield its DSN, and drop it (WITH (FORCE)) afterwards."""
        name = SCRATCH_PREFIX + secrets.token_hex(4)
        admin = await self.admin_connection()
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        try:
            yield with_database(self.admin_dsn, name)
        finally:
            admin = await self.admin_connection()
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    async def drop_leftover_databases(self) -> None:
        admin = await self.admin_connection()
        try:
            names = await admin.fetch("SELECT datname FROM pg_database WHERE datname ~ $1", SCRATCH_PATTERN)
            for (name,) in names:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                print(f"dropped leftover database {name}", flush=True)
        finally:
            await admin.close()

    async def ensure_connections(self, needed: int, who: str) -> None:
        """Fail clearly unless the server has `needed` connection slots free for us."""
        admin = await self.admin_connection()
        try:
            row = await admin.fetchrow(
                """
                SELECT current_setting('max_connections')::int AS max_connections,
                       CASE WHEN r.rolsuper THEN 0
                            ELSE current_setting('superuser_reserved_connections')::int END AS reserved,
                       (SELECT count(*) FROM pg_stat_activity
                         WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()) AS in_use
                  FROM pg_roles r WHERE r.rolname = current_user
                """
            )
        finally:
            await admin.close()
        assert row is not None
        free = row["max_connections"] - row["reserved"] - row["in_use"]
        if free < needed:
            raise BenchError(
                f"{who} needs {needed} database connections, but the server has max_connections="
                f"{row['max_connections']} with {row['in_use']} in use and {row['reserved']} reserved "
                f"({free} free). Close other clients, or raise it to at least "
                f"{needed + row['in_use'] + row['reserved']} (ALTER SYSTEM SET max_connections = ...; "
                "then restart PostgreSQL)."
            )


def machine() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
    }


def write_results(figures: dict[str, Figure], *, merge: bool, path: Path = RESULTS_FILE) -> None:
    """Write latest.json; with `merge`, keep figures from the existing file that this run didn't make."""
    previous: dict[str, Any] = {}
    if merge and path.exists():
        try:
            previous = json.loads(path.read_text())["figures"]
        except (ValueError, KeyError, TypeError):
            print(f"warning: {path} is unreadable; starting it afresh", file=sys.stderr)
    document = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": previous | {name: figure.as_json() for name, figure in figures.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def load_module(name: str) -> BenchRun:
    run = getattr(importlib.import_module(name), "run", None)
    if not inspect.iscoroutinefunction(run):
        raise BenchError(f"{name} has no `async def run(ctx)`")
    return cast(BenchRun, run)


async def run_modules(modules: Sequence[str], ctx: Context) -> list[str]:
    """Run each module in turn; return the names of those that failed (the others still run)."""
    failed: list[str] = []
    await ctx.drop_leftover_databases()
    for name in modules:
        print(f"== {name}", flush=True)
        try:
            await load_module(name)(ctx)
        except BenchError as exc:
            print(f"FAILED {name}: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
        except Exception:
            traceback.print_exc()
            print(f"FAILED {name}", file=sys.stderr, flush=True)
            failed.append(name)
    return failed


def main(modules: Sequence[str], *, partial: bool) -> int:
    ctx = Context(
        admin_dsn=asyncpg_dsn(os.environ.get("REGISTRY_ADMIN_DATABASE_URL", DEFAULT_ADMIN_DSN)),
        amqp_url=os.environ.get("REGISTRY_AMQP_URL", DEFAULT_AMQP_URL),
    )
    info = machine()
    print(
        f"bench on {info['hostname']}: {info['cpu_count']} CPUs, Python {info['python']}, uvloop", flush=True
    )
    try:
        failed = uvloop.run(run_modules(modules, ctx))
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if ctx.figures:
            write_results(ctx.figures, merge=partial)
            print(f"wrote {RESULTS_FILE}", flush=True)
    return 1 if failed else 0
