"""The ledger's HTTP face: ``/api/v1/ledger/...`` (holds, movements, freeze, audit), holdings and journal
of an account, the history of one unit. Same operations as the broker commands (``accounts.ledger``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from accounts import account_service, ledger
from accounts.domain.ledger import MovementKind, Refusal, parse_serial, readable_serial, rule_for
from accounts.tables import accounts, holds, journal, ledger_settings, unit_blocks
from registry_common import idempotency
from registry_common.approvals import payload_hash, register_approval_action, request_approval
from registry_common.audit import record_audit
from registry_common.auth import OVERSIGHT_ROLES, CurrentPrincipal, Principal, Role, require_roles
from registry_common.errors import RegistryError
from registry_common.messaging.outbox import Outbox
from registry_common.routes import ReadConn, WriteConn
from registry_contracts.accounts import HoldUnits, IssueUnits, MoveUnits, ReleaseHold, SerialRange, SettleHold

router = APIRouter(tags=["ledger"])
OUTBOX = Outbox("accounts")
Authority = Annotated[Principal, Depends(require_roles(Role.AUTHORITY))]
Overseer = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES))]
ParticipantKind = Literal["central", "delivery", "trading"]
Quantity = Annotated[int, Field(gt=0, strict=True, description="whole units")]
UnitTypeName = Literal["allowance", "offset"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SerialRangeIn(Strict):
    start: Annotated[int, Field(ge=1, strict=True)]
    end: Annotated[int, Field(ge=1, strict=True)]


class HoldIn(Strict):
    transfer_id: UUID = Field(default_factory=uuid4)
    sender_account_id: str = Field(min_length=1, max_length=40)
    receiver_account_id: str = Field(min_length=1, max_length=40)
    unit_type: UnitTypeName
    quantity: Quantity
    vintage: int | None = Field(default=None, ge=2000, le=2100)
    serial_range: SerialRangeIn | None = None


class MovementIn(Strict):
    movement_id: UUID = Field(default_factory=uuid4)
    kind: MovementKind
    from_account_id: str | None = Field(default=None, min_length=1, max_length=40)
    to_account_id: str = Field(min_length=1, max_length=40)
    unit_type: UnitTypeName
    quantity: Quantity
    vintage: int | None = Field(default=None, ge=2000, le=2100)
    origin: str = Field(default="", max_length=80)
    serial_range: SerialRangeIn | None = None
    reason: str | None = Field(default=None, max_length=1000)


class FreezeIn(Strict):
    reason: str = Field(min_length=1, max_length=1000)


def refused(refusal: Refusal) -> RegistryError:
    return RegistryError(refusal.code, field=refusal.field, **refusal.params)


def actor_of(request: Request, who: Principal) -> ledger.Actor:
    from registry_common.context import correlation_id_var, request_id_var

    return ledger.Actor(id=who.user_id, at=request.app.state.clock.now(),
                        correlation_id=correlation_id_var.get(), causation_id=request_id_var.get())


async def require_view(conn: AsyncConnection, account_id: str, who: Principal) -> None:
    await account_service.require_account_access(conn, who, account_id, "view")


async def idempotent(conn: AsyncConnection, key: str, who: Principal, body: BaseModel, status: int,
                     work: Any, location: Any = None) -> JSONResponse:
    """Reserve the key, do the work, remember the answer; a repeat with the same key gets the same."""
    stored = await idempotency.reserve(conn, key, who.user_id, body.model_dump(mode="json"))
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"])
    try:
        result = await work()
    except Refusal as refusal:
        raise refused(refusal) from refusal
    content = result if isinstance(result, dict) else result.model_dump(mode="json")
    await idempotency.remember(conn, key, who.user_id, status, content)
    headers = {"Location": location(content)} if location else None
    return JSONResponse(content, status_code=status, headers=headers)


# Holds ----------------------------------------------------------------------------------------------
@router.post("/api/v1/ledger/holds", status_code=201, responses={201: {"description": "units held"}})
async def create_hold(body: HoldIn, request: Request, conn: WriteConn, who: CurrentPrincipal,
                      key: idempotency.IdempotencyKey) -> JSONResponse:
    """Move units from the sender into a hold of their own (the first step of a transfer). The authority,
    or a representative with the ``initiate`` right on the sending account."""
    if not rule_for(MovementKind.TRANSFER_HOLD).may_initiate(who.roles, represents_sender=False):
        await account_service.require_account_access(conn, who, body.sender_account_id, "initiate")

    async def work() -> Any:
        command = HoldUnits(transfer_id=body.transfer_id, sender_account_id=body.sender_account_id,
                            receiver_account_id=body.receiver_account_id, unit_type=body.unit_type,
                            quantity=body.quantity, vintage=body.vintage, actor=who.user_id,
                            serial_range=SerialRange(**body.serial_range.model_dump()) if body.serial_range else None)
        held = await ledger.hold_units(conn, command, actor_of(request, who))
        if held is None:
            raise RegistryError("ledger.duplicate_movement", field="transfer_id")
        await OUTBOX.add(conn, held, correlation_id=str(body.transfer_id))
        await record_audit(conn, action="ledger.hold_created", entity_type="hold", entity_id=str(body.transfer_id),
                           actor=who.user_id, details=body.model_dump(mode="json"))
        return held

    return await idempotent(conn, key, who, body, 201, work,
                            location=lambda c: f"/api/v1/ledger/holds/{c['transfer_id']}")


@router.get("/api/v1/ledger/holds")
async def list_holds(conn: ReadConn, _who: Overseer, limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
                     cursor: Annotated[UUID | None, Query(description="`next_cursor` of the previous page")] = None,
                     state: Literal["held", "settled", "released"] | None = None) -> dict[str, Any]:
    """Every hold (for reconciliations), by transfer id."""
    query = select(holds.c.transfer_id, holds.c.state, holds.c.quantity, holds.c.sender_account_id,
                   holds.c.receiver_account_id).order_by(holds.c.transfer_id).limit(limit + 1)
    if cursor is not None:
        query = query.where(holds.c.transfer_id > cursor)
    if state is not None:
        query = query.where(holds.c.state == state)
    rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    return {"items": rows[:limit], "next_cursor": rows[limit - 1]["transfer_id"] if len(rows) > limit else None}


@router.get("/api/v1/ledger/blocks")
async def list_blocks(
    conn: ReadConn, _who: Overseer, limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    account_kind: Annotated[list[ParticipantKind] | None, Query(description="default: every participant kind")] = None,
    cursor: Annotated[int | None, Query(ge=0, description="`next_cursor` of the previous page")] = None,
) -> dict[str, Any]:
    """The serial blocks held by participant accounts of these kinds, by block id (for previews of what a
    cancellation would take: a view, the movement itself is checked by the ledger)."""
    query = (select(unit_blocks.c.id, unit_blocks.c.account_id, accounts.c.kind.label("account_kind"),
                    unit_blocks.c.unit_type, unit_blocks.c.vintage, unit_blocks.c.origin, unit_blocks.c.serial_start,
                    unit_blocks.c.serial_end)
             .join(accounts, accounts.c.id == unit_blocks.c.account_id)
             .where(accounts.c.kind.in_(account_kind or ["central", "delivery", "trading"]))
             .order_by(unit_blocks.c.id).limit(limit + 1))
    if cursor is not None:
        query = query.where(unit_blocks.c.id > cursor)
    rows = [dict(r) for r in (await conn.execute(query)).mappings()]
    return {"items": rows[:limit], "next_cursor": rows[limit - 1]["id"] if len(rows) > limit else None}


@router.get("/api/v1/ledger/holds/{transfer_id}")
async def get_hold(transfer_id: UUID, conn: ReadConn, who: CurrentPrincipal) -> dict[str, Any]:
    row = (await conn.execute(select(holds).where(holds.c.transfer_id == transfer_id))).mappings().first()
    if row is None:
        raise RegistryError("ledger.hold_not_found")
    await require_view(conn, row["sender_account_id"], who)
    return dict(row)


async def _close_hold(request: Request, conn: AsyncConnection, who: Principal, transfer_id: UUID,
                      settle: bool) -> dict[str, Any]:
    actor = actor_of(request, who)
    try:
        if settle:
            outcome = await ledger.settle_hold(conn, SettleHold(transfer_id=transfer_id, actor=who.user_id), actor)
        else:
            outcome = await ledger.release_hold(
                conn, ReleaseHold(transfer_id=transfer_id, reason="released by the authority", actor=who.user_id),
                actor)
    except Refusal as refusal:
        raise refused(refusal) from refusal
    if outcome is not None:
        await OUTBOX.add(conn, outcome, correlation_id=str(transfer_id))
        await record_audit(conn, action="ledger.hold_settled" if settle else "ledger.hold_released",
                           entity_type="hold", entity_id=str(transfer_id), actor=who.user_id)
    row = (await conn.execute(select(holds).where(holds.c.transfer_id == transfer_id))).mappings().first()
    if row is None:
        raise RegistryError("ledger.hold_not_found")
    return dict(row)


@router.post("/api/v1/ledger/holds/{transfer_id}/settle")
async def settle(transfer_id: UUID, request: Request, conn: WriteConn, who: Authority) -> dict[str, Any]:
    return await _close_hold(request, conn, who, transfer_id, settle=True)


@router.post("/api/v1/ledger/holds/{transfer_id}/release")
async def release(transfer_id: UUID, request: Request, conn: WriteConn, who: Authority) -> dict[str, Any]:
    return await _close_hold(request, conn, who, transfer_id, settle=False)


# Movements ------------------------------------------------------------------------------------------
async def execute_movement(conn: AsyncConnection, body: MovementIn, actor: ledger.Actor) -> Any:
    serial_range = SerialRange(**body.serial_range.model_dump()) if body.serial_range else None
    if body.kind in (MovementKind.ISSUANCE, MovementKind.OFFSET_ISSUANCE):
        if body.vintage is None:
            raise RegistryError("request.invalid", field="vintage")
        result = await ledger.issue_units(conn, IssueUnits(
            request_id=body.movement_id, to_account_id=body.to_account_id, unit_type=body.unit_type,
            vintage=body.vintage, quantity=body.quantity, origin=body.origin, kind=body.kind, reason=body.reason,
            actor=actor.id), actor)
    else:
        if body.from_account_id is None:
            raise RegistryError("request.invalid", field="from_account_id")
        result = await ledger.move_units(conn, MoveUnits(
            movement_id=body.movement_id, kind=body.kind, from_account_id=body.from_account_id,
            to_account_id=body.to_account_id, unit_type=body.unit_type, quantity=body.quantity,
            vintage=body.vintage, serial_range=serial_range, reason=body.reason, actor=actor.id), actor)
    await OUTBOX.add(conn, result, correlation_id=str(body.movement_id))
    return result


async def _run_approved_movement(conn: AsyncConnection, payload: dict[str, Any], decider: Principal) -> None:
    body = MovementIn.model_validate(payload["movement"])
    actor = ledger.Actor(id=payload["requested_by"], at=datetime.fromisoformat(payload["at"]),
                         correlation_id=str(body.movement_id), causation_id=decider.user_id)
    try:
        await execute_movement(conn, body, actor)
    except Refusal as refusal:
        raise refused(refusal) from refusal


register_approval_action("ledger.movement", _run_approved_movement)


@router.post("/api/v1/ledger/movements", status_code=201, responses={202: {"description": "awaiting approval"}})
async def create_movement(body: MovementIn, request: Request, conn: WriteConn, who: Authority,
                          key: idempotency.IdempotencyKey) -> JSONResponse:
    """A movement of the catalogue by the authority. Kinds that need four eyes (corrections, banking and
    end-of-programme cancellations) answer 202 with the approval a second authority user must give."""
    try:
        rule = rule_for(body.kind)
    except Refusal as refusal:
        raise refused(refusal) from refusal
    actor = actor_of(request, who)
    if rule.four_eyes:
        async def ask() -> dict[str, Any]:
            payload = {"movement": body.model_dump(mode="json"), "requested_by": who.user_id,
                       "at": actor.at.isoformat()}
            approval_id = await request_approval(conn, action="ledger.movement", payload=payload, requested_by=who,
                                                 required_roles=[Role.AUTHORITY], now=actor.at)
            return {"approval_id": str(approval_id), "state": "pending", "payload_hash": payload_hash(payload)}

        return await idempotent(conn, key, who, body, 202, ask,
                                location=lambda c: f"/api/v1/accounts/approvals/{c['approval_id']}")

    async def work() -> Any:
        result = await execute_movement(conn, body, actor)
        await record_audit(conn, action=f"ledger.{body.kind}", entity_type="movement",
                           entity_id=str(body.movement_id), actor=who.user_id, reason=body.reason)
        return result

    return await idempotent(conn, key, who, body, 201, work)


# Freeze ---------------------------------------------------------------------------------------------
async def _set_frozen(conn: AsyncConnection, who: Principal, frozen: bool, reason: str | None) -> dict[str, Any]:
    await conn.execute(update(ledger_settings).where(ledger_settings.c.id == 1)
                       .values(frozen=frozen, frozen_reason=reason, changed_by=who.user_id))
    await record_audit(conn, action="ledger.frozen" if frozen else "ledger.unfrozen", entity_type="ledger",
                       entity_id="1", actor=who.user_id, reason=reason)
    return {"frozen": frozen, "reason": reason}


@router.post("/api/v1/ledger/freeze")
async def freeze(body: FreezeIn, conn: WriteConn, who: Authority) -> dict[str, Any]:
    """Refuse every movement except corrections (and releases of holds) until lifted."""
    return await _set_frozen(conn, who, True, body.reason)


@router.post("/api/v1/ledger/unfreeze")
async def unfreeze(body: FreezeIn, conn: WriteConn, who: Authority) -> dict[str, Any]:
    return await _set_frozen(conn, who, False, body.reason)


@router.get("/api/v1/ledger/status")
async def status(conn: ReadConn, _who: Overseer) -> dict[str, Any]:
    row = (await conn.execute(select(ledger_settings).where(ledger_settings.c.id == 1))).mappings().one()
    return {"frozen": row["frozen"], "frozen_reason": row["frozen_reason"], "next_serial": row["next_serial"]}


@router.get("/api/v1/ledger/audit")
async def audit(conn: ReadConn, _who: Overseer) -> dict[str, Any]:
    """Recompute supply from blocks and journal; ``ok`` is false and every discrepancy is listed when
    issued ≠ held + in holds + cancelled, or an account's blocks disagree with its journal."""
    return await ledger.supply_audit(conn)


# Reading --------------------------------------------------------------------------------------------
@router.get("/api/v1/accounts/{account_id}/holdings", tags=["accounts"])
async def get_holdings(account_id: str, conn: ReadConn, who: CurrentPrincipal) -> dict[str, Any]:
    """Totals by unit type and vintage, with the blocks of serial numbers."""
    await require_view(conn, account_id, who)
    return await ledger.holdings(conn, account_id)


@router.get("/api/v1/accounts/{account_id}/journal", tags=["accounts"])
async def get_journal(account_id: str, conn: ReadConn, who: CurrentPrincipal,
                      limit: Annotated[int, Query(ge=1, le=500)] = 100,
                      cursor: Annotated[int | None, Query(ge=0)] = None) -> dict[str, Any]:
    await require_view(conn, account_id, who)
    query = (select(journal).where((journal.c.from_account_id == account_id) | (journal.c.to_account_id == account_id))
             .order_by(journal.c.id.desc()).limit(limit + 1))
    if cursor is not None:
        query = query.where(journal.c.id < cursor)
    rows = (await conn.execute(query)).mappings().all()
    items = [_journal_entry(r) for r in rows[:limit]]
    return {"items": items, "next_cursor": rows[limit - 1]["id"] if len(rows) > limit else None}


def _journal_entry(row: Any) -> dict[str, Any]:
    entry = {k: v for k, v in row.items() if k != "serials"}
    entry["serial_ranges"] = [
        {"start": r.lower, "end": r.upper - 1,
         "first": readable_serial(row["unit_type"], row["vintage"], r.lower),
         "last": readable_serial(row["unit_type"], row["vintage"], r.upper - 1)}
        for r in row["serials"]
    ]
    return entry


@router.get("/api/v1/units/{serial}", tags=["ledger"])
async def get_unit(serial: str, conn: ReadConn, _who: Overseer) -> dict[str, Any]:
    """The full history of one unit, from issuance on, and where it is now."""
    try:
        number = parse_serial(serial)
    except Refusal as refusal:
        raise refused(refusal) from refusal
    history = await ledger.unit_history(conn, number)
    if not history["history"]:
        raise RegistryError("request.not_found")
    first = history["history"][0]
    history["readable"] = readable_serial(first["unit_type"], first["vintage"], number)
    return history
