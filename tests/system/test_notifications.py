"""Notifications with every process separate: real transfers through the saga tell both parties by e-mail
(a real SMTP server, aiosmtpd), by signed webhook (an HTTPS receiver with trustme certificates, checked
with the ``standardwebhooks`` library) and in the inbox, each in the recipient's language; duplicates
through the broker and a SIGKILLed worker record each (event, recipient, channel) once; retries, giving
up and a manual resend; bad input."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import aio_pika
import asyncpg
import httpx
import pytest

from registry_common.launcher import process_pid
from registry_common.messaging.outbox import Publisher
from registry_common.testing.fixtures import wait_for
from registry_common.testing.registry_client import rfc
from registry_common.testing.webhook_receiver import Receiver, https_receiver

pytestmark = [pytest.mark.system, pytest.mark.integration]
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def receiver(webhook_ca, tmp_path_factory) -> Iterator[tuple[Receiver, str]]:
    with https_receiver(webhook_ca[0], tmp_path_factory.mktemp("receiver")) as running:
        yield running


# Parties, as in test_transfers.py ------------------------------------------------------------------------
@dataclass
class Party:
    account_id: str
    user_id: str
    email: str
    language: str
    headers: dict[str, str]


class Registry:
    def __init__(self, http: httpx.AsyncClient, gateway: str, notifications: str, admin: dict[str, str],
                 authority: dict[str, str], db: asyncpg.Connection, transfers_db: asyncpg.Connection):
        self.http, self.gateway, self.notifications = http, gateway, notifications
        self.admin, self.authority, self.db, self.transfers_db = admin, authority, db, transfers_db

    async def call(self, method: str, path: str, headers: dict[str, str], body: Any = None, key: bool = False,
                   expect: int | None = None, base: str | None = None) -> httpx.Response:
        extra = {"Idempotency-Key": str(uuid4())} if key else {}
        answer = await self.http.request(method, f"{base or self.gateway}{path}", json=body,
                                         headers={**headers, **extra})
        if expect is not None:
            assert answer.status_code == expect, answer.text
        return answer

    async def notif(self, method: str, path: str, headers: dict[str, str], body: Any = None,
                    expect: int | None = None) -> httpx.Response:
        # Straight to the notifications API until the gateway's allow-list has its routes.
        return await self.call(method, path, headers, body, expect=expect, base=self.gateway)

    async def party(self, language: str, kind: str = "installation", role: str = "installation") -> Party:
        username = f"rep-{uuid4().hex[:10]}"
        email = f"{username}@example.mx"
        user = (await self.call("POST", "/api/v1/users", self.admin, {
            "username": username, "display_name": "Representante", "email": email, "language": language,
            "roles": [role], "password": PASSWORD}, expect=201)).json()
        account = (await self.call("POST", "/api/v1/accounts", self.admin, {
            "kind": kind, "name": f"Empresa {username}", "holder": {
                "name": f"Empresa {username} S.A. de C.V.", "tax_id": rfc(), "address": "Av. Reforma 1, CDMX",
                "contacts": [{"name": "Contacto", "email": f"c-{username}@example.mx"}]}}, expect=201)).json()
        await self.call("POST", f"/api/v1/accounts/{account['id']}/approve", self.admin, {}, expect=200)
        await self.call("POST", f"/api/v1/accounts/{account['id']}/representatives", self.admin,
                        {"user_id": user["id"], "rights": ["initiate", "approve", "view"]})
        token = (await self.call("POST", "/api/v1/auth/token", {}, {"username": username, "password": PASSWORD},
                                 expect=200)).json()["access_token"]
        for db, what in ((self.transfers_db, "transfers"), (self.db, "notifications")):
            await wait_for(lambda db=db: db.fetchval(
                "SELECT count(*) FROM known_representatives WHERE account_id = $1", account["id"]),
                what=f"{what} to learn of the account and its representative")
        await wait_for(lambda: self.db.fetchval("SELECT count(*) FROM known_users WHERE user_id = $1",
                                                user["id"]), what="notifications to learn of the user")
        return Party(account["id"], user["id"], email, language,
                     {"Authorization": f"Bearer {token}", "Accept-Language": "en"})

    async def fund(self, party: Party, units: int) -> None:
        await self.call("POST", "/api/v1/ledger/movements", self.authority, {
            "kind": "issuance", "to_account_id": "SYS-CAP", "unit_type": "allowance", "vintage": 2021,
            "quantity": units}, key=True, expect=201)
        await self.call("POST", "/api/v1/ledger/movements", self.authority, {
            "kind": "allocation", "from_account_id": "SYS-CAP", "to_account_id": party.account_id,
            "unit_type": "allowance", "quantity": units}, key=True, expect=201)

    async def transfer(self, sender: Party, receiver: Party, quantity: int) -> str:
        answer = await self.call("POST", "/api/v1/transfers", sender.headers, {
            "sender_account_id": sender.account_id, "receiver_account_id": receiver.account_id,
            "unit_type": "allowance", "quantity": quantity}, key=True, expect=201)
        return answer.json()["id"]

    async def reaches(self, transfer_id: str, who: Party, state: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            current = (await self.call("GET", f"/api/v1/transfers/{transfer_id}", who.headers, expect=200)).json()
            return current if current["state"] == state else None

        return await wait_for(check, timeout=60, what=f"transfer {transfer_id} to be {state}")

    async def subscribe(self, party: Party, receiver: tuple[Receiver, str], name: str, mode: str = "ok") -> str:
        app, base = receiver
        answer = await self.notif("POST", "/api/v1/webhook-subscriptions", party.headers,
                                  {"account_id": party.account_id, "url": f"{base}/hook/{name}"}, expect=201)
        body = answer.json()
        assert body["secret"].startswith("whsec_")
        with app.lock:
            app.secrets[name], app.modes[name] = body["secret"], mode
        return body["id"]

    async def events_of(self, transfer_ids: list[str]) -> list[asyncpg.Record]:
        """The notified transfer events (their envelopes) as transfers' outbox wrote them."""
        return await self.transfers_db.fetch(
            "SELECT message_id, exchange, routing_key, envelope FROM outbox WHERE routing_key = ANY($1) "
            "AND envelope->'payload'->>'transfer_id' = ANY($2) ORDER BY id",
            [f"transfers.{t}.v1" for t in NOTIFIED], transfer_ids)


NOTIFIED = ("transfer_awaiting_acceptance", "transfer_acceptance_reminder", "transfer_completed",
            "transfer_reversed", "transfer_failed")


@pytest.fixture(scope="module")
async def registry(system, provisioned_services, token_for) -> AsyncIterator[Registry]:
    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    prefix = provisioned_services["REGISTRY_DATABASE_PREFIX"]
    db = await asyncpg.connect(f"{base}/{prefix}notifications")
    transfers_db = await asyncpg.connect(f"{base}/{prefix}transfers")
    async with httpx.AsyncClient(timeout=30) as http:
        signed_in = await http.post(f"{system.gateway_url}/api/v1/auth/token", json={
            "username": "admin", "password": provisioned_services["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"]})
        admin = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        authority = {"Authorization": f"Bearer {token_for('authority-1', 'authority')}"}
        yield Registry(http, system.gateway_url, system.api_url("notifications"), admin, authority, db, transfers_db)
    await db.close()
    await transfers_db.close()


def mails_to(mailbox, address: str) -> list[Any]:
    return [m for m in mailbox.received() if m["To"] == address]


async def test_both_parties_told_by_email_webhook_and_inbox_in_their_language(registry: Registry, mailbox,
                                                                               receiver):
    sender, party_b = await registry.party("es"), await registry.party("en", "intermediary", "intermediary")
    await registry.subscribe(sender, receiver, f"s-{sender.account_id}")
    await registry.subscribe(party_b, receiver, f"r-{party_b.account_id}")
    await registry.fund(sender, 50)
    accepted = await registry.transfer(sender, party_b, 30)
    await registry.reaches(accepted, party_b, "awaiting_acceptance")
    await registry.call("POST", f"/api/v1/transfers/{accepted}/accept", party_b.headers, expect=200)
    await registry.reaches(accepted, sender, "completed")
    rejected = await registry.transfer(sender, party_b, 5)
    await registry.reaches(rejected, party_b, "awaiting_acceptance")
    await registry.call("POST", f"/api/v1/transfers/{rejected}/reject", party_b.headers, expect=200)
    await registry.reaches(rejected, sender, "reversed")
    events = await registry.events_of([accepted, rejected])
    expected_types = ["transfers.transfer_awaiting_acceptance.v1", "transfers.transfer_completed.v1",
                      "transfers.transfer_awaiting_acceptance.v1", "transfers.transfer_reversed.v1"]
    assert [e["routing_key"] for e in events] == expected_types
    event_ids = {str(e["message_id"]) for e in events}
    app, _ = receiver
    subjects = {"es": {"Transferencia propuesta", "Su transferencia a", "Transferencia aceptada",
                       "Transferencia rechazada"},
                "en": {"Transfer proposed", "Your transfer to", "Transfer accepted", "Transfer rejected"}}

    for who, hook in ((sender, f"s-{sender.account_id}"), (party_b, f"r-{party_b.account_id}")):
        mails = await wait_for(lambda who=who: len(mails_to(mailbox, who.email)) >= 4 and mails_to(mailbox, who.email),
                               timeout=30, what=f"four e-mails to {who.email}")
        assert {m["X-Registry-Event-ID"] for m in mails} == event_ids
        assert {m["Content-Language"] for m in mails} == {who.language}
        assert all(any(m["Subject"].startswith(p) for p in subjects[who.language]) for m in mails), \
            [m["Subject"] for m in mails]
        assert len({m["Message-ID"] for m in mails}) == 4
        hooks = await wait_for(lambda hook=hook: len(app.distinct(hook)) >= 4 and app.distinct(hook),
                               timeout=30, what=f"four webhooks at {hook}")
        assert {p["data"]["event_id"] for p in hooks.values()} == event_ids
        assert {p["data"]["account_id"] for p in hooks.values()} == {who.account_id}
        inbox = (await registry.notif("GET", "/api/v1/notifications?limit=50", who.headers, expect=200)).json()
        assert {i["event_id"] for i in inbox["items"]} == event_ids and inbox["unread"] == 4
        assert {i["language"] for i in inbox["items"]} == {who.language}
        assert {i["subject"] for i in inbox["items"]} == {" ".join(m["Subject"].split()) for m in mails}
    assert app.bad_signatures == 0
    reversed_mail = next(m for m in mails_to(mailbox, party_b.email)
                         if m["Subject"].startswith("Transfer rejected"))
    assert "did not receive the units" in reversed_mail.get_content()

    # Marking as read: one's own works (once); someone else's is not found.
    mine = (await registry.notif("GET", "/api/v1/notifications", sender.headers, expect=200)).json()["items"][0]
    theirs = (await registry.notif("GET", "/api/v1/notifications", party_b.headers, expect=200)).json()["items"][0]
    read = await registry.notif("POST", f"/api/v1/notifications/{mine['id']}/read", sender.headers, expect=200)
    assert read.json()["read_at"]
    other = await registry.notif("POST", f"/api/v1/notifications/{theirs['id']}/read", sender.headers)
    assert other.status_code == 404 and other.json()["code"] == "notification.not_found"
    unread = (await registry.notif("GET", "/api/v1/notifications?unread=true", sender.headers, expect=200)).json()
    assert mine["id"] not in {i["id"] for i in unread["items"]} and unread["unread"] == 3


async def test_duplicates_and_a_killed_worker_record_each_notification_once(registry: Registry, mailbox, receiver,
                                                                             system, provisioned_services):
    sender, party_b = await registry.party("en"), await registry.party("es", "intermediary", "intermediary")
    hooks = {sender.account_id: f"dup-s-{sender.account_id}", party_b.account_id: f"dup-r-{party_b.account_id}"}
    await registry.subscribe(sender, receiver, hooks[sender.account_id])
    await registry.subscribe(party_b, receiver, hooks[party_b.account_id])
    burst = 8
    await registry.fund(sender, burst)
    ids = [await registry.transfer(sender, party_b, 1) for _ in range(burst)]

    # Kill the notifications worker while the first notices of the burst are going out.
    await wait_for(lambda: mails_to(mailbox, sender.email) or mails_to(mailbox, party_b.email),
                   interval=0.01, timeout=60, what="the first e-mail of the burst")
    victim = process_pid(system, "notifications-worker")
    os.kill(victim, signal.SIGKILL)
    at_kill = len(mails_to(mailbox, sender.email)) + len(mails_to(mailbox, party_b.email))
    for transfer_id in ids:
        await registry.reaches(transfer_id, party_b, "awaiting_acceptance")
        await registry.call("POST", f"/api/v1/transfers/{transfer_id}/accept", party_b.headers, expect=200)
    for transfer_id in ids:
        await registry.reaches(transfer_id, sender, "completed")
    await wait_for(lambda: process_pid(system, "notifications-worker") not in (0, victim), timeout=60,
                   what="supervisord to restart the notifications worker")

    # Every event of the burst published a second time through the broker, as the relay would on a crash.
    events = await registry.events_of(ids)
    assert len(events) == 2 * burst
    connection = await aio_pika.connect_robust(provisioned_services["REGISTRY_AMQP_URL"])
    try:
        publisher = Publisher(connection, provisioned_services["REGISTRY_NAMESPACE"])
        for event in events:
            await publisher.publish(event["exchange"], event["routing_key"], json.loads(event["envelope"]))
    finally:
        await connection.close()

    event_ids = {str(e["message_id"]) for e in events}
    expected = len(event_ids) * 2  # both parties, per channel
    assert at_kill < expected  # the kill landed mid-burst

    def distinct_mails() -> set[str]:
        return {m["Message-ID"] for m in mailbox.received() if m["X-Registry-Event-ID"] in event_ids}

    def distinct_hooks() -> set[str]:
        return {wid for name in hooks.values() for wid in receiver[0].distinct(name)}

    await wait_for(lambda: len(distinct_mails()) >= expected and len(distinct_hooks()) >= expected, timeout=90,
                   what=f"{expected} distinct e-mails and webhooks")
    rows = await registry.db.fetch(
        "SELECT channel, count(*) AS n, count(DISTINCT (event_id, recipient)) AS once FROM notifications "
        "WHERE event_id = ANY($1::uuid[]) GROUP BY channel ORDER BY channel", list(event_ids))
    assert {r["channel"]: (r["n"], r["once"]) for r in rows} == {
        "email": (expected, expected), "inbox": (expected, expected), "webhook": (expected, expected)}
    await wait_for(lambda: registry.db.fetchval(
        "SELECT count(*) = 0 FROM notifications WHERE event_id = ANY($1::uuid[]) AND state <> 'delivered'",
        list(event_ids)), timeout=30, what="every delivery of the burst to be recorded as delivered")
    assert len(distinct_mails()) == expected and len(distinct_hooks()) == expected
    raw_mails = sum(1 for m in mailbox.received() if m["X-Registry-Event-ID"] in event_ids)
    raw_hooks = sum(receiver[0].raw_count(name) for name in hooks.values())
    duplicates_seen = await registry.db.fetchval(
        "SELECT count(*) FROM inbox WHERE message_id = ANY($1::uuid[])", list(event_ids))
    report = (f"burst of {burst} transfers: {len(event_ids)} events, {expected} per channel expected; "
              f"e-mails raw {raw_mails} / distinct {len(distinct_mails())} (repeats {raw_mails - expected}); "
              f"webhooks raw {raw_hooks} / distinct {len(distinct_hooks())} (repeats {raw_hooks - expected}); "
              f"e-mails received before the SIGKILL: {at_kill}; events claimed in the inbox: {duplicates_seen}")
    print(report)
    assert duplicates_seen == len(event_ids)
    inbox_b = (await registry.notif("GET", "/api/v1/notifications?limit=200", party_b.headers, expect=200)).json()
    assert len([i for i in inbox_b["items"] if i["event_id"] in event_ids]) == len(event_ids)


async def test_a_flaky_endpoint_gets_it_on_the_third_attempt_and_a_dead_one_is_given_up_then_resent(
        registry: Registry, receiver):
    sender, party_b = await registry.party("es"), await registry.party("en", "intermediary", "intermediary")
    flaky = await registry.subscribe(party_b, receiver, f"flaky-{party_b.account_id}", "fail_twice")
    dead = await registry.subscribe(party_b, receiver, f"dead-{party_b.account_id}", "fail")
    await registry.fund(sender, 3)
    transfer_id = await registry.transfer(sender, party_b, 3)
    await registry.reaches(transfer_id, party_b, "awaiting_acceptance")
    app, _ = receiver

    async def delivery(subscription: str, state: str) -> dict[str, Any] | None:
        items = (await registry.notif("GET", f"/api/v1/webhook-subscriptions/{subscription}/deliveries",
                                      party_b.headers, expect=200)).json()["items"]
        found = [d for d in items if d["event_type"] == "transfers.transfer_awaiting_acceptance.v1"]
        return found[0] if found and found[0]["state"] == state else None

    done = await wait_for(lambda: delivery(flaky, "delivered"), timeout=30, what="the flaky endpoint's delivery")
    assert done["attempts"] == 3
    assert [(a["attempt"], a["outcome"], a["status_code"]) for a in done["attempt_log"]] == [
        (1, "failed", 500), (2, "failed", 500), (3, "delivered", 200)]
    assert list(app.distinct(f"flaky-{party_b.account_id}")) == [done["stable_id"]]
    assert app.raw_count(f"flaky-{party_b.account_id}") == 3

    given_up = await wait_for(lambda: delivery(dead, "failed"), timeout=40, what="the dead endpoint to be given up")
    log = given_up["attempt_log"]
    assert len(log) >= 3 and all(a["status_code"] == 503 for a in log)
    assert [a["outcome"] for a in log][-1] == "gave_up" and all(a["outcome"] == "failed" for a in log[:-1])
    gaps = [(b - a) for a, b in zip(
        [_t(x["finished_at"]) for x in log], [_t(x["started_at"]) for x in log[1:]], strict=False)]
    assert all(later >= earlier * 0.9 for earlier, later in zip(gaps, gaps[1:], strict=False)), gaps  # back-off grows

    with app.lock:
        app.modes[f"dead-{party_b.account_id}"] = "ok"
    stranger = await registry.party("es")
    refused = await registry.notif("POST", f"/api/v1/webhook-subscriptions/{dead}/deliveries/{given_up['id']}/resend",
                                   stranger.headers)
    assert refused.status_code == 404
    resent = await registry.notif("POST", f"/api/v1/webhook-subscriptions/{dead}/deliveries/{given_up['id']}/resend",
                                  party_b.headers, expect=202)
    assert resent.json()["state"] == "pending"
    again = await wait_for(lambda: delivery(dead, "delivered"), timeout=30, what="the resent delivery")
    assert again["stable_id"] == given_up["stable_id"] and again["attempt_log"][-1]["outcome"] == "delivered"
    assert list(app.distinct(f"dead-{party_b.account_id}")) == [given_up["stable_id"]]
    audit = await registry.db.fetch("SELECT action, actor FROM audit_log WHERE entity_id = $1", given_up["id"])
    assert [(a["action"], a["actor"]) for a in audit] == [("webhook_delivery.resent", party_b.user_id)]


def _t(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


async def test_bad_input_is_refused_clearly(registry: Registry, receiver):
    owner, stranger = await registry.party("es"), await registry.party("en")
    _, base = receiver
    cases = [
        ({"account_id": owner.account_id, "url": "http://localhost/hook/x"}, owner.headers, 422,
         "notification.webhook_not_https", "url"),
        ({"account_id": owner.account_id, "url": f"{base}/hook/x"}, stranger.headers, 403,
         "notification.not_representative", "account_id"),
        ({"account_id": owner.account_id, "url": f"{base}/hook/x", "secret": "mine"}, owner.headers, 422,
         "request.invalid", "secret"),
        ({"account_id": "MX-NOPE", "url": f"{base}/hook/x"}, registry.admin, 422,
         "notification.unknown_account", "account_id"),
    ]
    for body, headers, status, code, field in cases:
        answer = await registry.notif("POST", "/api/v1/webhook-subscriptions", headers, body)
        problem = answer.json()
        assert (answer.status_code, problem["code"]) == (status, code), answer.text
        assert field in [e["field"] for e in problem.get("errors", [])], problem
    spanish = await registry.notif("POST", "/api/v1/webhook-subscriptions",
                                   {**owner.headers, "Accept-Language": "es"},
                                   {"account_id": owner.account_id, "url": "http://localhost/x"})
    assert spanish.json()["detail"] == "La URL del webhook debe usar HTTPS."
    assert (await registry.notif("GET", "/api/v1/notifications", {})).status_code == 401
    missing = await registry.notif("POST", f"/api/v1/notifications/{uuid4()}/read", owner.headers)
    assert missing.status_code == 404 and missing.json()["code"] == "notification.not_found"
    assert await registry.db.fetchval("SELECT count(*) FROM webhook_subscriptions WHERE account_id = $1",
                                      owner.account_id) == 0
