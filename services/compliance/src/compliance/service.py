"""Compliance's handlers: emission reports and their attestation, surrender, the ledger's answers, and the
evaluation of a period (result per installation, cancellation through ``move_units_batch``, events for
installation and authority). Each runs on the caller's transaction and writes its state, audit row and
outgoing messages together; the rules themselves are in ``compliance.domain``."""

from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import bindparam, func, insert, literal_column, or_, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from compliance.domain.evaluation import (
    Lot,
    Outcome,
    Reason,
    Rules,
    Status,
    adjusted,
    evaluate,
    evaluate_intermediate,
    period_emissions,
)
from compliance.domain.windows import (
    ComplianceRefusal,
    check_emissions,
    check_evaluation_due,
    check_intermediate_due,
    due_intermediate_years,
    eligible_vintage,
    intermediate_year,
    last_year,
    period_years,
    report_year,
    surrender_period,
    year_of,
)
from compliance.tables import (
    adjustments,
    calendar,
    carried_obligations,
    delivery_holdings,
    directory,
    emission_reports,
    evaluation_batches,
    evaluations,
    installation_results,
    surrenders,
)
from registry_common.audit import record_audit
from registry_common.auth import OVERSIGHT_ROLES, Principal, Role
from registry_common.errors import RegistryError, register_errors
from registry_common.messaging.consumer import HandlerContext
from registry_common.messaging.outbox import Outbox
from registry_contracts import Message
from registry_contracts.accounts import MovementRefused, MoveUnits, MoveUnitsBatch, UnitsMoved, UnitsMovedBatch
from registry_contracts.compliance import ComplianceEvaluated, SurrenderedUnitsCancelled

OUTBOX = Outbox("compliance")
log = logging.getLogger("compliance.evaluation")
CANCELLATION_ACCOUNT = "SYS-CANCEL"
BATCH_LINES = 1000
NAMESPACE = UUID("5b0f4f7e-3c9e-4d55-9a51-7c1f3c6f0c11")  # for deterministic movement and batch ids

register_errors({
    "compliance.invalid_emissions": (422, "Las emisiones deben ser un entero no negativo (tCO2e), no {emissions}.",
                                     "Emissions must be a non-negative whole number (tCO2e), not {emissions}."),
    "compliance.unknown_period": (404, "El periodo {period} no existe.", "Period {period} does not exist."),
    "compliance.reporting_not_open": (409, "La ventana de reporte del periodo {period} abre el {opens_at}.",
                                      "The reporting window of period {period} opens on {opens_at}."),
    "compliance.reporting_closed": (409, "La ventana de reporte del periodo {period} cerró el {closed_at}; solo la "
                                         "autoridad puede corregir.",
                                    "The reporting window of period {period} closed on {closed_at}; only the "
                                    "authority can correct."),
    "compliance.reporting_open": (409, "La ventana de reporte sigue abierta: la instalación reporta.",
                                  "The reporting window is still open: the installation reports."),
    "compliance.not_representative": (403, "No representa a la cuenta {account_id} con ese derecho.",
                                      "You do not represent account {account_id} with that right."),
    "compliance.not_an_installation": (422, "La cuenta {account_id} no es la cuenta central de una instalación.",
                                       "Account {account_id} is not an installation's central account."),
    "compliance.account_not_active": (409, "La cuenta {account_id} está {state}.", "Account {account_id} is {state}."),
    "compliance.no_delivery_account": (409, "La instalación {account_id} no tiene cuenta de entrega.",
                                       "Installation {account_id} has no delivery account."),
    "compliance.not_a_verifier": (422, "La cuenta {account_id} no es de un verificador acreditado activo.",
                                  "Account {account_id} is not an active accredited verifier's."),
    "compliance.report_not_found": (404, "El reporte no existe.", "The report does not exist."),
    "compliance.not_assigned_verifier": (403, "Este reporte no está asignado a su organismo verificador.",
                                         "This report is not assigned to your verification body."),
    "compliance.report_not_submitted": (409, "El reporte ya está {state}.", "The report is already {state}."),
    "compliance.period_evaluated": (409, "El periodo {period} ya se evaluó: solo la autoridad corrige.",
                                    "Period {period} has been evaluated: only the authority corrects."),
    "compliance.surrender_deadline_passed": (409, "El plazo de entrega del periodo {period} venció el {deadline}.",
                                             "The surrender deadline of period {period} passed on {deadline}."),
    "compliance.surrender_period_not_open": (409, "Las entregas cuentan ahora para el periodo {current}, no {period}.",
                                             "Surrenders now count for period {current}, not {period}."),
    "compliance.no_open_period": (409, "No hay periodo abierto para entregar unidades.",
                                  "No period is open for surrender."),
    "compliance.evaluation_in_progress": (409, "La evaluación del periodo {period} está en curso.",
                                          "The evaluation of period {period} is in progress."),
    "compliance.period_not_due": (409, "El periodo {period} aún no vence (plazo: {deadline}).",
                                  "Period {period} is not yet due (deadline: {deadline})."),
    "compliance.evaluation_not_found": (404, "El periodo {period} no se ha evaluado.",
                                        "Period {period} has not been evaluated."),
    "compliance.result_not_found": (404, "No hay resultado de la instalación {account_id} en el periodo {period}.",
                                    "No result for installation {account_id} in period {period}."),
    "compliance.surrender_not_found": (404, "La entrega no existe.", "The surrender does not exist."),
    "compliance.year_outside_period": (422, "El año {year} no pertenece al periodo {period}.",
                                       "Year {year} is not part of period {period}."),
    "compliance.year_not_open": (422, "La ventana de reporte del año {year} (periodo {period}) va del {opens_at} al "
                                      "{closes_at}.",
                                 "The reporting window of year {year} (period {period}) runs from {opens_at} to "
                                 "{closes_at}."),
    "compliance.year_reporting_open": (409, "La ventana de reporte del año {year} sigue abierta: la instalación "
                                            "reporta.",
                                       "The reporting window of year {year} is still open: the installation "
                                       "reports."),
    "compliance.not_intermediate_year": (422, "El año {year} no es un año intermedio del periodo {period}.",
                                         "Year {year} is not an intermediate year of period {period}."),
    "compliance.intermediate_rule_off": (409, "La regla de entrega en años intermedios no está activa.",
                                         "The intermediate-year surrender rule is off."),
    "compliance.intermediate_not_due": (409, "El año intermedio {year} del periodo {period} aún no vence (plazo: "
                                             "{deadline}).",
                                        "Intermediate year {year} of period {period} is not yet due (deadline: "
                                        "{deadline})."),
    "compliance.final_evaluation_exists": (409, "El periodo {period} ya tiene su evaluación final, que cuenta el año "
                                                "{year}.",
                                           "Period {period} already has its final evaluation, which counts year "
                                           "{year}."),
})


def refusal_error(refusal: ComplianceRefusal) -> RegistryError:
    return RegistryError(refusal.code, field=refusal.field, **refusal.params)


def rules_of(settings: Any) -> Rules:
    return Rules(offset_share=Decimal(str(settings.offset_limit_share)), penalty_enabled=settings.penalty_enabled,
                 penalty_extra_per_missing=settings.penalty_extra_per_missing,
                 intermediate_share=Decimal(str(settings.intermediate_share)))


async def period_or_404(conn: AsyncConnection, code: str, field: str = "period") -> Any:
    row = await calendar.period(conn, code)
    if row is None:
        raise RegistryError("compliance.unknown_period", field=field, period=code)
    return row


async def require_right(conn: AsyncConnection, account_id: str, who: Principal, rights: set[str], field: str) -> None:
    if not await directory.rights_on(conn, account_id, who.user_id) & rights:
        raise RegistryError("compliance.not_representative", field=field, account_id=account_id)


async def installation_account(conn: AsyncConnection, account_id: str, field: str) -> Any:
    row = await directory.account(conn, account_id)
    if row is None or row.kind != "central":
        raise RegistryError("compliance.not_an_installation", field=field, account_id=account_id)
    return row


# Emission reports (function e) ------------------------------------------------------------------------
async def _next_version(conn: AsyncConnection, installation: str, period: str, year: int) -> int:
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                       {"k": f"report:{installation}:{period}:{year}"})
    current = (await conn.execute(select(func.max(emission_reports.c.version)).where(
        emission_reports.c.installation_account_id == installation, emission_reports.c.period == period,
        emission_reports.c.year == year))).scalar()
    return (current or 0) + 1


async def evaluation_of(conn: AsyncConnection, period: str, year: int | None = None) -> Any:
    """The period's final evaluation, or with ``year`` that intermediate year's."""
    intermediate = evaluations.c.intermediate_year
    return (await conn.execute(select(evaluations).where(
        evaluations.c.period == period, intermediate.is_(None) if year is None else intermediate == year))).first()


async def attested_by_year(conn: AsyncConnection, period: str, installation: str | None = None
                           ) -> dict[str, dict[int, Any]]:
    """The latest attested version of each installation's report for each year of the period."""
    r = emission_reports.c
    query = (select(r.id, r.installation_account_id, r.year, r.emissions, r.version)
             .where(r.period == period, r.state == "attested")
             .distinct(r.installation_account_id, r.year)
             .order_by(r.installation_account_id, r.year, r.version.desc()))
    if installation is not None:
        query = query.where(r.installation_account_id == installation)
    found: dict[str, dict[int, Any]] = defaultdict(dict)
    for row in (await conn.execute(query)).all():
        found[row.installation_account_id][row.year] = row
    return found


async def credited_at_intermediate(conn: AsyncConnection, period: str, installation: str | None = None
                                   ) -> dict[str, int]:
    """Units each installation had counted for the period at its intermediate evaluations."""
    r = installation_results.c
    query = (select(r.installation_account_id, func.sum(r.counted_allowances + r.counted_offsets))
             .join(evaluations, evaluations.c.id == r.evaluation_id)
             .where(evaluations.c.period == period, evaluations.c.intermediate_year.is_not(None))
             .group_by(r.installation_account_id))
    if installation is not None:
        query = query.where(r.installation_account_id == installation)
    return {i: int(n) for i, n in (await conn.execute(query)).all()}


def final_position(period: Any, attested: dict[int, Any], credited: int, rules: Rules) -> dict[str, Any]:
    """The arguments of ``evaluate`` for a period's final evaluation of one installation (see
    ``period_emissions``); the report counted is the last year's, or the latest year attested."""
    years = [w.year for w in period_years(period)]
    emissions, reported = period_emissions({y: row.emissions for y, row in attested.items()}, years,
                                           every_year=rules.intermediate_share > 0 and len(years) > 1)
    return {"period_vintage": eligible_vintage(period), "emissions": emissions, "reported": reported,
            "credited": credited}


async def submit_report(conn: AsyncConnection, *, body: dict[str, Any], who: Principal, now: datetime) -> Any:
    """A representative (initiate right) enters its installation's emissions during the reporting window
    and names its accredited verifier; it awaits attestation. A new submission is a new version."""
    installation = body["installation_account_id"]
    try:
        check_emissions(body["emissions"])
    except ComplianceRefusal as refusal:
        raise refusal_error(refusal) from refusal
    await installation_account(conn, installation, "installation_account_id")
    await require_right(conn, installation, who, {"initiate"}, "installation_account_id")
    period = await period_or_404(conn, body["period"])
    try:
        year = report_year(period, now, body.get("year")).year
    except ComplianceRefusal as refusal:
        raise refusal_error(refusal) from refusal
    verifier = await directory.account(conn, body["verifier_account_id"])
    if verifier is None or verifier.kind != "verifier" or verifier.state != "active":
        raise RegistryError("compliance.not_a_verifier", field="verifier_account_id",
                            account_id=body["verifier_account_id"])
    version = await _next_version(conn, installation, period.period, year)
    row = (await conn.execute(insert(emission_reports).values(
        id=uuid4(), installation_account_id=installation, period=period.period, year=year, version=version,
        emissions=body["emissions"], rene_reference=body["rene_reference"], verifier_account_id=verifier.account_id,
        state="submitted", submitted_by=who.user_id, submitted_at=now).returning(emission_reports))).one()
    await record_audit(conn, action="emission_report.submitted", entity_type="emission_report", entity_id=str(row.id),
                       actor=who.user_id, details={**body, "year": year, "version": version})
    return row


async def report_visible(conn: AsyncConnection, row: Any, who: Principal) -> bool:
    if who.has_any(OVERSIGHT_ROLES):
        return True
    if row.verifier_account_id and Role.VERIFIER in who.roles and await directory.rights_on(
            conn, row.verifier_account_id, who.user_id):
        return True
    return bool(await directory.rights_on(conn, row.installation_account_id, who.user_id))


async def decide_report(conn: AsyncConnection, report_id: UUID, *, attest: bool, comments: str | None,
                        who: Principal, now: datetime) -> Any:
    """The named verifier attests the figure, or returns it with comments. Only attested figures count."""
    row = (await conn.execute(select(emission_reports).where(emission_reports.c.id == report_id)
                              .with_for_update())).first()
    if row is None:
        raise RegistryError("compliance.report_not_found")
    assigned = Role.VERIFIER in who.roles and row.verifier_account_id is not None and bool(
        await directory.rights_on(conn, row.verifier_account_id, who.user_id))
    if not assigned:
        raise RegistryError("compliance.not_assigned_verifier")
    if row.state != "submitted":
        raise RegistryError("compliance.report_not_submitted", state=row.state)
    counted = (await conn.execute(select(evaluations.c.id).where(
        evaluations.c.period == row.period, or_(evaluations.c.intermediate_year.is_(None),
                                                evaluations.c.intermediate_year == row.year)).limit(1))).first()
    if counted is not None:  # the period's final evaluation, or this year's intermediate one, has run
        raise RegistryError("compliance.period_evaluated", period=row.period)
    state = "attested" if attest else "returned"
    new = (await conn.execute(update(emission_reports).where(emission_reports.c.id == report_id).values(
        state=state, decided_by=who.user_id, decided_at=now, comments=comments).returning(emission_reports))).one()
    await record_audit(conn, action=f"emission_report.{state}", entity_type="emission_report",
                       entity_id=str(report_id), actor=who.user_id, details={"comments": comments})
    return new


async def correct_report(conn: AsyncConnection, *, body: dict[str, Any], who: Principal, now: datetime,
                         rules: Rules) -> Any:
    """After the window only the authority corrects, with a reason: a new, attested version. After the
    evaluation it creates an adjustment: the result is recomputed, nothing more moves."""
    installation = body["installation_account_id"]
    try:
        check_emissions(body["emissions"])
    except ComplianceRefusal as refusal:
        raise refusal_error(refusal) from refusal
    await installation_account(conn, installation, "installation_account_id")
    period = await period_or_404(conn, body["period"])
    named = body.get("year")
    try:
        window = year_of(period, named if named is not None else last_year(period))
    except ComplianceRefusal as refusal:
        raise refusal_error(refusal) from refusal
    if now <= window.reporting_closes_at:
        if named is None:
            raise RegistryError("compliance.reporting_open", field="period")
        raise RegistryError("compliance.year_reporting_open", field="year", year=named)
    year = window.year
    version = await _next_version(conn, installation, period.period, year)
    row = (await conn.execute(insert(emission_reports).values(
        id=uuid4(), installation_account_id=installation, period=period.period, year=year, version=version,
        emissions=body["emissions"], rene_reference=body["rene_reference"], verifier_account_id=None,
        state="attested", submitted_by=who.user_id, submitted_at=now, decided_by=who.user_id, decided_at=now,
        correction_reason=body["reason"]).returning(emission_reports))).one()
    await record_audit(conn, action="emission_report.corrected", entity_type="emission_report",
                       entity_id=str(row.id), actor=who.user_id, reason=body["reason"],
                       details={**body, "year": year, "version": version})
    # The evaluation that counts this year: the period's final one once it ran (all its years), else this
    # intermediate year's.
    final = await evaluation_of(conn, period.period)
    if final is not None and final.state != "pending":
        attested = (await attested_by_year(conn, period.period, installation)).get(installation, {})
        total = final_position(period, attested, 0, rules)["emissions"] or 0
        await _adjust(conn, final, installation, row, emissions=total, intermediate=False, who=who, now=now,
                      rules=rules, reason=body["reason"])
    elif window.intermediate:
        evaluation = await evaluation_of(conn, period.period, year)
        if evaluation is not None and evaluation.state != "pending":
            await _adjust(conn, evaluation, installation, row, emissions=row.emissions, intermediate=True, who=who,
                          now=now, rules=rules, reason=body["reason"])
    return row


async def _adjust(conn: AsyncConnection, evaluation: Any, installation: str, report: Any, *, emissions: int,
                  intermediate: bool, who: Principal, now: datetime, rules: Rules, reason: str) -> None:
    result = (await conn.execute(select(installation_results).where(
        installation_results.c.evaluation_id == evaluation.id,
        installation_results.c.installation_account_id == installation).with_for_update())).first()
    if result is None:
        return
    original = outcome_of(result)
    new = adjusted(original, emissions=emissions, rules=rules, intermediate=intermediate)
    before = _summary(result)
    await conn.execute(update(installation_results).where(
        installation_results.c.evaluation_id == evaluation.id,
        installation_results.c.installation_account_id == installation).values(
        report_id=report.id, emissions=new.emissions, obligation=new.obligation, shortfall=new.shortfall,
        status=new.status, reason=new.reason, carried_out=new.carried_out, over_delivered=new.over_delivered))
    after = {"emissions": new.emissions, "obligation": new.obligation, "status": str(new.status),
             "shortfall": new.shortfall, "carried_out": new.carried_out}
    await conn.execute(insert(adjustments).values(
        evaluation_id=evaluation.id, installation_account_id=installation, report_id=report.id, previous=before,
        current=after, reason=reason, actor=who.user_id, at=now))
    if not intermediate:
        await _carry(conn, [(installation, evaluation.period, new.carried_out)])
    await record_audit(conn, action="compliance.adjusted", entity_type="installation_result",
                       entity_id=f"{evaluation.period}:{installation}", actor=who.user_id, reason=reason,
                       details={"previous": before, "current": after})
    await OUTBOX.add(conn, _evaluated_event(evaluation, installation, new, adjustment=True),
                     correlation_id=str(evaluation.id))


def _summary(result: Any) -> dict[str, Any]:
    return {"emissions": result.emissions, "obligation": result.obligation, "status": result.status,
            "shortfall": result.shortfall, "carried_out": result.carried_out}


def outcome_of(result: Any) -> Outcome:
    return Outcome(
        obligation=result.obligation, emissions=result.emissions, carried_in=result.carried_in,
        counted=tuple(Lot(c["unit_type"], c["vintage"], c["quantity"]) for c in result.counted),
        returned=tuple(Lot(c["unit_type"], c["vintage"], c["quantity"]) for c in result.returned),
        status=Status(result.status), reason=Reason(result.reason) if result.reason else None,
        shortfall=result.shortfall, carried_out=result.carried_out, offsets_over_limit=result.offsets_over_limit,
        future_vintage=result.future_vintage, over_delivered=result.over_delivered, credited=result.credited)


# Surrender (function f) --------------------------------------------------------------------------------
async def request_surrender(conn: AsyncConnection, *, body: dict[str, Any], who: Principal, now: datetime) -> Any:
    """Units from the installation's central account to its own delivery account: one ledger movement,
    no acceptance step, until the period's surrender deadline."""
    central_id = body["central_account_id"]
    central = await installation_account(conn, central_id, "central_account_id")
    await require_right(conn, central_id, who, {"initiate"}, "central_account_id")
    if central.state != "active":
        raise RegistryError("compliance.account_not_active", field="central_account_id", account_id=central_id,
                            state=central.state)
    delivery = await directory.delivery_account_of(conn, central_id)
    if delivery is None:
        raise RegistryError("compliance.no_delivery_account", field="central_account_id", account_id=central_id)
    try:
        period = surrender_period(await calendar.all(conn), now, body.get("period"))
    except ComplianceRefusal as refusal:
        raise refusal_error(refusal) from refusal
    busy = (await conn.execute(select(evaluations.c.period).where(evaluations.c.state != "completed"))).first()
    if busy is not None:
        raise RegistryError("compliance.evaluation_in_progress", period=busy.period)
    surrender_id = uuid4()
    row = (await conn.execute(insert(surrenders).values(
        id=surrender_id, period=period.period, central_account_id=central_id, delivery_account_id=delivery,
        unit_type=body["unit_type"], vintage=body.get("vintage"), quantity=body["quantity"], state="requested",
        requested_by=who.user_id, requested_at=now).returning(surrenders))).one()
    await OUTBOX.add(conn, MoveUnits(
        movement_id=surrender_id, kind="surrender", from_account_id=central_id, to_account_id=delivery,
        unit_type=body["unit_type"], quantity=body["quantity"], vintage=body.get("vintage"),
        reason=f"surrender for period {period.period}", actor=who.user_id), correlation_id=str(surrender_id))
    await record_audit(conn, action="surrender.requested", entity_type="surrender", entity_id=str(surrender_id),
                       actor=who.user_id, details={**body, "period": period.period, "delivery_account_id": delivery})
    return row


# The ledger's answers ------------------------------------------------------------------------------------
async def _delivery_accounts(conn: AsyncConnection, account_ids: set[str]) -> set[str]:
    if not account_ids:
        return set()
    return set((await conn.execute(select(directory.accounts.c.account_id).where(
        directory.accounts.c.account_id.in_(sorted(account_ids)), directory.accounts.c.kind == "delivery"))).scalars())


async def _apply_delivery_changes(conn: AsyncConnection, moves: list[tuple[str, str, list[Any]]]) -> None:
    """``moves``: (from, to, blocks) of movements; what delivery accounts received or gave, per vintage."""
    delivery = await _delivery_accounts(conn, {a for f, t, _ in moves for a in (f, t)})
    if not delivery:
        return
    deltas: dict[tuple[str, str, int], int] = defaultdict(int)
    for from_id, to_id, blocks in moves:
        for block in blocks:
            if to_id in delivery:
                deltas[(to_id, block.unit_type, block.vintage)] += block.quantity
            if from_id in delivery:
                deltas[(from_id, block.unit_type, block.vintage)] -= block.quantity
    rows = [{"account_id": a, "unit_type": t, "vintage": v, "quantity": q} for (a, t, v), q in sorted(deltas.items())
            if q]
    if rows:
        statement = pg_insert(delivery_holdings)
        await conn.execute(statement.on_conflict_do_update(
            index_elements=["account_id", "unit_type", "vintage"],
            set_={"quantity": delivery_holdings.c.quantity + statement.excluded.quantity}), rows)


async def on_units_moved(conn: AsyncConnection, message: UnitsMoved, ctx: HandlerContext) -> None:
    await _apply_delivery_changes(conn, [(message.from_account_id, message.to_account_id, message.blocks)])
    if message.movement_kind == "surrender":
        await conn.execute(update(surrenders).where(
            surrenders.c.id == message.movement_id, surrenders.c.state == "requested").values(
            state="completed", decided_at=ctx.clock.now(),
            blocks=[b.model_dump(mode="json") for b in message.blocks]))


async def on_movement_refused(conn: AsyncConnection, message: MovementRefused, ctx: HandlerContext) -> None:
    if message.command == "move_units":
        await conn.execute(update(surrenders).where(
            surrenders.c.id == message.reference_id, surrenders.c.state == "requested").values(
            state="refused", code=message.code, decided_at=ctx.clock.now()))


async def on_units_moved_batch(conn: AsyncConnection, message: UnitsMovedBatch, ctx: HandlerContext) -> None:
    await _apply_delivery_changes(conn, [(r.from_account_id, r.to_account_id, r.blocks)
                                         for r in message.results if r.moved])
    batch = (await conn.execute(select(evaluation_batches).where(
        evaluation_batches.c.batch_id == message.batch_id).with_for_update())).first()
    if batch is None or batch.state == "answered":
        return  # not an evaluation's batch (allocation, auctions...), or already applied
    await _apply_evaluation_batch(conn, batch, message, ctx)


async def _apply_evaluation_batch(conn: AsyncConnection, batch: Any, message: UnitsMovedBatch,
                                  ctx: HandlerContext) -> None:
    """Record which serials each installation had cancelled and returned; when the evaluation's last batch
    is answered, it is completed and the cancellations are told."""
    delivery_to_installation = dict((await conn.execute(select(
        directory.accounts.c.account_id, directory.accounts.c.installation_id).where(
        directory.accounts.c.account_id.in_(sorted({r.from_account_id for r in message.results}))))).all())
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"cancelled": [], "returned": [], "refusals": [], "n": 0})
    cancelled_units = returned_units = 0
    for result in message.results:
        installation = delivery_to_installation.get(result.from_account_id) or result.from_account_id
        entry = per[installation]
        entry["n"] += 1
        if not result.moved:
            entry["refusals"].append({"movement_id": str(result.movement_id), "kind": result.movement_kind,
                                      "code": result.code, "detail": result.detail})
            continue
        blocks = [b.model_dump(mode="json") for b in result.blocks]
        if result.movement_kind == "compliance_cancellation":
            entry["cancelled"] += blocks
            cancelled_units += result.quantity
        else:
            entry["returned"] += blocks
            returned_units += result.quantity
    results = installation_results.c

    def appended(column: Any, name: str) -> Any:
        return column.op("||")(bindparam(name, type_=JSONB))

    await conn.execute(
        update(installation_results).where(
            results.evaluation_id == batch.evaluation_id,
            results.installation_account_id == bindparam("b_installation"))
        .values(cancelled_blocks=appended(results.cancelled_blocks, "b_cancelled"),
                returned_blocks=appended(results.returned_blocks, "b_returned"),
                refusals=appended(results.refusals, "b_refusals"),
                lines_pending=results.lines_pending - bindparam("b_n")),
        [{"b_installation": i, "b_cancelled": e["cancelled"], "b_returned": e["returned"],
          "b_refusals": e["refusals"], "b_n": e["n"]} for i, e in per.items()])
    await conn.execute(update(evaluation_batches).where(evaluation_batches.c.batch_id == batch.batch_id)
                       .values(state="answered"))
    evaluation = (await conn.execute(update(evaluations).where(evaluations.c.id == batch.evaluation_id).values(
        cancelled_units=evaluations.c.cancelled_units + cancelled_units,
        returned_units=evaluations.c.returned_units + returned_units).returning(evaluations))).one()
    open_batches = (await conn.execute(select(func.count()).where(
        evaluation_batches.c.evaluation_id == batch.evaluation_id, evaluation_batches.c.state != "answered"))).scalar()
    log.info("evaluation %s: batch of %d lines answered, %d batches open", evaluation.period, len(message.results),
             open_batches)
    if open_batches == 0:
        await _complete(conn, evaluation, ctx.clock.now(), ctx)


async def _complete(conn: AsyncConnection, evaluation: Any, now: datetime, ctx: HandlerContext | None) -> None:
    """The evaluation is final once the ledger has answered every line; the evaluator then tells it."""
    await conn.execute(update(evaluations).where(evaluations.c.id == evaluation.id).values(
        state="completed", completed_at=now))
    await record_audit(conn, action="compliance.cancellation_completed", entity_type="evaluation",
                       entity_id=str(evaluation.id), actor="compliance", details={"period": evaluation.period})


async def announce(conn: AsyncConnection) -> int:
    """Tell a completed evaluation (locked): each installation and the authority its result, and those with
    units cancelled which serials went; marked announced in the same transaction. Returns the events written."""
    evaluation = (await conn.execute(select(evaluations).where(
        evaluations.c.state == "completed", evaluations.c.announced_at.is_(None))
        .order_by(evaluations.c.completed_at).limit(1).with_for_update(skip_locked=True))).first()
    if evaluation is None:
        return 0
    started = time.perf_counter()
    r = installation_results.c
    returned = literal_column("(SELECT coalesce(sum((b->>'quantity')::bigint), 0) "
                              "FROM jsonb_array_elements(installation_results.returned_blocks) AS b)")
    rows = (await conn.execute(select(
        r.installation_account_id, r.status, r.reason, r.emissions, r.obligation, r.counted_allowances,
        r.counted_offsets, r.shortfall, r.carried_out, r.cancelled_blocks, returned.label("returned_quantity"))
        .where(r.evaluation_id == evaluation.id).order_by(r.installation_account_id))).all()
    events: list[Message] = [ComplianceEvaluated(
        evaluation_id=evaluation.id, period=evaluation.period, intermediate_year=evaluation.intermediate_year,
        installation_account_id=row.installation_account_id,
        status=row.status, reason=row.reason, emissions=row.emissions, obligation=row.obligation,
        counted=row.counted_allowances + row.counted_offsets, shortfall=row.shortfall,
        carried_to_next_period=row.carried_out) for row in rows]
    events += [SurrenderedUnitsCancelled(
        evaluation_id=evaluation.id, period=evaluation.period, intermediate_year=evaluation.intermediate_year,
        installation_account_id=row.installation_account_id,
        cancelled_quantity=row.counted_allowances + row.counted_offsets, cancelled_blocks=row.cancelled_blocks,
        returned_quantity=int(row.returned_quantity)) for row in rows if row.counted_allowances + row.counted_offsets]
    await OUTBOX.add_many(conn, events, correlation_id=str(evaluation.id))
    await conn.execute(update(evaluations).where(evaluations.c.id == evaluation.id).values(announced_at=func.now()))
    log.info("evaluation of %s announced: %d events written in %.2f s", evaluation.period, len(events),
             time.perf_counter() - started)
    return len(events)


# Evaluation (functions f and g) ---------------------------------------------------------------------------
async def request_evaluation(conn: AsyncConnection, period_code: str, *, actor: str, now: datetime,
                             trigger: str, year: int | None = None, rules: Rules | None = None) -> tuple[Any, bool]:
    """The period's evaluation (or, with ``year``, that intermediate year's, when the intermediate rule is
    on): created when due (the deadline has passed), or the existing one: re-running answers the same
    result and moves nothing more. Returns (row, created)."""
    period = await period_or_404(conn, period_code)
    existing = await evaluation_of(conn, period.period, year)
    if existing is not None:
        return existing, False
    try:
        if year is None:
            check_evaluation_due(period, now)
            deadline = period.surrender_deadline_at
        else:
            if rules is None or rules.intermediate_share <= 0:
                raise ComplianceRefusal("compliance.intermediate_rule_off", field="year")
            window = intermediate_year(period, year)
            if await evaluation_of(conn, period.period) is not None:
                raise ComplianceRefusal("compliance.final_evaluation_exists", field="year", period=period.period,
                                        year=year)
            check_intermediate_due(window, now)
            deadline = window.surrender_deadline_at
    except ComplianceRefusal as refusal:
        raise refusal_error(refusal) from refusal
    row = (await conn.execute(pg_insert(evaluations).values(
        id=uuid4(), period=period.period, intermediate_year=year, deadline_at=deadline, state="pending",
        trigger=trigger, requested_by=actor, requested_at=now,
    ).on_conflict_do_nothing().returning(evaluations))).first()
    if row is None:  # a concurrent request created it
        return await evaluation_of(conn, period.period, year), False
    await record_audit(conn, action="compliance.evaluation_requested", entity_type="evaluation",
                       entity_id=str(row.id), actor=actor,
                       details={"period": period.period, "intermediate_year": year, "trigger": trigger})
    return row, True


def _waits_for(evaluation: Any) -> tuple[Any, Any]:
    """What must happen before ``evaluation`` runs, as two queries: surrenders of its period made before its
    deadline still awaiting the ledger's answer, and other evaluations that must finish first (an earlier
    deadline still pending, or units still being cancelled: the delivery accounts it reads must be settled)."""
    e = evaluations.c
    unanswered = select(surrenders.c.id).where(surrenders.c.state == "requested",
                                               surrenders.c.period == evaluation.period)
    earlier = e.state == "cancelling"
    if evaluation.deadline_at is not None:
        earlier = or_(earlier, (e.state == "pending") & (e.deadline_at < evaluation.deadline_at))
    first = select(e.period, e.intermediate_year, e.state).where(e.id != evaluation.id, earlier)
    return unanswered, first


async def waiting_for(conn: AsyncConnection, evaluation: Any) -> dict[str, Any]:
    """Why a pending evaluation has not run yet, for its operator (a surrender whose answer was
    dead-lettered holds it back until replayed: ``GET /api/v1/dead-letters``)."""
    unanswered, first = _waits_for(evaluation)
    surrender_ids = (await conn.execute(unanswered.order_by(surrenders.c.requested_at).limit(100))).scalars().all()
    before = (await conn.execute(first.order_by(evaluations.c.deadline_at.asc().nulls_last()))).all()
    return {"unanswered_surrenders": [str(surrender_id) for surrender_id in surrender_ids],
            "evaluations_first": [{"period": r.period, "year": r.intermediate_year, "state": r.state}
                                  for r in before]}


async def evaluate_pending(conn: AsyncConnection, *, now: datetime, rules: Rules) -> Any | None:
    """Evaluate one pending evaluation (locked), earliest deadline first, once no surrender made before its
    deadline is still waiting for the ledger and no other evaluation's units are still moving (the
    delivery accounts it reads must be settled). Returns the evaluation, or None when there was nothing to
    do yet. An intermediate year's evaluation counts that year's share; a period's final one counts its
    emissions net of what its intermediate evaluations counted."""
    e = evaluations.c
    evaluation = (await conn.execute(select(evaluations).where(e.state == "pending")
                                     .order_by(e.deadline_at.asc().nulls_last(), e.requested_at).limit(1)
                                     .with_for_update(skip_locked=True))).first()
    if evaluation is None:
        return None
    unanswered, first = _waits_for(evaluation)
    if (await conn.execute(unanswered.limit(1))).first() or (await conn.execute(first.limit(1))).first():
        return None
    started = time.perf_counter()
    period = await calendar.period(conn, evaluation.period)
    year = evaluation.intermediate_year
    accounts = directory.accounts
    centrals = {r.account_id: r.name for r in (await conn.execute(select(accounts.c.account_id, accounts.c.name).where(
        accounts.c.kind == "central", accounts.c.state != "closed"))).all()}
    deliveries = dict((await conn.execute(select(accounts.c.installation_id, accounts.c.account_id).where(
        accounts.c.kind == "delivery", accounts.c.installation_id.is_not(None)))).all())
    attested = await attested_by_year(conn, evaluation.period)
    if year is None:
        credited = await credited_at_intermediate(conn, evaluation.period)
        carried = dict((await conn.execute(select(carried_obligations.c.installation_account_id,
                                                  carried_obligations.c.quantity).where(
            carried_obligations.c.to_period == evaluation.period))).all())
    else:  # a carried penalty and what the intermediate years counted are settled at the period's end
        credited, carried = {}, {}
    final_year = last_year(period)
    held: dict[str, list[Lot]] = defaultdict(list)
    for r in (await conn.execute(select(delivery_holdings).where(delivery_holdings.c.quantity > 0))).all():
        held[r.account_id].append(Lot(r.unit_type, r.vintage, r.quantity))
    installations = sorted(set(centrals) | set(attested) | set(carried))
    names = {**{i: "" for i in installations}, **centrals}
    results: list[dict[str, Any]] = []
    lines: list[MoveUnits] = []
    carry: list[tuple[str, str, int]] = []
    for installation in installations:
        delivery = deliveries.get(installation)
        delivered = held.get(delivery, []) if delivery else []
        mine = attested.get(installation, {})
        if year is None:
            report = mine.get(final_year) or (mine[max(mine)] if mine else None)
            outcome = evaluate(carried_in=carried.get(installation, 0), delivered=delivered, rules=rules,
                               **final_position(period, mine, credited.get(installation, 0), rules))
        else:
            report = mine.get(year)
            outcome = evaluate_intermediate(year=year, emissions=report.emissions if report else None,
                                            delivered=delivered, rules=rules)
        own_lines = _lines(evaluation, installation, delivery, outcome)
        lines += own_lines
        results.append({
            "evaluation_id": evaluation.id, "installation_account_id": installation, "period": evaluation.period,
            "name": names[installation] or "", "delivery_account_id": delivery,
            "report_id": report.id if report else None, "emissions": outcome.emissions,
            "carried_in": outcome.carried_in, "credited": outcome.credited, "obligation": outcome.obligation,
            "counted_allowances": outcome.counted_allowances, "counted_offsets": outcome.counted_offsets,
            "shortfall": outcome.shortfall, "status": str(outcome.status),
            "reason": str(outcome.reason) if outcome.reason else None, "carried_out": outcome.carried_out,
            "delivered": outcome.delivered_total, "offsets_over_limit": outcome.offsets_over_limit,
            "future_vintage": outcome.future_vintage, "over_delivered": outcome.over_delivered,
            "counted": [_lot(lot) for lot in outcome.counted], "returned": [_lot(lot) for lot in outcome.returned],
            "lines_pending": len(own_lines)})
        if outcome.carried_out:
            carry.append((installation, evaluation.period, outcome.carried_out))
    computed = time.perf_counter()
    if results:
        await conn.execute(insert(installation_results), results)
    stored = time.perf_counter()
    await _carry(conn, carry)
    batches = [lines[i:i + BATCH_LINES] for i in range(0, len(lines), BATCH_LINES)]
    commands = []
    for number, chunk in enumerate(batches):
        batch_id = uuid.uuid5(NAMESPACE, f"{evaluation.id}:batch:{number}")
        commands.append(MoveUnitsBatch(batch_id=batch_id, lines=chunk))
    if commands:
        await conn.execute(insert(evaluation_batches), [
            {"batch_id": c.batch_id, "evaluation_id": evaluation.id, "lines": len(c.lines), "state": "sent"}
            for c in commands])
    await OUTBOX.add_many(conn, commands, correlation_id=str(evaluation.id))
    compliant = sum(1 for r in results if r["status"] == "compliant")
    new = (await conn.execute(update(evaluations).where(evaluations.c.id == evaluation.id).values(
        state="cancelling" if commands else "completed", evaluated_at=now, completed_at=None if commands else now,
        installations=len(results), compliant=compliant, non_compliant=len(results) - compliant,
        rules={"offset_share": str(rules.offset_share), "penalty_enabled": rules.penalty_enabled,
               "penalty_extra_per_missing": rules.penalty_extra_per_missing,
               "intermediate_share": str(rules.intermediate_share)},
    ).returning(evaluations))).one()
    await record_audit(conn, action="compliance.evaluated", entity_type="evaluation", entity_id=str(evaluation.id),
                       actor="compliance", details={"period": evaluation.period, "intermediate_year": year,
                                                    "installations": len(results), "compliant": compliant,
                                                    "ledger_lines": len(lines)})
    log.info("evaluation of %s: %d installations read and evaluated in %.2f s, results stored in %.2f s, "
             "%d ledger lines in %d batches written in %.2f s", evaluation.period, len(results), computed - started,
             stored - computed, len(lines), len(commands), time.perf_counter() - stored)
    if not commands:
        await _complete(conn, new, now, None)
    return new


def _lot(lot: Lot) -> dict[str, Any]:
    return {"unit_type": lot.unit_type, "vintage": lot.vintage, "quantity": lot.quantity}


def _lines(evaluation: Any, installation: str, delivery: str | None, outcome: Outcome) -> list[MoveUnits]:
    if delivery is None:
        return []
    lines = []
    for kind, lots, to in (("compliance_cancellation", outcome.counted, CANCELLATION_ACCOUNT),
                           ("surrender_return", outcome.returned, installation)):
        for lot in lots:
            lines.append(MoveUnits(
                movement_id=uuid.uuid5(NAMESPACE, f"{evaluation.id}:{installation}:{kind}:{lot.unit_type}:"
                                                  f"{lot.vintage}"),
                kind=kind, from_account_id=delivery, to_account_id=to, unit_type=lot.unit_type,
                quantity=lot.quantity, vintage=lot.vintage, reason=f"compliance {evaluation.period}" + (
                    f" intermediate {evaluation.intermediate_year}" if evaluation.intermediate_year else ""),
                actor="compliance"))
    return lines


def _evaluated_event(evaluation: Any, installation: str, outcome: Outcome, *,
                     adjustment: bool = False) -> ComplianceEvaluated:
    return ComplianceEvaluated(
        evaluation_id=evaluation.id, period=evaluation.period, intermediate_year=evaluation.intermediate_year,
        installation_account_id=installation,
        status=str(outcome.status), reason=str(outcome.reason) if outcome.reason else None,
        emissions=outcome.emissions, obligation=outcome.obligation, counted=outcome.counted_total,
        shortfall=outcome.shortfall, carried_to_next_period=outcome.carried_out, adjustment=adjustment)


async def _carry(conn: AsyncConnection, items: list[tuple[str, str, int]]) -> None:
    """A penalty owed in the period after ``from_period`` (none after the final one)."""
    if not items:
        return
    periods = await calendar.all(conn)
    order = [p.period for p in periods]
    rows = []
    for installation, from_period, quantity in items:
        index = order.index(from_period) if from_period in order else -1
        if 0 <= index < len(order) - 1:
            rows.append({"installation_account_id": installation, "to_period": order[index + 1],
                         "from_period": from_period, "quantity": quantity})
    if rows:
        statement = pg_insert(carried_obligations)
        await conn.execute(statement.on_conflict_do_update(
            index_elements=["installation_account_id", "to_period"],
            set_={"quantity": statement.excluded.quantity, "from_period": statement.excluded.from_period}), rows)


# The worker's periodic task -----------------------------------------------------------------------------
async def evaluator(ctx: Any) -> int:
    """At each period's surrender deadline (programme clock), and each intermediate year's when that rule is
    on, when automatic evaluation is on, create its evaluation (earliest deadline first); then evaluate what
    is pending. Every due item once (rows locked, state re-checked)."""
    now = ctx.clock.now()
    done = 0
    rules = rules_of(ctx.settings)
    if ctx.settings.auto_evaluate:
        async with ctx.engine.begin() as conn:
            existing = set((await conn.execute(select(evaluations.c.period, evaluations.c.intermediate_year))).all())
            due: list[tuple[datetime, str, int | None]] = []
            for period in await calendar.all(conn):
                if (period.period, None) in existing:
                    continue
                if rules.intermediate_share > 0:
                    due += [(w.surrender_deadline_at, period.period, w.year) for w in due_intermediate_years(
                        period, now) if (period.period, w.year) not in existing]
                if period.surrender_deadline_at < now:
                    due.append((period.surrender_deadline_at, period.period, None))
            for _, code, year in sorted(due, key=lambda item: item[0]):
                _, created = await request_evaluation(conn, code, actor="compliance", now=now, trigger="deadline",
                                                      year=year, rules=rules)
                done += int(created)
    while True:
        async with ctx.engine.begin() as conn:
            evaluated = await evaluate_pending(conn, now=now, rules=rules)
        if evaluated is None:
            break
        done += 1
    while True:
        async with ctx.engine.begin() as conn:
            told = await announce(conn)
        if not told:
            return done
        done += 1


