"""The ledger with every process separate: 200 holds of one unit against an account holding 100, first as
broker commands consumed by two ledger workers (prefetch 20), then as 200 concurrent requests through the
gateway. Exactly 100 succeed each time, the rest are refused with their code, and the audit is clean. A
redelivered command changes nothing."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import aio_pika
import asyncpg
import httpx
import pytest

from registry_common.messaging.envelope import Envelope
from registry_common.messaging.outbox import Publisher
from registry_common.testing.fixtures import wait_for
from registry_contracts.accounts import HoldUnits

pytestmark = [pytest.mark.system, pytest.mark.integration]


@pytest.fixture
async def accounts_db(provisioned_services: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{base}/{provisioned_services['REGISTRY_DATABASE_PREFIX']}accounts")
    yield conn
    await conn.close()


async def funded_accounts(system, http: httpx.AsyncClient, db: asyncpg.Connection, authority: dict[str, str],
                          units: int) -> tuple[str, str]:
    """A cap, a sender holding ``units`` allowances and a receiver, all new (unique ids)."""
    prefix = f"S{uuid4().hex[:6].upper()}"
    for name, kind in (("CAP", "cap"), ("SENDER", "central"), ("RECEIVER", "trading")):
        await db.execute("INSERT INTO accounts (id, kind, name, state) VALUES ($1, $2, $1, 'active')",
                         f"{prefix}-{name}", kind)
    for body in ({"kind": "issuance", "to_account_id": f"{prefix}-CAP", "vintage": 2021, "quantity": units},
                 {"kind": "allocation", "from_account_id": f"{prefix}-CAP", "to_account_id": f"{prefix}-SENDER",
                  "quantity": units}):
        answer = await http.post(f"{system.gateway_url}/api/v1/ledger/movements",
                                 json={"unit_type": "allowance", **body},
                                 headers={**authority, "Idempotency-Key": str(uuid4())})
        assert answer.status_code == 201, answer.text
    return f"{prefix}-SENDER", f"{prefix}-RECEIVER"


async def handled(http: httpx.AsyncClient, url: str, message_type: str) -> float:
    text = (await http.get(f"{url}/metrics")).text
    pattern = rf'^registry_messages_handled_total{{[^}}]*type="{re.escape(message_type)}"[^}}]*}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.M))


async def outcomes(db: asyncpg.Connection, sender: str) -> tuple[int, int]:
    held = await db.fetchval("SELECT count(*) FROM holds WHERE sender_account_id = $1", sender)
    refused = await db.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key = 'accounts.hold_refused.v1' "
        "AND envelope->'payload'->>'sender_account_id' = $1", sender)
    return held, refused


async def audit_is_clean(system, http: httpx.AsyncClient, authority: dict[str, str]) -> None:
    report = (await http.get(f"{system.gateway_url}/api/v1/ledger/audit", headers=authority)).json()
    assert report["ok"], report["discrepancies"]


async def test_200_hold_commands_on_two_workers_exactly_100_succeed(system, http, bearer, accounts_db,
                                                                   provisioned_services):
    authority = bearer("authority-1", "authority")
    sender, receiver = await funded_accounts(system, http, accounts_db, authority, 100)
    worker_urls = [system.worker_url("accounts"), f"http://127.0.0.1:{system.extra_workers['accounts'][0]}"]
    before = [await handled(http, url, "accounts.hold_units.v1") for url in worker_urls]

    connection = await aio_pika.connect_robust(provisioned_services["REGISTRY_AMQP_URL"])
    publisher = Publisher(connection, provisioned_services["REGISTRY_NAMESPACE"])
    envelopes = [Envelope.wrap(HoldUnits(transfer_id=uuid4(), sender_account_id=sender, receiver_account_id=receiver,
                                         unit_type="allowance", quantity=1, actor="transfers"),
                               producer="transfers").model_dump(mode="json") for _ in range(200)]
    try:
        await asyncio.gather(*(publisher.publish("commands", "accounts.hold_units.v1", e) for e in envelopes))
        await wait_for(lambda: _all_answered(accounts_db, sender, 200), timeout=60, what="200 answers")
        assert await outcomes(accounts_db, sender) == (100, 100)
        codes = await accounts_db.fetch(
            "SELECT DISTINCT envelope->'payload'->>'code' AS code FROM outbox "
            "WHERE routing_key = 'accounts.hold_refused.v1' AND envelope->'payload'->>'sender_account_id' = $1",
            sender)
        assert [r["code"] for r in codes] == ["ledger.insufficient_units"]
        after = [await handled(http, url, "accounts.hold_units.v1") for url in worker_urls]
        assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)  # both workers took part
        await audit_is_clean(system, http, authority)

        # The same command again, through the broker: the inbox drops it; a new message for the same
        # transfer finds its hold already there. Nothing changes either way.
        held = {str(r["transfer_id"]) for r in await accounts_db.fetch(
            "SELECT transfer_id FROM holds WHERE sender_account_id = $1", sender)}
        again = next(e for e in envelopes if e["payload"]["transfer_id"] in held)
        await publisher.publish("commands", "accounts.hold_units.v1", again)
        retry = Envelope.wrap(HoldUnits.model_validate(again["payload"]), producer="transfers")
        await publisher.publish("commands", "accounts.hold_units.v1", retry.model_dump(mode="json"))
        await wait_for(lambda: _inbox_has(accounts_db, retry.message_id), what="the retried command")
        assert await outcomes(accounts_db, sender) == (100, 100)
        await audit_is_clean(system, http, authority)
    finally:
        await connection.close()


async def _all_answered(db: asyncpg.Connection, sender: str, expected: int) -> bool:
    return sum(await outcomes(db, sender)) >= expected


async def _inbox_has(db: asyncpg.Connection, message_id: Any) -> bool:
    return bool(await db.fetchval("SELECT count(*) FROM inbox WHERE message_id = $1", message_id))


async def test_200_concurrent_hold_requests_through_the_gateway_exactly_100_succeed(system, http, bearer,
                                                                                   accounts_db):
    authority = bearer("authority-1", "authority")
    sender, receiver = await funded_accounts(system, http, accounts_db, authority, 100)
    body = {"sender_account_id": sender, "receiver_account_id": receiver, "unit_type": "allowance", "quantity": 1}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=200)) as many:
        answers = await asyncio.gather(*(
            many.post(f"{system.gateway_url}/api/v1/ledger/holds", json=body,
                      headers={**authority, "Idempotency-Key": str(uuid4())}) for _ in range(200)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == 100 and statuses.count(409) == 100, sorted(statuses)
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"ledger.insufficient_units"}
    assert (await outcomes(accounts_db, sender))[0] == 100
    await audit_is_clean(system, http, authority)


async def test_the_journal_is_sealed_checkpointed_and_verifies(system, http, bearer, accounts_db):
    authority = bearer("authority-1", "authority")
    await funded_accounts(system, http, accounts_db, authority, 10)
    url = f"{system.gateway_url}/api/v1/ledger/journal/verify"

    async def sealed_and_checkpointed() -> dict[str, Any] | None:
        report = (await http.get(url, headers=authority)).json()
        return report if report["unsealed"] == 0 and report["checkpoints_checked"] > 0 else None

    report = await wait_for(sealed_and_checkpointed, timeout=60, interval=0.5, what="the sealer and a checkpoint")
    assert report["ok"], report["discrepancies"]
    assert report["sealed"] > 0
    announced = await accounts_db.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key = 'accounts.journal_checkpointed.v1'")
    assert announced > 0
    assert list((system.run_dir / "checkpoints").glob("checkpoint-*.json"))
