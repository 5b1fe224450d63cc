"""Issuance's state changes, shared by the HTTP face, the approved actions, the message handlers and the
schedulers. Every change writes its audit row and its outgoing messages in the caller's transaction.

Units are never written here: cap and offset generation send ``accounts.issue_units``, an allocation run
sends ``accounts.move_units_batch`` (≤ 1,000 lines each); the ledger's answers (``units_issued``,
``units_moved``, ``movement_refused``) move the local rows on, under row locks and state guards, so a
repeated or late event changes nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from issuance import errors as _errors  # noqa: F401  (registers the codes)
from issuance.domain.allocation_table import AccountView
from issuance.domain.periods import PeriodSpec, is_due, programme_from_setting
from issuance.tables import (
    allocation_lines,
    allocation_tables,
    cap_generations,
    issuance_requests,
    known_accounts,
    offset_issuances,
    periods,
    system_holdings,
)
from registry_common.approvals import register_approval_action
from registry_common.audit import record_audit
from registry_common.auth import Principal
from registry_common.clock import read_clock
from registry_common.errors import RegistryError
from registry_common.messaging.consumer import HandlerContext
from registry_common.messaging.outbox import Outbox
from registry_common.settings import Environment
from registry_contracts.accounts import (
    AccountClosed,
    AccountOpened,
    AccountReactivated,
    AccountSuspended,
    IssueUnits,
    MovementRefused,
    MoveUnits,
    MoveUnitsBatch,
    UnitsIssued,
    UnitsMoved,
    UnitsMovedBatch,
)
from registry_contracts.issuance import (
    AllocationDelivered,
    AllocationDeliveredBatch,
    CapGenerated,
    DeliveredLine,
    IssuedRange,
    OffsetCreditsIssued,
    PeriodScheduled,
)

log = logging.getLogger("issuance")
OUTBOX = Outbox("issuance")
CAP_ACCOUNT = "SYS-CAP"
SYSTEM_PREFIX = "SYS-"
SOURCE_KINDS = frozenset({"cap", "reserve", "allocation"})
DUPLICATE = "ledger.duplicate_movement"


def reserve_account_id(name: str) -> str:
    return f"SYS-RES-{name.strip().upper()}"


async def programme_now(conn: AsyncConnection) -> datetime:
    """The programme time as this service's database holds it (for approved actions, which get no clock)."""
    offset, _ = await read_clock(conn)
    return datetime.now(UTC) + timedelta(microseconds=offset)


# Periods --------------------------------------------------------------------------------------------
async def create_period(conn: AsyncConnection, spec: PeriodSpec, *, zone: str, actor: str,
                        created_programme_at: datetime) -> dict[str, Any] | None:
    """Insert the period and publish ``period_scheduled``; None when its code or vintage exists."""
    instants = spec.instants(zone)
    row = (await conn.execute(
        pg_insert(periods).values(code=spec.code, vintage=spec.vintage, final=spec.final, timezone=zone,
                                  local_dates=spec.local_dates(), created_by=actor,
                                  created_programme_at=created_programme_at, **instants)
        .on_conflict_do_nothing().returning(*periods.c)
    )).mappings().first()
    if row is None:
        return None
    await OUTBOX.add(conn, PeriodScheduled(period=spec.code, vintage=spec.vintage, final=spec.final, timezone=zone,
                                           local_dates=spec.local_dates(), **instants), correlation_id=spec.code)
    await record_audit(conn, action="period.scheduled", entity_type="period", entity_id=spec.code, actor=actor,
                       details={"vintage": spec.vintage, "final": spec.final, **spec.local_dates()})
    return dict(row)


async def provision_issuance(conn: AsyncConnection, settings: Any) -> None:
    """The provisioning hook: the configured programme's periods (the pilot's by default, none in
    production), each created once. They count as existing from the programme's start."""
    production = getattr(settings, "environment", None) is Environment.PRODUCTION
    specs = programme_from_setting(getattr(settings, "programme", None), production=production)
    zone = getattr(settings, "programme_timezone", "America/Mexico_City")
    now = await programme_now(conn)
    for spec in specs:
        start = spec.instants(zone)["starts_at"]
        await create_period(conn, spec, zone=zone, actor="provisioning", created_programme_at=min(now, start))


async def get_period(conn: AsyncConnection, code: str, *, lock: bool = False) -> Any:
    query = select(periods).where(periods.c.code == code)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise RegistryError("period.not_found", field="period", period=code)
    return row


# Read models ----------------------------------------------------------------------------------------
async def account_views(conn: AsyncConnection, ids: Sequence[str] | None = None) -> dict[str, AccountView]:
    query = select(known_accounts.c.id, known_accounts.c.kind, known_accounts.c.state)
    if ids is not None:
        query = query.where(known_accounts.c.id.in_(list(ids)))
    return {r.id: AccountView(r.id, r.kind, r.state) for r in await conn.execute(query)}


async def held_by(conn: AsyncConnection, account_id: str, vintage: int, unit_type: str = "allowance") -> int:
    """What a system account holds of a vintage, as learnt from the ledger's events (a pre-check: the
    ledger itself refuses a movement it cannot cover)."""
    total = (await conn.execute(select(func.coalesce(func.sum(system_holdings.c.quantity), 0)).where(
        system_holdings.c.account_id == account_id, system_holdings.c.unit_type == unit_type,
        system_holdings.c.vintage == vintage))).scalar_one()
    return int(total)


async def _holding_delta(conn: AsyncConnection, account_id: str, unit_type: str, vintage: int, delta: int) -> None:
    if account_id.startswith(SYSTEM_PREFIX) and delta:
        await conn.execute(insert(system_holdings).values(account_id=account_id, unit_type=unit_type,
                                                          vintage=vintage, quantity=delta))


async def on_account_opened(conn: AsyncConnection, event: AccountOpened, ctx: HandlerContext) -> None:
    await conn.execute(pg_insert(known_accounts).values(
        id=event.account_id, kind=event.kind, state="active", name=event.name, installation_id=event.installation_id,
    ).on_conflict_do_update(index_elements=[known_accounts.c.id], set_={
        "kind": event.kind, "name": event.name, "installation_id": event.installation_id}))


async def _set_state(conn: AsyncConnection, account_id: str, state: str) -> None:
    statement = pg_insert(known_accounts).values(id=account_id, kind="unknown", state=state)
    await conn.execute(statement.on_conflict_do_update(
        index_elements=[known_accounts.c.id], set_={"state": state, "updated_at": func.now()},
        where=known_accounts.c.state != "closed"))


async def on_account_suspended(conn: AsyncConnection, event: AccountSuspended, ctx: HandlerContext) -> None:
    await _set_state(conn, event.account_id, "suspended")


async def on_account_reactivated(conn: AsyncConnection, event: AccountReactivated, ctx: HandlerContext) -> None:
    await _set_state(conn, event.account_id, "active")


async def on_account_closed(conn: AsyncConnection, event: AccountClosed, ctx: HandlerContext) -> None:
    await _set_state(conn, event.account_id, "closed")


# Cap and reserves -----------------------------------------------------------------------------------
async def _approved_generate_cap(conn: AsyncConnection, payload: dict[str, Any], decider: Principal) -> None:
    """Runs in the approval's transaction: generation once per period (the period row is locked; a
    second initial generation is refused and the approval stays pending)."""
    period = await get_period(conn, payload["period"], lock=True)
    generation = (await conn.execute(select(cap_generations).where(
        cap_generations.c.id == UUID(payload["generation_id"])).with_for_update())).first()
    if generation is None or generation.state != "awaiting_approval":
        raise RegistryError("cap.already_generated", period=payload["period"])
    if generation.kind == "initial":
        done = (await conn.execute(select(cap_generations.c.id).where(
            cap_generations.c.period_code == period.code, cap_generations.c.kind == "initial",
            cap_generations.c.state.in_(("issuing", "generated"))))).first()
        if done is not None:
            raise RegistryError("cap.already_generated", period=period.code)
    await conn.execute(update(cap_generations).where(cap_generations.c.id == generation.id)
                       .values(state="issuing", approved_by=decider.user_id))
    targets = [(CAP_ACCOUNT, generation.cap)] + [
        (reserve_account_id(name), quantity) for name, quantity in sorted(generation.reserves.items())]
    for account_id, quantity in targets:
        if quantity <= 0:
            continue
        request_id = uuid4()
        await conn.execute(insert(issuance_requests).values(
            request_id=request_id, purpose="cap", parent_id=generation.id, to_account_id=account_id,
            unit_type="allowance", vintage=period.vintage, quantity=quantity, state="sent"))
        await OUTBOX.add(conn, IssueUnits(
            request_id=request_id, to_account_id=account_id, unit_type="allowance", vintage=period.vintage,
            quantity=quantity, origin=f"period:{period.code}", kind="issuance", actor=decider.user_id,
            reason=generation.reason or f"{generation.kind} cap generation, period {period.code}"),
            correlation_id=str(generation.id))
    await record_audit(conn, action="cap_generation.approved", entity_type="cap_generation",
                       entity_id=str(generation.id), actor=decider.user_id,
                       details={"period": period.code, "cap": generation.cap, "reserves": generation.reserves})


register_approval_action("issuance.generate_cap", _approved_generate_cap)


async def _finish_generation(conn: AsyncConnection, generation_id: UUID, ctx: HandlerContext) -> None:
    generation = (await conn.execute(select(cap_generations).where(cap_generations.c.id == generation_id)
                                     .with_for_update())).first()
    if generation is None or generation.state != "issuing":
        return
    requests = (await conn.execute(select(issuance_requests).where(
        issuance_requests.c.parent_id == generation_id).order_by(issuance_requests.c.serial_start))).all()
    if any(r.state == "sent" for r in requests):
        return
    state = "generated" if all(r.state == "issued" for r in requests) else "failed"
    await conn.execute(update(cap_generations).where(cap_generations.c.id == generation_id)
                       .values(state=state, completed_at=func.now()))
    period = await get_period(conn, generation.period_code)
    if state == "generated":
        await ctx.publish(conn, CapGenerated(
            generation_id=generation_id, period=period.code, vintage=period.vintage, kind=generation.kind,
            cap=generation.cap, reserves=generation.reserves, approved_by=generation.approved_by,
            ranges=[IssuedRange(account_id=r.to_account_id, quantity=r.quantity, serial_start=r.serial_start,
                                serial_end=r.serial_end) for r in requests]))
    await record_audit(conn, action=f"cap_generation.{state}", entity_type="cap_generation",
                       entity_id=str(generation_id), actor="issuance",
                       details={"refused": [r.code for r in requests if r.state == "refused"]})


# Offsets --------------------------------------------------------------------------------------------
async def _approved_issue_offsets(conn: AsyncConnection, payload: dict[str, Any], decider: Principal) -> None:
    row = (await conn.execute(select(offset_issuances).where(
        offset_issuances.c.id == UUID(payload["issuance_id"])).with_for_update())).first()
    if row is None or row.state != "awaiting_approval":
        raise RegistryError("request.conflict")
    await conn.execute(update(offset_issuances).where(offset_issuances.c.id == row.id)
                       .values(state="issuing", approved_by=decider.user_id))
    await conn.execute(insert(issuance_requests).values(
        request_id=row.request_id, purpose="offset", parent_id=row.id, to_account_id=row.to_account_id,
        unit_type="offset", vintage=row.vintage, quantity=row.quantity, state="sent"))
    await OUTBOX.add(conn, IssueUnits(
        request_id=row.request_id, to_account_id=row.to_account_id, unit_type="offset", vintage=row.vintage,
        quantity=row.quantity, origin=f"project:{row.project_id}", kind="offset_issuance", actor=decider.user_id,
        reason=f"offset credits, project {row.project_id}, verification {row.verification_reference}"),
        correlation_id=str(row.id))
    await record_audit(conn, action="offset_issuance.approved", entity_type="offset_issuance",
                       entity_id=str(row.id), actor=decider.user_id,
                       details={"project": row.project_id, "vintage": row.vintage, "quantity": row.quantity})


register_approval_action("issuance.issue_offsets", _approved_issue_offsets)


async def _offset_outcome(conn: AsyncConnection, request: Any, ctx: HandlerContext, *, issued: bool,
                          code: str | None = None) -> None:
    row = (await conn.execute(select(offset_issuances).where(offset_issuances.c.id == request.parent_id)
                              .with_for_update())).first()
    if row is None or row.state != "issuing":
        return
    if issued:
        await conn.execute(update(offset_issuances).where(offset_issuances.c.id == row.id).values(
            state="issued", serial_start=request.serial_start, serial_end=request.serial_end))
        await ctx.publish(conn, OffsetCreditsIssued(
            issuance_id=row.id, project_id=row.project_id, vintage=row.vintage, quantity=row.quantity,
            to_account_id=row.to_account_id, serial_start=request.serial_start, serial_end=request.serial_end,
            verification_reference=row.verification_reference))
    else:
        await conn.execute(update(offset_issuances).where(offset_issuances.c.id == row.id)
                           .values(state="refused", code=code))
    await record_audit(conn, action="offset_issuance." + ("issued" if issued else "refused"),
                       entity_type="offset_issuance", entity_id=str(row.id), actor="issuance",
                       details={"code": code} if code else {})


# Allocation -----------------------------------------------------------------------------------------
async def _approved_allocation(conn: AsyncConnection, payload: dict[str, Any], decider: Principal) -> None:
    table = (await conn.execute(select(allocation_tables).where(
        allocation_tables.c.id == UUID(payload["table_id"])).with_for_update())).first()
    if table is None:
        raise RegistryError("allocation.not_found")
    if table.state != "awaiting_approval":
        raise RegistryError("allocation.wrong_state", state=table.state, action="approve")
    if table.sha256 != payload["sha256"]:
        raise RegistryError("approval.payload_mismatch", field="payload_hash")
    now = await programme_now(conn)
    await conn.execute(update(allocation_tables).where(allocation_tables.c.id == table.id)
                       .values(state="approved", approved_by=decider.user_id, approved_at=now))
    await record_audit(conn, action="allocation.approved", entity_type="allocation_table",
                       entity_id=str(table.id), actor=decider.user_id,
                       details={"sha256": table.sha256, "total": table.total, "period": table.period_code})


register_approval_action("issuance.allocate", _approved_allocation)


async def start_run(conn: AsyncConnection, table_id: UUID, *, trigger: str, actor: str,
                    batch_lines: int = 1000) -> bool:
    """Send the approved table's lines to the ledger in batches of ≤ ``batch_lines``. Exactly once: the
    table row is locked and only an ``approved`` table starts; False when it was not (any more)."""
    table = (await conn.execute(select(allocation_tables).where(allocation_tables.c.id == table_id)
                                .with_for_update())).first()
    if table is None or table.state != "approved":
        return False
    period = await get_period(conn, table.period_code)
    lines = (await conn.execute(
        select(allocation_lines.c.account_id, allocation_lines.c.quantity, allocation_lines.c.movement_id)
        .where(allocation_lines.c.table_id == table_id, allocation_lines.c.state == "planned")
        .order_by(allocation_lines.c.row_number))).all()
    ledger_actor = table.approved_by or actor
    for start in range(0, len(lines), batch_lines):
        chunk = lines[start:start + batch_lines]
        batch_id = uuid4()
        await OUTBOX.add(conn, MoveUnitsBatch(batch_id=batch_id, lines=[
            MoveUnits(movement_id=line.movement_id, kind="allocation", from_account_id=table.source_account_id,
                      to_account_id=line.account_id, unit_type="allowance", quantity=line.quantity,
                      vintage=period.vintage, reason=f"allocation table {table_id}", actor=ledger_actor)
            for line in chunk]), correlation_id=str(table_id))
        await conn.execute(update(allocation_lines).where(
            allocation_lines.c.table_id == table_id,
            allocation_lines.c.movement_id.in_([line.movement_id for line in chunk]),
        ).values(state="sent", batch_id=batch_id))
    state = "running" if lines else "completed"
    await conn.execute(update(allocation_tables).where(allocation_tables.c.id == table_id).values(
        state=state, run_trigger=trigger, run_started_at=await programme_now(conn),
        completed_at=None if lines else func.now()))
    await record_audit(conn, action="allocation.run_started", entity_type="allocation_table",
                       entity_id=str(table_id), actor=actor,
                       details={"trigger": trigger, "lines": len(lines),
                                "batches": -(-len(lines) // batch_lines) if lines else 0})
    return True


async def complete_runs(conn: AsyncConnection) -> int:
    """Running tables with no line awaiting the ledger become completed (with refusals, if any)."""
    waiting = exists().where(allocation_lines.c.table_id == allocation_tables.c.id,
                             allocation_lines.c.state == "sent")
    rows = (await conn.execute(select(allocation_tables.c.id).where(
        allocation_tables.c.state == "running", ~waiting).with_for_update(skip_locked=True))).all()
    for row in rows:
        refused = (await conn.execute(select(func.count()).where(
            allocation_lines.c.table_id == row.id, allocation_lines.c.state == "refused"))).scalar_one()
        state = "completed_with_refusals" if refused else "completed"
        await conn.execute(update(allocation_tables).where(allocation_tables.c.id == row.id)
                           .values(state=state, completed_at=func.now()))
        await record_audit(conn, action=f"allocation.{state}", entity_type="allocation_table",
                           entity_id=str(row.id), actor="issuance", details={"refused": refused})
    return len(rows)


async def allocation_scheduler(ctx: Any) -> None:
    """Periodic task: run approved tables whose allocation date has come (once: row lock and state
    guard), then complete the runs the ledger has answered in full."""
    now = ctx.clock.now()
    async with ctx.engine.begin() as conn:
        due = (await conn.execute(
            select(allocation_tables.c.id, periods.c.allocation_at, periods.c.created_programme_at)
            .join(periods, periods.c.code == allocation_tables.c.period_code)
            .where(allocation_tables.c.state == "approved", periods.c.allocation_at <= now)
            .with_for_update(of=allocation_tables, skip_locked=True))).all()
        for row in due:
            if is_due(row.allocation_at, now, row.created_programme_at):
                await start_run(conn, row.id, trigger="schedule", actor="scheduler",
                                batch_lines=getattr(ctx.settings, "allocation_batch_lines", 1000))
    async with ctx.engine.begin() as conn:
        await complete_runs(conn)


# The ledger's answers -------------------------------------------------------------------------------
async def on_units_issued(conn: AsyncConnection, event: UnitsIssued, ctx: HandlerContext) -> None:
    await _holding_delta(conn, event.to_account_id, event.unit_type, event.vintage, event.quantity)
    request = (await conn.execute(select(issuance_requests).where(
        issuance_requests.c.request_id == event.request_id).with_for_update())).first()
    if request is None or request.state != "sent":
        return
    await conn.execute(update(issuance_requests).where(issuance_requests.c.request_id == event.request_id).values(
        state="issued", serial_start=event.serial_range.start, serial_end=event.serial_range.end,
        updated_at=func.now()))
    if request.purpose == "cap":
        await _finish_generation(conn, request.parent_id, ctx)
    else:
        fresh = (await conn.execute(select(issuance_requests).where(
            issuance_requests.c.request_id == event.request_id))).first()
        await _offset_outcome(conn, fresh, ctx, issued=True)


async def on_units_moved(conn: AsyncConnection, event: UnitsMoved, ctx: HandlerContext) -> None:
    for block in event.blocks:
        await _holding_delta(conn, event.from_account_id, block.unit_type, block.vintage, -block.quantity)
        await _holding_delta(conn, event.to_account_id, block.unit_type, block.vintage, block.quantity)
    if event.movement_kind != "allocation":
        return
    line = (await conn.execute(
        update(allocation_lines)
        .where(allocation_lines.c.movement_id == event.movement_id, allocation_lines.c.state == "sent")
        .values(state="delivered", delivered_at=func.now())
        .returning(allocation_lines.c.table_id, allocation_lines.c.account_id, allocation_lines.c.quantity))).first()
    if line is None:
        return
    table = (await conn.execute(
        select(allocation_tables.c.method, allocation_tables.c.period_code, periods.c.vintage)
        .join(periods, periods.c.code == allocation_tables.c.period_code)
        .where(allocation_tables.c.id == line.table_id))).one()
    await ctx.publish(conn, AllocationDelivered(
        table_id=line.table_id, period=table.period_code, vintage=table.vintage,
        installation_account_id=line.account_id, quantity=line.quantity, movement_id=event.movement_id,
        method=table.method))


async def on_movement_refused(conn: AsyncConnection, event: MovementRefused, ctx: HandlerContext) -> None:
    if event.code == DUPLICATE:
        return  # the first command's own answer settles it
    if event.command == "issue_units":
        request = (await conn.execute(
            update(issuance_requests)
            .where(issuance_requests.c.request_id == event.reference_id, issuance_requests.c.state == "sent")
            .values(state="refused", code=event.code, updated_at=func.now())
            .returning(*issuance_requests.c))).first()
        if request is None:
            return
        if request.purpose == "cap":
            await _finish_generation(conn, request.parent_id, ctx)
        else:
            await _offset_outcome(conn, request, ctx, issued=False, code=event.code)
    elif event.command in ("move_units_batch", "move_units"):
        line = (await conn.execute(
            update(allocation_lines)
            .where(allocation_lines.c.movement_id == event.reference_id, allocation_lines.c.state == "sent")
            .values(state="refused", code=event.code).returning(allocation_lines.c.table_id))).first()
        if line is not None:
            await record_audit(conn, action="allocation.line_refused", entity_type="allocation_table",
                               entity_id=str(line.table_id), actor="issuance",
                               details={"movement_id": str(event.reference_id), "code": event.code})


async def on_units_moved_batch(conn: AsyncConnection, event: UnitsMovedBatch, ctx: HandlerContext) -> None:
    """The ledger's answer to an allocation batch, a result per line, applied set-based: the holdings deltas
    of the system accounts, the delivered lines (one ``allocation_delivered_batch`` per table, listing them) and
    the refused ones.
    Lines already settled (a repeated answer) match nothing and change nothing."""
    deltas: dict[tuple[str, str, int], int] = defaultdict(int)
    for result in event.results:
        for block in result.blocks:
            deltas[(result.from_account_id, block.unit_type, block.vintage)] -= block.quantity
            deltas[(result.to_account_id, block.unit_type, block.vintage)] += block.quantity
    for (account_id, unit_type, vintage), delta in deltas.items():
        await _holding_delta(conn, account_id, unit_type, vintage, delta)
    moved = [r.movement_id for r in event.results if r.moved and r.movement_kind == "allocation"]
    delivered = (await conn.execute(
        update(allocation_lines)
        .where(allocation_lines.c.movement_id.in_(moved), allocation_lines.c.state == "sent")
        .values(state="delivered", delivered_at=func.now())
        .returning(allocation_lines.c.table_id, allocation_lines.c.account_id, allocation_lines.c.quantity,
                   allocation_lines.c.movement_id))).all() if moved else []
    lines_of: dict[Any, list[DeliveredLine]] = defaultdict(list)
    for line in delivered:
        lines_of[line.table_id].append(DeliveredLine(installation_account_id=line.account_id,
                                                     quantity=line.quantity, movement_id=line.movement_id))
    batches = []
    for table_id, lines in sorted(lines_of.items(), key=lambda item: str(item[0])):
        table = (await conn.execute(
            select(allocation_tables.c.method, allocation_tables.c.period_code, periods.c.vintage)
            .join(periods, periods.c.code == allocation_tables.c.period_code)
            .where(allocation_tables.c.id == table_id))).one()
        batches.append(AllocationDeliveredBatch(table_id=table_id, period=table.period_code, vintage=table.vintage,
                                                method=table.method, lines=lines))
    await ctx.publish_many(conn, batches)
    for result in event.results:
        if not result.moved and result.code != DUPLICATE:
            refused = (await conn.execute(
                update(allocation_lines)
                .where(allocation_lines.c.movement_id == result.movement_id, allocation_lines.c.state == "sent")
                .values(state="refused", code=result.code).returning(allocation_lines.c.table_id))).first()
            if refused is not None:
                await record_audit(conn, action="allocation.line_refused", entity_type="allocation_table",
                                   entity_id=str(refused.table_id), actor="issuance",
                                   details={"movement_id": str(result.movement_id), "code": result.code})


SUBSCRIPTIONS: dict[Any, Any] = {
    AccountOpened: on_account_opened,
    AccountSuspended: on_account_suspended,
    AccountReactivated: on_account_reactivated,
    AccountClosed: on_account_closed,
    UnitsIssued: on_units_issued,
    UnitsMoved: on_units_moved,
    MovementRefused: on_movement_refused,
    UnitsMovedBatch: on_units_moved_batch,
}
