"""Issuance with every process separate: cap generation with four eyes, seed 003's proportional allocation
reproduced exactly (remainder 306,912 left in the cap account), bad allocation files answered with a report
or a 4xx, nothing allocated from a table that was not approved, the approved table run once when the
programme clock passes the allocation date, offset credits with four eyes, and a clean ledger audit.

Issuance's own routes are called on its API (``system.gateway_url``) until the gateway routes
them; accounts and the ledger through the gateway."""

from __future__ import annotations

import io
import random
import secrets
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from openpyxl import Workbook, load_workbook

from registry_common.testing.fixtures import wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration]

BUDGET = 3_247_055
NATIONAL = "277757746.24"
NATIONAL_HUNDREDTHS = 27_775_774_624
ELIGIBLE_HUNDREDTHS = 25_150_828_786
PUBLISHED_REMAINDER = 306_912
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZONE = ZoneInfo("America/Mexico_City")


def seed_003_split() -> list[int]:
    """99 consumptions (hundredths of MWh) summing to 251,508,287.86 MWh whose shares leave exactly 306,912."""
    for seed in range(1000):
        rng = random.Random(seed)
        cuts = sorted(rng.sample(range(1, ELIGIBLE_HUNDREDTHS), 98))
        parts = [b - a for a, b in zip([0, *cuts], [*cuts, ELIGIBLE_HUNDREDTHS], strict=True)]
        if BUDGET - sum(BUDGET * c // NATIONAL_HUNDREDTHS for c in parts) == PUBLISHED_REMAINDER:
            return parts
    raise AssertionError("no split found")


def xlsx(rows: list[list[Any]], title: str = "Hoja1") -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def mwh(hundredths: int) -> str:
    return f"{hundredths // 100}.{hundredths % 100:02d}"


@pytest.fixture
async def issuance_db(provisioned_services: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{base}/{provisioned_services['REGISTRY_DATABASE_PREFIX']}issuance")
    yield conn
    await conn.close()


class Registry:
    def __init__(self, system: Any, http: httpx.AsyncClient, bearer: Any):
        self.system, self.http = system, http
        self.iss = system.gateway_url
        self.gw = system.gateway_url
        tag = secrets.token_hex(3)
        self.a = bearer(f"authority-a-{tag}", "authority")
        self.b = bearer(f"authority-b-{tag}", "authority")
        self.admin = bearer(f"admin-{tag}", "administrator")

    async def programme_now(self) -> datetime:
        answer = await self.http.get(f"{self.iss}/api/v1/programme/clock", headers=self.a)
        assert answer.status_code == 200, answer.text
        return datetime.fromisoformat(answer.json()["programme_now"])

    async def new_period(self, days_ahead: int = 20) -> dict[str, Any]:
        now = await self.programme_now()
        allocation_on = (now.astimezone(ZONE) + timedelta(days=days_ahead)).date()
        vintage = random.randint(3000, 9000)
        body = {"vintage": vintage, "code": f"T{vintage}", "starts_on": str(allocation_on - timedelta(days=100)),
                "ends_on": str(allocation_on + timedelta(days=30)), "allocation_on": str(allocation_on),
                "reporting_opens_on": str(allocation_on + timedelta(days=60)),
                "reporting_closes_on": str(allocation_on + timedelta(days=80)),
                "surrender_deadline_on": str(allocation_on + timedelta(days=100))}
        answer = await self.http.post(f"{self.iss}/api/v1/periods", json=body, headers=self.a)
        assert answer.status_code == 201, answer.text
        return answer.json()

    async def approve(self, approval_id: str, payload_hash: str, who: dict[str, str]) -> httpx.Response:
        return await self.http.post(f"{self.iss}/api/v1/issuance/approvals/{approval_id}/approve",
                                    json={"payload_hash": payload_hash}, headers=who)

    async def generate_cap(self, period: str, cap: int, reserves: dict[str, int] | None = None) -> dict[str, Any]:
        asked = await self.http.post(f"{self.iss}/api/v1/periods/{period}/cap-generations",
                                     json={"cap": cap, "reserves": reserves or {}},
                                     headers={**self.a, "Idempotency-Key": str(uuid4())})
        assert asked.status_code == 202, asked.text
        request = asked.json()
        mine = await self.approve(request["approval_id"], request["payload_hash"], self.a)
        assert mine.status_code == 403 and mine.json()["code"] == "approval.self_approval"
        approved = await self.approve(request["approval_id"], request["payload_hash"], self.b)
        assert approved.status_code == 200, approved.text

        async def generated() -> dict[str, Any] | None:
            items = (await self.http.get(f"{self.iss}/api/v1/periods/{period}/cap-generations",
                                         headers=self.a)).json()["items"]
            return next((g for g in items if g["id"] == request["generation_id"] and g["state"] == "generated"),
                        None)

        await wait_for(generated, timeout=30, what="cap generated")
        return request

    async def installations(self, count: int) -> list[str]:
        """``count`` installations opened and approved through the gateway (issuance learns them from events)."""
        ids: list[str] = []
        holder_id: str | None = None
        for n in range(count):
            body: dict[str, Any] = {"kind": "installation", "name": f"Planta {n}"}
            if holder_id is None:
                letters = "".join(random.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
                body["holder"] = {"name": f"Grupo {letters}", "tax_id": f"{letters}010101{secrets.randbelow(90)+10}1",
                                  "address": "Av. Reforma 1, CDMX",
                                  "contacts": [{"name": "Ana", "email": "ana@example.mx"}]}
            else:
                body["holder_id"] = holder_id
            opened = await self.http.post(f"{self.gw}/api/v1/accounts", json=body, headers=self.admin)
            assert opened.status_code == 201, opened.text
            account = opened.json()
            holder_id = holder_id or account["holder_id"]
            approved = await self.http.post(f"{self.gw}/api/v1/accounts/{account['id']}/approve", json={},
                                            headers=self.admin)
            assert approved.status_code == 200, approved.text
            ids.append(account["id"])
        return ids

    async def upload(self, data: bytes, **params: Any) -> httpx.Response:
        return await self.http.post(f"{self.iss}/api/v1/allocation-tables", content=data, params=params,
                                    headers={**self.a, "Content-Type": XLSX, "Accept-Language": "en"})

    async def holdings(self, account_id: str, vintage: int) -> int:
        answer = await self.http.get(f"{self.gw}/api/v1/accounts/{account_id}/holdings", headers=self.a)
        assert answer.status_code == 200, answer.text
        return sum(e["quantity"] for e in answer.json()["by_type_and_vintage"] if e["vintage"] == vintage)

    async def audit_is_clean(self) -> None:
        report = (await self.http.get(f"{self.gw}/api/v1/ledger/audit", headers=self.a)).json()
        assert report["ok"], report["discrepancies"]


async def known(db: asyncpg.Connection, ids: list[str]) -> bool:
    return await db.fetchval("SELECT count(*) FROM known_accounts WHERE id = ANY($1) AND state = 'active'",
                             ids) == len(ids)


async def test_seed_003_bad_inputs_approval_and_the_clock_run_once(system, http, bearer, issuance_db):
    reg = Registry(system, http, bearer)
    period = await reg.new_period()
    code, vintage = period["code"], period["vintage"]
    await reg.generate_cap(code, BUDGET, {"price_containment": 1000})
    assert await reg.holdings("SYS-CAP", vintage) == BUDGET
    assert await reg.holdings("SYS-RES-PRICE_CONTAINMENT", vintage) == 1000
    again = await http.post(f"{reg.iss}/api/v1/periods/{code}/cap-generations", json={"cap": 5},
                            headers={**reg.a, "Idempotency-Key": str(uuid4())})
    assert again.status_code == 409 and again.json()["code"] == "cap.already_generated"

    installations = await reg.installations(101)
    await wait_for(lambda: known(issuance_db, installations), timeout=60, what="issuance learns the accounts")
    eligible_ids, spare, unapproved_target = installations[:99], installations[99], installations[100]

    # Bad inputs: a report naming sheet and row, or a 4xx with a code; nothing is stored as valid.
    bad = await reg.upload(xlsx([["cuenta_instalacion", "periodo", "cantidad"], ["NOPE-1", code, 5],
                                 [spare, code, 0], [unapproved_target, code, 2.5], [spare, code, "=1+1"],
                                 [unapproved_target, "1999", "abc"], [eligible_ids[0], code, -3],
                                 [eligible_ids[1], code, 10_000_000]], title="Tabla"))
    assert bad.status_code == 422, bad.text
    problem = bad.json()
    assert problem["code"] == "allocation.invalid_table"
    found = {(e.get("sheet"), e.get("row"), e.get("code")) for e in problem["errors"]}
    for expected in [("Tabla", 2, "unknown_installation"), ("Tabla", 3, "zero"), ("Tabla", 4, "fractional"),
                     ("Tabla", 5, "formula"), ("Tabla", 5, "duplicate_row"), ("Tabla", 6, "unknown_period"),
                     ("Tabla", 6, "not_a_number"), ("Tabla", 7, "negative"), ("Tabla", None, "exceeds_available")]:
        assert expected in found, (expected, found)
    not_xlsx = await reg.upload(b"installation_account_id,period,quantity\r\nCEN-1,2021,5\r\n")
    assert not_xlsx.status_code == 422 and not_xlsx.json()["code"] == "allocation.not_xlsx"
    good = xlsx([["installation_account_id", "period", "quantity"], [spare, code, 10]])
    corrupt = await reg.upload(good[:-200])
    assert corrupt.status_code == 422 and corrupt.json()["code"] in ("allocation.not_xlsx", "allocation.unreadable")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (101 * 1024 * 1024))
    bombed = await reg.upload(bomb.getvalue())
    assert bombed.status_code == 413 and bombed.json()["code"] == "allocation.uncompressed_too_large"
    headers = await reg.upload(xlsx([["account", "year", "amount"], [spare, code, 1]]))
    assert headers.status_code == 422
    assert {e["code"] for e in headers.json()["errors"]} == {"missing_column"}

    # A valid table that is never approved: moving the clock allocates nothing from it.
    unapproved = await reg.upload(xlsx([["installation_account_id", "period", "quantity"],
                                        [unapproved_target, code, 10]]))
    assert unapproved.status_code == 201, unapproved.text
    unapproved_id = unapproved.json()["id"]

    # Seed 003: 99 eligible participants, two that are not (one never registered), the national consumption.
    parts = seed_003_split()
    rows: list[list[Any]] = [["id", "consumption_mwh", "eligible", "reason"]]
    rows += [[account, mwh(c), "yes", None] for account, c in zip(eligible_ids, parts, strict=True)]
    rest = NATIONAL_HUNDREDTHS - ELIGIBLE_HUNDREDTHS
    rows += [[spare, mwh(rest // 2), "no", "behind on fees"], ["NOT-REGISTERED-1", mwh(rest - rest // 2), "no",
                                                                "not registered in the registry"]]
    data = xlsx(rows, title="Participantes")
    uploaded = await reg.upload(data, method="proportional", period=code, budget=BUDGET,
                                national_consumption_mwh=NATIONAL, filename="cel-2019.xlsx")
    assert uploaded.status_code == 201, uploaded.text
    table = uploaded.json()
    assert table["remainder"] == PUBLISHED_REMAINDER and table["total"] == BUDGET - PUBLISHED_REMAINDER
    assert table["eligible_consumption_mwh"] == "251508287.86"
    import hashlib
    assert table["sha256"] == hashlib.sha256(data).hexdigest()
    table_id = table["id"]
    dry = (await http.get(f"{reg.iss}/api/v1/allocation-tables/{table_id}/dry-run", headers=reg.a)).json()
    assert dry["total"] == BUDGET - PUBLISHED_REMAINDER and dry["source_holds"] == BUDGET
    shares = {line["installation_account_id"]: line["quantity"] for line in dry["lines"]}
    assert shares[spare] == 0 and shares["NOT-REGISTERED-1"] == 0

    # Running before approval is refused; four eyes; the approver sees the file's SHA-256.
    early = await http.post(f"{reg.iss}/api/v1/allocation-tables/{table_id}/run", json={},
                            headers={**reg.a, "Idempotency-Key": str(uuid4())})
    assert early.status_code == 409, early.text
    submitted = await http.post(f"{reg.iss}/api/v1/allocation-tables/{table_id}/submit", json={},
                                headers={**reg.a, "Idempotency-Key": str(uuid4())})
    assert submitted.status_code == 202, submitted.text
    request = submitted.json()
    pending = (await http.get(f"{reg.iss}/api/v1/issuance/approvals", params={"state": "pending"},
                              headers=reg.b)).json()["items"]
    shown = next(a for a in pending if str(a["id"]) == request["approval_id"])
    assert shown["payload"]["sha256"] == table["sha256"]
    assert (await reg.approve(request["approval_id"], request["payload_hash"], reg.a)).status_code == 403
    assert (await reg.approve(request["approval_id"], request["payload_hash"], reg.b)).status_code == 200
    approved = (await http.get(f"{reg.iss}/api/v1/allocation-tables/{table_id}", headers=reg.a)).json()
    assert approved["state"] == "approved"  # waits for the allocation date
    assert await reg.holdings(eligible_ids[0], vintage) == 0

    # Move the programme clock past the allocation date: the approved table runs, once.
    allocation_at = datetime.fromisoformat(period["allocation_at"])
    now = await reg.programme_now()
    target = max(allocation_at, now) + timedelta(hours=1)
    moved = await http.put(f"{reg.iss}/api/v1/programme/clock",
                           json={"programme_now": target.astimezone(UTC).isoformat()}, headers=reg.a)
    assert moved.status_code == 200, moved.text

    async def completed() -> dict[str, Any] | None:
        row = (await http.get(f"{reg.iss}/api/v1/allocation-tables/{table_id}", headers=reg.a)).json()
        return row if row["state"] in ("completed", "completed_with_refusals") else None

    done = await wait_for(completed, timeout=60, what="the allocation run completes")
    assert done["state"] == "completed" and done["run_trigger"] == "schedule"
    assert await reg.holdings("SYS-CAP", vintage) == PUBLISHED_REMAINDER
    for account in eligible_ids[:5]:
        assert await reg.holdings(account, vintage) == shares[account]
    assert await reg.holdings(spare, vintage) == 0
    assert await reg.holdings(unapproved_target, vintage) == 0
    assert (await http.get(f"{reg.iss}/api/v1/allocation-tables/{unapproved_id}", headers=reg.a)
            ).json()["state"] == "validated"

    # Running it again changes nothing.
    rerun = await http.post(f"{reg.iss}/api/v1/allocation-tables/{table_id}/run", json={},
                            headers={**reg.a, "Idempotency-Key": str(uuid4())})
    assert rerun.status_code == 200 and rerun.json()["started"] is False
    delivered = await issuance_db.fetchval(  # the lines of one allocation_delivered_batch per ledger answer
        "SELECT coalesce(sum(jsonb_array_length(envelope->'payload'->'lines')), 0) FROM outbox "
        "WHERE routing_key = 'issuance.allocation_delivered_batch.v1' AND envelope->'payload'->>'table_id' = $1",
        table_id)
    assert delivered == sum(1 for q in shares.values() if q > 0)
    assert await reg.holdings("SYS-CAP", vintage) == PUBLISHED_REMAINDER

    # Results as CSV and .xlsx.
    csv_answer = await http.get(f"{reg.iss}/api/v1/allocation-tables/{table_id}/results.csv", headers=reg.a)
    assert csv_answer.status_code == 200 and csv_answer.text.count("delivered") == delivered
    xlsx_answer = await http.get(f"{reg.iss}/api/v1/allocation-tables/{table_id}/results.xlsx", headers=reg.a)
    book = load_workbook(io.BytesIO(xlsx_answer.content), read_only=True)
    result_rows = list(book.worksheets[0].iter_rows(values_only=True))
    assert result_rows[-1][2] == "remainder" and result_rows[-1][3] == PUBLISHED_REMAINDER
    await reg.audit_is_clean()


async def test_withheld_line_and_run_on_command(system, http, bearer, issuance_db):
    reg = Registry(system, http, bearer)
    period = await reg.new_period(days_ahead=300)
    code, vintage = period["code"], period["vintage"]
    await reg.generate_cap(code, 1000)
    first, second = await reg.installations(2)
    await wait_for(lambda: known(issuance_db, [first, second]), timeout=60, what="issuance learns the accounts")
    uploaded = await reg.upload(xlsx([["installation_account_id", "period", "quantity"], [first, code, 300],
                                      [second, code, 200]]))
    assert uploaded.status_code == 201, uploaded.text
    table_id = uploaded.json()["id"]
    withheld = await http.post(f"{reg.iss}/api/v1/allocation-tables/{table_id}/lines/{second}/withhold",
                               json={"reason": "under review"}, headers=reg.a)
    assert withheld.status_code == 200 and withheld.json()["total"] == 300
    submitted = (await http.post(f"{reg.iss}/api/v1/allocation-tables/{table_id}/submit", json={},
                                 headers={**reg.a, "Idempotency-Key": str(uuid4())})).json()
    assert (await reg.approve(submitted["approval_id"], submitted["payload_hash"], reg.b)).status_code == 200
    key = str(uuid4())
    runs = [await http.post(f"{reg.iss}/api/v1/allocation-tables/{table_id}/run", json={},
                            headers={**reg.b, "Idempotency-Key": k}) for k in (key, key, str(uuid4()))]
    assert [r.status_code for r in runs] == [202, 202, 200]

    async def completed() -> bool:
        row = (await http.get(f"{reg.iss}/api/v1/allocation-tables/{table_id}", headers=reg.a)).json()
        return row["state"] == "completed"

    await wait_for(completed, timeout=60, what="run on command completes")
    assert await reg.holdings(first, vintage) == 300
    assert await reg.holdings(second, vintage) == 0
    assert await reg.holdings("SYS-CAP", vintage) == 700
    await reg.audit_is_clean()


async def test_offset_credits_with_four_eyes(system, http, bearer, issuance_db):
    reg = Registry(system, http, bearer)
    (developer,) = await reg.installations(1)
    await wait_for(lambda: known(issuance_db, [developer]), timeout=60, what="issuance learns the account")
    project_id = f"PRJ-{secrets.token_hex(3)}"
    created = await http.post(f"{reg.iss}/api/v1/offset-projects", headers=reg.a, json={
        "id": project_id, "name": "Metano relleno sanitario", "protocol": "CAR Landfill v5",
        "place": "Monterrey, NL", "developer_account_id": developer})
    assert created.status_code == 201, created.text
    wrong = await http.post(f"{reg.iss}/api/v1/offset-projects", headers=reg.a, json={
        "id": f"{project_id}-X", "name": "x", "protocol": "x", "place": "x", "developer_account_id": "SYS-CAP"})
    assert wrong.status_code == 422 and wrong.json()["code"] == "offset.developer_account"
    asked = await http.post(f"{reg.iss}/api/v1/offset-projects/{project_id}/credit-issuances",
                            json={"vintage": 2021, "quantity": 5000, "verification_reference": "VER-2021-7"},
                            headers={**reg.a, "Idempotency-Key": str(uuid4())})
    assert asked.status_code == 202, asked.text
    request = asked.json()
    assert await reg.holdings(developer, 2021) == 0
    assert (await reg.approve(request["approval_id"], request["payload_hash"], reg.a)).status_code == 403
    assert (await reg.approve(request["approval_id"], request["payload_hash"], reg.b)).status_code == 200

    async def issued() -> dict[str, Any] | None:
        items = (await http.get(f"{reg.iss}/api/v1/offset-projects/{project_id}/credit-issuances",
                                headers=reg.a)).json()["items"]
        return items[0] if items and items[0]["state"] == "issued" else None

    row = await wait_for(issued, timeout=30, what="offset credits issued")
    assert row["serial_end"] - row["serial_start"] + 1 == 5000
    answer = await http.get(f"{reg.gw}/api/v1/accounts/{developer}/holdings", headers=reg.a)
    offsets = [e for e in answer.json()["by_type_and_vintage"] if e["unit_type"] == "offset"]
    assert offsets == [{**offsets[0], "quantity": 5000, "vintage": 2021}]
    await reg.audit_is_clean()
