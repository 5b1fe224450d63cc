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
from typing import Any
from uuid import uuid4

import aio_pika
import asyncpg
import pytest

from registry_common.launcher import process_pid
from registry_common.messaging.outbox import Publisher
from registry_common.testing.fixtures import wait_for
from registry_common.testing.registry_client import Party, RegistryClient
from registry_common.testing.webhook_receiver import Receiver, https_receiver

pytestmark = [pytest.mark.system, pytest.mark.integration]


@pytest.fixture(scope="module")
def receiver(webhook_ca, tmp_path_factory) -> Iterator[tuple[Receiver, str]]:
    with https_receiver(webhook_ca[0], tmp_path_factory.mktemp("receiver")) as running:
        yield running


async def subscribe(registry: RegistryClient, party: Party, receiver: tuple[Receiver, str], name: str,
                    mode: str = "ok") -> str:
    body = await registry.webhook(party, receiver, name, mode)
    assert body["secret"].startswith("whsec_")
    return body["id"]


async def propose(registry: RegistryClient, sender: Party, receiver: Party, quantity: int) -> str:
    return (await registry.transfer(sender, receiver, quantity, expect=201)).json()["id"]


async def events_of(registry: RegistryClient, transfer_ids: list[str]) -> list[asyncpg.Record]:
    """The notified transfer events (their envelopes) as transfers' outbox wrote them."""
    return await registry.transfers_db.fetch(
        "SELECT message_id, exchange, routing_key, envelope FROM outbox WHERE routing_key = ANY($1) "
        "AND envelope->'payload'->>'transfer_id' = ANY($2) ORDER BY id",
        [f"transfers.{t}.v1" for t in NOTIFIED], transfer_ids)


NOTIFIED = ("transfer_awaiting_acceptance", "transfer_acceptance_reminder", "transfer_completed",
            "transfer_reversed", "transfer_failed")


@pytest.fixture(scope="module")
async def registry(system, provisioned_services, token_for) -> AsyncIterator[RegistryClient]:
    """Parties are handed out once notifications, too, knows them."""
    async with RegistryClient.of(system.gateway_url, provisioned_services, databases=["notifications"],
                                 authority_token=token_for("authority-1", "authority")) as registry:
        yield registry


@pytest.fixture(scope="module")
def db(registry: RegistryClient) -> asyncpg.Pool:
    """Notifications' database."""
    return registry.databases["notifications"]


async def test_both_parties_told_by_email_webhook_and_inbox_in_their_language(registry: RegistryClient, mailbox,
                                                                               receiver):
    sender = await registry.party(language="es")
    party_b = await registry.party("intermediary", "intermediary", language="en")
    await subscribe(registry, sender, receiver, f"s-{sender.account_id}")
    await subscribe(registry, party_b, receiver, f"r-{party_b.account_id}")
    await registry.fund(sender, 50)
    accepted = await propose(registry, sender, party_b, 30)
    await registry.reaches(accepted, party_b, "awaiting_acceptance")
    await registry.call("POST", f"/api/v1/transfers/{accepted}/accept", party_b.headers, expect=200)
    await registry.reaches(accepted, sender, "completed")
    rejected = await propose(registry, sender, party_b, 5)
    await registry.reaches(rejected, party_b, "awaiting_acceptance")
    await registry.call("POST", f"/api/v1/transfers/{rejected}/reject", party_b.headers, expect=200)
    await registry.reaches(rejected, sender, "reversed")
    events = await events_of(registry, [accepted, rejected])
    expected_types = ["transfers.transfer_awaiting_acceptance.v1", "transfers.transfer_completed.v1",
                      "transfers.transfer_awaiting_acceptance.v1", "transfers.transfer_reversed.v1"]
    assert [e["routing_key"] for e in events] == expected_types
    event_ids = {str(e["message_id"]) for e in events}
    app, _ = receiver
    subjects = {"es": {"Transferencia propuesta", "Su transferencia a", "Transferencia aceptada",
                       "Transferencia rechazada"},
                "en": {"Transfer proposed", "Your transfer to", "Transfer accepted", "Transfer rejected"}}

    for who, hook in ((sender, f"s-{sender.account_id}"), (party_b, f"r-{party_b.account_id}")):
        mails = await wait_for(lambda who=who: len(mailbox.to(who.email)) >= 4 and mailbox.to(who.email),
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
        inbox = (await registry.call("GET", "/api/v1/notifications?limit=50", who.headers, expect=200)).json()
        assert {i["event_id"] for i in inbox["items"]} == event_ids and inbox["unread"] == 4
        assert {i["language"] for i in inbox["items"]} == {who.language}
        assert {i["subject"] for i in inbox["items"]} == {" ".join(m["Subject"].split()) for m in mails}
    assert app.bad_signatures == 0
    reversed_mail = next(m for m in mailbox.to(party_b.email)
                         if m["Subject"].startswith("Transfer rejected"))
    assert "did not receive the units" in reversed_mail.get_content()

    # Marking as read: one's own works (once); someone else's is not found.
    mine = (await registry.call("GET", "/api/v1/notifications", sender.headers, expect=200)).json()["items"][0]
    theirs = (await registry.call("GET", "/api/v1/notifications", party_b.headers, expect=200)).json()["items"][0]
    read = await registry.call("POST", f"/api/v1/notifications/{mine['id']}/read", sender.headers, expect=200)
    assert read.json()["read_at"]
    other = await registry.call("POST", f"/api/v1/notifications/{theirs['id']}/read", sender.headers)
    assert other.status_code == 404 and other.json()["code"] == "notification.not_found"
    unread = (await registry.call("GET", "/api/v1/notifications?unread=true", sender.headers, expect=200)).json()
    assert mine["id"] not in {i["id"] for i in unread["items"]} and unread["unread"] == 3


async def test_duplicates_and_a_killed_worker_record_each_notification_once(registry: RegistryClient, db, mailbox,
                                                                             receiver, system, provisioned_services):
    sender = await registry.party(language="en")
    party_b = await registry.party("intermediary", "intermediary", language="es")
    hooks = {sender.account_id: f"dup-s-{sender.account_id}", party_b.account_id: f"dup-r-{party_b.account_id}"}
    await subscribe(registry, sender, receiver, hooks[sender.account_id])
    await subscribe(registry, party_b, receiver, hooks[party_b.account_id])
    burst = 8
    await registry.fund(sender, burst)
    ids = [await propose(registry, sender, party_b, 1) for _ in range(burst)]

    # Kill the notifications worker while the first notices of the burst are going out.
    await wait_for(lambda: mailbox.to(sender.email) or mailbox.to(party_b.email),
                   interval=0.01, timeout=60, what="the first e-mail of the burst")
    victim = process_pid(system, "notifications-worker")
    os.kill(victim, signal.SIGKILL)
    at_kill = len(mailbox.to(sender.email)) + len(mailbox.to(party_b.email))
    for transfer_id in ids:
        await registry.reaches(transfer_id, party_b, "awaiting_acceptance")
        await registry.call("POST", f"/api/v1/transfers/{transfer_id}/accept", party_b.headers, expect=200)
    for transfer_id in ids:
        await registry.reaches(transfer_id, sender, "completed")
    await wait_for(lambda: process_pid(system, "notifications-worker") not in (0, victim), timeout=60,
                   what="supervisord to restart the notifications worker")

    # Every event of the burst published a second time through the broker, as the relay would on a crash.
    events = await events_of(registry, ids)
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
    rows = await db.fetch(
        "SELECT channel, count(*) AS n, count(DISTINCT (event_id, recipient)) AS once FROM notifications "
        "WHERE event_id = ANY($1::uuid[]) GROUP BY channel ORDER BY channel", list(event_ids))
    assert {r["channel"]: (r["n"], r["once"]) for r in rows} == {
        "email": (expected, expected), "inbox": (expected, expected), "webhook": (expected, expected)}
    await wait_for(lambda: db.fetchval(
        "SELECT count(*) = 0 FROM notifications WHERE event_id = ANY($1::uuid[]) AND state <> 'delivered'",
        list(event_ids)), timeout=30, what="every delivery of the burst to be recorded as delivered")
    assert len(distinct_mails()) == expected and len(distinct_hooks()) == expected
    raw_mails = sum(1 for m in mailbox.received() if m["X-Registry-Event-ID"] in event_ids)
    raw_hooks = sum(receiver[0].raw_count(name) for name in hooks.values())
    duplicates_seen = await db.fetchval(
        "SELECT count(*) FROM inbox WHERE message_id = ANY($1::uuid[])", list(event_ids))
    report = (f"burst of {burst} transfers: {len(event_ids)} events, {expected} per channel expected; "
              f"e-mails raw {raw_mails} / distinct {len(distinct_mails())} (repeats {raw_mails - expected}); "
              f"webhooks raw {raw_hooks} / distinct {len(distinct_hooks())} (repeats {raw_hooks - expected}); "
              f"e-mails received before the SIGKILL: {at_kill}; events claimed in the inbox: {duplicates_seen}")
    print(report)
    assert duplicates_seen == len(event_ids)
    inbox_b = (await registry.call("GET", "/api/v1/notifications?limit=200", party_b.headers, expect=200)).json()
    assert len([i for i in inbox_b["items"] if i["event_id"] in event_ids]) == len(event_ids)


async def test_a_flaky_endpoint_gets_it_on_the_third_attempt_and_a_dead_one_is_given_up_then_resent(
        registry: RegistryClient, db, receiver):
    sender = await registry.party(language="es")
    party_b = await registry.party("intermediary", "intermediary", language="en")
    flaky = await subscribe(registry, party_b, receiver, f"flaky-{party_b.account_id}", "fail_twice")
    dead = await subscribe(registry, party_b, receiver, f"dead-{party_b.account_id}", "fail")
    await registry.fund(sender, 3)
    transfer_id = await propose(registry, sender, party_b, 3)
    await registry.reaches(transfer_id, party_b, "awaiting_acceptance")
    app, _ = receiver

    async def delivery(subscription: str, state: str) -> dict[str, Any] | None:
        items = (await registry.call("GET", f"/api/v1/webhook-subscriptions/{subscription}/deliveries",
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
    stranger = await registry.party(language="es")
    refused = await registry.call("POST", f"/api/v1/webhook-subscriptions/{dead}/deliveries/{given_up['id']}/resend",
                                  stranger.headers)
    assert refused.status_code == 404
    resent = await registry.call("POST", f"/api/v1/webhook-subscriptions/{dead}/deliveries/{given_up['id']}/resend",
                                 party_b.headers, expect=202)
    assert resent.json()["state"] == "pending"
    again = await wait_for(lambda: delivery(dead, "delivered"), timeout=30, what="the resent delivery")
    assert again["stable_id"] == given_up["stable_id"] and again["attempt_log"][-1]["outcome"] == "delivered"
    assert list(app.distinct(f"dead-{party_b.account_id}")) == [given_up["stable_id"]]
    audit = await db.fetch("SELECT action, actor FROM audit_log WHERE entity_id = $1", given_up["id"])
    assert [(a["action"], a["actor"]) for a in audit] == [("webhook_delivery.resent", party_b.user_id)]


def _t(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


async def test_bad_input_is_refused_clearly(registry: RegistryClient, db, receiver):
    owner, stranger = await registry.party(language="es"), await registry.party(language="en")
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
        answer = await registry.call("POST", "/api/v1/webhook-subscriptions", headers, body)
        problem = answer.json()
        assert (answer.status_code, problem["code"]) == (status, code), answer.text
        assert field in [e["field"] for e in problem.get("errors", [])], problem
    spanish = await registry.call("POST", "/api/v1/webhook-subscriptions",
                                  {**owner.headers, "Accept-Language": "es"},
                                  {"account_id": owner.account_id, "url": "http://localhost/x"})
    assert spanish.json()["detail"] == "La URL del webhook debe usar HTTPS."
    assert (await registry.call("GET", "/api/v1/notifications", {})).status_code == 401
    missing = await registry.call("POST", f"/api/v1/notifications/{uuid4()}/read", owner.headers)
    assert missing.status_code == 404 and missing.json()["code"] == "notification.not_found"
    assert await db.fetchval("SELECT count(*) FROM webhook_subscriptions WHERE account_id = $1",
                             owner.account_id) == 0
