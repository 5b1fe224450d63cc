"""Routes every service shares: ``/api/v1/{service}/audit-log``, ``.../approvals``, ``.../dead-letters``;
and the health routes ``/health``, ``/ready``, ``/metrics`` served by every API and worker process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.approvals import decide_approval, effective_state
from registry_common.audit import record_audit
from registry_common.auth import OVERSIGHT_ROLES, Principal, Role, require_roles
from registry_common.clock import ProgrammeClock
from registry_common.messaging.consumer import replay_dead_letter
from registry_common.tables import approvals, audit_log, dead_letters


# Dependencies -----------------------------------------------------------------------------------
async def read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    async with request.app.state.engine.connect() as conn:
        yield conn


async def write_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    """One transaction for the request: committed if the route returns, rolled back if it raises."""
    async with request.app.state.engine.begin() as conn:
        yield conn


async def get_clock(request: Request) -> ProgrammeClock:
    clock: ProgrammeClock = request.app.state.clock
    return clock


# scope="function": the transaction ends (commits) before the response is sent, never after it.
ReadConn = Annotated[AsyncConnection, Depends(read_connection, scope="function")]
WriteConn = Annotated[AsyncConnection, Depends(write_connection, scope="function")]
ClockDep = Annotated[ProgrammeClock, Depends(get_clock)]
Overseer = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES))]
Administrator = Annotated[Principal, Depends(require_roles(Role.ADMINISTRATOR))]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[int | None, Query(ge=0, le=2**63 - 1, description="the `next_cursor` of the previous page")]


class Page(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: int | None = None


def _page(rows: list[dict[str, Any]], limit: int) -> Page:
    return Page(items=rows[:limit], next_cursor=rows[limit - 1]["id"] if len(rows) > limit else None)


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    payload_hash: str | None = Field(default=None, description="the hash of the payload you reviewed")
    reason: str | None = Field(default=None, max_length=2000)


def shared_router(service: str) -> APIRouter:
    router = APIRouter(prefix=f"/api/v1/{service}", tags=[service])

    @router.get("/audit-log", response_model=Page, operation_id=f"{service}-audit-log")
    async def list_audit_log(
        conn: ReadConn, _who: Overseer, limit: Limit = 100, cursor: Cursor = None,
        entity_type: str | None = None, entity_id: str | None = None, action: str | None = None,
    ) -> Page:
        query = select(audit_log).order_by(audit_log.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(audit_log.c.id < cursor)
        for column, value in (("entity_type", entity_type), ("entity_id", entity_id), ("action", action)):
            if value is not None:
                query = query.where(audit_log.c[column] == value)
        rows = [dict(r) for r in (await conn.execute(query)).mappings()]
        return _page(rows, limit)

    @router.get("/approvals", operation_id=f"{service}-list-approvals")
    async def list_approvals(
        conn: ReadConn, clock: ClockDep, _who: Overseer, limit: Limit = 100,
        state: Literal["pending", "approved", "rejected", "expired"] | None = None,
    ) -> dict[str, Any]:
        rows = (await conn.execute(select(approvals).order_by(approvals.c.requested_at.desc()))).mappings()
        now = clock.now()
        items = [{**r, "state": effective_state(dict(r), now)} for r in rows]
        items = [i for i in items if state is None or i["state"] == state][:limit]
        return {"items": items}

    @router.post("/approvals/{approval_id}/approve", operation_id=f"{service}-approve")
    async def approve(approval_id: UUID, body: Decision, conn: WriteConn, clock: ClockDep,
                      who: Annotated[Principal, Depends(require_roles(*Role))]) -> dict[str, Any]:
        return await decide_approval(conn, approval_id, decider=who, approve=True, now=clock.now(),
                                     confirmed_hash=body.payload_hash, reason=body.reason)

    @router.post("/approvals/{approval_id}/reject", operation_id=f"{service}-reject-approval")
    async def reject(approval_id: UUID, body: Decision, conn: WriteConn, clock: ClockDep,
                     who: Annotated[Principal, Depends(require_roles(*Role))]) -> dict[str, Any]:
        return await decide_approval(conn, approval_id, decider=who, approve=False, now=clock.now(),
                                     reason=body.reason)

    @router.get("/dead-letters", response_model=Page, operation_id=f"{service}-dead-letters")
    async def list_dead_letters(
        conn: ReadConn, _who: Overseer, limit: Limit = 100, cursor: Cursor = None,
        state: Literal["dead", "replayed"] | None = "dead",
    ) -> Page:
        query = select(dead_letters).order_by(dead_letters.c.id.desc()).limit(limit + 1)
        if cursor is not None:
            query = query.where(dead_letters.c.id < cursor)
        if state is not None:
            query = query.where(dead_letters.c.state == state)
        return _page([dict(r) for r in (await conn.execute(query)).mappings()], limit)

    @router.post("/dead-letters/{dead_letter_id}/replay", status_code=202,
                 operation_id=f"{service}-replay-dead-letter")
    async def replay(dead_letter_id: Annotated[int, Path(ge=1, le=2**63 - 1)], conn: WriteConn,
                     who: Administrator) -> dict[str, Any]:
        row = await replay_dead_letter(conn, dead_letter_id, actor=who.user_id)
        await record_audit(conn, action="dead_letter.replayed", entity_type="dead_letter",
                           entity_id=str(dead_letter_id), actor=who.user_id,
                           details={"message_id": str(row["message_id"]), "type": row["message_type"]})
        return {"id": dead_letter_id, "state": "replayed", "message_id": row["message_id"]}

    return router


def health_router(readiness: Any) -> APIRouter:
    """``readiness`` is an async callable returning ``(ready: bool, checks: dict)``."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    router = APIRouter(tags=["health"])

    @router.get("/health", operation_id="health")
    async def health(request: Request) -> dict[str, Any]:
        clock: ProgrammeClock = request.app.state.clock
        await clock.refresh()
        return {"status": "alive", "service": request.app.state.settings.service,
                "process": request.app.state.process_kind, "clock": clock.describe(),
                "started_at": request.app.state.started_at}

    @router.get("/ready", operation_id="ready")
    async def ready(request: Request, response: Response) -> dict[str, Any]:
        ok, checks = await readiness(request.app)
        response.status_code = 200 if ok else 503
        clock: ProgrammeClock = request.app.state.clock
        return {"status": "ready" if ok else "not_ready", "checks": checks, "clock": clock.describe()}

    @router.get("/metrics", operation_id="metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        collect = getattr(request.app.state, "collect_metrics", None)
        if collect is not None:
            await collect()
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router

