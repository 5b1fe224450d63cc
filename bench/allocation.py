"""Allocation from Excel end to end (issue #5): ``allocation.xlsx_10000_rows_s``.

Timed, through the issuance API of a whole running system (every API and worker its own process, started
by the launcher ``make up`` uses, on its own databases and broker namespace): upload a 10,000-row .xlsx
allocation table (validated against the read model of accounts), submit it, approve it as a second
authority user, run it at once, and wait until every line is answered by the ledger (10 ``move_units_batch``
commands of 1,000 lines) and the table is ``completed``.

Set-up, untimed: provisioning; 10,000 installation central accounts inserted into the accounts database
and into issuance's read model (as ``account_opened`` would); a period and its cap generated through
the API with four eyes. After the run the ledger audit must be clean.
"""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any
from uuid import uuid4

import asyncpg
import httpx

from bench.harness import BenchError, Context, Figure, with_database
from bench.system import running_registry

ROWS = 10_000
PER_LINE = 100
VINTAGE = 2021
SERVICES_LEFTOVER = r"^bench_[0-9a-f]{8}_(accounts|issuance|transfers|compliance|auctions|notifications)$"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def account_id(n: int) -> str:
    return f"BENCH-CEN-{n:06d}"


def table_bytes() -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("asignacion")
    sheet.append(["installation_account_id", "period", "quantity"])
    for n in range(ROWS):
        sheet.append([account_id(n), str(VINTAGE), PER_LINE])
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


async def drop_leftovers(ctx: Context) -> None:
    admin = await ctx.admin_connection()
    try:
        for (name,) in await admin.fetch("SELECT datname FROM pg_database WHERE datname ~ $1", SERVICES_LEFTOVER):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"dropped leftover database {name}", flush=True)
    finally:
        await admin.close()


async def seed_accounts(admin_dsn: str, prefix: str) -> None:
    rows = [(account_id(n), "central", account_id(n), "active") for n in range(ROWS)]
    accounts = await asyncpg.connect(with_database(admin_dsn, f"{prefix}accounts"))
    try:
        await accounts.copy_records_to_table("accounts", records=rows, columns=["id", "kind", "name", "state"])
    finally:
        await accounts.close()
    issuance = await asyncpg.connect(with_database(admin_dsn, f"{prefix}issuance"))
    try:
        await issuance.copy_records_to_table("known_accounts", records=rows, columns=["id", "kind", "name", "state"])
    finally:
        await issuance.close()


async def wait(predicate: Any, timeout: float, what: str) -> Any:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = await predicate()
        except httpx.HTTPError:
            result = None
        if result:
            return result
        await asyncio.sleep(0.05)
    raise BenchError(f"timed out waiting for {what}")


async def measure(iss: str, gw: str, a: dict[str, str], b: dict[str, str]) -> float:
    async with httpx.AsyncClient(timeout=120) as http:
        asked = await http.post(f"{iss}/api/v1/periods/{VINTAGE}/cap-generations", json={"cap": ROWS * PER_LINE},
                                headers={**a, "Idempotency-Key": str(uuid4())})
        if asked.status_code != 202:
            raise BenchError(f"cap generation: {asked.status_code} {asked.text}")
        request = asked.json()
        approved = await http.post(f"{iss}/api/v1/issuance/approvals/{request['approval_id']}/approve",
                                   json={"payload_hash": request["payload_hash"]}, headers=b)
        if approved.status_code != 200:
            raise BenchError(f"cap approval: {approved.status_code} {approved.text}")

        async def generated() -> bool:
            items = (await http.get(f"{iss}/api/v1/periods/{VINTAGE}/cap-generations", headers=a)).json()["items"]
            return any(g["state"] == "generated" for g in items)

        await wait(generated, 60, "cap generated")
        data = table_bytes()

        started = time.perf_counter()
        uploaded = await http.post(f"{iss}/api/v1/allocation-tables", content=data,
                                   headers={**a, "Content-Type": XLSX})
        if uploaded.status_code != 201:
            raise BenchError(f"upload: {uploaded.status_code} {uploaded.text[:2000]}")
        table_id = uploaded.json()["id"]
        uploaded_at = time.perf_counter()
        submitted = await http.post(f"{iss}/api/v1/allocation-tables/{table_id}/submit", json={},
                                    headers={**a, "Idempotency-Key": str(uuid4())})
        request = submitted.json()
        approved = await http.post(f"{iss}/api/v1/issuance/approvals/{request['approval_id']}/approve",
                                   json={"payload_hash": request["payload_hash"]}, headers=b)
        if approved.status_code != 200:
            raise BenchError(f"approval: {approved.status_code} {approved.text}")
        run = await http.post(f"{iss}/api/v1/allocation-tables/{table_id}/run", json={},
                              headers={**b, "Idempotency-Key": str(uuid4())})
        if run.status_code != 202:
            raise BenchError(f"run: {run.status_code} {run.text}")
        running_at = time.perf_counter()

        async def completed() -> bool:
            row = (await http.get(f"{iss}/api/v1/allocation-tables/{table_id}", headers=a)).json()
            if row["state"] == "completed_with_refusals":
                raise BenchError("some lines were refused")
            return row["state"] == "completed"

        await wait(completed, 300, "allocation completed")
        elapsed = time.perf_counter() - started
        print(f"  upload and validation {uploaded_at - started:.2f} s, submit, approval and run "
              f"{running_at - uploaded_at:.2f} s, ledger batches until completed "
              f"{started + elapsed - running_at:.2f} s", flush=True)
        audit = (await http.get(f"{gw}/api/v1/ledger/audit", headers=a)).json()
        if not audit.get("ok"):
            raise BenchError(f"ledger audit not clean: {audit.get('discrepancies')}")
        return elapsed


async def run(ctx: Context) -> None:
    await ctx.ensure_connections(120, "bench.allocation")
    await drop_leftovers(ctx)
    async with running_registry(ctx, "allocation", clock_start="2021-01-01T00:00:00-06:00",
                                seed=lambda prefix: seed_accounts(ctx.admin_dsn, prefix)) as registry:
        plan = registry.plan
        seconds = await measure(plan.api_url("issuance"), plan.gateway_url, registry.bearer("bench-authority-a"),
                                registry.bearer("bench-authority-b"))
    ctx.record(Figure(
        "allocation.xlsx_10000_rows_s", seconds, "s", goal=10, higher_is_better=False,
        notes=f"upload a {ROWS:,}-row .xlsx, validate, submit, approve (second authority user), run at once and "
              f"wait until issuance has every line's answer from the ledger ({ROWS // 1000} move_units_batch "
              "commands of 1,000 lines); whole system as separate processes"))
