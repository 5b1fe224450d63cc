"""``/api/v1/offset-projects``: offset projects (id, protocol, place, developer's account) and, after
verification, offset credits of a vintage issued into the developer's account (four eyes, serials,
journal; their own unit type ``offset``)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from sqlalchemy import insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from issuance import service
from issuance.api_common import Authority, Reader, Strict, approval_state, idempotent
from issuance.tables import known_accounts, offset_issuances, offset_projects
from registry_common import idempotency
from registry_common.approvals import payload_hash, request_approval
from registry_common.errors import RegistryError
from registry_common.routes import ClockDep, ReadConn, WriteConn

router = APIRouter(prefix="/api/v1/offset-projects", tags=["offsets"])
HOLDING_KINDS = ("central", "trading")


class ProjectIn(Strict):
    id: str = Field(min_length=1, max_length=40, pattern=r"^[0-9A-Za-z_.-]+$")
    name: str = Field(min_length=1, max_length=300)
    protocol: str = Field(min_length=1, max_length=200)
    place: str = Field(min_length=1, max_length=300)
    developer_account_id: str = Field(min_length=1, max_length=40)


class CreditIssuanceIn(Strict):
    vintage: int = Field(ge=2000, le=9999)
    quantity: int = Field(gt=0, le=10**12)
    verification_reference: str = Field(min_length=1, max_length=200,
                                        description="the verification report the issuance rests on")


def project_out(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "protocol": row.protocol, "place": row.place,
            "developer_account_id": row.developer_account_id, "state": row.state, "created_by": row.created_by,
            "created_at": row.created_at.isoformat()}


async def check_developer_account(conn: AsyncConnection, account_id: str) -> None:
    account = (await conn.execute(select(known_accounts).where(known_accounts.c.id == account_id))).first()
    if account is None or account.kind not in HOLDING_KINDS or account.state != "active":
        raise RegistryError("offset.developer_account", field="developer_account_id", account=account_id)


async def load_project(conn: AsyncConnection, project_id: str) -> Any:
    row = (await conn.execute(select(offset_projects).where(offset_projects.c.id == project_id))).first()
    if row is None:
        raise RegistryError("offset.project_not_found", field="project_id", project=project_id)
    return row


@router.post("", status_code=201)
async def register_project(body: ProjectIn, conn: WriteConn, who: Authority) -> JSONResponse:
    await check_developer_account(conn, body.developer_account_id)
    row = (await conn.execute(pg_insert(offset_projects).values(**body.model_dump(), created_by=who.user_id)
                              .on_conflict_do_nothing().returning(*offset_projects.c))).first()
    if row is None:
        raise RegistryError("offset.project_exists", field="id", project=body.id)
    await service.record_audit(conn, action="offset_project.registered", entity_type="offset_project",
                               entity_id=body.id, actor=who.user_id, details=body.model_dump())
    return JSONResponse(project_out(row), status_code=201, headers={"Location": f"/api/v1/offset-projects/{body.id}"})


@router.get("")
async def list_projects(conn: ReadConn, _who: Reader) -> dict[str, Any]:
    rows = (await conn.execute(select(offset_projects).order_by(offset_projects.c.created_at))).all()
    return {"items": [project_out(r) for r in rows]}


@router.get("/{project_id}")
async def get_project(project_id: str, conn: ReadConn, _who: Reader) -> dict[str, Any]:
    return project_out(await load_project(conn, project_id))


def issuance_out(row: Any, approval: str | None) -> dict[str, Any]:
    state = row.state
    if state == "awaiting_approval" and approval in ("rejected", "expired"):
        state = approval
    return {"id": str(row.id), "project_id": row.project_id, "vintage": row.vintage, "quantity": row.quantity,
            "verification_reference": row.verification_reference, "to_account_id": row.to_account_id,
            "state": state, "approval_id": str(row.approval_id) if row.approval_id else None,
            "requested_by": row.requested_by, "approved_by": row.approved_by, "serial_start": row.serial_start,
            "serial_end": row.serial_end, "code": row.code, "created_at": row.created_at.isoformat()}


@router.get("/{project_id}/credit-issuances")
async def list_credit_issuances(project_id: str, conn: ReadConn, clock: ClockDep, _who: Reader) -> dict[str, Any]:
    await load_project(conn, project_id)
    rows = (await conn.execute(select(offset_issuances).where(offset_issuances.c.project_id == project_id)
                               .order_by(offset_issuances.c.created_at))).all()
    return {"items": [issuance_out(r, await approval_state(conn, r.approval_id, clock.now())) for r in rows]}


@router.post("/{project_id}/credit-issuances", status_code=202, responses={202: {"description": "awaiting approval"}})
async def request_credit_issuance(project_id: str, body: CreditIssuanceIn, request: Request, conn: WriteConn,
                                  clock: ClockDep, who: Authority, key: idempotency.IdempotencyKey) -> JSONResponse:
    """Ask for offset credits of a vintage into the developer's account; a second authority user
    approves (``/api/v1/issuance/approvals/{approval_id}/approve``), then the ledger issues them."""
    settings = request.app.state.settings

    async def work() -> dict[str, Any]:
        project = await load_project(conn, project_id)
        await check_developer_account(conn, project.developer_account_id)
        issuance_id = uuid4()
        payload = {"issuance_id": str(issuance_id), "project_id": project_id, "vintage": body.vintage,
                   "quantity": body.quantity, "to_account_id": project.developer_account_id,
                   "verification_reference": body.verification_reference}
        approval_id = await request_approval(
            conn, action="issuance.issue_offsets", payload=payload, requested_by=who, required_roles=["authority"],
            now=clock.now(), ttl=service.timedelta(hours=settings.approval_ttl_hours))
        await conn.execute(insert(offset_issuances).values(
            id=issuance_id, project_id=project_id, vintage=body.vintage, quantity=body.quantity,
            verification_reference=body.verification_reference, to_account_id=project.developer_account_id,
            state="awaiting_approval", approval_id=approval_id, request_id=uuid4(), requested_by=who.user_id))
        await service.record_audit(conn, action="offset_issuance.requested", entity_type="offset_issuance",
                                   entity_id=str(issuance_id), actor=who.user_id, details=payload)
        return {"issuance_id": str(issuance_id), "approval_id": str(approval_id), "state": "awaiting_approval",
                "payload": payload, "payload_hash": payload_hash(payload)}

    return await idempotent(conn, key, who, {"project_id": project_id, **body.model_dump(mode="json")}, 202, work,
                            location=f"/api/v1/offset-projects/{project_id}/credit-issuances")
