"""The unit ledger through the real accounts API (issue #4).

- A movement of 100,000,000 units should cost what a movement of 1 unit costs: the ledger works on
  blocks of serial numbers, never on units. Timed: POST /api/v1/ledger/movements (an allocation from a
  cap account to a central account), 1 unit and 100,000,000 units interleaved, each with its own
  Idempotency-Key.
- One account's holdings should come back quickly while the ledger holds 1,000,000 blocks. Timed:
  GET /api/v1/accounts/{id}/holdings of accounts picked at random, each holding 100 blocks.

Set-up, untimed: a fresh accounts database provisioned like any other (roles, migrations, broker
topology in a namespace of its own), loaded with COPY (accounts, blocks) plus one issuance journal row
per account and vintage, so the supply audit stays clean; then the accounts API as its own process,
with a key pair made for this run. Only the HTTP calls are timed, from this process.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench.harness import BenchError, Context, Figure, with_database
from registry_common.ports import free_port

ACCOUNTS = 10_000
BLOCKS_PER_ACCOUNT = 100  # 1,000,000 blocks in all
VINTAGES = (2021, 2022, 2023, 2024, 2025)
MAX_BLOCK_UNITS = 1_000  # each block holds 1..1,000 units; a one-serial gap keeps blocks from merging
CAP_UNITS = 10_000_000_000  # one block in the cap account, enough for every movement
BIG = 100_000_000
MOVES, WARMUP_MOVES = 50, 5  # of each size
QUERIES, WARMUP_QUERIES = 200, 20
CAP, RECEIVER = "BENCH-CAP", "BENCH-RECEIVER"
SERVICE = "accounts"
LEFTOVER = r"^bench_[0-9a-f]{8}_accounts$"  # ours; the harness only drops bench_<8 hex>
READY_TIMEOUT = 60.0


def account_id(n: int) -> str:
    return f"BENCH-{n:06d}"


# The database -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Provisioned:
    prefix: str  # database prefix and broker namespace
    dsn: str  # the accounts database, as the administrator
    overrides: dict[str, Any]


@asynccontextmanager
async def accounts_database(ctx: Context) -> AsyncIterator[Provisioned]:
    """`bench_<8 hex>_accounts`, provisioned (roles, migrations, topology); dropped afterwards."""
    from accounts.definition import DEFINITION
    from registry_common.messaging.topology import delete_namespace
    from registry_common.provision import provision_definitions

    prefix = f"bench_{secrets.token_hex(4)}_"
    server = urlsplit(ctx.admin_dsn)
    overrides: dict[str, Any] = {
        "environment": "test",
        "database_prefix": prefix,
        "namespace": prefix,
        "admin_database_url": ctx.admin_dsn,
        "database_host": server.hostname or "127.0.0.1",
        "database_port": server.port or 5432,
        "amqp_url": ctx.amqp_url,
    }
    name = f"{prefix}{SERVICE}"
    try:
        await provision_definitions([DEFINITION], **overrides)
        yield Provisioned(prefix, with_database(ctx.admin_dsn, name), overrides)
    finally:
        admin = await ctx.admin_connection()
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
        await delete_namespace(ctx.amqp_url, prefix, [SERVICE])


async def drop_leftovers(ctx: Context) -> None:
    admin = await ctx.admin_connection()
    try:
        for (name,) in await admin.fetch("SELECT datname FROM pg_database WHERE datname ~ $1", LEFTOVER):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"dropped leftover database {name}", flush=True)
    finally:
        await admin.close()


def blocks(totals: list[int], rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """Block r of account n gets the serial slot r * ACCOUNTS + n (so each account's 100 blocks are
    spread over the whole serial space, as years of movements would leave them) and 1..MAX_BLOCK_UNITS
    units of it; slots are a unit apart at least, so no two blocks merge. Rows come in random order
    (rounds shuffled, accounts shuffled within a round): the heap is scattered like a real ledger's,
    and the exclusion constraint's GiST index loads faster than with rising serials."""
    rounds = list(range(BLOCKS_PER_ACCOUNT))
    rng.shuffle(rounds)
    order = list(range(ACCOUNTS))
    for round_ in rounds:
        rng.shuffle(order)
        vintage = VINTAGES[round_ % len(VINTAGES)]
        for n in order:
            start = (round_ * ACCOUNTS + n) * (MAX_BLOCK_UNITS + 1) + 1
            units = rng.randint(1, MAX_BLOCK_UNITS)
            totals[n] += units
            yield account_id(n), "allowance", vintage, "", start, start + units - 1


async def load_ledger(dsn: str) -> list[int]:
    """Accounts and 1,000,000 blocks by COPY, the cap's one big block, the issuance journal rows that
    match them, and the serial counter past them. Returns each account's total."""
    totals = [0] * ACCOUNTS
    conn = await asyncpg.connect(dsn)
    try:
        holder = uuid.uuid4()
        await conn.execute(
            "INSERT INTO account_holders (id, name, tax_id, address) VALUES ($1, 'Bench holder', 'BENCH0000000', "
            "'Bench street 1')", holder)
        accounts = [(CAP, None, "cap", "Bench cap", "active"),
                    (RECEIVER, holder, "central", "Bench receiver", "active")]
        accounts += [(account_id(n), holder, "central", f"Bench {n}", "active") for n in range(ACCOUNTS)]
        await conn.copy_records_to_table(
            "accounts", records=accounts, columns=["id", "holder_id", "kind", "name", "state"])
        columns = ["account_id", "unit_type", "vintage", "origin", "serial_start", "serial_end"]
        await conn.copy_records_to_table("unit_blocks", records=blocks(totals, random.Random(4)), columns=columns)
        cap_start = await conn.fetchval("SELECT max(serial_end) + 2 FROM unit_blocks")
        await conn.copy_records_to_table(
            "unit_blocks", records=[(CAP, "allowance", VINTAGES[0], "", cap_start, cap_start + CAP_UNITS - 1)],
            columns=columns)
        await conn.execute(
            """
            INSERT INTO journal (movement_id, kind, to_account_id, unit_type, vintage, origin, serials, quantity,
                                 actor, reason, at)
            SELECT gen_random_uuid(), 'issuance', account_id, unit_type, vintage, origin,
                   range_agg(int8range(serial_start, serial_end, '[]')), sum(serial_end - serial_start + 1),
                   'bench', 'bench set-up', now()
              FROM unit_blocks GROUP BY account_id, unit_type, vintage, origin
            """)
        await conn.execute("UPDATE ledger_settings SET next_serial = (SELECT max(serial_end) + 1 FROM unit_blocks)")
        await conn.execute("VACUUM ANALYZE accounts, unit_blocks, journal, ledger_settings")
        count = await conn.fetchval("SELECT count(*) FROM unit_blocks")
    finally:
        await conn.close()
    if count != ACCOUNTS * BLOCKS_PER_ACCOUNT + 1:
        raise BenchError(f"set-up loaded {count} blocks, expected {ACCOUNTS * BLOCKS_PER_ACCOUNT + 1}")
    return totals


# The API process -----------------------------------------------------------------------------------
@asynccontextmanager
async def accounts_api(db: Provisioned, public_key: Path, private_key: Path, workdir: Path
                       ) -> AsyncIterator[httpx.AsyncClient]:
    """`python -m accounts.api` on a free port; yields a client once /ready answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env |= {f"REGISTRY_{k.upper()}": str(v) for k, v in db.overrides.items()}
    env |= {
        "REGISTRY_JWT_PUBLIC_KEY_FILE": str(public_key),
        "REGISTRY_JWT_PRIVATE_KEY_FILE": str(private_key),
        "REGISTRY_HTTP_HOST": "127.0.0.1",
        "REGISTRY_HTTP_PORT": str(port),
        "REGISTRY_LOG_LEVEL": "WARNING",
    }
    log = workdir / "accounts-api.log"
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "accounts.api", env=env, stdout=sink, stderr=sink)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            await wait_ready(client, process, log)
            yield client
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_ready(client: httpx.AsyncClient, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise BenchError(f"accounts API exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            answer = await client.get("/ready")
            if answer.status_code == 200:
                return
            last = f"{answer.status_code} {answer.text[:300]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        await asyncio.sleep(0.1)
    raise BenchError(f"accounts API not ready after {READY_TIMEOUT:.0f} s ({last}):\n{log.read_text()[-2000:]}")


# Timed operations ----------------------------------------------------------------------------------
async def move(client: httpx.AsyncClient, auth: dict[str, str], quantity: int) -> float:
    body = {"kind": "allocation", "from_account_id": CAP, "to_account_id": RECEIVER, "unit_type": "allowance",
            "quantity": quantity}
    headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    started = time.perf_counter()
    answer = await client.post("/api/v1/ledger/movements", json=body, headers=headers)
    elapsed = time.perf_counter() - started
    if answer.status_code != 201:
        raise BenchError(f"moving {quantity:,} units answered {answer.status_code}: {answer.text[:500]}")
    return elapsed


async def holdings(client: httpx.AsyncClient, auth: dict[str, str], account: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    answer = await client.get(f"/api/v1/accounts/{account}/holdings", headers=auth)
    elapsed = time.perf_counter() - started
    if answer.status_code != 200:
        raise BenchError(f"holdings of {account} answered {answer.status_code}: {answer.text[:500]}")
    return elapsed, answer.json()


async def measure_moves(client: httpx.AsyncClient, auth: dict[str, str]) -> tuple[list[float], list[float]]:
    for _ in range(WARMUP_MOVES):
        await move(client, auth, 1)
        await move(client, auth, BIG)
    small: list[float] = []
    big: list[float] = []
    for i in range(MOVES):  # interleaved, alternating which goes first
        if i % 2:
            big.append(await move(client, auth, BIG))
            small.append(await move(client, auth, 1))
        else:
            small.append(await move(client, auth, 1))
            big.append(await move(client, auth, BIG))
    _, received = await holdings(client, auth, RECEIVER)
    expected = (WARMUP_MOVES + MOVES) * (BIG + 1)
    if received["total"] != expected:
        raise BenchError(f"{RECEIVER} holds {received['total']:,} units after the moves, expected {expected:,}")
    return small, big


async def measure_holdings(client: httpx.AsyncClient, auth: dict[str, str], totals: list[int]) -> list[float]:
    rng = random.Random(44)
    samples: list[float] = []
    for i in range(WARMUP_QUERIES + QUERIES):
        n = rng.randrange(ACCOUNTS)
        elapsed, answer = await holdings(client, auth, account_id(n))
        blocks_seen = sum(len(group["blocks"]) for group in answer["by_type_and_vintage"])
        if answer["total"] != totals[n] or blocks_seen != BLOCKS_PER_ACCOUNT:
            raise BenchError(f"holdings of {account_id(n)}: {answer['total']:,} units in {blocks_seen} blocks, "
                             f"expected {totals[n]:,} in {BLOCKS_PER_ACCOUNT}")
        if i >= WARMUP_QUERIES:
            samples.append(elapsed)
    return samples


async def check_audit(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    answer = await client.get("/api/v1/ledger/audit", headers=auth)
    if answer.status_code != 200 or not answer.json()["ok"]:
        raise BenchError(f"ledger audit after the run: {answer.status_code} {answer.text[:1000]}")


# The module -----------------------------------------------------------------------------------------
async def run(ctx: Context) -> None:
    from registry_common.auth import TokenCodec, generate_keypair

    await ctx.ensure_connections(10, "bench.ledger")
    await drop_leftovers(ctx)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        workdir = Path(tmp)
        private_key, public_key = workdir / "jwt_private.pem", workdir / "jwt_public.pem"
        generate_keypair(private_key, public_key)
        codec = TokenCodec(public_key_file=public_key, private_key_file=private_key, issuer="registro-mx",
                           audience="registro-mx")
        token = codec.issue(user_id="bench-authority", username="bench-authority", roles=["authority"],
                            lifetime=timedelta(hours=1))
        auth = {"Authorization": f"Bearer {token}"}

        async with accounts_database(ctx) as db:
            started = time.perf_counter()
            totals = await load_ledger(db.dsn)
            print(f"  loaded {ACCOUNTS * BLOCKS_PER_ACCOUNT:,} blocks in {time.perf_counter() - started:.1f} s",
                  flush=True)
            async with accounts_api(db, public_key, private_key, workdir) as client:
                small, big = await measure_moves(client, auth)
                reads = await measure_holdings(client, auth, totals)
                await check_audit(client, auth)

    small_ms, big_ms = statistics.median(small) * 1e3, statistics.median(big) * 1e3
    ctx.record(Figure(
        "ledger.move_ratio_1e8_vs_1", big_ms / small_ms, "x", goal=1.2, higher_is_better=False,
        notes=f"median POST /api/v1/ledger/movements of {BIG:,} units over median of 1 unit; {MOVES} of each, "
              "interleaved, allocation cap -> central, ledger of 1,000,000 blocks"))
    ctx.record(Figure("ledger.move_1_p50_ms", small_ms, "ms", higher_is_better=False,
                      notes=f"median of {MOVES} movements of 1 unit through the API (HTTP round trip)"))
    ctx.record(Figure("ledger.move_1e8_p50_ms", big_ms, "ms", higher_is_better=False,
                      notes=f"median of {MOVES} movements of {BIG:,} units through the API (HTTP round trip)"))
    ctx.record(Figure(
        "ledger.holdings_p50_ms_1e6_blocks", statistics.median(reads) * 1e3, "ms", goal=20,
        higher_is_better=False,
        notes=f"median GET /api/v1/accounts/{{id}}/holdings of {QUERIES} random accounts of {ACCOUNTS:,}, "
              f"{BLOCKS_PER_ACCOUNT} blocks each, {ACCOUNTS * BLOCKS_PER_ACCOUNT:,} blocks in the ledger"))
    ctx.record(Figure(
        "ledger.holdings_p95_ms_1e6_blocks", statistics.quantiles(reads, n=20, method="inclusive")[18] * 1e3,
        "ms", higher_is_better=False, notes="95th percentile of the same holdings queries"))
