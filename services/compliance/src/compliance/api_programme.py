"""Compliance, part two, in public: cancellation previews (banking excess, end of the programme) and their
four-eyes execution, each installation's live status and projection, and the published summary per period
(``/api/v1/public/compliance/...``, no sign-in)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import quote
from uuid import UUID

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from compliance import programme, service
from compliance.api_compliance import Authority, InstallationReader, Overseer, _row
from compliance.tables import cancellation_previews, directory
from registry_common import idempotency
from registry_common.auth import OVERSIGHT_ROLES, Principal
from registry_common.errors import RegistryError
from registry_common.routes import ClockDep, ReadConn, WriteConn

previews_router = APIRouter(prefix="/api/v1/compliance", tags=["compliance"])
public_router = APIRouter(prefix="/api/v1/public/compliance", tags=["public"])


@asynccontextmanager
async def accounts_client(app: FastAPI) -> AsyncIterator[None]:
    """The accounts API: the ledger's blocks for previews, an installation's holdings for its projection."""
    async with httpx.AsyncClient(base_url=app.state.settings.accounts_api_url, timeout=30.0) as client:
        app.state.accounts_api = client
        yield


class PreviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["banking_excess", "programme_end"]
    period: str = Field(min_length=1, max_length=20)


@previews_router.post("/cancellation-previews", status_code=201)
async def create_preview(body: PreviewIn, request: Request, who: Authority, clock: ClockDep,
                         key: idempotency.IdempotencyKey) -> JSONResponse:
    """Publish what a cancellation would take (every account's surplus and its exact serial blocks): the
    banking excess above ``REGISTRY_BANKING_SHARE`` after a period, or every participant unit of the
    programme after its final period. It may run after ``REGISTRY_CANCELLATION_NOTICE_SECONDS``."""
    # The ledger is read before the transaction opens, so no database connection waits on accounts (a
    # repeat with the same key reads it too, and answers what it answered the first time).
    client, authorization = request.app.state.accounts_api, request.headers.get("authorization", "")
    held = await programme.pending_holds(client, authorization) if body.kind == "programme_end" else 0
    blocks = await programme.ledger_blocks(client, authorization)
    async with request.app.state.engine.begin() as conn:  # what WriteConn gives: commit unless it raises
        stored = await idempotency.reserve(conn, key, who.user_id, body.model_dump())
        if stored is not None:
            return JSONResponse(stored["response"], status_code=stored["status_code"])
        row = await programme.create_preview(conn, kind=body.kind, period_code=body.period, blocks=blocks,
                                             held_transfers=held, who=who, now=clock.now(),
                                             settings=request.app.state.settings)
        content = _row(row)
        await idempotency.remember(conn, key, who.user_id, 201, content)
    return JSONResponse(content, status_code=201,
                        headers={"Location": f"/api/v1/compliance/cancellation-previews/{row.id}"})


@previews_router.get("/cancellation-previews")
async def list_previews(conn: ReadConn, _who: Overseer, period: str | None = None) -> dict[str, Any]:
    query = select(cancellation_previews).order_by(cancellation_previews.c.published_at.desc())
    if period is not None:
        query = query.where(cancellation_previews.c.period == period)
    return {"items": [_row(r) for r in (await conn.execute(query.limit(500))).all()]}


@previews_router.get("/cancellation-previews/{preview_id}")
async def get_preview(preview_id: UUID, conn: ReadConn, _who: Overseer) -> dict[str, Any]:
    row = (await conn.execute(select(cancellation_previews).where(cancellation_previews.c.id == preview_id))).first()
    if row is None:
        raise RegistryError("compliance.preview_not_found")
    return _row(row)


@previews_router.post("/cancellation-previews/{preview_id}/execute", status_code=202)
async def execute_preview(preview_id: UUID, request: Request, conn: WriteConn, who: Authority, clock: ClockDep,
                          key: idempotency.IdempotencyKey) -> JSONResponse:
    """Once the notice has passed: ask a second authority user to approve cancelling exactly the previewed
    blocks (``/api/v1/compliance/approvals/{approval_id}/approve`` with the payload hash)."""
    stored = await idempotency.reserve(conn, key, who.user_id, {"preview_id": str(preview_id)})
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"])
    ttl = timedelta(hours=request.app.state.settings.approval_ttl_hours)
    content = await programme.request_execution(conn, preview_id, who=who, now=clock.now(), ttl=ttl)
    await idempotency.remember(conn, key, who.user_id, 202, content)
    return JSONResponse(content, status_code=202,
                        headers={"Location": f"/api/v1/compliance/cancellation-previews/{preview_id}"})


async def _may_see_installation(conn: Any, account_id: str, who: Principal) -> None:
    if not (who.has_any(OVERSIGHT_ROLES) or await directory.rights_on(conn, account_id, who.user_id)):
        raise RegistryError("compliance.result_not_found", period="-", account_id=account_id)


@previews_router.get("/installations/{account_id}/status")
async def installation_status(account_id: str, request: Request, conn: ReadConn, who: InstallationReader,
                              clock: ClockDep) -> dict[str, Any]:
    """The installation's status for the open period, current with every report, attestation and
    surrender: no_verified_emissions, must_surrender (``to_surrender`` more), or covered; ``intermediate``:
    what is due at a multi-year period's next intermediate deadline (the rule on), otherwise null."""
    await _may_see_installation(conn, account_id, who)
    return await programme.live_status(conn, account_id, now=clock.now(),
                                       rules=service.rules_of(request.app.state.settings))


@previews_router.get("/installations/{account_id}/projection")
async def installation_projection(account_id: str, request: Request, conn: ReadConn, who: InstallationReader,
                                  clock: ClockDep, period: str | None = None) -> dict[str, Any]:
    """The installation's position at the deadline: as things stand, and if everything eligible it holds (and
    what is on its way in) were surrendered, under the vintage, offset and penalty rules; ``intermediate``:
    what is due at the next intermediate deadline with what is delivered now, or null."""
    await _may_see_installation(conn, account_id, who)
    holdings = None
    try:
        path = f"/api/v1/accounts/{quote(account_id, safe='')}/holdings"  # any text the caller sent, escaped
        answer = await request.app.state.accounts_api.get(path, headers={
            "Authorization": request.headers.get("authorization", "")})
        if answer.status_code == 200:
            holdings = answer.json()
    except httpx.HTTPError:
        holdings = None
    result = await programme.projection(conn, account_id, holdings=holdings, period_code=period, now=clock.now(),
                                        rules=service.rules_of(request.app.state.settings))
    return {**result, "central_holdings_known": holdings is not None}


@previews_router.post("/periods/{period}/publication", status_code=201)
async def publish(period: str, conn: WriteConn, who: Authority) -> dict[str, Any]:
    """Publish the period's summary (allocated, verified emissions, surrendered, status per installation)."""
    return _row(await programme.publish_summary(conn, period, who=who))


@public_router.get("/periods/{period}", response_model=None)
async def public_summary(period: str, conn: ReadConn, format: Literal["json", "csv"] = "json"
                         ) -> Response | dict[str, Any]:
    """Per installation and period, once the authority has published it: allocated, verified emissions,
    surrendered, status. No sign-in."""
    summary = await programme.public_summary(conn, period)
    if format == "json":
        return summary
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    columns = ["installation_account_id", "name", "allocated", "verified_emissions", "surrendered", "status"]
    writer.writerow(columns)
    for line in summary["installations"]:
        writer.writerow(["" if line[c] is None else line[c] for c in columns])
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="cumplimiento-{period}.csv"'})


routers = [previews_router, public_router]
