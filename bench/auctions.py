"""Auction clearing (issue #10): ``auctions.clear_100000_bids_s``.

Timed: ``POST /api/v1/auctions/{id}/clear`` on the auctions API, from the request until its answer, which
comes after the transaction that stores the results committed: one SELECT of the 100,000 live bids, the pure
uniform-price clearing in Python, the 100,000 per-bid results written by COPY, the per-bidder awards (2,000)
by COPY, the auction row and the approval request for the results.

Set-up, untimed: the auctions database provisioned (migrations, roles, clock at 2021-01-01 programme time);
an auction whose window has closed (20,000,000 allowances, reserve 16.68, purchase limit 25 %), 2,000
qualified bidders and 100,000 sealed bids of 1,000 (prices 16.68–40.00 in whole cents, seeded random, so
the clearing price falls on a tie shared pro rata) loaded with COPY. The API runs in this process (ASGI),
as the chassis builds it for ``python -m auctions.api``.
"""

from __future__ import annotations

import random
import re
import secrets
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import httpx

from bench.harness import BenchError, Context, Figure, with_database

BIDS = 100_000
BIDDERS = 2_000
LOT = 1_000
SUPPLY = 20_000_000
LEFTOVER = r"^bench_[0-9a-f]{8}_auctions$"


async def seed(dsn: str) -> str:
    rng = random.Random(10)
    auction_id = uuid4()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO auctions (id, state, vintage, quantity, currency, reserve_price, price_step, lot_size, "
            "purchase_limit_share, purchase_limit, bidding_opens_at, bidding_closes_at, payment_deadline, "
            "source_account_id, consignment_movement_id, scheduled_by) VALUES ($1, 'scheduled', 2021, $2, 'USD', "
            "1668, 1, $3, '0.25', $4, $5, $6, $7, 'SYS-CAP', $8, 'bench')",
            auction_id, SUPPLY, LOT, SUPPLY // 4, datetime(2020, 12, 1, tzinfo=UTC), datetime(2020, 12, 15, tzinfo=UTC),
            datetime(2021, 3, 1, tzinfo=UTC), uuid4())
        bidders = [f"BENCH-CEN-{n:06d}" for n in range(BIDDERS)]
        await conn.copy_records_to_table(
            "auction_applications", columns=["auction_id", "account_id", "state", "applied_by", "guarantee"],
            records=[(auction_id, b, "qualified", "bench", "received") for b in bidders])
        await conn.copy_records_to_table(
            "auction_bids", columns=["id", "auction_id", "bidder_account_id", "price", "quantity", "state",
                                     "submitted_by"],
            records=[(uuid4(), auction_id, bidders[n % BIDDERS], rng.randint(1668, 4000), LOT, "live", "bench")
                     for n in range(BIDS)])
        await conn.execute("ANALYZE auction_bids")
    finally:
        await conn.close()
    return str(auction_id)


async def run(ctx: Context) -> None:
    from asgi_lifespan import LifespanManager

    from auctions.definition import DEFINITION
    from registry_common.api import create_app
    from registry_common.auth import TokenCodec, generate_keypair
    from registry_common.messaging.topology import delete_namespace
    from registry_common.provision import provision

    await ctx.ensure_connections(20, "bench.auctions")
    admin = await ctx.admin_connection()
    try:
        for (name,) in await admin.fetch("SELECT datname FROM pg_database WHERE datname ~ $1", LEFTOVER):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
    prefix = f"bench_{secrets.token_hex(4)}_"
    host, port = re.search(r"@([^/:]+):(\d+)", ctx.admin_dsn).groups()  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory(prefix="bench-auctions-") as tmp:
        private_key, public_key = Path(tmp) / "jwt_private.pem", Path(tmp) / "jwt_public.pem"
        generate_keypair(private_key, public_key)
        overrides = {
            "environment": "test", "admin_database_url": ctx.admin_dsn, "database_host": host, "database_port": port,
            "database_prefix": prefix, "amqp_url": ctx.amqp_url, "namespace": prefix,
            "jwt_public_key_file": str(public_key), "jwt_private_key_file": str(private_key),
            "clock_control": "true", "clock_start": "2021-01-01T00:00:00-06:00", "log_json": "true",
        }
        await provision(["auctions"], **overrides)
        try:
            auction_id = await seed(with_database(ctx.admin_dsn, f"{prefix}auctions"))
            codec = TokenCodec(public_key_file=public_key, private_key_file=private_key, issuer="registro-mx",
                               audience="registro-mx")
            token = codec.issue(user_id="bench-authority", username="bench-authority", roles=["authority"],
                                lifetime=timedelta(hours=1))
            app = create_app(DEFINITION, DEFINITION.load_settings(**overrides))
            async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                               base_url="http://auctions", timeout=120) as http:
                headers = {"Authorization": f"Bearer {token}"}
                await http.get(f"/api/v1/auctions/{auction_id}", headers=headers)  # warm the pool
                started = time.perf_counter()
                answer = await http.post(f"/api/v1/auctions/{auction_id}/clear", json={},
                                         headers={**headers, "Idempotency-Key": str(uuid4())})
                seconds = time.perf_counter() - started
                if answer.status_code != 200:
                    raise BenchError(f"clear: {answer.status_code} {answer.text[:2000]}")
                result = answer.json()
            conn = await asyncpg.connect(with_database(ctx.admin_dsn, f"{prefix}auctions"))
            try:
                stored = await conn.fetchval(
                    "SELECT count(*) FROM auction_bid_results r JOIN auction_bids b ON b.seq = r.bid_seq "
                    "WHERE b.auction_id = $1", UUID(auction_id))
                awarded = await conn.fetchval("SELECT sum(awarded) FROM auction_awards")
            finally:
                await conn.close()
            if stored != BIDS or awarded != result["sold"] or result["sold"] != SUPPLY:
                raise BenchError(f"results not stored in full: {stored} bid results, {awarded} awarded, {result}")
        finally:
            admin = await ctx.admin_connection()
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{prefix}auctions" WITH (FORCE)')
            finally:
                await admin.close()
            await delete_namespace(ctx.amqp_url, prefix, ["auctions"])
    ctx.record(Figure(
        "auctions.clear_100000_bids_s", seconds, "s", goal=2, higher_is_better=False,
        notes=f"POST .../clear until its answer after commit: {BIDS:,} sealed bids of {BIDDERS:,} bidders read in one "
              f"SELECT, cleared in Python (clearing price {result['clearing_price']}), {BIDS:,} per-bid results and "
              f"{BIDDERS:,} awards written by COPY; auctions API in-process (ASGI) on its own fresh database"))
