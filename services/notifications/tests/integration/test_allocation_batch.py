"""An allocation batch event (one per table per ledger batch answer) told on notifications' real database
exactly as the single ``allocation_delivered`` events it stands for would be: the same rows (type, recipient,
channel, language, subject, body), one event id per line, and a redelivered batch adds nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import text

from notifications import service
from registry_common.clock import ProgrammeClock
from registry_common.db import make_engine
from registry_common.messaging.consumer import HandlerContext
from registry_common.messaging.envelope import Envelope
from registry_common.messaging.outbox import Outbox
from registry_common.testing.fixtures import settings_from_env
from registry_contracts import Message
from registry_contracts.issuance import AllocationDelivered, AllocationDeliveredBatch, DeliveredLine

pytestmark = pytest.mark.integration


class Notifications:
    def __init__(self, engine: Any, settings: Any):
        self.engine, self.settings = engine, settings

    async def sql(self, statement: str, **params: Any) -> Any:
        async with self.engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None

    async def deliver(self, message: Message, envelope: Envelope | None = None) -> Envelope:
        """Hand an event to notifications' handler, as the consumer would (one transaction)."""
        envelope = envelope or Envelope.wrap(message, producer="issuance")
        ctx = HandlerContext(envelope=envelope, outbox=Outbox("notifications"), clock=ProgrammeClock(None),
                             settings=self.settings)
        async with self.engine.begin() as conn:
            await service.SUBSCRIPTIONS[type(message)](conn, message, ctx)
        return envelope

    async def rows(self, accounts: list[str]) -> list[Any]:
        return await self.sql("SELECT event_id, event_type, notification_type, recipient, channel, account_id, "
                              "language, subject, body, address, state FROM notifications "
                              "WHERE account_id = ANY(:a) ORDER BY account_id, recipient, channel", a=accounts)


@pytest.fixture(scope="module")
async def notifications(provisioned_services: dict[str, str]) -> AsyncIterator[Notifications]:
    settings = settings_from_env(provisioned_services, "notifications")
    engine = make_engine(settings.owner_database_url, pool_size=0, application_name="notifications-test")
    yield Notifications(engine, settings)
    await engine.dispose()


async def installations(db: Notifications) -> list[str]:
    """Three installations: one English representative with e-mail and a webhook, two representatives (one
    Spanish with e-mail, one without), and only a webhook."""
    tag = uuid4().hex[:8]
    accounts = [f"MX-A-{tag}", f"MX-B-{tag}", f"MX-C-{tag}"]
    people = [(accounts[0], "en", f"a-{tag}@example.test"), (accounts[1], "es", f"b-{tag}@example.test"),
              (accounts[1], "es", None)]
    for account in accounts:
        await db.sql("INSERT INTO known_accounts (account_id, kind, state) VALUES (:a, 'installation', 'active')",
                     a=account)
    for account, language, email in people:
        user_id = uuid4()
        await db.sql("INSERT INTO known_users (user_id, username, email, language) VALUES (:u, :n, :e, :l)",
                     u=user_id, n=f"user-{user_id.hex[:8]}", e=email, l=language)
        await db.sql("INSERT INTO known_representatives (account_id, user_id, rights) VALUES (:a, :u, :r)",
                     a=account, u=user_id, r=["view"])
    for account in (accounts[0], accounts[2]):
        await db.sql("INSERT INTO webhook_subscriptions (id, account_id, url, secret, created_by) "
                     "VALUES (:i, :a, 'https://hooks.example.test/in', 'whsec_dGVzdA==', 'test')", i=uuid4(), a=account)
    return accounts


def batch_of(accounts: list[str]) -> AllocationDeliveredBatch:
    return AllocationDeliveredBatch(table_id=uuid4(), period="2021", vintage=2021, method="table", lines=[
        DeliveredLine(installation_account_id=account, quantity=100 * (i + 1), movement_id=uuid4())
        for i, account in enumerate(accounts)])


def comparable(row: Any) -> tuple[Any, ...]:
    """A row without what differs between two deliveries of the same facts: the event id and its instant."""
    body = row.body
    if row.channel == "webhook":
        parsed = json.loads(body)
        parsed.pop("timestamp")
        parsed["data"].pop("event_id")
        body = json.dumps(parsed, sort_keys=True)
    return (row.event_type, row.notification_type, row.recipient, row.channel, row.account_id, row.language,
            row.subject, body, row.address, row.state)


async def test_a_batch_makes_the_rows_of_its_single_events_and_a_redelivered_batch_adds_none(
        notifications: Notifications):
    accounts = await installations(notifications)
    batch = batch_of(accounts)
    # The reference: each line as its own single event, then the same lines as one batch.
    single_ids = {(await notifications.deliver(event)).message_id for event in batch.delivered()}
    envelope = await notifications.deliver(batch)
    rows = await notifications.rows(accounts)
    singles = [row for row in rows if row.event_id in single_ids]
    told = [row for row in rows if row.event_id not in single_ids]
    assert len(singles) == len(told) == 7  # A: inbox, e-mail, webhook; B: 2 inbox, 1 e-mail; C: webhook
    assert sorted(map(comparable, singles)) == sorted(map(comparable, told))
    assert all(row.event_type == AllocationDelivered.routing_key() and row.notification_type == "allocation_delivered"
               for row in told)
    # One event id per line, derived from the batch's message id, unlike the batch's own.
    assert len({row.event_id for row in told}) == 3 and envelope.message_id not in {row.event_id for row in told}
    for row in told:
        if row.channel == "webhook":
            body = json.loads(row.body)
            assert body["type"] == "issuance.allocation_delivered.v1"
            assert body["data"]["event_id"] == str(row.event_id)
            assert body["data"]["installation_account_id"] == row.account_id
    # Redelivered (the same envelope): nothing new.
    await notifications.deliver(batch, envelope)
    again = await notifications.rows(accounts)
    assert sorted((r.event_id, r.recipient, r.channel) for r in again) == \
        sorted((r.event_id, r.recipient, r.channel) for r in rows)


async def test_the_single_path_still_uses_the_envelope_id(notifications: Notifications):
    accounts = await installations(notifications)
    event = AllocationDelivered(table_id=uuid4(), period=None, vintage=2021, installation_account_id=accounts[0],
                                quantity=5, movement_id=uuid4(), method="proportional")
    envelope = await notifications.deliver(event)
    assert {UUID(str(r.event_id)) for r in await notifications.rows(accounts)} == {UUID(str(envelope.message_id))}
