"""Compliance's public face: ``/api/v1/emission-reports`` (report, attest, correct), ``/api/v1/surrenders``
and ``/api/v1/compliance/periods/{period}/...`` (evaluation, the system's and each installation's
compliance report as JSON, CSV or PDF)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import or_, select, tuple_

from compliance import programme, reports, service
from compliance.tables import adjustments, directory, emission_reports, installation_results, surrenders
from registry_common import idempotency
from registry_common.auth import OVERSIGHT_ROLES, Principal, Role, require_roles
from registry_common.errors import RegistryError, negotiate_language
from registry_common.routes import ClockDep, ReadConn, WriteConn

reports_router = APIRouter(prefix="/api/v1/emission-reports", tags=["compliance"])
surrenders_router = APIRouter(prefix="/api/v1/surrenders", tags=["compliance"])
compliance_router = APIRouter(prefix="/api/v1/compliance", tags=["compliance"])
Overseer = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES))]
Authority = Annotated[Principal, Depends(require_roles(Role.AUTHORITY))]
Installation = Annotated[Principal, Depends(require_roles(Role.INSTALLATION))]
Verifier = Annotated[Principal, Depends(require_roles(Role.VERIFIER))]
ReportReader = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES, Role.INSTALLATION, Role.VERIFIER))]
InstallationReader = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES, Role.INSTALLATION))]
Count = Annotated[int, Field(strict=True, description="whole tCO2e")]
Year = Annotated[int, Field(ge=1900, le=2200, description="a calendar year of the period")]
YearQuery = Annotated[int | None, Query(ge=1900, le=2200, description="an intermediate year of a multi-year "
                                                                      "period; none: the period's evaluation")]


def _json(value: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v)
            for k, v in value.items()}


def _row(row: Any) -> dict[str, Any]:
    return _json(dict(row._mapping))


# Emission reports -------------------------------------------------------------------------------------
class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    installation_account_id: str = Field(min_length=1, max_length=40)
    period: str = Field(min_length=1, max_length=20)
    year: Year | None = Field(default=None, description="the year reported (a multi-year period's); default: the "
                                                        "year whose reporting window is open")
    emissions: Count
    rene_reference: str = Field(min_length=1, max_length=120, description="its report in the national register")
    verifier_account_id: str = Field(min_length=1, max_length=40, description="the accredited verifier named")


class CorrectionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    installation_account_id: str = Field(min_length=1, max_length=40)
    period: str = Field(min_length=1, max_length=20)
    year: Year | None = Field(default=None, description="the year corrected; default: the period's last")
    emissions: Count
    rene_reference: str = Field(min_length=1, max_length=120)
    reason: str = Field(min_length=3, max_length=2000)


class AttestationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["attest", "return"]
    comments: str | None = Field(default=None, max_length=4000)


@reports_router.post("", status_code=201)
async def submit_report(body: ReportIn, conn: WriteConn, who: Installation, clock: ClockDep) -> JSONResponse:
    """An installation's representative (initiate right) enters its verified emissions for a period during
    the reporting window and names its accredited verifier. A new submission is a new version."""
    row = await service.submit_report(conn, body=body.model_dump(), who=who, now=clock.now())
    return JSONResponse(_row(row), status_code=201, headers={"Location": f"/api/v1/emission-reports/{row.id}"})


@reports_router.post("/corrections", status_code=201)
async def correct_report(body: CorrectionIn, request: Request, conn: WriteConn, who: Authority,
                         clock: ClockDep) -> JSONResponse:
    """The authority's correction after the reporting window, with a reason: a new attested version. After
    the evaluation it creates an adjustment (cancelled units never come back)."""
    row = await service.correct_report(conn, body=body.model_dump(), who=who, now=clock.now(),
                                       rules=service.rules_of(request.app.state.settings))
    await programme.refresh_status(conn, row.installation_account_id, now=clock.now(),
                                   rules=service.rules_of(request.app.state.settings))
    return JSONResponse(_row(row), status_code=201, headers={"Location": f"/api/v1/emission-reports/{row.id}"})


@reports_router.get("")
async def list_reports(
    conn: ReadConn, who: ReportReader, period: str | None = None, year: int | None = None,
    installation_account_id: str | None = None,
    state: Literal["submitted", "attested", "returned"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> dict[str, Any]:
    """Every version, newest first: the authority sees all; an installation its own; a verifier only what
    it is asked to verify."""
    t = emission_reports
    query = select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit + 1)
    if not who.has_any(OVERSIGHT_ROLES):
        mine = directory.accounts_of(who.user_id)
        visible = [t.c.installation_account_id.in_(mine)]
        if Role.VERIFIER in who.roles:
            visible.append(t.c.verifier_account_id.in_(mine))
        query = query.where(or_(*visible))
    if period is not None:
        query = query.where(t.c.period == period)
    if year is not None:
        query = query.where(t.c.year == year)
    if installation_account_id is not None:
        query = query.where(t.c.installation_account_id == installation_account_id)
    if state is not None:
        query = query.where(t.c.state == state)
    if cursor is not None:
        at, _, last = cursor.partition("|")
        try:
            query = query.where(tuple_(t.c.created_at, t.c.id) < tuple_(datetime.fromisoformat(at), UUID(last)))
        except ValueError as exc:
            raise RegistryError("request.invalid", field="cursor") from exc
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    following = f"{page[-1].created_at.isoformat()}|{page[-1].id}" if len(rows) > limit else None
    return {"items": [_row(r) for r in page], "next_cursor": following}


@reports_router.get("/{report_id}")
async def get_report(report_id: UUID, conn: ReadConn, who: ReportReader) -> dict[str, Any]:
    row = (await conn.execute(select(emission_reports).where(emission_reports.c.id == report_id))).first()
    if row is None or not await service.report_visible(conn, row, who):
        raise RegistryError("compliance.report_not_found")
    return _row(row)


@reports_router.post("/{report_id}/attestation")
async def attest_report(report_id: UUID, body: AttestationIn, request: Request, conn: WriteConn, who: Verifier,
                        clock: ClockDep) -> dict[str, Any]:
    """The named verifier attests the figure, or returns it with comments."""
    row = await service.decide_report(conn, report_id, attest=body.decision == "attest", comments=body.comments,
                                      who=who, now=clock.now())
    await programme.refresh_status(conn, row.installation_account_id, now=clock.now(),
                                   rules=service.rules_of(request.app.state.settings))
    return _row(row)


# Surrender ----------------------------------------------------------------------------------------------
class SurrenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    central_account_id: str = Field(min_length=1, max_length=40)
    unit_type: Literal["allowance", "offset"]
    quantity: Annotated[int, Field(gt=0, strict=True, description="whole units")]
    vintage: int | None = Field(default=None, ge=2000, le=2100)
    period: str | None = Field(default=None, max_length=20, description="defaults to the period open for surrender")


@surrenders_router.post("", status_code=202)
async def request_surrender(body: SurrenderIn, conn: WriteConn, who: Installation, clock: ClockDep,
                            key: idempotency.IdempotencyKey) -> JSONResponse:
    """Move units from your installation's central account to its delivery account, until the surrender
    deadline (1 November, 23:59:59 programme time). The ledger moves them; the state follows."""
    stored = await idempotency.reserve(conn, key, who.user_id, body.model_dump(mode="json"))
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"],
                            headers={"Location": f"/api/v1/surrenders/{stored['response'].get('id')}"})
    row = await service.request_surrender(conn, body=body.model_dump(), who=who, now=clock.now())
    content = _row(row)
    await idempotency.remember(conn, key, who.user_id, 202, content)
    return JSONResponse(content, status_code=202, headers={"Location": f"/api/v1/surrenders/{row.id}"})


@surrenders_router.get("")
async def list_surrenders(conn: ReadConn, who: InstallationReader, central_account_id: str | None = None,
                          period: str | None = None, limit: Annotated[int, Query(ge=1, le=500)] = 100,
                          cursor: Annotated[str | None, Query()] = None) -> dict[str, Any]:
    t = surrenders
    query = select(t).order_by(t.c.requested_at.desc(), t.c.id.desc()).limit(limit + 1)
    if not who.has_any(OVERSIGHT_ROLES):
        query = query.where(t.c.central_account_id.in_(directory.accounts_of(who.user_id)))
    if central_account_id is not None:
        query = query.where(t.c.central_account_id == central_account_id)
    if period is not None:
        query = query.where(t.c.period == period)
    if cursor is not None:
        at, _, last = cursor.partition("|")
        try:
            query = query.where(tuple_(t.c.requested_at, t.c.id) < tuple_(datetime.fromisoformat(at), UUID(last)))
        except ValueError as exc:
            raise RegistryError("request.invalid", field="cursor") from exc
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    following = f"{page[-1].requested_at.isoformat()}|{page[-1].id}" if len(rows) > limit else None
    return {"items": [_row(r) for r in page], "next_cursor": following}


@surrenders_router.get("/{surrender_id}")
async def get_surrender(surrender_id: UUID, conn: ReadConn, who: InstallationReader) -> dict[str, Any]:
    row = (await conn.execute(select(surrenders).where(surrenders.c.id == surrender_id))).first()
    if row is None or not (who.has_any(OVERSIGHT_ROLES)
                           or await directory.rights_on(conn, row.central_account_id, who.user_id)):
        raise RegistryError("compliance.surrender_not_found")
    return _row(row)


# Evaluation and compliance reports ---------------------------------------------------------------------------
Format = Literal["json", "csv", "pdf"]


def _of_year(path: str, year: int | None) -> str:
    return path if year is None else f"{path}?year={year}"


@compliance_router.post("/periods/{period}/evaluations", status_code=202)
async def run_evaluation(period: str, request: Request, conn: WriteConn, who: Authority, clock: ClockDep,
                         year: YearQuery = None) -> JSONResponse:
    """Evaluate every installation for a period whose surrender deadline has passed (the programme clock
    also does it by itself at the deadline unless ``REGISTRY_AUTO_EVALUATE=false``). With ``?year=``, an
    intermediate year of a multi-year period, once its deadline (1 November after it) has passed, when
    ``REGISTRY_INTERMEDIATE_SHARE`` > 0. Re-running answers the existing evaluation (200) and moves
    nothing more."""
    row, created = await service.request_evaluation(conn, period, actor=who.user_id, now=clock.now(),
                                                    trigger="command", year=year,
                                                    rules=service.rules_of(request.app.state.settings))
    return JSONResponse(_row(row), status_code=202 if created else 200,
                        headers={"Location": _of_year(f"/api/v1/compliance/periods/{period}/evaluations", year)})


@compliance_router.get("/periods/{period}/evaluations")
async def get_evaluation(period: str, conn: ReadConn, _who: Overseer, year: YearQuery = None) -> dict[str, Any]:
    """The evaluation and its state; while ``pending``, ``waiting_for`` says what it waits for (surrenders
    not yet answered by the ledger, evaluations that must finish first)."""
    row = await service.evaluation_of(conn, period, year)
    if row is None:
        raise RegistryError("compliance.evaluation_not_found", period=period)
    answer = _row(row)
    if row.state == "pending":
        answer["waiting_for"] = await service.waiting_for(conn, row)
    return answer


@compliance_router.get("/periods/{period}/report", response_model=None)
async def system_report(period: str, request: Request, conn: ReadConn, _who: Overseer,
                        format: Format = "json", year: YearQuery = None) -> Response | dict[str, Any]:
    """The compliance report of the whole system for a period (or, with ``?year=``, an intermediate year):
    every installation's status, obligation, units counted and shortfall, what was cancelled and what went
    back."""
    evaluation = await service.evaluation_of(conn, period, year)
    if evaluation is None:
        raise RegistryError("compliance.evaluation_not_found", period=period)
    rows = (await conn.execute(select(installation_results).where(
        installation_results.c.evaluation_id == evaluation.id)
        .order_by(installation_results.c.installation_account_id))).all()
    adjusted = await _adjustments(conn, evaluation.id, None)
    report = reports.system_report(evaluation, rows, adjusted)
    return _render(report, format, request, f"compliance-{period}" + (f"-{year}" if year else ""))


@compliance_router.get("/periods/{period}/installations/{account_id}", response_model=None)
async def installation_report(period: str, account_id: str, request: Request, conn: ReadConn,
                              who: InstallationReader, format: Format = "json",
                              year: YearQuery = None) -> Response | dict[str, Any]:
    """One installation's compliance report (``?year=``: an intermediate year's): the authority and the
    installation's representatives."""
    if not (who.has_any(OVERSIGHT_ROLES) or await directory.rights_on(conn, account_id, who.user_id)):
        raise RegistryError("compliance.result_not_found", period=period, account_id=account_id)
    evaluation = await service.evaluation_of(conn, period, year)
    row = None if evaluation is None else (await conn.execute(select(installation_results).where(
        installation_results.c.evaluation_id == evaluation.id,
        installation_results.c.installation_account_id == account_id))).first()
    if row is None:
        raise RegistryError("compliance.result_not_found", period=period, account_id=account_id)
    adjusted = await _adjustments(conn, evaluation.id, account_id)
    report = reports.installation_report(evaluation, row, adjusted.get(account_id, []))
    return _render(report, format, request, f"compliance-{period}" + (f"-{year}" if year else "") + f"-{account_id}")


async def _adjustments(conn: Any, evaluation_id: UUID, account_id: str | None) -> dict[str, list[dict[str, Any]]]:
    query = select(adjustments).where(adjustments.c.evaluation_id == evaluation_id).order_by(adjustments.c.id)
    if account_id is not None:
        query = query.where(adjustments.c.installation_account_id == account_id)
    found: dict[str, list[dict[str, Any]]] = {}
    for r in (await conn.execute(query)).all():
        found.setdefault(r.installation_account_id, []).append(_json({
            "previous": r.previous, "current": r.current, "reason": r.reason, "actor": r.actor, "at": r.at}))
    return found


def _render(report: dict[str, Any], format: str, request: Request, name: str) -> Response | dict[str, Any]:
    if format == "json":
        return report
    language = negotiate_language(request.headers.get("accept-language"))
    if format == "csv":
        return Response(reports.as_csv(report, language), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})
    return Response(reports.as_pdf(report, language), media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}.pdf"'})


routers = [reports_router, surrenders_router, compliance_router]
