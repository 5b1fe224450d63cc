"""``/api/v1/allocation-tables``: the allocation table imported from Excel (function c).

Upload the filled template (.xlsx as the request body) → a validation report naming every bad row by
sheet and row, the file's SHA-256 kept and shown to the approver → dry run → withhold a line if needed
→ submit for approval (four eyes) → the run starts by itself on the period's allocation date (or at once
on command), through ``move_units_batch`` in chunks of ≤ 1,000 lines → results as .xlsx or CSV.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from issuance import service
from issuance.api_common import Authority, Reader, Strict, approval_state, idempotent
from issuance.domain.allocation_table import validate_proportional, validate_table
from issuance.domain.proportional import ConsumptionError, format_hundredths, parse_hundredths
from issuance.tables import allocation_lines, allocation_tables, known_accounts, periods
from issuance.workbook import XLSX_MEDIA_TYPE, WorkbookRefused, read_first_sheet, template, write_csv, write_xlsx
from registry_common import idempotency
from registry_common.approvals import payload_hash, request_approval
from registry_common.errors import RegistryError, negotiate_language
from registry_common.routes import ClockDep, ReadConn, WriteConn

router = APIRouter(prefix="/api/v1/allocation-tables", tags=["allocation"])
Method = Literal["table", "proportional"]
RESULT_HEADERS = ["sheet", "row", "installation_account_id", "quantity", "consumption_mwh", "eligible", "reason",
                  "state", "code", "movement_id"]


class WithholdIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class RunIn(Strict):
    reason: str | None = Field(default=None, max_length=2000)


class SubmitIn(Strict):
    note: str | None = Field(default=None, max_length=2000)


@router.get("/template.xlsx", response_class=Response,
            responses={200: {"content": {XLSX_MEDIA_TYPE: {}}, "description": "the empty template"}})
async def get_template(_who: Reader, method: Method = "table") -> Response:
    """Headers ``installation_account_id | period | quantity`` (``table``), or ``id | consumption_mwh |
    eligible | reason`` (``proportional``). Spanish aliases are accepted on upload."""
    return Response(template(method), media_type=XLSX_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="allocation-{method}-template.xlsx"'})


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RegistryError("allocation.file_too_large", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RegistryError("allocation.file_too_large", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def table_out(row: Any, approval: str | None = None) -> dict[str, Any]:
    state = row.state
    if state == "awaiting_approval" and approval in ("rejected", "expired"):
        state = f"approval_{approval}"
    return {
        "id": str(row.id), "method": row.method, "period": row.period_code, "filename": row.filename,
        "sha256": row.sha256, "size_bytes": row.size_bytes, "state": state, "line_count": row.line_count,
        "total": row.total, "budget": row.budget, "remainder": row.remainder,
        "national_consumption_mwh": None if row.national_hundredths is None else format_hundredths(
            row.national_hundredths),
        "eligible_consumption_mwh": None if row.eligible_hundredths is None else format_hundredths(
            row.eligible_hundredths),
        "source_account_id": row.source_account_id, "report": row.report,
        "approval_id": str(row.approval_id) if row.approval_id else None, "approval_state": approval,
        "uploaded_by": row.uploaded_by, "uploaded_at": row.uploaded_at.isoformat(),
        "approved_by": row.approved_by, "approved_at": row.approved_at.isoformat() if row.approved_at else None,
        "run_trigger": row.run_trigger,
        "run_started_at": row.run_started_at.isoformat() if row.run_started_at else None,
        "completed_at": row.completed_at.isoformat() if row.completed_at else None,
    }


async def load_table(conn: AsyncConnection, table_id: UUID, *, lock: bool = False) -> Any:
    query = select(allocation_tables).where(allocation_tables.c.id == table_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise RegistryError("allocation.not_found")
    return row


@router.post("", status_code=201, openapi_extra={"requestBody": {
    "required": True, "content": {XLSX_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}}}},
    responses={201: {"description": "validated"}, 413: {"description": "over a limit"},
               422: {"description": "not valid: the report names every bad row"}})
async def upload_table(
    request: Request, conn: WriteConn, who: Authority,
    method: Method = "table",
    period: Annotated[str | None, Query(max_length=20, description="the period (required for proportional)")] = None,
    budget: Annotated[int | None, Query(ge=0, le=10**12, description="proportional: units to share")] = None,
    national_consumption_mwh: Annotated[str | None, Query(max_length=40, description="proportional: MWh, 2 dp")] = None,
    source_account_id: Annotated[str, Query(max_length=40)] = service.CAP_ACCOUNT,
    filename: Annotated[str | None, Query(max_length=255)] = None,
) -> JSONResponse:
    """Upload a filled allocation table (the .xlsx bytes as the body). Answers 201 with the report when it
    is valid, 422 ``allocation.invalid_table`` with every bad row (sheet, row, column, code) otherwise;
    limits answer 413. Nothing is allocated until the table is approved."""
    settings = request.app.state.settings
    language = negotiate_language(request.headers.get("accept-language"))
    national: int | None = None
    if method == "proportional":
        if period is None:
            raise RegistryError("allocation.invalid_parameters", field="period", detail="period")
        if budget is None:
            raise RegistryError("allocation.invalid_parameters", field="budget", detail="budget")
        try:
            national = parse_hundredths(national_consumption_mwh or "")
        except ConsumptionError as exc:
            raise RegistryError("allocation.invalid_parameters", field="national_consumption_mwh",
                                detail="national_consumption_mwh") from exc
        if national <= 0:
            raise RegistryError("allocation.invalid_parameters", field="national_consumption_mwh",
                                detail="national_consumption_mwh")
    source = (await conn.execute(select(known_accounts).where(known_accounts.c.id == source_account_id))).first()
    if source_account_id != service.CAP_ACCOUNT and (source is None or source.kind not in service.SOURCE_KINDS):
        raise RegistryError("allocation.unknown_source", field="source_account_id", account=source_account_id)
    data = await read_body(request, settings.allocation_max_bytes)
    digest = hashlib.sha256(data).hexdigest()
    try:
        sheet = read_first_sheet(data, max_bytes=settings.allocation_max_bytes,
                                 max_uncompressed=settings.allocation_max_uncompressed_bytes,
                                 max_rows=settings.allocation_max_rows)
    except WorkbookRefused as refused:
        raise RegistryError(refused.code, field="file", **refused.params) from refused
    period_rows = {r.code: r.vintage for r in await conn.execute(select(periods.c.code, periods.c.vintage))}
    if period is not None and period not in period_rows:
        raise RegistryError("period.not_found", field="period", period=period)
    accounts = await service.account_views(conn)
    if method == "table":
        available = {code: await service.held_by(conn, source_account_id, vintage)
                     for code, vintage in period_rows.items() if period is None or code == period}
        check = validate_table(sheet, accounts, period_rows, available, source_account_id, expected_period=period)
    else:
        assert period is not None and budget is not None and national is not None
        have = await service.held_by(conn, source_account_id, period_rows[period])
        check = validate_proportional(sheet, accounts, budget=budget, national=national, available=have,
                                      source_account=source_account_id)
        check.period = period
    table_id = uuid4()
    report = [issue.as_dict(language) for issue in check.issues]
    await conn.execute(insert(allocation_tables).values(
        id=table_id, method=method, period_code=check.period, filename=filename, sha256=digest, size_bytes=len(data),
        state="validated" if check.ok else "invalid", report=report, line_count=len(check.lines),
        total=check.total, budget=budget, national_hundredths=national,
        eligible_hundredths=check.eligible_consumption, remainder=check.remainder,
        source_account_id=source_account_id, uploaded_by=who.user_id))
    if check.ok and check.lines:
        await conn.execute(insert(allocation_lines), [
            {"table_id": table_id, "account_id": line.account_id, "sheet": line.sheet, "row_number": line.row,
             "quantity": line.quantity, "consumption_hundredths": line.consumption, "eligible": line.eligible,
             "reason": line.reason, "state": "planned" if line.quantity > 0 else "nothing_due",
             "movement_id": uuid4()} for line in check.lines])
    await service.record_audit(conn, action="allocation.uploaded", entity_type="allocation_table",
                               entity_id=str(table_id), actor=who.user_id,
                               details={"sha256": digest, "method": method, "valid": check.ok,
                                        "issues": len(report), "lines": len(check.lines), "total": check.total})
    row = await load_table(conn, table_id)
    if not check.ok:
        # the report is kept (GET answers it); the error itself names every bad row
        await conn.commit()
        raise RegistryError("allocation.invalid_table", count=len(report), errors=report, table_id=str(table_id),
                            sha256=digest)
    return JSONResponse(table_out(row), status_code=201, headers={"Location": f"/api/v1/allocation-tables/{table_id}"})


@router.get("")
async def list_tables(conn: ReadConn, clock: ClockDep, _who: Reader,
                      state: Annotated[str | None, Query(max_length=40)] = None,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    query = select(allocation_tables).order_by(allocation_tables.c.uploaded_at.desc()).limit(limit)
    if state is not None:
        query = query.where(allocation_tables.c.state == state)
    rows = (await conn.execute(query)).all()
    items = []
    for r in rows:
        item = table_out(r, await approval_state(conn, r.approval_id, clock.now()))
        item.pop("report")
        items.append(item)
    return {"items": items}


@router.get("/{table_id}")
async def get_table(table_id: UUID, conn: ReadConn, clock: ClockDep, _who: Reader) -> dict[str, Any]:
    row = await load_table(conn, table_id)
    return table_out(row, await approval_state(conn, row.approval_id, clock.now()))


async def _lines(conn: AsyncConnection, table_id: UUID) -> list[Any]:
    return (await conn.execute(select(allocation_lines).where(allocation_lines.c.table_id == table_id)
                               .order_by(allocation_lines.c.row_number))).all()


def _line_out(line: Any) -> dict[str, Any]:
    return {"sheet": line.sheet, "row": line.row_number, "installation_account_id": line.account_id,
            "quantity": line.quantity, "state": line.state, "code": line.code,
            "consumption_mwh": None if line.consumption_hundredths is None else format_hundredths(
                line.consumption_hundredths),
            "eligible": line.eligible, "reason": line.reason or line.withheld_reason}


@router.get("/{table_id}/dry-run")
async def dry_run(table_id: UUID, conn: ReadConn, _who: Reader) -> dict[str, Any]:
    """What the run would allocate now: every line with its quantity and state, the total, what the
    source account holds of the period's vintage, and (proportional) the remainder that stays there."""
    row = await load_table(conn, table_id)
    if row.state == "invalid":
        raise RegistryError("allocation.wrong_state", state=row.state, action="dry-run")
    period = await service.get_period(conn, row.period_code)
    lines = await _lines(conn, table_id)
    planned = [line for line in lines if line.state in ("planned", "sent", "delivered")]
    return {"table_id": str(table_id), "sha256": row.sha256, "period": row.period_code, "vintage": period.vintage,
            "allocation_at": period.allocation_at.isoformat(), "source_account_id": row.source_account_id,
            "source_holds": await service.held_by(conn, row.source_account_id, period.vintage),
            "total": sum(line.quantity for line in planned), "installations": len(planned),
            "withheld": [line.account_id for line in lines if line.state == "withheld"],
            "budget": row.budget, "remainder": row.remainder, "lines": [_line_out(line) for line in lines]}


@router.post("/{table_id}/lines/{account_id}/withhold")
async def withhold_line(table_id: UUID, account_id: str, body: WithholdIn, conn: WriteConn,
                        who: Authority) -> dict[str, Any]:
    """Withhold one installation's line before the run (it is not sent; its units stay in the source
    account and, for the proportional method, count in the remainder)."""
    table = await load_table(conn, table_id, lock=True)
    if table.state not in ("validated", "awaiting_approval", "approved"):
        raise RegistryError("allocation.wrong_state", state=table.state, action="withhold")
    line = (await conn.execute(update(allocation_lines).where(
        allocation_lines.c.table_id == table_id, allocation_lines.c.account_id == account_id,
        allocation_lines.c.state.in_(("planned", "nothing_due"))).values(
        state="withheld", withheld_by=who.user_id, withheld_reason=body.reason)
        .returning(allocation_lines.c.quantity))).first()
    if line is None:
        raise RegistryError("allocation.line_not_found", field="account_id", account=account_id)
    values: dict[str, Any] = {"total": table.total - line.quantity}
    if table.remainder is not None:
        values["remainder"] = table.remainder + line.quantity
    await conn.execute(update(allocation_tables).where(allocation_tables.c.id == table_id).values(**values))
    await service.record_audit(conn, action="allocation.line_withheld", entity_type="allocation_table",
                               entity_id=str(table_id), actor=who.user_id, reason=body.reason,
                               details={"account_id": account_id, "quantity": line.quantity})
    return {"table_id": str(table_id), "installation_account_id": account_id, "state": "withheld",
            "quantity": line.quantity, "total": values["total"], "remainder": values.get("remainder")}


@router.post("/{table_id}/submit", status_code=202, responses={202: {"description": "awaiting approval"}})
async def submit_table(table_id: UUID, body: SubmitIn, request: Request, conn: WriteConn, clock: ClockDep,
                       who: Authority, key: idempotency.IdempotencyKey) -> JSONResponse:
    """Ask a second authority user to approve the validated table; the approval's payload carries the
    file's SHA-256, the total and the number of lines the approver confirms."""
    settings = request.app.state.settings

    async def work() -> dict[str, Any]:
        table = await load_table(conn, table_id, lock=True)
        resubmittable = table.state == "awaiting_approval" and await approval_state(
            conn, table.approval_id, clock.now()) in ("rejected", "expired")
        if table.state != "validated" and not resubmittable:
            raise RegistryError("allocation.wrong_state", state=table.state, action="submit")
        period = await service.get_period(conn, table.period_code)
        lines = await _lines(conn, table_id)
        payload = {"table_id": str(table_id), "sha256": table.sha256, "filename": table.filename,
                   "method": table.method, "period": table.period_code, "vintage": period.vintage,
                   "source_account_id": table.source_account_id, "total": table.total,
                   "lines": sum(1 for line in lines if line.state == "planned"),
                   "withheld": sorted(line.account_id for line in lines if line.state == "withheld"),
                   "remainder": table.remainder, "note": body.note}
        ttl = service.timedelta(hours=settings.approval_ttl_hours)
        approval_id = await request_approval(conn, action="issuance.allocate", payload=payload, requested_by=who,
                                             required_roles=["authority"], now=clock.now(), ttl=ttl)
        await conn.execute(update(allocation_tables).where(allocation_tables.c.id == table_id)
                           .values(state="awaiting_approval", approval_id=approval_id))
        await service.record_audit(conn, action="allocation.submitted", entity_type="allocation_table",
                                   entity_id=str(table_id), actor=who.user_id, details=payload)
        return {"table_id": str(table_id), "approval_id": str(approval_id), "state": "awaiting_approval",
                "sha256": table.sha256, "payload": payload, "payload_hash": payload_hash(payload)}

    return await idempotent(conn, key, who, {"table_id": str(table_id), **body.model_dump(mode="json")}, 202, work,
                            location=f"/api/v1/allocation-tables/{table_id}")


@router.post("/{table_id}/run", status_code=202, responses={202: {"description": "run started"}})
async def run_table(table_id: UUID, body: RunIn, request: Request, conn: WriteConn, who: Authority,
                    key: idempotency.IdempotencyKey) -> JSONResponse:
    """Run an approved table at once instead of waiting for the allocation date. Exactly once: a table
    already running or run answers 200 with its state; one not approved answers 409."""
    settings = request.app.state.settings

    async def work() -> dict[str, Any]:
        table = await load_table(conn, table_id, lock=True)
        if table.state in ("running", "completed", "completed_with_refusals"):
            return {"table_id": str(table_id), "state": table.state, "started": False}
        started = await service.start_run(conn, table_id, trigger=f"command:{who.user_id}", actor=who.user_id,
                                          batch_lines=settings.allocation_batch_lines)
        if not started:
            raise RegistryError("allocation.wrong_state", state=table.state, action="run")
        fresh = await load_table(conn, table_id)
        return {"table_id": str(table_id), "state": fresh.state, "started": True}

    stored = await idempotency.reserve(conn, key, who.user_id, {"table_id": str(table_id),
                                                                 **body.model_dump(mode="json")})
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"])
    content = await work()
    status = 202 if content["started"] else 200
    await idempotency.remember(conn, key, who.user_id, status, content)
    return JSONResponse(content, status_code=status)


def _result_rows(lines: list[Any]) -> list[list[Any]]:
    return [[line.sheet, line.row_number, line.account_id, line.quantity,
             None if line.consumption_hundredths is None else format_hundredths(line.consumption_hundredths),
             line.eligible, line.reason or line.withheld_reason, line.state, line.code,
             str(line.movement_id)] for line in lines]


@router.get("/{table_id}/results.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {}}, "description": "one row per line"}})
async def results_csv(table_id: UUID, conn: ReadConn, _who: Reader) -> Response:
    await load_table(conn, table_id)
    body = write_csv(RESULT_HEADERS, _result_rows(await _lines(conn, table_id)))
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="allocation-{table_id}.csv"'})


@router.get("/{table_id}/results.xlsx", response_class=Response,
            responses={200: {"content": {XLSX_MEDIA_TYPE: {}}, "description": "one row per line"}})
async def results_xlsx(table_id: UUID, conn: ReadConn, _who: Reader) -> Response:
    table = await load_table(conn, table_id)
    rows = _result_rows(await _lines(conn, table_id))
    if table.remainder is not None:
        rows.append(["", None, "remainder", table.remainder, None, None, "stays in " + table.source_account_id,
                     "", "", ""])
    return Response(write_xlsx("resultados", RESULT_HEADERS, rows), media_type=XLSX_MEDIA_TYPE,
                    headers={"Content-Disposition": f'attachment; filename="allocation-{table_id}.xlsx"'})
