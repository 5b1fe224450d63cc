"""Compliance evaluation end to end (issue #8): ``compliance.evaluate_10000_s``.

Timed, through the public API of a whole running system (every API and worker its own process, started by
the launcher ``make up`` uses, on its own databases and broker namespace): from the authority's
``POST /api/v1/compliance/periods/2020/evaluations`` (202) until the evaluation of 10,000 installations is
``completed``: every result and report row stored, every counted unit cancelled and the rest returned by the
ledger (``move_units_batch`` commands of 1,000 lines) and the answers recorded. Automatic evaluation at
the deadline is off, so the command starts it.

Set-up, untimed: provisioning; 10,000 installations (central and delivery accounts) copied into the
accounts database and compliance's read model, with an attested report each (a third over-delivered, a
third exact, a third short); 10,000,000 allowances of 2020 issued through the ledger's API; allocation
and surrender sent to the ledger as ``move_units_batch`` commands, as a service would, and waited for
until compliance's read model of the delivery accounts holds them. After the run the ledger audit must be
clean and the cancellation account must hold exactly what was counted.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from uuid import uuid4

import asyncpg
import httpx

from bench.allocation import drop_leftovers, wait
from bench.harness import BenchError, Context, Figure, with_database
from bench.system import running_registry

INSTALLATIONS = 10_000
ALLOCATED = 1_000
SURRENDERED = 900
VINTAGE = 2020


def central(n: int) -> str:
    return f"BENCH-CEN-{n:06d}"


def delivery(n: int) -> str:
    return f"BENCH-ENT-{n:06d}"


def emissions(n: int) -> int:
    return (800, 900, 1000)[n % 3]  # over-delivered (100 back), exact, short by 100


async def seed(admin_dsn: str, prefix: str) -> None:
    centrals = [(central(n), "central", central(n), "active", None) for n in range(INSTALLATIONS)]
    deliveries = [(delivery(n), "delivery", delivery(n), "active", central(n)) for n in range(INSTALLATIONS)]
    columns = ["id", "kind", "name", "state", "installation_id"]
    accounts = await asyncpg.connect(with_database(admin_dsn, f"{prefix}accounts"))
    try:
        await accounts.copy_records_to_table("accounts", records=centrals + deliveries, columns=columns)
    finally:
        await accounts.close()
    compliance = await asyncpg.connect(with_database(admin_dsn, f"{prefix}compliance"))
    try:
        await compliance.copy_records_to_table("known_accounts", records=centrals + deliveries,
                                               columns=["account_id", *columns[1:]])
        at = datetime(2021, 9, 15, tzinfo=UTC)
        reports = [(uuid4(), central(n), str(VINTAGE), VINTAGE, 1, emissions(n), f"RENE-{n}", None, "attested",
                    "bench", at, "bench", at) for n in range(INSTALLATIONS)]
        await compliance.copy_records_to_table("emission_reports", records=reports, columns=[
            "id", "installation_account_id", "period", "year", "version", "emissions", "rene_reference",
            "verifier_account_id", "state", "submitted_by", "submitted_at", "decided_by", "decided_at"])
    finally:
        await compliance.close()


async def send_batches(amqp_url: str, namespace: str, kind: str, pairs: list[tuple[str, str]], quantity: int) -> None:
    import aio_pika

    from registry_common.messaging.envelope import Envelope
    from registry_common.messaging.outbox import Publisher
    from registry_contracts.accounts import MoveUnits, MoveUnitsBatch

    connection = await aio_pika.connect_robust(amqp_url)
    try:
        publisher = Publisher(connection, namespace)
        for start in range(0, len(pairs), 1000):
            lines = [MoveUnits(movement_id=uuid4(), kind=kind, from_account_id=a, to_account_id=b,
                               unit_type="allowance", quantity=quantity, vintage=VINTAGE, actor="bench")
                     for a, b in pairs[start:start + 1000]]
            command = MoveUnitsBatch(batch_id=uuid4(), lines=lines)
            envelope = Envelope.wrap(command, producer="bench")
            await publisher.publish("commands", command.routing_key(), envelope.model_dump(mode="json"))
    finally:
        await connection.close()


async def measure(ctx: Context, prefix: str, gw: str, authority: dict[str, str]) -> tuple[float, dict[str, object]]:
    compliance = await asyncpg.connect(with_database(ctx.admin_dsn, f"{prefix}compliance"))
    async with httpx.AsyncClient(timeout=120) as http:
        issued = await http.post(f"{gw}/api/v1/ledger/movements", json={
            "kind": "issuance", "to_account_id": "SYS-CAP", "unit_type": "allowance", "vintage": VINTAGE,
            "quantity": INSTALLATIONS * ALLOCATED}, headers={**authority, "Idempotency-Key": str(uuid4())})
        if issued.status_code != 201:
            raise BenchError(f"issuance: {issued.status_code} {issued.text}")
        await send_batches(ctx.amqp_url, prefix, "allocation",
                           [("SYS-CAP", central(n)) for n in range(INSTALLATIONS)], ALLOCATED)
        accounts = await asyncpg.connect(with_database(ctx.admin_dsn, f"{prefix}accounts"))

        async def allocated() -> bool:
            held = await accounts.fetchval("SELECT coalesce(sum(serial_end - serial_start + 1), 0) FROM unit_blocks "
                                           "WHERE account_id LIKE 'BENCH-CEN-%'")
            return held == INSTALLATIONS * ALLOCATED

        await wait(allocated, 300, "every allocation line to be applied")  # batches may run concurrently
        await accounts.close()
        await send_batches(ctx.amqp_url, prefix, "surrender",
                           [(central(n), delivery(n)) for n in range(INSTALLATIONS)], SURRENDERED)

        async def surrendered() -> bool:
            held = await compliance.fetchval("SELECT coalesce(sum(quantity), 0) FROM delivery_holdings")
            return held == INSTALLATIONS * SURRENDERED

        await wait(surrendered, 300, "compliance to see every surrender")

        started = time.perf_counter()
        asked = await http.post(f"{gw}/api/v1/compliance/periods/{VINTAGE}/evaluations", json={},
                                headers={**authority, "Idempotency-Key": str(uuid4())})
        if asked.status_code != 202:
            raise BenchError(f"evaluation: {asked.status_code} {asked.text}")

        async def completed() -> dict[str, object] | None:
            row = (await http.get(f"{gw}/api/v1/compliance/periods/{VINTAGE}/evaluations", headers=authority)).json()
            return row if row["state"] == "completed" else None

        evaluation = await wait(completed, 600, "the evaluation to complete")
        elapsed = time.perf_counter() - started
        audit = (await http.get(f"{gw}/api/v1/ledger/audit", headers=authority)).json()
        if not audit.get("ok"):
            raise BenchError(f"ledger audit not clean: {audit.get('discrepancies')}")
        expected = sum(min(emissions(n), SURRENDERED) for n in range(INSTALLATIONS))
        cancelled = (await http.get(f"{gw}/api/v1/accounts/SYS-CANCEL/holdings", headers=authority)).json()["total"]
        if cancelled != expected or evaluation["cancelled_units"] != expected:
            raise BenchError(f"cancelled {cancelled} / {evaluation['cancelled_units']}, expected {expected}")
    await compliance.close()
    return elapsed, evaluation


async def run(ctx: Context) -> None:
    await ctx.ensure_connections(120, "bench.compliance")
    await drop_leftovers(ctx)
    env = {"REGISTRY_AUTO_EVALUATE": "false", "REGISTRY_EVALUATE_INTERVAL_SECONDS": "0.1"}
    async with running_registry(ctx, "compliance", clock_start="2021-11-15T00:00:00-06:00", env=env,
                                seed=lambda prefix: seed(ctx.admin_dsn, prefix)) as registry:
        try:
            seconds, evaluation = await measure(ctx, registry.prefix, registry.plan.gateway_url,
                                                registry.bearer("bench-authority"))
        finally:
            log = registry.plan.run_dir / "log" / "compliance-worker.log"
            for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
                if "evaluation" in line and "answered" not in line:
                    print("  compliance worker:", line[:300], flush=True)
    ctx.record(Figure(
        "compliance.evaluate_10000_s", seconds, "s", goal=10, higher_is_better=False,
        notes=f"from the authority's POST .../evaluations (202) until {INSTALLATIONS:,} installations are evaluated "
              f"({evaluation['compliant']} compliant, {evaluation['non_compliant']} not), their results stored and "
              f"{evaluation['cancelled_units']:,} units cancelled and {evaluation['returned_units']:,} returned by "
              "the ledger (move_units_batch of 1,000 lines); whole system as separate processes"))

