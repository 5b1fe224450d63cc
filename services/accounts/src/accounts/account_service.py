"""Account holders and accounts: requests, the lifecycle, representatives, and who may see or act on
which account. Each handler runs on the caller's transaction; every change writes its audit row and its
events in that same transaction.

A transition locks the account rows it changes (``FOR UPDATE``, in id order); the ledger locks the same
rows when it moves units, so "closure only with zero holdings" cannot race a movement into the account.

The ledger calls :func:`representative_rights` and :func:`require_account_access`.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import Sequence, and_, bindparam, exists, false, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accounts.domain.ledger import AccountKind
from accounts.domain.lifecycle import (
    ACCOUNTS_OPENED_BY,
    NUMBER_SEQUENCE,
    OVERSIGHT,
    PAIRED_ACTIONS,
    REQUEST_PHASE,
    Access,
    AccountState,
    Action,
    LifecycleRefusal,
    RequestKind,
    access_decision,
    account_number,
    check_closable,
    check_linkable,
    may_request,
    next_state,
    normalise_rfc,
)
from accounts.tables import account_holders, accounts, holds, representatives, unit_blocks, users
from registry_common.audit import record_audit
from registry_common.auth import Principal
from registry_common.errors import RegistryError, register_errors
from registry_common.messaging.outbox import Outbox
from registry_contracts.accounts import (
    AccountClosed,
    AccountOpened,
    AccountReactivated,
    AccountSuspended,
    RepresentativeLinked,
    RepresentativeUnlinked,
)

register_errors({
    "account.not_found": (404, "La cuenta no existe.", "The account does not exist."),
    "account.illegal_transition": (
        409, "La acción {action} no está permitida para la cuenta {account_id} en estado {state}.",
        "The action {action} is not allowed on account {account_id} in state {state}."),
    "account.system_account": (
        409, "La cuenta {account_id} es una cuenta del sistema: la acción {action} no se le aplica.",
        "Account {account_id} is a system account: the action {action} does not apply to it."),
    "account.not_empty": (
        409, "La cuenta no puede cerrarse: conserva {blocks} bloques de unidades y {holds} retenciones abiertas.",
        "The account cannot be closed: it still has {blocks} blocks of units and {holds} open holds."),
    "account.right_missing": (
        403, "No tiene el derecho «{right}» sobre la cuenta {account_id}.",
        "You do not hold the right '{right}' on account {account_id}."),
    "account.kind_not_allowed": (
        403, "Su rol no puede solicitar una cuenta de tipo {kind}.",
        "Your role cannot request an account of kind {kind}."),
    "account.holder_choice": (
        422, "Indique el titular (holder) o su identificador (holder_id), uno de los dos.",
        "Give either the holder or its holder_id, exactly one of them."),
    "holder.not_found": (404, "El titular de cuenta no existe.", "The account holder does not exist."),
    "holder.invalid_tax_id": (
        422, "El RFC «{tax_id}» no tiene un formato válido.", "The RFC '{tax_id}' is not in a valid format."),
    "holder.tax_id_taken": (
        409, "Ya existe un titular con el RFC {tax_id}; use su holder_id.",
        "A holder with RFC {tax_id} already exists; use its holder_id."),
    "representative.not_found": (
        404, "El usuario no representa esta cuenta.", "The user does not represent this account."),
    "representative.user_deactivated": (
        409, "El usuario está desactivado y no puede representar cuentas.",
        "The user is deactivated and cannot represent accounts."),
})

OUTBOX = Outbox("accounts")
PAST = {Action.APPROVE: "approved", Action.REJECT: "rejected", Action.SUSPEND: "suspended",
        Action.REACTIVATE: "reactivated", Action.CLOSE: "closed"}
paired = accounts.alias("paired")


def refused(refusal: LifecycleRefusal, **params: Any) -> RegistryError:
    return RegistryError(refusal.code, field=refusal.field, **{**refusal.params, **params})


def as_uuid(value: str | UUID | None) -> UUID | None:
    """User ids are UUIDs; a principal whose id is not one represents nothing."""
    if value is None or isinstance(value, UUID):
        return value
    try:
        return UUID(value)
    except ValueError:
        return None


# Reading ---------------------------------------------------------------------------------------------
def _account_query() -> Any:
    """Accounts with their holder's name and, for an installation, the other account of the pair."""
    return (
        select(accounts, account_holders.c.name.label("holder_name"), paired.c.id.label("paired_account_id"))
        .select_from(
            accounts.outerjoin(account_holders, account_holders.c.id == accounts.c.holder_id)
            .outerjoin(paired, or_(paired.c.installation_id == accounts.c.id,
                                   paired.c.id == accounts.c.installation_id))
        )
    )


def public_account(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "kind": row.kind, "name": row.name, "state": row.state, "state_reason": row.state_reason,
        "holder_id": row.holder_id, "holder_name": row.holder_name, "installation_id": row.installation_id,
        "paired_account_id": row.paired_account_id, "requested_by": row.requested_by,
        "created_at": row.created_at, "updated_at": row.updated_at, "version": row.version,
    }


def public_holder(row: Any) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "tax_id": row.tax_id, "address": row.address,
            "contacts": list(row.contacts), "created_at": row.created_at}


_ACCOUNT = _account_query().where(accounts.c.id == bindparam("account_id"))
_RIGHTS = select(representatives.c.rights).where(representatives.c.account_id == bindparam("account_id"),
                                                 representatives.c.user_id == bindparam("user_id"))


async def get_account(conn: AsyncConnection, account_id: str) -> Any:
    row = (await conn.execute(_ACCOUNT, {"account_id": account_id})).first()
    if row is None:
        raise RegistryError("account.not_found", account_id=account_id)
    return row


def visible_to(user_id: str) -> Any:
    """The accounts a participant sees: those it represents (any right), and those it asked for while
    they are requested or rejected."""
    uid = as_uuid(user_id)
    represented = exists(select(representatives.c.account_id).where(
        representatives.c.account_id == accounts.c.id, representatives.c.user_id == uid)) if uid else false()
    requested = and_(accounts.c.requested_by == user_id, accounts.c.state.in_([s.value for s in REQUEST_PHASE]))
    return or_(represented, requested)


async def representative_rights(conn: AsyncConnection, account_id: str, user_id: str | UUID) -> set[str]:
    """The rights (``initiate``, ``approve``, ``view``) ``user_id`` holds on ``account_id``; empty
    when the user does not represent it."""
    uid = as_uuid(user_id)
    if uid is None:
        return set()
    rights = (await conn.execute(_RIGHTS, {"account_id": account_id, "user_id": uid})).scalar()
    return set(rights or ())


async def require_account_access(conn: AsyncConnection, principal: Principal, account_id: str,
                                 right: str | None = None) -> Any:
    """The account, if ``principal`` may read it (``right`` None or ``view``) or act on it with
    ``right`` (``initiate``, ``approve``). Oversight roles read every account; a representative reads
    its own and acts with the rights it holds. Someone who may not read the account gets
    ``account.not_found`` (404), as if it did not exist; someone who reads it but lacks the right gets
    ``account.right_missing`` (403). Authority movements are checked against the movement catalogue's
    roles, not here: oversight roles never act as representatives."""
    row = await get_account(conn, account_id)
    oversight_read = right in (None, "view") and principal.has_any(OVERSIGHT)
    rights = set() if oversight_read else await representative_rights(conn, account_id, principal.user_id)
    decision = access_decision(
        roles=principal.roles, rights=rights, needed=right,
        requester_in_request_phase=row.requested_by == principal.user_id and row.state in REQUEST_PHASE)
    if decision is Access.NOT_FOUND:
        raise RegistryError("account.not_found", account_id=account_id)
    if decision is Access.FORBIDDEN:
        raise RegistryError("account.right_missing", right=right, account_id=account_id)
    return row


async def list_accounts(conn: AsyncConnection, principal: Principal, *, kind: str | None = None,
                        state: str | None = None, holder_id: UUID | None = None, limit: int = 100,
                        cursor: str | None = None) -> dict[str, Any]:
    query = _account_query().order_by(accounts.c.id).limit(limit + 1)
    if not principal.has_any(OVERSIGHT):
        query = query.where(visible_to(principal.user_id))
    if cursor is not None:
        query = query.where(accounts.c.id > cursor)
    if kind is not None:
        query = query.where(accounts.c.kind == kind)
    if state is not None:
        query = query.where(accounts.c.state == state)
    if holder_id is not None:
        query = query.where(accounts.c.holder_id == holder_id)
    rows = (await conn.execute(query)).all()
    return {"items": [public_account(r) for r in rows[:limit]],
            "next_cursor": rows[limit - 1].id if len(rows) > limit else None}


def _holder_visible_to(user_id: str) -> Any:
    return exists(select(accounts.c.id).where(accounts.c.holder_id == account_holders.c.id, visible_to(user_id)))


async def get_holder(conn: AsyncConnection, principal: Principal, holder_id: UUID, *,
                     field: str | None = None) -> Any:
    """A holder the principal may see: every holder for oversight roles, for a participant the holders
    of accounts it sees. Others are answered as not existing."""
    query = select(account_holders).where(account_holders.c.id == holder_id)
    if not principal.has_any(OVERSIGHT):
        query = query.where(_holder_visible_to(principal.user_id))
    row = (await conn.execute(query)).first()
    if row is None:
        raise RegistryError("holder.not_found", field=field)
    return row


async def list_holders(conn: AsyncConnection, principal: Principal, *, tax_id: str | None = None,
                       limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    query = select(account_holders).order_by(account_holders.c.tax_id).limit(limit + 1)
    if not principal.has_any(OVERSIGHT):
        query = query.where(_holder_visible_to(principal.user_id))
    if cursor is not None:
        query = query.where(account_holders.c.tax_id > cursor)
    if tax_id is not None:
        query = query.where(account_holders.c.tax_id == tax_id.replace(" ", "").replace("-", "").upper())
    rows = (await conn.execute(query)).all()
    return {"items": [public_holder(r) for r in rows[:limit]],
            "next_cursor": rows[limit - 1].tax_id if len(rows) > limit else None}


# Requests --------------------------------------------------------------------------------------------
async def _create_holder(conn: AsyncConnection, data: dict[str, Any], actor: str) -> Any:
    try:
        tax_id = normalise_rfc(data["tax_id"])
    except LifecycleRefusal as refusal:
        raise refused(refusal) from refusal
    row = (await conn.execute(
        pg_insert(account_holders).values(
            id=uuid4(), name=data["name"], tax_id=tax_id, address=data["address"], contacts=data["contacts"],
        ).on_conflict_do_nothing(index_elements=[account_holders.c.tax_id]).returning(account_holders)
    )).first()
    if row is None:
        raise RegistryError("holder.tax_id_taken", field="holder.tax_id", tax_id=tax_id)
    await record_audit(conn, action="account_holder.created", entity_type="account_holder", entity_id=str(row.id),
                       actor=actor, details={"name": row.name, "tax_id": row.tax_id})
    return row


async def request_account(conn: AsyncConnection, *, data: dict[str, Any], principal: Principal) -> list[Any]:
    """Ask for an account (an installation: its central and delivery accounts together), in state
    ``requested``. Administrators ask for anyone; a participant for its own kind only, with a new
    holder or one whose accounts it already sees. Returns the accounts, the primary one first."""
    kind = RequestKind(data["kind"])
    if not may_request(principal.roles, kind):
        raise RegistryError("account.kind_not_allowed", field="kind", kind=kind.value)
    if (data.get("holder") is None) == (data.get("holder_id") is None):
        raise RegistryError("account.holder_choice", field="holder_id")
    if data.get("holder_id") is not None:
        holder = await get_holder(conn, principal, UUID(str(data["holder_id"])), field="holder_id")
    else:
        holder = await _create_holder(conn, data["holder"], principal.user_id)
    number = int(await conn.scalar(Sequence(NUMBER_SEQUENCE[kind]).next_value()))
    created: list[str] = []
    for account_kind in ACCOUNTS_OPENED_BY[kind]:
        account_id = account_number(account_kind, number)
        central = created[0] if account_kind is AccountKind.DELIVERY else None
        await conn.execute(insert(accounts).values(
            id=account_id, holder_id=holder.id, kind=account_kind.value, name=data["name"],
            installation_id=central, state=AccountState.REQUESTED.value, requested_by=principal.user_id))
        await record_audit(conn, action="account.requested", entity_type="account", entity_id=account_id,
                           actor=principal.user_id,
                           details={"kind": account_kind.value, "request_kind": kind.value, "name": data["name"],
                                    "holder_id": str(holder.id), "installation_id": central})
        created.append(account_id)
    return [await get_account(conn, account_id) for account_id in created]


# Transitions -----------------------------------------------------------------------------------------
async def _lock(conn: AsyncConnection, account_ids: list[str]) -> list[Any]:
    """Lock the rows in id order (the order the ledger locks them in too)."""
    return (await conn.execute(
        select(accounts).where(accounts.c.id.in_(account_ids)).order_by(accounts.c.id).with_for_update())).all()


async def _holdings(conn: AsyncConnection, account_ids: list[str]) -> tuple[int, int]:
    blocks = await conn.scalar(select(func.count()).select_from(unit_blocks)
                               .where(unit_blocks.c.account_id.in_(account_ids)))
    open_holds = await conn.scalar(select(func.count()).select_from(holds).where(
        holds.c.state == "held",
        or_(holds.c.sender_account_id.in_(account_ids), holds.c.receiver_account_id.in_(account_ids))))
    return int(blocks or 0), int(open_holds or 0)


async def transition(conn: AsyncConnection, account_id: str, action: Action, *, actor: str,
                     reason: str | None = None) -> Any:
    """Apply ``action`` to the account (and, for approve, reject and close, to the other account of its
    installation), under row locks. Returns the account named, as it is now."""
    current = await get_account(conn, account_id)
    group = [account_id]
    if action in PAIRED_ACTIONS and current.paired_account_id is not None:
        group.append(current.paired_account_id)
    rows = await _lock(conn, group)
    changes: list[tuple[Any, AccountState]] = []
    for row in rows:
        try:
            changes.append((row, next_state(row.kind, row.state, action)))
        except LifecycleRefusal as refusal:
            raise refused(refusal, account_id=row.id) from refusal
    if action is Action.CLOSE:
        blocks, open_holds = await _holdings(conn, group)
        try:
            check_closable(blocks=blocks, open_holds=open_holds)
        except LifecycleRefusal as refusal:
            raise refused(refusal, account_id=account_id) from refusal
    holder_name = current.holder_name
    for row, new_state in changes:
        await conn.execute(update(accounts).where(accounts.c.id == row.id).values(
            state=new_state.value, state_reason=reason, updated_at=func.now(), version=accounts.c.version + 1))
        await record_audit(conn, action=f"account.{PAST[action]}", entity_type="account", entity_id=row.id,
                           actor=actor, reason=reason,
                           details={"from": row.state, "to": new_state.value,
                                    "together_with": [r.id for r, _ in changes if r.id != row.id]})
        event: Any = None
        if action is Action.APPROVE:
            event = AccountOpened(account_id=row.id, kind=row.kind, holder_id=row.holder_id, holder_name=holder_name,
                                  installation_id=row.installation_id, name=row.name)
        elif action is Action.SUSPEND:
            event = AccountSuspended(account_id=row.id, reason=reason)
        elif action is Action.REACTIVATE:
            event = AccountReactivated(account_id=row.id, reason=reason)
        elif action is Action.CLOSE:
            event = AccountClosed(account_id=row.id, reason=reason)
        if event is not None:  # a rejected request was never an account anybody else knew of
            await OUTBOX.add(conn, event, correlation_id=row.id)
    return await get_account(conn, account_id)


# Representatives -------------------------------------------------------------------------------------
def public_representative(row: Any) -> dict[str, Any]:
    return {"account_id": row.account_id, "user_id": row.user_id, "username": row.username,
            "display_name": row.display_name, "rights": sorted(row.rights), "linked_at": row.linked_at}


async def _representative(conn: AsyncConnection, account_id: str, user_id: UUID) -> Any:
    return (await conn.execute(
        select(representatives, users.c.username, users.c.display_name)
        .select_from(representatives.join(users, users.c.id == representatives.c.user_id))
        .where(representatives.c.account_id == account_id, representatives.c.user_id == user_id))).first()


async def list_representatives(conn: AsyncConnection, account_id: str) -> list[dict[str, Any]]:
    rows = (await conn.execute(
        select(representatives, users.c.username, users.c.display_name)
        .select_from(representatives.join(users, users.c.id == representatives.c.user_id))
        .where(representatives.c.account_id == account_id).order_by(users.c.username))).all()
    return [public_representative(r) for r in rows]


async def link_representative(conn: AsyncConnection, account_id: str, *, user_id: UUID, rights: list[str],
                              actor: str) -> tuple[Any, str]:
    """Link a user to an account with ``rights``, or replace the rights of an existing link. Returns
    the link and ``linked``, ``changed`` or ``unchanged`` (an identical repeat changes, audits and
    publishes nothing)."""
    await get_account(conn, account_id)
    (account,) = await _lock(conn, [account_id])
    try:
        check_linkable(account.kind, account.state)
    except LifecycleRefusal as refusal:
        raise refused(refusal, account_id=account_id) from refusal
    user = (await conn.execute(select(users.c.id, users.c.active).where(users.c.id == user_id))).first()
    if user is None:
        raise RegistryError("user.not_found", field="user_id")
    if not user.active:
        raise RegistryError("representative.user_deactivated", field="user_id")
    wanted = sorted(set(rights))
    previous = await _representative(conn, account_id, user_id)
    if previous is not None and sorted(previous.rights) == wanted:
        return previous, "unchanged"
    await conn.execute(
        pg_insert(representatives).values(account_id=account_id, user_id=user_id, rights=wanted)
        .on_conflict_do_update(index_elements=[representatives.c.account_id, representatives.c.user_id],
                               set_={"rights": wanted}))
    await record_audit(conn, action="representative.linked", entity_type="account", entity_id=account_id,
                       actor=actor, details={"user_id": str(user_id), "rights": wanted,
                                             "previous_rights": sorted(previous.rights) if previous else None})
    await OUTBOX.add(conn, RepresentativeLinked(account_id=account_id, user_id=user_id, rights=wanted),
                     correlation_id=account_id)
    return await _representative(conn, account_id, user_id), "linked" if previous is None else "changed"


async def unlink_representative(conn: AsyncConnection, account_id: str, *, user_id: UUID, actor: str) -> None:
    await get_account(conn, account_id)
    await _lock(conn, [account_id])
    removed = (await conn.execute(
        representatives.delete().where(representatives.c.account_id == account_id,
                                       representatives.c.user_id == user_id)
        .returning(representatives.c.rights))).first()
    if removed is None:
        raise RegistryError("representative.not_found", field="user_id")
    await record_audit(conn, action="representative.unlinked", entity_type="account", entity_id=account_id,
                       actor=actor, details={"user_id": str(user_id), "rights": sorted(removed.rights)})
    await OUTBOX.add(conn, RepresentativeUnlinked(account_id=account_id, user_id=user_id), correlation_id=account_id)
