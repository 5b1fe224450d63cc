"""Issuance's HTTP face in-process on its real database: the provisioned programme, cap generation with four
eyes (commands to the ledger written in the approval's transaction, generated once), allocation upload,
report, withholding, approval, a run in batches that happens once, and the ledger's answers applied once.
The ledger's events are handed to the handlers directly (the broker is tested by the system tests)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from asgi_lifespan import LifespanManager
from openpyxl import Workbook
from sqlalchemy import text

from issuance import service
from issuance.definition import DEFINITION
from registry_common.api import create_app
from registry_common.clock import ProgrammeClock
from registry_common.db import make_engine
from registry_common.messaging.consumer import HandlerContext
from registry_common.messaging.envelope import Envelope
from registry_common.testing.fixtures import settings_from_env
from registry_contracts.accounts import (
    BatchLineResult,
    MovedBlock,
    SerialRange,
    UnitsIssued,
    UnitsMoved,
    UnitsMovedBatch,
)

pytestmark = pytest.mark.integration
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def xlsx(rows: list[list[Any]]) -> bytes:
    book = Workbook()
    for row in rows:
        book.active.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


class Api:
    def __init__(self, client: httpx.AsyncClient, token_for: Callable[..., str], engine: Any, settings: Any):
        self.client, self.engine, self.settings = client, engine, settings
        self.a = {"Authorization": f"Bearer {token_for('int-authority-a', 'authority')}", "Accept-Language": "en"}
        self.b = {"Authorization": f"Bearer {token_for('int-authority-b', 'authority')}"}
        self.verifier = {"Authorization": f"Bearer {token_for('int-verifier', 'verifier')}"}

    async def sql(self, statement: str, **params: Any) -> Any:
        async with self.engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None

    async def deliver(self, message: Any) -> None:
        """Hand a ledger event to issuance's handler, as the consumer would (one transaction)."""
        ctx = HandlerContext(envelope=Envelope.wrap(message, producer="accounts"), outbox=service.OUTBOX,
                             clock=ProgrammeClock(None), settings=self.settings)
        async with self.engine.begin() as conn:
            await service.SUBSCRIPTIONS[type(message)](conn, message, ctx)

    async def approve(self, answer: dict[str, Any], who: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.post(f"/api/v1/issuance/approvals/{answer['approval_id']}/approve",
                                      json={"payload_hash": answer["payload_hash"]}, headers=who or self.b)


@pytest.fixture(scope="module")
async def api(provisioned_services: dict[str, str], token_for) -> AsyncIterator[Api]:
    settings = settings_from_env(provisioned_services, "issuance", allocation_batch_lines=2)
    owner = make_engine(settings.owner_database_url, pool_size=0, application_name="issuance-test")
    app = create_app(DEFINITION, settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://issuance") as client:
        yield Api(client, token_for, owner, settings)
    await owner.dispose()


async def test_the_pilot_programme_is_provisioned_with_utc_dates(api: Api):
    answer = await api.client.get("/api/v1/periods", headers=api.a)
    assert answer.status_code == 200
    pilot = {p["code"]: p for p in answer.json()["items"] if p["code"] in ("2020", "2021", "2022")}
    assert sorted(pilot) == ["2020", "2021", "2022"] and pilot["2022"]["final"] and not pilot["2021"]["final"]
    assert pilot["2021"]["allocation_at"] == "2021-10-01T05:00:00+00:00"
    assert pilot["2021"]["surrender_deadline_at"] == "2022-11-02T05:59:59+00:00"
    assert (await api.client.get("/api/v1/periods", headers=api.verifier)).status_code == 403


async def test_cap_generation_four_eyes_and_once(api: Api):
    code = "2022"
    body = {"cap": 1000, "reserves": {"price_containment": 50, "new_entrants": 0}}
    missing_key = await api.client.post(f"/api/v1/periods/{code}/cap-generations", json=body, headers=api.a)
    assert missing_key.status_code in (422, 428)
    unknown = await api.client.post(f"/api/v1/periods/{code}/cap-generations", json={"cap": 1, "reserves": {"x": 1}},
                                    headers={**api.a, "Idempotency-Key": str(uuid4())})
    assert unknown.status_code == 422 and unknown.json()["code"] == "cap.unknown_reserve"
    extra = await api.client.post(f"/api/v1/periods/{code}/cap-generations", json={"cap": 1, "colour": "red"},
                                  headers={**api.a, "Idempotency-Key": str(uuid4())})
    assert extra.status_code == 422 and extra.json()["errors"][0]["field"] == "colour"
    key = str(uuid4())
    asked = await api.client.post(f"/api/v1/periods/{code}/cap-generations", json=body,
                                  headers={**api.a, "Idempotency-Key": key})
    assert asked.status_code == 202, asked.text
    repeat = await api.client.post(f"/api/v1/periods/{code}/cap-generations", json=body,
                                   headers={**api.a, "Idempotency-Key": key})
    assert repeat.json() == asked.json()
    second = await api.client.post(f"/api/v1/periods/{code}/cap-generations", json=body,
                                   headers={**api.a, "Idempotency-Key": str(uuid4())})
    assert second.status_code == 409 and second.json()["code"] == "cap.generation_pending"
    request = asked.json()
    assert (await api.approve(request, api.a)).status_code == 403
    assert (await api.approve(request)).status_code == 200
    assert (await api.approve(request)).status_code == 409  # already decided: nothing more is generated
    commands = await api.sql("SELECT envelope->'payload' FROM outbox WHERE routing_key = 'accounts.issue_units.v1' "
                             "AND envelope->>'correlation_id' = :g", g=request["generation_id"])
    sent = sorted((c[0]["to_account_id"], c[0]["quantity"]) for c in commands)
    assert sent == [("SYS-CAP", 1000), ("SYS-RES-PRICE_CONTAINMENT", 50)]
    again = await api.client.post(f"/api/v1/periods/{code}/cap-generations", json=body,
                                  headers={**api.a, "Idempotency-Key": str(uuid4())})
    assert again.status_code == 409 and again.json()["code"] == "cap.already_generated"
    # The ledger answers (twice, as at-least-once delivery may): generated once, published once.
    start = 1
    for command in commands:
        payload = command[0]
        issued = UnitsIssued(request_id=UUID(payload["request_id"]), to_account_id=payload["to_account_id"],
                             unit_type="allowance", vintage=2022, quantity=payload["quantity"],
                             serial_range=SerialRange(start=start, end=start + payload["quantity"] - 1))
        start += payload["quantity"]
        await api.deliver(issued)
        await api.deliver(issued)
    generations = (await api.client.get(f"/api/v1/periods/{code}/cap-generations", headers=api.a)).json()["items"]
    assert [g["state"] for g in generations if g["id"] == request["generation_id"]] == ["generated"]
    published = await api.sql("SELECT count(*) FROM outbox WHERE routing_key = 'issuance.cap_generated.v1' "
                              "AND envelope->'payload'->>'generation_id' = :g", g=request["generation_id"])
    assert published[0][0] == 1
    period = (await api.client.get(f"/api/v1/periods/{code}", headers=api.a)).json()
    assert period["totals"]["cap"] == 1000 and period["totals"]["reserves"] == {"price_containment": 50}


async def test_allocation_upload_report_withhold_approve_and_run_once_in_batches(api: Api):
    ids = [f"INT-{uuid4().hex[:6].upper()}-{n}" for n in range(6)]
    for n, account in enumerate(ids):
        await api.sql("INSERT INTO known_accounts (id, kind, state, name) VALUES (:id, 'central', :state, :id)",
                      id=account, state="closed" if n == 5 else "active")
    await api.sql("INSERT INTO system_holdings (account_id, unit_type, vintage, quantity) "
                  "VALUES ('SYS-CAP', 'allowance', 2021, 1000)")
    template = await api.client.get("/api/v1/allocation-tables/template.xlsx", headers=api.a)
    assert template.status_code == 200 and template.headers["content-type"] == XLSX

    bad = await api.client.post("/api/v1/allocation-tables", content=xlsx([
        ["installation_account_id", "period", "quantity"], [ids[5], "2021", 10], [ids[0], "2021", 2000]]),
        headers={**api.a, "Content-Type": XLSX})
    assert bad.status_code == 422
    codes = {(e["row"], e["code"]) for e in bad.json()["errors"]}
    assert codes == {(2, "account_not_active"), (None, "exceeds_available")}

    data = xlsx([["installation_account_id", "period", "quantity"]] + [[a, 2021, 10 * (n + 1)]
                                                                       for n, a in enumerate(ids[:5])])
    uploaded = await api.client.post("/api/v1/allocation-tables", content=data, headers={**api.a, "Content-Type": XLSX})
    assert uploaded.status_code == 201, uploaded.text
    table = uploaded.json()
    assert table["total"] == 150 and table["state"] == "validated" and len(table["sha256"]) == 64
    withheld = await api.client.post(f"/api/v1/allocation-tables/{table['id']}/lines/{ids[4]}/withhold",
                                     json={"reason": "inspection"}, headers=api.a)
    assert withheld.status_code == 200 and withheld.json()["total"] == 100
    submitted = await api.client.post(f"/api/v1/allocation-tables/{table['id']}/submit", json={},
                                      headers={**api.a, "Idempotency-Key": str(uuid4())})
    assert submitted.status_code == 202
    request = submitted.json()
    assert request["payload"]["sha256"] == table["sha256"] and request["payload"]["withheld"] == [ids[4]]
    assert (await api.approve(request)).status_code == 200
    runs = [await api.client.post(f"/api/v1/allocation-tables/{table['id']}/run", json={},
                                  headers={**api.b, "Idempotency-Key": str(uuid4())}) for _ in range(2)]
    assert [r.status_code for r in runs] == [202, 200]
    batches = await api.sql("SELECT envelope->'payload' FROM outbox WHERE routing_key = 'accounts.move_units_batch.v1' "
                            "AND envelope->>'correlation_id' = :t", t=table["id"])
    assert sorted(len(b[0]["lines"]) for b in batches) == [2, 2]  # 4 lines in batches of 2
    lines = [line for b in batches for line in b[0]["lines"]]
    assert sorted(line["to_account_id"] for line in lines) == sorted(ids[:4])
    for line in lines:
        moved = UnitsMoved(movement_id=UUID(line["movement_id"]), movement_kind="allocation",
                           from_account_id="SYS-CAP", to_account_id=line["to_account_id"], quantity=line["quantity"],
                           blocks=[MovedBlock(unit_type="allowance", vintage=2021, ranges=[SerialRange(start=1, end=1)],
                                              quantity=line["quantity"])])
        await api.deliver(moved)
        await api.deliver(moved)
    async with api.engine.begin() as conn:
        assert await service.complete_runs(conn) >= 1
    done = (await api.client.get(f"/api/v1/allocation-tables/{table['id']}", headers=api.a)).json()
    assert done["state"] == "completed"
    delivered = await api.sql("SELECT count(*) FROM outbox WHERE routing_key = 'issuance.allocation_delivered.v1' "
                              "AND envelope->'payload'->>'table_id' = :t", t=table["id"])
    assert delivered[0][0] == 4
    csv_text = (await api.client.get(f"/api/v1/allocation-tables/{table['id']}/results.csv", headers=api.a)).text
    assert csv_text.count("delivered") == 4 and csv_text.count("withheld") == 1
    audit = await api.sql("SELECT action FROM audit_log WHERE entity_id = :t ORDER BY id", t=table["id"])
    assert [a[0] for a in audit] == ["allocation.uploaded", "allocation.line_withheld", "allocation.submitted",
                                     "allocation.approved", "allocation.run_started", "allocation.completed"]


async def test_a_ledger_batch_answer_is_told_in_one_allocation_delivered_batch_per_table(api: Api):
    ids = [f"INT-{uuid4().hex[:6].upper()}-{n}" for n in range(3)]
    for account in ids:
        await api.sql("INSERT INTO known_accounts (id, kind, state, name) VALUES (:id, 'central', 'active', :id)",
                      id=account)
    data = xlsx([["installation_account_id", "period", "quantity"]] + [[a, 2021, n + 1] for n, a in enumerate(ids)])
    uploaded = await api.client.post("/api/v1/allocation-tables", content=data, headers={**api.a, "Content-Type": XLSX})
    assert uploaded.status_code == 201, uploaded.text
    table = uploaded.json()
    submitted = await api.client.post(f"/api/v1/allocation-tables/{table['id']}/submit", json={},
                                      headers={**api.a, "Idempotency-Key": str(uuid4())})
    assert submitted.status_code == 202 and (await api.approve(submitted.json())).status_code == 200
    run = await api.client.post(f"/api/v1/allocation-tables/{table['id']}/run", json={},
                                headers={**api.b, "Idempotency-Key": str(uuid4())})
    assert run.status_code == 202, run.text
    batches = await api.sql("SELECT envelope->'payload' FROM outbox WHERE routing_key = 'accounts.move_units_batch.v1' "
                            "AND envelope->>'correlation_id' = :t", t=table["id"])
    for (batch,) in batches:
        answer = UnitsMovedBatch(batch_id=UUID(batch["batch_id"]), results=[BatchLineResult(
            movement_id=UUID(line["movement_id"]), movement_kind="allocation", from_account_id="SYS-CAP",
            to_account_id=line["to_account_id"], quantity=line["quantity"], moved=True, blocks=[MovedBlock(
                unit_type="allowance", vintage=2021, ranges=[SerialRange(start=1, end=line["quantity"])],
                quantity=line["quantity"])]) for line in batch["lines"]])
        await api.deliver(answer)
        await api.deliver(answer)  # a repeated answer delivers nothing more
    told = await api.sql("SELECT routing_key, envelope->'payload' FROM outbox WHERE routing_key LIKE "
                         "'issuance.allocation_delivered%' AND envelope->'payload'->>'table_id' = :t", t=table["id"])
    assert [key for key, _ in told] == ["issuance.allocation_delivered_batch.v1"] * len(batches) == \
        ["issuance.allocation_delivered_batch.v1"] * 2  # 3 lines in batches of 2: one event per answer
    lines = [line for _, payload in told for line in payload["lines"]]
    assert sorted((line["installation_account_id"], line["quantity"]) for line in lines) == \
        sorted((a, n + 1) for n, a in enumerate(ids))
    assert all(payload["period"] == "2021" and payload["vintage"] == 2021 for _, payload in told)
