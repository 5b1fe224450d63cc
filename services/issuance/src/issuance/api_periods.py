"""``/api/v1/periods``: the programme's compliance periods and, per period, cap and reserve generations
(four eyes: one authority user asks, another approves; the ledger then issues the serial blocks)."""

from __future__ import annotations

from datetime import date
from typing import Any, Literal
from uuid import uuid4

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from issuance import service
from issuance.api_common import Authority, Reader, Strict, approval_state, idempotent
from issuance.domain.periods import PeriodRefusal, PeriodSpec, calendar_year
from issuance.tables import allocation_lines, allocation_tables, cap_generations, periods
from registry_common import idempotency
from registry_common.approvals import payload_hash, request_approval
from registry_common.errors import RegistryError
from registry_common.routes import ClockDep, ReadConn, WriteConn

router = APIRouter(prefix="/api/v1/periods", tags=["periods"])


class PeriodIn(Strict):
    """A period; dates left out follow the pilot's calendar-year schedule for ``vintage``."""

    vintage: int = Field(ge=2000, le=9999)
    code: str | None = Field(default=None, min_length=1, max_length=20, pattern=r"^[0-9A-Za-z_-]+$")
    starts_on: date | None = None
    ends_on: date | None = None
    allocation_on: date | None = None
    reporting_opens_on: date | None = None
    reporting_closes_on: date | None = None
    surrender_deadline_on: date | None = None
    final: bool = False

    def spec(self) -> PeriodSpec:
        base = calendar_year(self.vintage, final=self.final)
        values = {k: getattr(self, k) or getattr(base, k) for k in (
            "starts_on", "ends_on", "allocation_on", "reporting_opens_on", "reporting_closes_on",
            "surrender_deadline_on")}
        return PeriodSpec(code=self.code or str(self.vintage), vintage=self.vintage, final=self.final, **values)


class CapGenerationIn(Strict):
    kind: Literal["initial", "adjustment"] = "initial"
    cap: int = Field(ge=0, le=10**12, description="allowances into the cap account SYS-CAP")
    reserves: dict[str, int] = Field(default_factory=dict, description="reserve name → allowances")
    reason: str | None = Field(default=None, max_length=2000)


async def period_out(conn: AsyncConnection, row: Any) -> dict[str, Any]:
    generated = (await conn.execute(
        select(cap_generations.c.kind, cap_generations.c.cap, cap_generations.c.reserves)
        .where(cap_generations.c.period_code == row.code, cap_generations.c.state == "generated"))).all()
    reserves: dict[str, int] = {}
    for g in generated:
        for name, quantity in g.reserves.items():
            reserves[name] = reserves.get(name, 0) + quantity
    allocated = (await conn.execute(
        select(func.coalesce(func.sum(allocation_lines.c.quantity), 0))
        .join(allocation_tables, allocation_tables.c.id == allocation_lines.c.table_id)
        .where(allocation_tables.c.period_code == row.code, allocation_lines.c.state == "delivered"))).scalar_one()
    return {
        "code": row.code, "vintage": row.vintage, "final": row.final, "timezone": row.timezone,
        "local_dates": row.local_dates,
        **{k: getattr(row, k).isoformat() for k in (
            "starts_at", "ends_at", "allocation_at", "reporting_opens_at", "reporting_closes_at",
            "surrender_deadline_at")},
        "totals": {"cap": sum(g.cap for g in generated), "reserves": reserves, "allocated": int(allocated),
                   "cap_account_holds": await service.held_by(conn, service.CAP_ACCOUNT, row.vintage)},
    }


@router.get("")
async def list_periods(conn: ReadConn, _who: Reader) -> dict[str, Any]:
    rows = (await conn.execute(select(periods).order_by(periods.c.starts_at))).all()
    return {"items": [await period_out(conn, r) for r in rows]}


@router.post("", status_code=201)
async def create_period(body: PeriodIn, request: Request, conn: WriteConn, clock: ClockDep,
                        who: Authority) -> JSONResponse:
    """Schedule a period (configuration: any schedule, e.g. multi-year). Publishes ``period_scheduled``."""
    spec = body.spec()
    try:
        spec.check()
    except PeriodRefusal as refusal:
        raise RegistryError(refusal.code, field=refusal.field, **refusal.params) from refusal
    zone = request.app.state.settings.programme_timezone
    row = await service.create_period(conn, spec, zone=zone, actor=who.user_id, created_programme_at=clock.now())
    if row is None:
        raise RegistryError("period.exists", field="vintage", period=spec.code)
    created = await service.get_period(conn, spec.code)
    return JSONResponse(await period_out(conn, created), status_code=201,
                        headers={"Location": f"/api/v1/periods/{spec.code}"})


@router.get("/{code}")
async def get_period(code: str, conn: ReadConn, _who: Reader) -> dict[str, Any]:
    return await period_out(conn, await service.get_period(conn, code))


def generation_out(row: Any, approval: str | None) -> dict[str, Any]:
    state = row.state
    if state == "awaiting_approval" and approval in ("rejected", "expired"):
        state = approval
    return {"id": str(row.id), "period": row.period_code, "kind": row.kind, "cap": row.cap, "reserves": row.reserves,
            "reason": row.reason, "state": state, "approval_id": str(row.approval_id) if row.approval_id else None,
            "requested_by": row.requested_by, "approved_by": row.approved_by,
            "created_at": row.created_at.isoformat(),
            "completed_at": row.completed_at.isoformat() if row.completed_at else None}


@router.get("/{code}/cap-generations")
async def list_generations(code: str, conn: ReadConn, clock: ClockDep, _who: Reader) -> dict[str, Any]:
    await service.get_period(conn, code)
    rows = (await conn.execute(select(cap_generations).where(cap_generations.c.period_code == code)
                               .order_by(cap_generations.c.created_at))).all()
    return {"items": [generation_out(r, await approval_state(conn, r.approval_id, clock.now())) for r in rows]}


@router.post("/{code}/cap-generations", status_code=202, responses={202: {"description": "awaiting approval"}})
async def request_generation(code: str, body: CapGenerationIn, request: Request, conn: WriteConn, clock: ClockDep,
                             who: Authority, key: idempotency.IdempotencyKey) -> JSONResponse:
    """Ask for the period's cap and reserves (``initial``, once per period) or a correction (``adjustment``,
    a new approved issuance, never an edit). Another authority user approves at
    ``/api/v1/issuance/approvals/{approval_id}/approve`` confirming ``payload_hash``."""
    settings = request.app.state.settings

    async def work() -> dict[str, Any]:
        period = await service.get_period(conn, code, lock=True)
        known = {n.strip().lower() for n in settings.reserves.split(",") if n.strip()}
        for name in body.reserves:
            if name.strip().lower() not in known:
                raise RegistryError("cap.unknown_reserve", field=f"reserves.{name}", reserve=name)
            if body.reserves[name] < 0:
                raise RegistryError("request.invalid", field=f"reserves.{name}")
        reserves = {name.strip().lower(): q for name, q in body.reserves.items() if q > 0}
        if body.cap <= 0 and not reserves:
            raise RegistryError("cap.nothing_to_generate", field="cap")
        if body.kind == "initial":
            rows = (await conn.execute(select(cap_generations).where(
                cap_generations.c.period_code == code, cap_generations.c.kind == "initial"))).all()
            for r in rows:
                if r.state in ("issuing", "generated"):
                    raise RegistryError("cap.already_generated", period=code)
                pending = await approval_state(conn, r.approval_id, clock.now()) == "pending"
                if r.state == "awaiting_approval" and pending:
                    raise RegistryError("cap.generation_pending", period=code)
        generation_id = uuid4()
        payload = {"generation_id": str(generation_id), "period": code, "vintage": period.vintage,
                   "kind": body.kind, "cap": body.cap, "reserves": reserves, "reason": body.reason}
        ttl = service.timedelta(hours=settings.approval_ttl_hours)
        approval_id = await request_approval(conn, action="issuance.generate_cap", payload=payload, requested_by=who,
                                             required_roles=["authority"], now=clock.now(), ttl=ttl)
        await conn.execute(insert(cap_generations).values(
            id=generation_id, period_code=code, kind=body.kind, cap=body.cap, reserves=reserves, reason=body.reason,
            state="awaiting_approval", approval_id=approval_id, requested_by=who.user_id))
        await service.record_audit(conn, action="cap_generation.requested", entity_type="cap_generation",
                                   entity_id=str(generation_id), actor=who.user_id, details=payload)
        return {"generation_id": str(generation_id), "approval_id": str(approval_id), "state": "awaiting_approval",
                "payload": payload, "payload_hash": payload_hash(payload)}

    return await idempotent(conn, key, who, {"period": code, **body.model_dump(mode="json")}, 202, work,
                            location=f"/api/v1/periods/{code}/cap-generations")
