"""Notifications' handlers: the users read model from accounts' events (the account directory's are the
shared ones), and every notified event turned into one row per (event, recipient, channel) in the
consumer's transaction. Nothing leaves the process here: the delivery worker sends e-mails and webhooks
later (outbox pattern for side effects)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4, uuid5

from sqlalchemy import String, any_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from notifications.domain.catalogue import BATCHES, RULES, Rule
from notifications.domain.signing import message_id, webhook_id
from notifications.rendering import language_of, render
from notifications.tables import (
    directory,
    known_users,
    notifications,
    webhook_subscriptions,
)
from registry_common.messaging.consumer import HandlerContext
from registry_contracts import Message
from registry_contracts.accounts import (
    UserDeactivated,
    UserRegistered,
    UserUpdated,
)


# Read models ------------------------------------------------------------------------------------
async def on_user(conn: AsyncConnection, message: UserRegistered | UserUpdated, ctx: HandlerContext) -> None:
    values = {"username": message.username, "display_name": message.display_name, "email": message.email,
              "language": language_of(message.language), "roles": sorted(message.roles), "active": message.active}
    await conn.execute(pg_insert(known_users).values(user_id=message.user_id, **values).on_conflict_do_update(
        index_elements=["user_id"], set_={**values, "updated_at": func.now()}))


async def on_user_deactivated(conn: AsyncConnection, message: UserDeactivated, ctx: HandlerContext) -> None:
    await conn.execute(update(known_users).where(known_users.c.user_id == message.user_id)
                       .values(active=False, updated_at=func.now()))


# Notified events -----------------------------------------------------------------------------------
def webhook_body(*, event_id: UUID, event_type: str, occurred_at: datetime, notification_type: str,
                 account_id: str, side: str, facts: dict[str, Any]) -> str:
    """The JSON POSTed to a webhook (Standard Webhooks' type/timestamp/data), fixed once: every retry
    sends the same bytes."""
    return json.dumps({"type": event_type, "timestamp": occurred_at.isoformat(), "data": {
        "event_id": str(event_id), "notification_type": notification_type, "account_id": account_id,
        "side": side, **facts}}, separators=(",", ":"), sort_keys=True, default=str)


# Every column a notification row may be given; one not given is NULL (none of them has a default).
_ROW_COLUMNS = ("event_id", "event_type", "notification_type", "occurred_at", "recipient", "channel", "user_id",
                "account_id", "subscription_id", "address", "language", "subject", "body", "stable_id", "state",
                "next_attempt_at", "give_up_at", "delivered_at")


_RECORD = pg_insert(notifications).on_conflict_do_nothing(constraint="uq_notifications_once")


async def _record_all(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """The rows in one statement, one row per (event, recipient, channel): a second try inserts nothing."""
    if rows:
        await conn.execute(_RECORD, [{"id": uuid4(), **dict.fromkeys(_ROW_COLUMNS), **row} for row in rows])


# The contacts of any number of accounts, each in one statement built once (the accounts bound as one array).
_ACCOUNT_IDS = bindparam("account_ids", type_=ARRAY(String))
_PEOPLE_OF_ACCOUNTS = (
    select(directory.representatives.c.account_id.label("party_account_id"), known_users)
    .join(directory.representatives, directory.representatives.c.user_id == known_users.c.user_id)
    .where(directory.representatives.c.account_id == any_(_ACCOUNT_IDS), known_users.c.active)
    .order_by(known_users.c.user_id))
_HOOKS_OF_ACCOUNTS = (
    select(webhook_subscriptions)
    .where(webhook_subscriptions.c.account_id == any_(_ACCOUNT_IDS), webhook_subscriptions.c.active)
    .order_by(webhook_subscriptions.c.id))


async def _contacts(conn: AsyncConnection, accounts: list[str]) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """Every account's active people and active webhooks, in two queries whatever the number of accounts."""
    people_of: dict[str, list[Any]] = {account_id: [] for account_id in accounts}
    hooks_of: dict[str, list[Any]] = {account_id: [] for account_id in accounts}
    if not accounts:
        return people_of, hooks_of
    for person in (await conn.execute(_PEOPLE_OF_ACCOUNTS, {"account_ids": accounts})).all():
        people_of[person.party_account_id].append(person)
    for hook in (await conn.execute(_HOOKS_OF_ACCOUNTS, {"account_ids": accounts})).all():
        hooks_of[hook.account_id].append(hook)
    return people_of, hooks_of


def _rows_for(message: Message, event_id: UUID, ctx: HandlerContext, people_of: dict[str, list[Any]],
              hooks_of: dict[str, list[Any]], now: datetime) -> list[dict[str, Any]]:
    """One notified event's rows, one per (recipient, channel): each party's people by inbox and e-mail,
    its webhooks, and the authority's addresses when the rule says so."""
    rule: Rule = RULES[type(message)]
    settings, occurred_at = ctx.settings, ctx.envelope.occurred_at
    event_type = type(message).routing_key()
    give_up_at = now + timedelta(seconds=settings.delivery_give_up_after_seconds)
    facts = message.model_dump(mode="json")
    common = {"event_id": event_id, "event_type": event_type, "notification_type": rule.notification_type,
              "occurred_at": occurred_at}
    pending = {"state": "pending", "next_attempt_at": now, "give_up_at": give_up_at}
    timezone = settings.programme_timezone
    rows: list[dict[str, Any]] = []
    for account_id, side in rule.parties(message):
        texts: dict[str, tuple[str, str]] = {}  # (subject, body) by language: a party's people share them
        for person in people_of[account_id]:
            recipient = f"user:{person.user_id}"
            language = language_of(person.language)
            if language not in texts:
                texts[language] = render(rule.notification_type, language, facts, side=side, timezone=timezone)
            subject, body = texts[language]
            base = {**common, "recipient": recipient, "user_id": person.user_id, "account_id": account_id,
                    "language": language, "subject": subject, "body": body}
            rows.append({**base, "channel": "inbox", "address": None, "state": "delivered", "delivered_at": now,
                         "stable_id": str(webhook_id(event_id, recipient))})
            if person.email and person.email_enabled:
                rows.append({**base, **pending, "channel": "email", "address": person.email,
                             "stable_id": message_id(event_id, recipient, settings.message_id_domain)})
        for hook in hooks_of[account_id]:
            recipient = f"webhook:{hook.id}"
            body = webhook_body(event_id=event_id, event_type=event_type, occurred_at=occurred_at,
                                notification_type=rule.notification_type, account_id=account_id, side=side,
                                facts=facts)
            rows.append({**common, **pending, "recipient": recipient, "channel": "webhook", "account_id": account_id,
                         "subscription_id": hook.id, "address": hook.url, "language": "en",
                         "subject": rule.notification_type, "body": body, "stable_id": webhook_id(event_id, recipient)})
    if rule.authority:
        for address in settings.authority_addresses:
            recipient = f"authority:{address.lower()}"
            language = settings.authority_language
            subject, body = render(rule.notification_type, language, facts, side="authority", timezone=timezone)
            rows.append({**common, **pending, "recipient": recipient, "channel": "email", "address": address,
                         "language": language, "subject": subject, "body": body,
                         "stable_id": message_id(event_id, recipient, settings.message_id_domain)})
    return rows


async def _notify_all(conn: AsyncConnection, events: list[tuple[UUID, Message]], ctx: HandlerContext) -> None:
    """Notified events (event id, event): every party's people and webhooks in two queries, then every row
    in one statement."""
    now = datetime.now(ctx.envelope.occurred_at.tzinfo)
    accounts = sorted({account_id for _, event in events for account_id, _ in RULES[type(event)].parties(event)})
    people_of, hooks_of = await _contacts(conn, accounts)
    await _record_all(conn, [row for event_id, event in events
                             for row in _rows_for(event, event_id, ctx, people_of, hooks_of, now)])


async def notify(conn: AsyncConnection, message: Message, ctx: HandlerContext) -> None:
    await _notify_all(conn, [(UUID(str(ctx.envelope.message_id)), message)], ctx)


async def notify_batch(conn: AsyncConnection, message: Message, ctx: HandlerContext) -> None:
    """A batch event told as the single events it stands for, in this one transaction and one insert. Each
    line's event id is derived from the batch's message id and the line's key, so a redelivered batch gives
    the same ids and ``uq_notifications_once`` makes it insert nothing."""
    batch_id = UUID(str(ctx.envelope.message_id))
    await _notify_all(conn, [(uuid5(batch_id, key), event) for key, event in BATCHES[type(message)](message)], ctx)


SUBSCRIPTIONS: dict[type[Message], Any] = {
    UserRegistered: on_user, UserUpdated: on_user, UserDeactivated: on_user_deactivated,
    **directory.subscriptions,
    **dict.fromkeys(RULES, notify),
    **dict.fromkeys(BATCHES, notify_batch),
}
