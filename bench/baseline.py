"""The ceiling for the ledger hot path: a bare asyncpg ledger transaction, no registry code at all.

50 tasks, each holding its own connection from a pool of 50, each in a loop: BEGIN; lock two balance
rows (one SELECT ... ORDER BY ... FOR UPDATE, so locks are always taken in id order and never
deadlock); update both; insert a journal row; COMMIT. Compare the registry's own figures with these.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import asyncpg

from bench.harness import BenchError, Context, Figure

ACCOUNTS = 10_000
TASKS = 50
OPENING_BALANCE = 1_000_000_000
WARMUP_SECONDS = 1.0

SCHEMA = """
CREATE TABLE balances (account_id int PRIMARY KEY, amount bigint NOT NULL);
CREATE TABLE journal (
    id bigserial PRIMARY KEY,
    debit_account int NOT NULL,
    credit_account int NOT NULL,
    amount bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""
LOCK = """
SELECT account_id, amount FROM balances WHERE account_id = ANY($1::int[]) ORDER BY account_id FOR UPDATE
"""
UPDATE = "UPDATE balances SET amount = amount + $2 WHERE account_id = $1"
JOURNAL = "INSERT INTO journal (debit_account, credit_account, amount) VALUES ($1, $2, $3)"


@dataclass
class Counter:
    done: int = 0
    stop: bool = False


async def transfer(conn: asyncpg.Connection, rng: random.Random) -> None:
    debit, credit = rng.sample(range(1, ACCOUNTS + 1), 2)
    amount = rng.randint(1, 100)
    async with conn.transaction():
        rows = await conn.fetch(LOCK, sorted((debit, credit)))
        if {r["account_id"]: r["amount"] for r in rows}[debit] < amount:
            raise RuntimeError(f"account {debit} cannot cover {amount}")
        await conn.execute(UPDATE, debit, -amount)
        await conn.execute(UPDATE, credit, amount)
        await conn.execute(JOURNAL, debit, credit, amount)


async def worker(pool: asyncpg.Pool, counter: Counter, seed: int) -> None:
    rng = random.Random(seed)
    async with pool.acquire() as conn:
        while not counter.stop:
            await transfer(conn, rng)
            counter.done += 1


async def window(workers: list[asyncio.Task[None]], seconds: float) -> None:
    """Let the workers run for `seconds`; if one of them fails meanwhile, stop at once."""
    done, _ = await asyncio.wait(workers, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    if done:
        raise next(iter(done)).exception() or BenchError("a worker stopped early")


async def run(ctx: Context) -> None:
    seconds = ctx.seconds
    await ctx.ensure_connections(TASKS, "bench.baseline")
    async with ctx.scratch_database() as dsn:
        setup = await asyncpg.connect(dsn)
        try:
            await setup.execute(SCHEMA)
            await setup.execute(
                "INSERT INTO balances SELECT g, $1 FROM generate_series(1, $2) g", OPENING_BALANCE, ACCOUNTS
            )
            await setup.execute("VACUUM ANALYZE balances")
        finally:
            await setup.close()

        counter = Counter()
        async with asyncpg.create_pool(dsn, min_size=TASKS, max_size=TASKS) as pool:
            workers = [asyncio.create_task(worker(pool, counter, seed)) for seed in range(TASKS)]
            try:
                # Timed windows, not waits: warm up, then measure whatever completes in `seconds`.
                await window(workers, WARMUP_SECONDS)
                done0, cpu0, wall0 = counter.done, time.process_time(), time.perf_counter()
                await window(workers, seconds)
                done1, cpu1, wall1 = counter.done, time.process_time(), time.perf_counter()
            finally:
                counter.stop = True
                await asyncio.gather(*workers)

            journal_rows, total = await pool.fetchrow(
                "SELECT (SELECT count(*) FROM journal), sum(amount) FROM balances"
            )
        if journal_rows != counter.done or total != OPENING_BALANCE * ACCOUNTS:
            raise BenchError(
                f"ledger inconsistent: {journal_rows} journal rows for {counter.done} "
                f"transactions, balances sum to {total}"
            )

    measured = done1 - done0
    if measured == 0:
        raise BenchError("no transaction completed in the measurement window")
    ctx.record(
        Figure(
            "baseline.pg_ledger_txn_per_s",
            measured / (wall1 - wall0),
            "txn/s",
            notes=f"bare asyncpg+uvloop, {TASKS} tasks/connections, {ACCOUNTS:,} balances, "
            f"{wall1 - wall0:.1f} s; ARCHITECTURE.md measured ~2,000-2,400/s on 2 cores",
        )
    )
    ctx.record(
        Figure(
            "baseline.pg_ledger_txn_client_cpu_us",
            (cpu1 - cpu0) / measured * 1e6,
            "us",
            higher_is_better=False,
            notes="this process's CPU (time.process_time) per transaction; ARCHITECTURE.md measured ~270 us",
        )
    )
