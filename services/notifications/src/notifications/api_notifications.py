"""``/api/v1/notifications`` (the current user's inbox and preferences) and ``/api/v1/webhook-subscriptions``
(an account's signed webhooks, their deliveries and attempts, a manual resend)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, tuple_, update

from notifications.delivery import check_target
from notifications.domain.addresses import TargetRefused, check_url
from notifications.domain.signing import new_secret
from notifications.tables import (
    delivery_attempts,
    directory,
    known_users,
    notifications,
    webhook_subscriptions,
)
from registry_common.audit import record_audit
from registry_common.auth import OVERSIGHT_ROLES, CurrentPrincipal, Principal, Role
from registry_common.errors import RegistryError, register_errors
from registry_common.routes import ReadConn, WriteConn
from registry_common.settings import Environment

register_errors({
    "notification.not_found": (404, "La notificación no existe.", "The notification does not exist."),
    "notification.user_unknown": (404, "El registro aún no conoce a este usuario.",
                                  "The registry does not know this user yet."),
    "notification.subscription_not_found": (404, "La suscripción de webhook no existe.",
                                            "The webhook subscription does not exist."),
    "notification.delivery_not_found": (404, "La entrega no existe.", "The delivery does not exist."),
    "notification.delivery_pending": (409, "La entrega ya está en cola (intento {attempts}).",
                                      "The delivery is already queued (attempt {attempts})."),
    "notification.not_representative": (
        403, "Solo un representante de la cuenta o un administrador puede hacer esto.",
        "Only a representative of the account or an administrator may do this."),
    "notification.unknown_account": (422, "La cuenta {account_id} no existe.", "Account {account_id} does not exist."),
    "notification.webhook_not_https": (422, "La URL del webhook debe usar HTTPS.", "The webhook URL must use HTTPS."),
    "notification.webhook_url_invalid": (422, "La URL del webhook no es válida ({detail}).",
                                         "The webhook URL is not valid ({detail})."),
    "notification.webhook_private_target": (
        422, "La URL del webhook apunta a una dirección no pública ({detail}).",
        "The webhook URL points at a non-public address ({detail})."),
    "notification.webhook_unresolvable": (422, "El nombre del servidor del webhook no se resuelve ({detail}).",
                                          "The webhook host does not resolve ({detail})."),
})

inbox = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])
hooks = APIRouter(prefix="/api/v1/webhook-subscriptions", tags=["notifications"])
Limit = Annotated[int, Query(ge=1, le=200)]
INBOX_FIELDS = ("id", "event_id", "event_type", "notification_type", "account_id", "language", "subject", "body",
                "occurred_at", "created_at", "read_at")


def _uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


def _json(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for name in fields:
        value = getattr(row, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else str(value) if isinstance(value, UUID) \
            else value
    return out


# The inbox --------------------------------------------------------------------------------------------
@inbox.get("")
async def list_inbox(conn: ReadConn, who: CurrentPrincipal, limit: Limit = 50,
                     cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
                     unread: bool | None = None) -> dict[str, Any]:
    """Your own notifications, newest first."""
    me = _uuid(who.user_id)
    if me is None:
        return {"items": [], "next_cursor": None, "unread": 0}
    query = (select(notifications).where(notifications.c.user_id == me, notifications.c.channel == "inbox")
             .order_by(notifications.c.created_at.desc(), notifications.c.id.desc()).limit(limit + 1))
    if unread is not None:
        query = query.where(notifications.c.read_at.is_(None) if unread else notifications.c.read_at.is_not(None))
    if cursor:
        at, _, last = cursor.partition("|")
        try:
            position = (datetime.fromisoformat(at), UUID(last))
        except ValueError as exc:
            raise RegistryError("request.invalid", field="cursor") from exc
        query = query.where(tuple_(notifications.c.created_at, notifications.c.id) < tuple_(*position))
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    unread_count = (await conn.execute(select(func.count()).where(
        notifications.c.user_id == me, notifications.c.channel == "inbox", notifications.c.read_at.is_(None)
    ))).scalar_one()
    following = f"{page[-1].created_at.isoformat()}|{page[-1].id}" if len(rows) > limit else None
    return {"items": [_json(r, INBOX_FIELDS) for r in page], "next_cursor": following, "unread": unread_count}


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: bool = Field(description="receive notifications by e-mail (the inbox always receives them)")


async def _me(conn: Any, who: Principal) -> Any:
    me = _uuid(who.user_id)
    row = None if me is None else (await conn.execute(select(known_users).where(known_users.c.user_id == me))).first()
    if row is None:
        raise RegistryError("notification.user_unknown")
    return row


def _preferences(row: Any) -> dict[str, Any]:
    return {"user_id": str(row.user_id), "email": row.email_enabled, "inbox": True, "language": row.language,
            "address": row.email}


@inbox.get("/preferences")
async def get_preferences(conn: ReadConn, who: CurrentPrincipal) -> dict[str, Any]:
    """Your channels (e-mail on or off; the inbox always) and language (from your user record)."""
    return _preferences(await _me(conn, who))


@inbox.put("/preferences")
async def put_preferences(body: PreferencesIn, conn: WriteConn, who: CurrentPrincipal) -> dict[str, Any]:
    row = await _me(conn, who)
    new = (await conn.execute(update(known_users).where(known_users.c.user_id == row.user_id)
                              .values(email_enabled=body.email).returning(known_users))).one()
    await record_audit(conn, action="notification.preferences_updated", entity_type="user",
                       entity_id=str(row.user_id), actor=who.user_id, details={"email": body.email})
    return _preferences(new)


@inbox.post("/{notification_id}/read")
async def mark_read(notification_id: UUID, conn: WriteConn, who: CurrentPrincipal) -> dict[str, Any]:
    """Mark one of your notifications as read (someone else's answers 404)."""
    me = _uuid(who.user_id)
    row = None if me is None else (await conn.execute(select(notifications).where(
        notifications.c.id == notification_id, notifications.c.user_id == me, notifications.c.channel == "inbox")
        .with_for_update())).first()
    if row is None:
        raise RegistryError("notification.not_found")
    if row.read_at is None:
        row = (await conn.execute(update(notifications).where(notifications.c.id == row.id)
                                  .values(read_at=func.now()).returning(notifications))).one()
        await record_audit(conn, action="notification.read", entity_type="notification",
                           entity_id=str(row.id), actor=who.user_id)
    return _json(row, INBOX_FIELDS)


# Webhook subscriptions --------------------------------------------------------------------------------
class SubscriptionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    account_id: str = Field(min_length=1, max_length=40)
    url: str = Field(min_length=9, max_length=2000, description="https:// only")
    description: str | None = Field(default=None, max_length=200)


SUBSCRIPTION_FIELDS = ("id", "account_id", "url", "description", "active", "created_by", "created_at",
                       "disabled_at")
DELIVERY_FIELDS = ("id", "event_id", "event_type", "notification_type", "stable_id", "state", "attempts",
                   "next_attempt_at", "give_up_at", "delivered_at", "last_error", "created_at")


async def _represents(conn: Any, who: Principal, account_id: str) -> bool:
    return bool(await directory.rights_on(conn, account_id, who.user_id))


async def _may_manage(conn: Any, who: Principal, account_id: str) -> bool:
    return Role.ADMINISTRATOR in who.roles or await _represents(conn, who, account_id)


async def _subscription(conn: Any, subscription_id: UUID, who: Principal, *, manage: bool) -> Any:
    row = (await conn.execute(select(webhook_subscriptions).where(
        webhook_subscriptions.c.id == subscription_id))).first()
    if row is None:
        raise RegistryError("notification.subscription_not_found")
    if await _may_manage(conn, who, row.account_id):
        return row
    if not manage and who.has_any(OVERSIGHT_ROLES):
        return row
    raise RegistryError("notification.subscription_not_found")


@hooks.post("", status_code=201)
async def create_subscription(body: SubscriptionIn, request: Request, conn: WriteConn,
                              who: CurrentPrincipal) -> dict[str, Any]:
    """Register an HTTPS endpoint for an account you represent (or any, as administrator). The answer
    carries the signing secret (``whsec_...``, Standard Webhooks) this once; it is never shown again."""
    if not await _may_manage(conn, who, body.account_id):
        raise RegistryError("notification.not_representative", field="account_id")
    if await directory.account(conn, body.account_id) is None:
        raise RegistryError("notification.unknown_account", field="account_id", account_id=body.account_id)
    try:
        if request.app.state.settings.environment is Environment.PRODUCTION:
            await check_target(body.url, production=True)
        else:
            check_url(body.url)
    except TargetRefused as refused:
        raise RegistryError(refused.code, field="url", detail=str(refused)) from refused
    secret = new_secret()
    row = (await conn.execute(webhook_subscriptions.insert().values(
        id=uuid4(), account_id=body.account_id, url=body.url, secret=secret, description=body.description,
        created_by=who.user_id).returning(webhook_subscriptions))).one()
    await record_audit(conn, action="webhook_subscription.created", entity_type="webhook_subscription",
                       entity_id=str(row.id), actor=who.user_id,
                       details={"account_id": body.account_id, "url": body.url})
    return {**_json(row, SUBSCRIPTION_FIELDS), "secret": secret}


@hooks.get("")
async def list_subscriptions(conn: ReadConn, who: CurrentPrincipal, account_id: str | None = None
                             ) -> dict[str, Any]:
    query = select(webhook_subscriptions).order_by(webhook_subscriptions.c.created_at.desc())
    if not who.has_any(OVERSIGHT_ROLES):
        query = query.where(webhook_subscriptions.c.account_id.in_(directory.accounts_of(who.user_id)))
    if account_id is not None:
        query = query.where(webhook_subscriptions.c.account_id == account_id)
    return {"items": [_json(r, SUBSCRIPTION_FIELDS) for r in (await conn.execute(query.limit(500))).all()]}


@hooks.get("/{subscription_id}")
async def get_subscription(subscription_id: UUID, conn: ReadConn, who: CurrentPrincipal) -> dict[str, Any]:
    return _json(await _subscription(conn, subscription_id, who, manage=False), SUBSCRIPTION_FIELDS)


@hooks.delete("/{subscription_id}")
async def disable_subscription(subscription_id: UUID, conn: WriteConn, who: CurrentPrincipal) -> dict[str, Any]:
    """Stop sending to this endpoint (deliveries already recorded stay for the record)."""
    row = await _subscription(conn, subscription_id, who, manage=True)
    if row.active:
        row = (await conn.execute(update(webhook_subscriptions).where(webhook_subscriptions.c.id == row.id)
                                  .values(active=False, disabled_at=func.now())
                                  .returning(webhook_subscriptions))).one()
        await record_audit(conn, action="webhook_subscription.disabled", entity_type="webhook_subscription",
                           entity_id=str(row.id), actor=who.user_id, details={"account_id": row.account_id})
    return _json(row, SUBSCRIPTION_FIELDS)


@hooks.get("/{subscription_id}/deliveries")
async def list_deliveries(subscription_id: UUID, conn: ReadConn, who: CurrentPrincipal, limit: Limit = 100,
                          state: str | None = None) -> dict[str, Any]:
    """This endpoint's deliveries, newest first, each with every attempt."""
    await _subscription(conn, subscription_id, who, manage=False)
    query = (select(notifications).where(notifications.c.subscription_id == subscription_id,
                                         notifications.c.channel == "webhook")
             .order_by(notifications.c.created_at.desc()).limit(limit))
    if state is not None:
        query = query.where(notifications.c.state == state)
    rows = (await conn.execute(query)).all()
    attempts: dict[Any, list[dict[str, Any]]] = {r.id: [] for r in rows}
    if rows:
        for a in (await conn.execute(select(delivery_attempts).where(
                delivery_attempts.c.notification_id.in_(list(attempts))).order_by(delivery_attempts.c.id))).all():
            attempts[a.notification_id].append(_json(a, ("attempt", "started_at", "finished_at", "outcome",
                                                         "status_code", "error")))
    return {"items": [{**_json(r, DELIVERY_FIELDS), "attempt_log": attempts[r.id]} for r in rows]}


@hooks.post("/{subscription_id}/deliveries/{delivery_id}/resend", status_code=202)
async def resend(subscription_id: UUID, delivery_id: UUID, request: Request, conn: WriteConn,
                 who: CurrentPrincipal) -> dict[str, Any]:
    """Send this delivery again (same webhook-id, fresh retry window), e.g. after it was given up."""
    await _subscription(conn, subscription_id, who, manage=True)
    row = (await conn.execute(select(notifications).where(
        notifications.c.id == delivery_id, notifications.c.subscription_id == subscription_id).with_for_update()
    )).first()
    if row is None:
        raise RegistryError("notification.delivery_not_found")
    if row.state == "pending":
        raise RegistryError("notification.delivery_pending", attempts=row.attempts)
    now = datetime.now(UTC)
    give_up = now + timedelta(seconds=request.app.state.settings.delivery_give_up_after_seconds)
    row = (await conn.execute(update(notifications).where(notifications.c.id == row.id).values(
        state="pending", next_attempt_at=now, give_up_at=give_up, delivered_at=None).returning(notifications))).one()
    await record_audit(conn, action="webhook_delivery.resent", entity_type="notification", entity_id=str(row.id),
                       actor=who.user_id, details={"subscription_id": str(subscription_id),
                                                   "stable_id": row.stable_id})
    return _json(row, DELIVERY_FIELDS)
