"""Compliance, part two: banking between periods and the end of the programme (a published preview, then
after the notice and with four eyes the cancellation of exactly its blocks), each installation's live
status for the open period, its projection to the deadline, and the public summary per period.

The previews read the ledger's blocks through the accounts API (a view for people to check); the
cancellation itself moves the previewed serial ranges through ``move_units_batch``, and the ledger refuses
any range no longer held."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import httpx
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from compliance.domain.banking import HeldBlock, banking_excess, per_account, programme_units
from compliance.domain.evaluation import ALLOWANCE, Lot, Rules, evaluate, intermediate_standing
from compliance.domain.windows import ComplianceRefusal, next_intermediate_year, surrender_period
from compliance.service import (
    OUTBOX,
    attested_by_year,
    credited_at_intermediate,
    evaluation_of,
    final_position,
    period_or_404,
)
from compliance.tables import (
    allocations,
    calendar,
    cancellation_batches,
    cancellation_previews,
    carried_obligations,
    delivery_holdings,
    directory,
    evaluations,
    installation_results,
    installation_status,
    publications,
)
from registry_common.approvals import payload_hash, register_approval_action, request_approval
from registry_common.audit import record_audit
from registry_common.auth import Principal
from registry_common.clock import read_clock
from registry_common.errors import RegistryError, register_errors
from registry_common.messaging.consumer import HandlerContext
from registry_contracts import Message
from registry_contracts.accounts import MovedBlock, MoveUnits, MoveUnitsBatch, SerialRange, UnitsMovedBatch
from registry_contracts.compliance import (
    BankingExcessCancelled,
    BankingExcessPreviewed,
    InstallationStatusChanged,
    ProgrammeEndPreviewed,
    ProgrammeUnitsCancelled,
)

CANCELLATION_ACCOUNT = "SYS-CANCEL"
NAMESPACE = UUID("0d6f3c1e-7f0a-4d1e-9a43-2f1b8c5d7e90")
MOVEMENT = {"banking_excess": "banking_cancellation", "programme_end": "programme_end_cancellation"}
PREVIEWED = {"banking_excess": BankingExcessPreviewed, "programme_end": ProgrammeEndPreviewed}
CANCELLED = {"banking_excess": BankingExcessCancelled, "programme_end": ProgrammeUnitsCancelled}

register_errors({
    "compliance.period_not_evaluated": (409, "El periodo {period} aún no se ha evaluado por completo.",
                                        "Period {period} has not been completely evaluated yet."),
    "compliance.not_final_period": (409, "El periodo {period} no es el último del programa.",
                                    "Period {period} is not the programme's final period."),
    "compliance.transfers_pending": (409, "Hay {count} transferencias pendientes: deben resolverse primero.",
                                     "{count} transfers are pending: they must resolve first."),
    "compliance.nothing_to_cancel": (409, "No hay unidades que cancelar.", "There are no units to cancel."),
    "compliance.preview_exists": (409, "Ya hay una vista previa {preview_id} en curso para este periodo.",
                                  "A preview {preview_id} for this period is already under way."),
    "compliance.preview_not_found": (404, "La vista previa no existe.", "The preview does not exist."),
    "compliance.preview_not_published": (409, "La vista previa está {state}.", "The preview is {state}."),
    "compliance.notice_not_passed": (409, "El aviso corre hasta {executable_from}: aún no puede ejecutarse.",
                                     "The notice runs until {executable_from}: it cannot run yet."),
    "compliance.ledger_unavailable": (503, "El registro de unidades no responde; intente de nuevo.",
                                      "The unit ledger does not answer; try again."),
    "compliance.not_published": (404, "El resumen del periodo {period} no se ha publicado.",
                                 "The summary of period {period} has not been published."),
    "compliance.already_published": (409, "El resumen del periodo {period} ya se publicó.",
                                     "The summary of period {period} is already published."),
})


# The ledger's blocks (a view) --------------------------------------------------------------------------------
async def ledger_blocks(client: httpx.AsyncClient, authorization: str) -> list[HeldBlock]:
    blocks: list[HeldBlock] = []
    cursor: int | None = None
    while True:
        try:
            answer = await client.get("/api/v1/ledger/blocks", params={
                "limit": 5000, **({"cursor": cursor} if cursor is not None else {})},
                headers={"Authorization": authorization})
        except httpx.HTTPError as exc:
            raise RegistryError("compliance.ledger_unavailable") from exc
        if answer.status_code != 200:
            raise RegistryError("compliance.ledger_unavailable")
        page = answer.json()
        blocks += [HeldBlock(b["account_id"], b["unit_type"], b["vintage"], b["serial_start"], b["serial_end"])
                   for b in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return blocks


async def pending_holds(client: httpx.AsyncClient, authorization: str) -> int:
    try:
        answer = await client.get("/api/v1/ledger/holds", params={"state": "held", "limit": 1000},
                                  headers={"Authorization": authorization})
    except httpx.HTTPError as exc:
        raise RegistryError("compliance.ledger_unavailable") from exc
    if answer.status_code != 200:
        raise RegistryError("compliance.ledger_unavailable")
    return len(answer.json()["items"])


def _moved(blocks: list[dict[str, Any]]) -> list[MovedBlock]:
    grouped: dict[tuple[str, int], list[SerialRange]] = {}
    for b in blocks:
        grouped.setdefault((b["unit_type"], b["vintage"]), []).append(SerialRange(start=b["start"], end=b["end"]))
    return [MovedBlock(unit_type=t, vintage=v, ranges=sorted(r, key=lambda x: x.start),
                       quantity=sum(x.end - x.start + 1 for x in r)) for (t, v), r in sorted(grouped.items())]


async def _told_accounts(conn: AsyncConnection, account_ids: set[str]) -> dict[str, str]:
    """A delivery account's people are its installation's (its central account's) representatives."""
    rows = dict((await conn.execute(select(directory.accounts.c.account_id, directory.accounts.c.installation_id)
                                    .where(directory.accounts.c.account_id.in_(sorted(account_ids))))).all())
    return {a: rows.get(a) or a for a in account_ids}


# Previews and cancellations ---------------------------------------------------------------------------------
async def create_preview(conn: AsyncConnection, *, kind: str, period_code: str, blocks: list[HeldBlock],
                         held_transfers: int, who: Principal, now: datetime, settings: Any) -> Any:
    """Publish what a cancellation would take, account by account and serial by serial; it may run once the
    notice has passed, approved by a second authority user."""
    period = await period_or_404(conn, period_code)
    evaluation = await evaluation_of(conn, period.period)
    if evaluation is None or evaluation.state != "completed":
        raise RegistryError("compliance.period_not_evaluated", field="period", period=period.period)
    if kind == "programme_end":
        if not period.final:
            raise RegistryError("compliance.not_final_period", field="period", period=period.period)
        if held_transfers:
            raise RegistryError("compliance.transfers_pending", count=held_transfers)
        vintages = [p.vintage for p in await calendar.all(conn)]
        selected = programme_units(blocks, vintages)
        share = None
    else:
        share = Decimal(str(settings.banking_share))
        selected = banking_excess(blocks, share)
    open_one = (await conn.execute(select(cancellation_previews.c.id).where(
        cancellation_previews.c.period == period.period, cancellation_previews.c.kind == kind,
        cancellation_previews.c.state != "completed"))).first()
    if open_one is not None:
        raise RegistryError("compliance.preview_exists", preview_id=str(open_one.id))
    if not selected:
        raise RegistryError("compliance.nothing_to_cancel")
    executable_from = now + timedelta(seconds=settings.cancellation_notice_seconds)
    rows = [{"account_id": b.account_id, "unit_type": b.unit_type, "vintage": b.vintage, "start": b.start,
             "end": b.end} for b in selected]
    preview = (await conn.execute(insert(cancellation_previews).values(
        id=uuid4(), kind=kind, period=period.period, state="published", share=str(share) if share is not None else None,
        blocks=rows, total=sum(b.quantity for b in selected), published_at=now, executable_from=executable_from,
        created_by=who.user_id).returning(cancellation_previews))).one()
    told = await _told_accounts(conn, {b.account_id for b in selected})
    events: list[Message] = [PREVIEWED[kind](
        preview_id=preview.id, kind=kind, period=period.period, account_id=account_id,
        told_account_id=told[account_id],
        quantity=sum(b.quantity for b in mine),
        blocks=_moved([r for r in rows if r["account_id"] == account_id]), executable_from=executable_from)
        for account_id, mine in per_account(selected).items()]
    await OUTBOX.add_many(conn, events, correlation_id=str(preview.id))
    await record_audit(conn, action="cancellation_preview.published", entity_type="cancellation_preview",
                       entity_id=str(preview.id), actor=who.user_id,
                       details={"kind": kind, "period": period.period, "total": preview.total,
                                "accounts": len(events), "executable_from": executable_from.isoformat()})
    return preview


async def request_execution(conn: AsyncConnection, preview_id: UUID, *, who: Principal, now: datetime,
                            ttl: timedelta) -> dict[str, Any]:
    """Ask a second authority user to approve the cancellation of exactly the previewed blocks."""
    preview = (await conn.execute(select(cancellation_previews).where(cancellation_previews.c.id == preview_id)
                                  .with_for_update())).first()
    if preview is None:
        raise RegistryError("compliance.preview_not_found")
    if preview.state != "published":
        raise RegistryError("compliance.preview_not_published", state=preview.state)
    if now < preview.executable_from:
        raise RegistryError("compliance.notice_not_passed", executable_from=preview.executable_from.isoformat())
    payload = {"preview_id": str(preview.id), "kind": preview.kind, "period": preview.period,
               "total": preview.total}
    approval_id = await request_approval(conn, action="compliance.cancel_previewed", payload=payload,
                                         requested_by=who, required_roles=["authority"], now=now, ttl=ttl)
    await conn.execute(update(cancellation_previews).where(cancellation_previews.c.id == preview.id).values(
        state="approval_requested", approval_id=approval_id))
    return {"preview_id": str(preview.id), "approval_id": str(approval_id), "payload": payload,
            "payload_hash": payload_hash(payload), "state": "approval_requested"}


async def _approved_cancellation(conn: AsyncConnection, payload: dict[str, Any], decider: Principal) -> None:
    preview = (await conn.execute(select(cancellation_previews).where(
        cancellation_previews.c.id == UUID(payload["preview_id"])).with_for_update())).first()
    if preview is None or preview.state != "approval_requested" or preview.total != payload["total"]:
        raise RegistryError("compliance.preview_not_published", state=preview.state if preview else "missing")
    offset, _ = await read_clock(conn)
    now = datetime.now(preview.executable_from.tzinfo) + timedelta(microseconds=offset)
    if now < preview.executable_from:
        raise RegistryError("compliance.notice_not_passed", executable_from=preview.executable_from.isoformat())
    lines = [MoveUnits(
        movement_id=uuid.uuid5(NAMESPACE, f"{preview.id}:{b['account_id']}:{b['unit_type']}:{b['start']}"),
        kind=MOVEMENT[preview.kind], from_account_id=b["account_id"], to_account_id=CANCELLATION_ACCOUNT,
        unit_type=b["unit_type"], quantity=b["end"] - b["start"] + 1, vintage=b["vintage"],
        serial_range=SerialRange(start=b["start"], end=b["end"]),
        reason=f"{preview.kind} {preview.period} (preview {preview.id})", actor=decider.user_id)
        for b in preview.blocks]
    commands = [MoveUnitsBatch(batch_id=uuid.uuid5(NAMESPACE, f"{preview.id}:batch:{i}"), lines=lines[i:i + 1000])
                for i in range(0, len(lines), 1000)]
    await conn.execute(insert(cancellation_batches), [
        {"batch_id": c.batch_id, "preview_id": preview.id, "lines": len(c.lines), "state": "sent"} for c in commands])
    await OUTBOX.add_many(conn, commands, correlation_id=str(preview.id))
    await conn.execute(update(cancellation_previews).where(cancellation_previews.c.id == preview.id).values(
        state="executing", approved_by=decider.user_id))
    await record_audit(conn, action="cancellation_preview.executing", entity_type="cancellation_preview",
                       entity_id=str(preview.id), actor=decider.user_id, details=payload)


register_approval_action("compliance.cancel_previewed", _approved_cancellation)


async def apply_cancellation_batch(conn: AsyncConnection, message: UnitsMovedBatch, ctx: HandlerContext) -> bool:
    """The ledger's answer to one of a preview's batches; False when the batch is not a preview's."""
    batch = (await conn.execute(select(cancellation_batches).where(
        cancellation_batches.c.batch_id == message.batch_id).with_for_update())).first()
    if batch is None:
        return False
    if batch.state == "answered":
        return True
    moved = [r for r in message.results if r.moved]
    refused = [{"movement_id": str(r.movement_id), "account_id": r.from_account_id, "code": r.code,
                "detail": r.detail} for r in message.results if not r.moved]
    await conn.execute(update(cancellation_batches).where(cancellation_batches.c.batch_id == batch.batch_id)
                       .values(state="answered"))
    preview = (await conn.execute(update(cancellation_previews).where(
        cancellation_previews.c.id == batch.preview_id).values(
        cancelled=cancellation_previews.c.cancelled + sum(r.quantity for r in moved),
        refusals=cancellation_previews.c.refusals.op("||")(bindparam("b_refusals", type_=JSONB)),
    ).returning(cancellation_previews), {"b_refusals": refused})).one()
    open_batches = (await conn.execute(select(func.count()).where(
        cancellation_batches.c.preview_id == preview.id, cancellation_batches.c.state != "answered"))).scalar()
    if open_batches:
        return True
    await conn.execute(update(cancellation_previews).where(cancellation_previews.c.id == preview.id).values(
        state="completed", completed_at=ctx.clock.now()))
    # Tell each holder what actually went (the ledger's blocks of every batch of this preview).
    rows = {b["account_id"] for b in preview.blocks}
    told = await _told_accounts(conn, rows)
    events: list[Message] = []
    for account_id in sorted(rows):
        mine = [b for b in preview.blocks if b["account_id"] == account_id]
        events.append(CANCELLED[preview.kind](
            preview_id=preview.id, kind=preview.kind, period=preview.period, account_id=account_id,
            told_account_id=told[account_id],
            quantity=sum(b["end"] - b["start"] + 1 for b in mine), blocks=_moved(mine),
            executable_from=preview.executable_from))
    await ctx.publish_many(conn, events)
    await record_audit(conn, action="cancellation_preview.completed", entity_type="cancellation_preview",
                       entity_id=str(preview.id), actor="compliance",
                       details={"cancelled": preview.cancelled, "refused_lines": len(preview.refusals)})
    return True


# Live status and projection ---------------------------------------------------------------------------------
async def _open_period(conn: AsyncConnection, now: datetime) -> Any | None:
    try:
        return surrender_period(await calendar.all(conn), now, None)
    except ComplianceRefusal:
        return None


async def _position(conn: AsyncConnection, installation: str, period: Any,
                    rules: Rules) -> tuple[dict[str, Any], dict[int, Any]]:
    """What the period's final evaluation would count against (``evaluate``'s arguments): attested emissions
    of all its years, net of what its intermediate evaluations already counted; and each year's attested
    report."""
    attested = (await attested_by_year(conn, period.period, installation)).get(installation, {})
    credited = (await credited_at_intermediate(conn, period.period, installation)).get(installation, 0)
    return final_position(period, attested, credited, rules), attested


async def _intermediate(conn: AsyncConnection, period: Any, attested: dict[int, Any], delivered: list[Lot], *,
                        now: datetime, rules: Rules) -> dict[str, Any] | None:
    """What is due at the period's next intermediate deadline (computed on read: one query, and only for a
    multi-year period with the rule on); None with the rule off, for an annual period, or once no
    intermediate deadline is to come."""
    if rules.intermediate_share <= 0 or next_intermediate_year(period, now) is None:
        return None
    evaluated = set((await conn.execute(select(evaluations.c.intermediate_year).where(
        evaluations.c.period == period.period, evaluations.c.intermediate_year.is_not(None)))).scalars())
    window = next_intermediate_year(period, now, evaluated)
    if window is None:
        return None
    report = attested.get(window.year)
    standing = intermediate_standing(year=window.year, emissions=report.emissions if report else None,
                                     delivered=delivered, rules=rules)
    return {"year": standing.year, "deadline": window.surrender_deadline_at.isoformat(),
            "emissions": standing.emissions, "obligation": standing.obligation,
            "delivered_eligible": standing.delivered_eligible, "shortfall": standing.shortfall}


async def _delivered(conn: AsyncConnection, installation: str) -> list[Lot]:
    delivery = await directory.delivery_account_of(conn, installation)
    if delivery is None:
        return []
    return [Lot(r.unit_type, r.vintage, r.quantity) for r in (await conn.execute(select(delivery_holdings).where(
        delivery_holdings.c.account_id == delivery, delivery_holdings.c.quantity > 0))).all()]


async def _carried(conn: AsyncConnection, installation: str, period: str) -> int:
    """An obligation carried into ``period`` (the penalty rule), or 0."""
    return int((await conn.execute(select(carried_obligations.c.quantity).where(
        carried_obligations.c.installation_account_id == installation,
        carried_obligations.c.to_period == period))).scalar() or 0)


async def live_status(conn: AsyncConnection, installation: str, *, now: datetime, rules: Rules,
                      with_intermediate: bool = True) -> dict[str, Any]:
    """For the open period: no verified emissions yet / must surrender N more / covered, at its deadline;
    and ``intermediate``: what is due at its next intermediate deadline, or None (``with_intermediate``
    False: not computed, as for the stored status, which keeps only the period's figures)."""
    period = await _open_period(conn, now)
    if period is None:
        return {"installation_account_id": installation, "period": None, "status": "no_open_period",
                "to_surrender": 0, "emissions": None, "delivered_eligible": 0, "intermediate": None}
    position, attested = await _position(conn, installation, period, rules)
    emissions = position["emissions"]
    carried = await _carried(conn, installation, period.period)
    delivered = await _delivered(conn, installation)
    outcome = evaluate(carried_in=carried, delivered=delivered, rules=rules, **position)
    intermediate = (await _intermediate(conn, period, attested, delivered, now=now, rules=rules)
                    if with_intermediate else None)
    if emissions is None:
        status = "no_verified_emissions"
    elif outcome.shortfall > 0:
        status = "must_surrender"
    else:
        status = "covered"
    return {"installation_account_id": installation, "period": period.period, "status": status,
            "to_surrender": outcome.shortfall if emissions is not None else 0, "emissions": emissions,
            "obligation": outcome.obligation, "delivered_eligible": outcome.counted_total,
            "deadline": period.surrender_deadline_at.isoformat(), "intermediate": intermediate}


async def refresh_status(conn: AsyncConnection, installation: str, *, now: datetime, rules: Rules,
                         ctx: HandlerContext | None = None) -> None:
    """Recompute the live status; when it changed, store it and publish ``installation_status_changed``."""
    current = await live_status(conn, installation, now=now, rules=rules, with_intermediate=False)
    if current["period"] is None:
        return
    before = (await conn.execute(select(installation_status).where(
        installation_status.c.installation_account_id == installation).with_for_update())).first()
    key = (current["period"], current["status"], current["to_surrender"])
    if before is not None and (before.period, before.status, before.to_surrender) == key:
        return
    values = {"period": current["period"], "status": current["status"], "to_surrender": current["to_surrender"],
              "emissions": current["emissions"], "delivered_eligible": current["delivered_eligible"],
              "updated_at": func.now()}
    await conn.execute(pg_insert(installation_status).values(installation_account_id=installation, **values)
                       .on_conflict_do_update(index_elements=["installation_account_id"], set_=values))
    event = InstallationStatusChanged(installation_account_id=installation, period=current["period"],
                                      status=current["status"], to_surrender=current["to_surrender"],
                                      emissions=current["emissions"],
                                      delivered_eligible=current["delivered_eligible"])
    if ctx is not None:
        await ctx.publish(conn, event)
    else:
        await OUTBOX.add(conn, event, correlation_id=installation)


async def projection(conn: AsyncConnection, installation: str, *, holdings: dict[str, Any] | None,
                     period_code: str | None, now: datetime, rules: Rules) -> dict[str, Any]:
    """The position at the deadline if every eligible unit the installation holds (central account, and what
    is on its way in) were surrendered: what would count, the shortfall, and the penalty it would carry; and
    ``intermediate``: what is due at the period's next intermediate deadline with what is delivered now, or
    None."""
    period = await period_or_404(conn, period_code) if period_code else await _open_period(conn, now)
    if period is None:
        raise RegistryError("compliance.no_open_period", field="period")
    position, attested = await _position(conn, installation, period, rules)
    emissions, vintage = position["emissions"], position["period_vintage"]
    carried = await _carried(conn, installation, period.period)
    delivered = await _delivered(conn, installation)
    central = [Lot(line["unit_type"], line["vintage"], line["quantity"])
               for line in (holdings or {}).get("by_type_and_vintage", [])]
    incoming = [Lot(line["unit_type"], line["vintage"] if line["vintage"] is not None else period.vintage,
                    line["quantity"]) for line in (holdings or {}).get("held_incoming_by_type_and_vintage", [])]
    as_is = evaluate(carried_in=carried, delivered=delivered, rules=rules, **position)
    everything = evaluate(**position, carried_in=carried,
                          delivered=[*delivered, *central, *incoming], rules=rules)
    return {
        "installation_account_id": installation, "period": period.period,
        "deadline": period.surrender_deadline_at.isoformat(), "emissions": emissions, "carried_in": carried,
        "obligation": everything.obligation, "rules": {"offset_share": str(rules.offset_share),
                                                       "penalty_enabled": rules.penalty_enabled,
                                                       "penalty_extra_per_missing": rules.penalty_extra_per_missing},
        "in_delivery_account": sum(lot.quantity for lot in delivered),
        "in_central_account": sum(lot.quantity for lot in central),
        "incoming_in_holds": sum(lot.quantity for lot in incoming),
        "outgoing_in_holds": int((holdings or {}).get("held_outgoing", 0)),
        "if_nothing_more_is_surrendered": {"counted": as_is.counted_total, "shortfall": as_is.shortfall,
                                           "status": str(as_is.status), "penalty_carried": as_is.carried_out},
        "if_everything_eligible_is_surrendered": {
            "counted": everything.counted_total, "shortfall": everything.shortfall, "status": str(everything.status),
            "penalty_carried": everything.carried_out, "offsets_over_limit": everything.offsets_over_limit,
            "future_vintage_not_counted": everything.future_vintage,
            "allowances_needed": max(0, everything.obligation - sum(
                lot.quantity for lot in (*delivered, *central, *incoming) if lot.unit_type == ALLOWANCE
                and lot.vintage <= vintage))},
        "no_verified_emissions": emissions is None,
        "intermediate": await _intermediate(conn, period, attested, delivered, now=now, rules=rules),
    }


# Public summary ---------------------------------------------------------------------------------------------
async def record_allocations(conn: AsyncConnection, moves: list[tuple[UUID, str, list[MovedBlock]]]) -> None:
    """Allocation movements (id, receiving account, blocks), per vintage; a repeat changes nothing."""
    rows = [{"movement_id": movement_id, "installation_account_id": to_account, "vintage": block.vintage,
             "quantity": block.quantity} for movement_id, to_account, blocks in moves for block in blocks]
    if rows:
        await conn.execute(pg_insert(allocations).on_conflict_do_nothing(), rows)


async def publish_summary(conn: AsyncConnection, period_code: str, *, who: Principal) -> Any:
    period = await period_or_404(conn, period_code)
    evaluation = await evaluation_of(conn, period.period)
    if evaluation is None or evaluation.state != "completed":
        raise RegistryError("compliance.period_not_evaluated", field="period", period=period.period)
    row = (await conn.execute(pg_insert(publications).values(period=period.period, published_by=who.user_id)
                              .on_conflict_do_nothing().returning(publications))).first()
    if row is None:
        raise RegistryError("compliance.already_published", period=period.period)
    await record_audit(conn, action="compliance.summary_published", entity_type="period", entity_id=period.period,
                       actor=who.user_id)
    return row


async def public_summary(conn: AsyncConnection, period_code: str) -> dict[str, Any]:
    published = (await conn.execute(select(publications).where(publications.c.period == period_code))).first()
    period = await calendar.period(conn, period_code)
    if published is None or period is None:
        raise RegistryError("compliance.not_published", period=period_code)
    evaluation = (await conn.execute(select(evaluations).where(evaluations.c.period == period_code))).one()
    allocated = dict((await conn.execute(select(allocations.c.installation_account_id,
                                                func.sum(allocations.c.quantity)).where(
        allocations.c.vintage == period.vintage).group_by(allocations.c.installation_account_id))).all())
    r = installation_results.c
    rows = (await conn.execute(select(r.installation_account_id, r.name, r.emissions, r.counted_allowances,
                                      r.counted_offsets, r.status).where(r.evaluation_id == evaluation.id)
                               .order_by(r.installation_account_id))).all()
    return {"period": period_code, "published_at": published.published_at.isoformat(), "installations": [
        {"installation_account_id": x.installation_account_id, "name": x.name,
         "allocated": int(allocated.get(x.installation_account_id, 0)), "verified_emissions": x.emissions,
         "surrendered": x.counted_allowances + x.counted_offsets, "status": x.status} for x in rows]}
