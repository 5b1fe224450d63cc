"""Transfers' handlers: requests by people, reactions to the ledger, the deadline sweeper, read models.
Each runs on the caller's transaction and writes the new state, its history, its audit row and its
outgoing messages (ledger commands, events) together."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.audit import record_audit
from registry_common.auth import OVERSIGHT_ROLES, Principal
from registry_common.errors import RegistryError, register_errors
from registry_common.messaging.consumer import HandlerContext, PermanentError
from registry_common.messaging.outbox import Outbox
from registry_contracts import Message
from registry_contracts.accounts import (
    HoldRefused,
    HoldReleased,
    HoldSettled,
    HoldUnits,
    MovementRefused,
    ReleaseHold,
    SettleHold,
    UnitsHeld,
)
from registry_contracts.transfers import (
    TransferAcceptanceReminder,
    TransferAwaitingAcceptance,
    TransferCompleted,
    TransferFailed,
    TransferRequested,
    TransferReversed,
)
from transfers.domain.saga import IllegalMessage, Outgoing, Reason, State, Transfer, TransferConflict
from transfers.tables import account_transfer_settings, directory, transfer_history, transfers

register_errors({
    "transfer.not_found": (404, "La transferencia no existe.", "The transfer does not exist."),
    "transfer.same_account": (422, "La cuenta de origen y la de destino son la misma.",
                              "The sending and receiving accounts are the same."),
    "transfer.not_allowed": (403, "No tiene el derecho de iniciar transferencias desde esta cuenta.",
                             "You do not have the right to initiate transfers from this account."),
    "transfer.not_receiver": (403, "Solo un representante de la cuenta receptora puede hacer esto.",
                              "Only a representative of the receiving account may do this."),
    "transfer.not_sender": (403, "Solo un representante de la cuenta de origen puede hacer esto.",
                            "Only a representative of the sending account may do this."),
    "transfer.same_approver": (403, "La aprobación debe darla otro usuario.", "Another user must approve."),
    "transfer.unknown_account": (422, "La cuenta {account_id} no existe.", "Account {account_id} does not exist."),
    "transfer.sender_not_active": (422, "La cuenta de origen no está activa ({state}).",
                                   "The sending account is not active ({state})."),
    "transfer.receiver_not_open": (422, "La cuenta receptora no puede recibir ({state}).",
                                   "The receiving account cannot receive ({state})."),
    "transfer.receiver_not_eligible": (422, "Una cuenta {kind} no puede recibir transferencias.",
                                       "A {kind} account cannot receive transfers."),
    "transfer.sender_not_eligible": (422, "Una cuenta {kind} no puede enviar transferencias.",
                                     "A {kind} account cannot send transfers."),
    "transfer.insufficient_units": (422, "Saldo insuficiente: hay {available}, se piden {requested}.",
                                    "Insufficient balance: {available} available, {requested} requested."),
    "transfer.not_awaiting_acceptance": (409, "La transferencia no espera aceptación (está {state}).",
                                         "The transfer is not awaiting acceptance (it is {state})."),
    "transfer.acceptance_window_closed": (409, "El plazo para aceptar venció (está {state}).",
                                          "The acceptance window has closed (it is {state})."),
    "transfer.not_cancellable": (409, "Solo se puede cancelar mientras espera aceptación (está {state}).",
                                 "It can only be cancelled while awaiting acceptance (it is {state})."),
    "transfer.not_awaiting_sender_approval": (409, "La transferencia no espera aprobación (está {state}).",
                                              "The transfer is not awaiting approval (it is {state})."),
})

OUTBOX = Outbox("transfers")
HOLDING_KINDS = frozenset({"central", "trading"})
EVENTS: dict[str, type[Message]] = {
    "transfer_requested": TransferRequested, "transfer_awaiting_acceptance": TransferAwaitingAcceptance,
    "transfer_completed": TransferCompleted, "transfer_reversed": TransferReversed, "transfer_failed": TransferFailed,
}


@dataclass(frozen=True)
class Step:
    """Who or what moved the transfer, and when (programme time)."""

    actor: str
    at: datetime
    event: str


def to_domain(row: Any) -> Transfer:
    return Transfer(id=row.id, sender_account_id=row.sender_account_id, receiver_account_id=row.receiver_account_id,
                    quantity=row.quantity, state=State(row.state), acceptance_deadline=row.acceptance_deadline,
                    reason=row.reason, failure_code=row.failure_code)


_LOAD_LOCKED = select(transfers).where(transfers.c.id == bindparam("transfer_id")).with_for_update()


async def load(conn: AsyncConnection, transfer_id: UUID) -> Any:
    """The transfer's row, locked FOR UPDATE for the rest of the transaction (None if there is none)."""
    return (await conn.execute(_LOAD_LOCKED, {"transfer_id": transfer_id})).first()


def _facts(row: Any) -> dict[str, Any]:
    return {"transfer_id": row.id, "sender_account_id": row.sender_account_id,
            "receiver_account_id": row.receiver_account_id, "unit_type": row.unit_type, "quantity": row.quantity,
            "vintage": row.vintage}


def _command(row: Any, outgoing: Outgoing) -> Message | None:
    if outgoing.command == "hold":
        return HoldUnits(transfer_id=row.id, sender_account_id=row.sender_account_id,
                         receiver_account_id=row.receiver_account_id, unit_type=row.unit_type,
                         quantity=row.quantity, vintage=row.vintage, actor=row.requested_by)
    if outgoing.command == "settle":
        return SettleHold(transfer_id=row.id)
    if outgoing.command == "release":
        return ReleaseHold(transfer_id=row.id, reason=outgoing.release_reason or "released")
    return None


def _event(name: str, row: Any) -> Message:
    facts = _facts(row)
    if name == "transfer_requested":
        return TransferRequested(**facts, requested_by=row.requested_by)
    if name == "transfer_awaiting_acceptance":
        return TransferAwaitingAcceptance(**facts, acceptance_deadline=row.acceptance_deadline)
    if name == "transfer_reversed":
        return TransferReversed(**facts, reason=row.reason or "")
    if name == "transfer_failed":
        return TransferFailed(**facts, code=row.failure_code or row.reason or "failed")
    return EVENTS[name](**facts)


# The new state and its history steps in one statement (oldest step first).
_SAVE_WITH_HISTORY = text("""
WITH saved AS (
    UPDATE transfers SET state = :new_state, reason = :new_reason, failure_code = :new_failure_code,
           acceptance_deadline = :new_deadline, updated_at = now(), version = version + 1
     WHERE id = CAST(:transfer_id AS uuid) RETURNING *),
steps AS (
    INSERT INTO transfer_history (transfer_id, from_state, to_state, event, actor, at)
    SELECT CAST(:transfer_id AS uuid), step.from_state, step.to_state, step.event, CAST(:actor AS text),
           CAST(:at AS timestamptz)
      FROM unnest(CAST(:from_states AS text[]), CAST(:to_states AS text[]), CAST(:events AS text[]))
           WITH ORDINALITY AS step(from_state, to_state, event, n)
     ORDER BY step.n)
SELECT * FROM saved""")


async def save(conn: AsyncConnection, row: Any, transfer: Transfer, outgoing: Outgoing | None, step: Step,
               causation: HandlerContext | None = None) -> Any:
    """Write the transfer's new state, its history and its messages in the caller's transaction."""
    new = (await conn.execute(_SAVE_WITH_HISTORY, {
        "transfer_id": row.id, "new_state": transfer.state, "new_reason": transfer.reason,
        "new_failure_code": transfer.failure_code, "new_deadline": transfer.acceptance_deadline,
        "actor": step.actor, "at": step.at, "from_states": [before for before, _, _ in transfer.history],
        "to_states": [after for _, after, _ in transfer.history],
        "events": [why for _, _, why in transfer.history]})).one()
    transfer.history.clear()
    if outgoing is not None:
        messages = [m for m in (_command(new, outgoing), *(_event(e, new) for e in outgoing.events)) if m]
        if causation is not None:
            await causation.publish_many(conn, messages)
        else:
            await OUTBOX.add_many(conn, messages, correlation_id=str(row.id))
    return new


# Read models --------------------------------------------------------------------------------------
_representatives, _accounts = directory.representatives, directory.accounts
_RIGHTS = select(_representatives.c.account_id, _representatives.c.rights).where(
    _representatives.c.account_id.in_(bindparam("account_ids", expanding=True)),
    _representatives.c.user_id == bindparam("user_id"))
# Each account's directory row with its transfer settings (no settings row = the defaults), in one query.
_ACCOUNTS = select(_accounts, func.coalesce(account_transfer_settings.c.sender_approval_required, False)
                   .label("sender_approval_required")).select_from(_accounts.outerjoin(
                       account_transfer_settings, account_transfer_settings.c.account_id == _accounts.c.account_id,
                   )).where(_accounts.c.account_id.in_(bindparam("account_ids", expanding=True)))


async def rights_by_account(conn: AsyncConnection, account_ids: list[str], user_id: str) -> dict[str, set[str]]:
    """The user's rights on each of the accounts (an empty set where none), in one query."""
    rights: dict[str, set[str]] = {account_id: set() for account_id in account_ids}
    try:
        user = UUID(user_id)
    except ValueError:
        return rights
    for row in (await conn.execute(_RIGHTS, {"account_ids": list(rights), "user_id": user})).all():
        rights[row.account_id] = set(row.rights)
    return rights


async def rights_on(conn: AsyncConnection, account_id: str, user_id: str) -> set[str]:
    return (await rights_by_account(conn, [account_id], user_id))[account_id]


async def known_account(conn: AsyncConnection, account_id: str, field: str) -> Any:
    return (await known_accounts_of(conn, [(account_id, field)]))[0]


async def known_accounts_of(conn: AsyncConnection, wanted: list[tuple[str, str]]) -> list[Any]:
    """The read-model rows of the (account id, field) pairs, in their order, in one query; the first
    unknown one is refused with its field."""
    found = {row.account_id: row for row in (await conn.execute(
        _ACCOUNTS, {"account_ids": sorted({account_id for account_id, _ in wanted})})).all()}
    for account_id, field in wanted:
        if account_id not in found:
            raise RegistryError("transfer.unknown_account", field=field, account_id=account_id)
    return [found[account_id] for account_id, _ in wanted]


# Requests by people ----------------------------------------------------------------------------------
_NEW_TRANSFER = insert(transfers).values(
    id=bindparam("id"), sender_account_id=bindparam("sender_account_id"),
    receiver_account_id=bindparam("receiver_account_id"), unit_type=bindparam("unit_type"),
    vintage=bindparam("vintage"), quantity=bindparam("quantity"), state=bindparam("state"),
    requested_by=bindparam("requested_by"), requested_at=bindparam("requested_at")).returning(transfers)
_HISTORY_ROW = insert(transfer_history)  # with a list of rows: one statement, compiled once
async def request_transfer(conn: AsyncConnection, *, body: dict[str, Any], who: Principal, now: datetime,
                           available: int | None, sender_rights: set[str] | None = None) -> Any:
    """``available``: the sender's balance for this unit type (and vintage) from the accounts API, or
    None when the pre-check could not be made (the hold enforces it anyway). ``sender_rights``: the
    caller's rights on the sending account if already read in this transaction."""
    sender_id, receiver_id = body["sender_account_id"], body["receiver_account_id"]
    if sender_id == receiver_id:
        raise RegistryError("transfer.same_account", field="receiver_account_id")
    if sender_rights is None:
        sender_rights = await rights_on(conn, sender_id, who.user_id)
    if "initiate" not in sender_rights:
        raise RegistryError("transfer.not_allowed", field="sender_account_id")
    sender, receiver = await known_accounts_of(conn, [(sender_id, "sender_account_id"),
                                                      (receiver_id, "receiver_account_id")])
    if sender.kind not in HOLDING_KINDS:
        raise RegistryError("transfer.sender_not_eligible", field="sender_account_id", kind=sender.kind)
    if sender.state != "active":
        raise RegistryError("transfer.sender_not_active", field="sender_account_id", state=sender.state)
    if receiver.kind not in HOLDING_KINDS:
        raise RegistryError("transfer.receiver_not_eligible", field="receiver_account_id", kind=receiver.kind)
    if receiver.state not in ("active", "suspended"):
        raise RegistryError("transfer.receiver_not_open", field="receiver_account_id", state=receiver.state)
    if available is not None and available < body["quantity"]:
        raise RegistryError("transfer.insufficient_units", field="quantity", available=available,
                            requested=body["quantity"])
    state = State.AWAITING_SENDER_APPROVAL if sender.sender_approval_required else State.REQUESTED
    transfer_id = uuid4()
    row = (await conn.execute(_NEW_TRANSFER, {
        "id": transfer_id, "sender_account_id": sender_id, "receiver_account_id": receiver_id,
        "unit_type": body["unit_type"], "vintage": body.get("vintage"), "quantity": body["quantity"],
        "state": state, "requested_by": who.user_id, "requested_at": now})).one()
    await conn.execute(_HISTORY_ROW, [{"transfer_id": transfer_id, "from_state": None, "to_state": state,
                                       "event": "requested", "actor": who.user_id, "at": now}])
    if state is State.REQUESTED:
        messages = [_command(row, Outgoing(command="hold")), _event("transfer_requested", row)]
        await OUTBOX.add_many(conn, [m for m in messages if m is not None], correlation_id=str(transfer_id))
    await record_audit(conn, action="transfer.requested", entity_type="transfer", entity_id=str(transfer_id),
                       actor=who.user_id, details={**body, "state": state})
    return row


async def act(conn: AsyncConnection, transfer_id: UUID, action: str, *, who: Principal, now: datetime) -> Any:
    """accept | reject (receiver), cancel (sender), approve | decline (a second sender representative)."""
    row = await load(conn, transfer_id)
    if row is None:
        raise RegistryError("transfer.not_found")
    rights = await _rights_on_sides(conn, row, who)
    if not _may_see_with(rights, who):
        raise RegistryError("transfer.not_found")
    if action in ("accept", "reject"):
        if not rights[row.receiver_account_id] & {"initiate", "approve"}:
            raise RegistryError("transfer.not_receiver")
    elif action == "cancel":
        if "initiate" not in rights[row.sender_account_id]:
            raise RegistryError("transfer.not_sender")
    else:
        if "approve" not in rights[row.sender_account_id]:
            raise RegistryError("transfer.not_sender")
        if who.user_id == row.requested_by:
            raise RegistryError("transfer.same_approver")
    transfer = to_domain(row)
    try:
        outgoing = {
            "accept": lambda: transfer.accept(now), "reject": transfer.reject, "cancel": transfer.cancel,
            "approve": transfer.approve_by_sender, "decline": transfer.decline_by_sender,
        }[action]()
    except TransferConflict as conflict:
        raise RegistryError(conflict.code, state=conflict.state) from conflict
    if outgoing is None and not transfer.history:
        return row  # repeated: answered with the state, nothing changes
    new = await save(conn, row, transfer, outgoing, Step(who.user_id, now, action))
    await record_audit(conn, action=f"transfer.{action}", entity_type="transfer", entity_id=str(transfer_id),
                       actor=who.user_id, details={"state": new.state})
    return new


async def _rights_on_sides(conn: AsyncConnection, row: Any, who: Principal) -> dict[str, set[str]]:
    """The caller's rights on the transfer's sending and receiving accounts (one query)."""
    return await rights_by_account(conn, [row.sender_account_id, row.receiver_account_id], who.user_id)


def _may_see_with(rights: dict[str, set[str]], who: Principal) -> bool:
    return who.has_any(OVERSIGHT_ROLES) or any(rights.values())


async def visible(conn: AsyncConnection, sender_account_id: str, receiver_account_id: str, who: Principal) -> bool:
    """Whether ``who`` may see a transfer between these accounts: oversight, or any right on either side."""
    if who.has_any(OVERSIGHT_ROLES):
        return True
    return _may_see_with(await rights_by_account(conn, [sender_account_id, receiver_account_id], who.user_id), who)


# Reactions to the ledger ---------------------------------------------------------------------------
async def _react(conn: AsyncConnection, transfer_id: UUID, ctx: HandlerContext, event: str, step: Any) -> None:
    row = await load(conn, transfer_id)
    if row is None:
        return  # a hold made outside the saga (the ledger's own API): not ours
    transfer = to_domain(row)
    try:
        outgoing = step(transfer)
    except IllegalMessage as illegal:
        raise PermanentError(f"{event} for transfer {transfer_id} in state {row.state}: {illegal}") from illegal
    if transfer.history:
        await save(conn, row, transfer, outgoing, Step("ledger", ctx.clock.now(), event), causation=ctx)


async def on_units_held(conn: AsyncConnection, message: UnitsHeld, ctx: HandlerContext) -> None:
    window = timedelta(seconds=ctx.settings.acceptance_window_seconds)
    await _react(conn, message.transfer_id, ctx, "units_held", lambda t: t.on_units_held(ctx.clock.now(), window))


async def on_hold_refused(conn: AsyncConnection, message: HoldRefused, ctx: HandlerContext) -> None:
    await _react(conn, message.transfer_id, ctx, "hold_refused", lambda t: t.on_hold_refused(message.code))


async def on_hold_settled(conn: AsyncConnection, message: HoldSettled, ctx: HandlerContext) -> None:
    await _react(conn, message.transfer_id, ctx, "hold_settled", lambda t: t.on_hold_settled())


async def on_hold_released(conn: AsyncConnection, message: HoldReleased, ctx: HandlerContext) -> None:
    await _react(conn, message.transfer_id, ctx, "hold_released", lambda t: t.on_hold_released())


async def on_movement_refused(conn: AsyncConnection, message: MovementRefused, ctx: HandlerContext) -> None:
    if message.command == "settle_hold":
        await _react(conn, message.reference_id, ctx, "settlement_refused",
                     lambda t: t.on_settlement_refused(message.code))


SUBSCRIPTIONS: dict[type[Message], Any] = {
    UnitsHeld: on_units_held, HoldRefused: on_hold_refused, HoldSettled: on_hold_settled,
    HoldReleased: on_hold_released, MovementRefused: on_movement_refused,
    **directory.subscriptions,
}


# The sweeper -----------------------------------------------------------------------------------------
async def sweep(ctx: Any) -> int:
    """Expire transfers past their deadline, remind receivers, drop stale sender approvals: every due
    item once (rows locked, state re-checked), on the programme clock."""
    now = ctx.clock.now()
    done = 0
    async with ctx.engine.begin() as conn:
        due = (await conn.execute(select(transfers).where(
            transfers.c.state == State.AWAITING_ACCEPTANCE, transfers.c.acceptance_deadline <= now)
            .order_by(transfers.c.acceptance_deadline).limit(200).with_for_update(skip_locked=True))).all()
        for row in due:
            transfer = to_domain(row)
            outgoing = transfer.expire(now)
            if outgoing is not None:
                await save(conn, row, transfer, outgoing, Step("sweeper", now, "deadline_passed"))
                done += 1
    done += await _remind(ctx, now)
    done += await _expire_sender_approvals(ctx, now)
    return done


async def _remind(ctx: Any, now: datetime) -> int:
    hours = sorted((int(h) for h in ctx.settings.reminder_hours.split(",") if h.strip()), reverse=True)
    if not hours:
        return 0
    sent = 0
    async with ctx.engine.begin() as conn:
        rows = (await conn.execute(select(transfers).where(
            transfers.c.state == State.AWAITING_ACCEPTANCE,
            transfers.c.acceptance_deadline <= now + timedelta(hours=max(hours)),
            transfers.c.acceptance_deadline > now,
        ).limit(500).with_for_update(skip_locked=True))).all()
        for row in rows:
            left = row.acceptance_deadline - now
            due = [h for h in hours if left <= timedelta(hours=h) and h not in row.reminders_sent]
            if not due:
                continue
            await conn.execute(update(transfers).where(transfers.c.id == row.id)
                               .values(reminders_sent=sorted({*row.reminders_sent, *due})))
            await OUTBOX.add(conn, TransferAcceptanceReminder(
                **_facts(row), acceptance_deadline=row.acceptance_deadline, hours_left=min(due)),
                correlation_id=str(row.id))
            sent += 1
    return sent


async def _expire_sender_approvals(ctx: Any, now: datetime) -> int:
    cutoff = now - timedelta(seconds=ctx.settings.sender_approval_window_seconds)
    async with ctx.engine.begin() as conn:
        rows = (await conn.execute(select(transfers).where(
            transfers.c.state == State.AWAITING_SENDER_APPROVAL, transfers.c.requested_at <= cutoff)
            .limit(200).with_for_update(skip_locked=True))).all()
        for row in rows:
            transfer = to_domain(row)
            outgoing = transfer.decline_by_sender(Reason.SENDER_APPROVAL_EXPIRED)
            await save(conn, row, transfer, outgoing, Step("sweeper", now, "sender_approval_expired"))
    return len(rows)

