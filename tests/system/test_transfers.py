"""The transfer saga through the gateway, every process separate: accept, reject, cancel, expiry on the
programme clock, bad input; then the reconciliation and the ledger audit are clean."""

from __future__ import annotations

import secrets
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest

from registry_common.testing.fixtures import wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration]
PASSWORD = "correct-horse-battery-staple"


@dataclass
class Party:
    account_id: str
    user_id: str
    headers: dict[str, str]


def rfc() -> str:
    letters = "".join(secrets.choice(string.ascii_uppercase) for _ in range(3))
    homoclave = secrets.choice(string.ascii_uppercase) + secrets.choice(string.digits)
    return f"{letters}200101{homoclave}{secrets.choice('0123456789A')}"


class Registry:
    def __init__(self, http: httpx.AsyncClient, gateway: str, admin: dict[str, str], authority: dict[str, str],
                 transfers_db: asyncpg.Connection):
        self.http, self.gateway, self.admin, self.authority, self.db = http, gateway, admin, authority, transfers_db

    async def call(self, method: str, path: str, headers: dict[str, str], body: Any = None, key: bool = False,
                   expect: int | None = None) -> httpx.Response:
        extra = {"Idempotency-Key": str(uuid4())} if key else {}
        answer = await self.http.request(method, f"{self.gateway}{path}", json=body, headers={**headers, **extra})
        if expect is not None:
            assert answer.status_code == expect, answer.text
        return answer

    async def party(self, kind: str = "installation", role: str = "installation") -> Party:
        username = f"rep-{uuid4().hex[:10]}"
        user = (await self.call("POST", "/api/v1/users", self.admin, {
            "username": username, "display_name": "Representante", "email": f"{username}@example.mx",
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
        await wait_for(lambda: self.db.fetchval(
            "SELECT count(*) FROM known_representatives WHERE account_id = $1", account["id"]),
            what="transfers to learn of the account and its representative")
        return Party(account["id"], user["id"], {"Authorization": f"Bearer {token}", "Accept-Language": "en"})

    async def fund(self, party: Party, units: int) -> None:
        await self.call("POST", "/api/v1/ledger/movements", self.authority, {
            "kind": "issuance", "to_account_id": "SYS-CAP", "unit_type": "allowance", "vintage": 2021,
            "quantity": units}, key=True, expect=201)
        await self.call("POST", "/api/v1/ledger/movements", self.authority, {
            "kind": "allocation", "from_account_id": "SYS-CAP", "to_account_id": party.account_id,
            "unit_type": "allowance", "quantity": units}, key=True, expect=201)

    async def balance(self, party: Party) -> int:
        answer = await self.call("GET", f"/api/v1/accounts/{party.account_id}/holdings", self.authority, expect=200)
        return answer.json()["total"]

    async def transfer(self, sender: Party, receiver: Party, quantity: Any, **extra: Any) -> httpx.Response:
        return await self.call("POST", "/api/v1/transfers", sender.headers, {
            "sender_account_id": sender.account_id, "receiver_account_id": receiver.account_id,
            "unit_type": "allowance", "quantity": quantity, **extra}, key=True)

    async def state(self, transfer_id: str, who: Party) -> dict[str, Any]:
        return (await self.call("GET", f"/api/v1/transfers/{transfer_id}", who.headers, expect=200)).json()

    async def reaches(self, transfer_id: str, who: Party, state: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            current = await self.state(transfer_id, who)
            return current if current["state"] == state else None

        return await wait_for(check, timeout=60, what=f"transfer {transfer_id} to be {state}")


@pytest.fixture(scope="module")
async def registry(system, provisioned_services, token_for) -> AsyncIterator[Registry]:
    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    db = await asyncpg.connect(f"{base}/{provisioned_services['REGISTRY_DATABASE_PREFIX']}transfers")
    async with httpx.AsyncClient(timeout=30) as http:
        signed_in = await http.post(f"{system.gateway_url}/api/v1/auth/token", json={
            "username": "admin", "password": provisioned_services["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"]})
        admin = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        authority = {"Authorization": f"Bearer {token_for('authority-1', 'authority')}"}
        yield Registry(http, system.gateway_url, admin, authority, db)
    await db.close()


async def test_accept_moves_the_units_and_a_repeated_accept_answers_the_state(registry: Registry):
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    await registry.fund(sender, 100)
    answer = await registry.transfer(sender, receiver, 30)
    assert answer.status_code == 201, answer.text
    transfer_id = answer.json()["id"]
    assert answer.headers["location"] == f"/api/v1/transfers/{transfer_id}"
    await registry.reaches(transfer_id, receiver, "awaiting_acceptance")
    assert (await registry.balance(sender), await registry.balance(receiver)) == (70, 0)  # in the hold

    accepted = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/accept", receiver.headers)
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    final = await registry.reaches(transfer_id, sender, "completed")
    assert [h["to_state"] for h in final["history"]] == [
        "requested", "awaiting_acceptance", "accepted", "completed"]
    assert (await registry.balance(sender), await registry.balance(receiver)) == (70, 30)
    again = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/accept", receiver.headers)
    assert again.status_code == 200 and again.json()["state"] == "completed"
    refused = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/reject", receiver.headers)
    assert refused.status_code == 409 and refused.json()["code"] == "transfer.not_awaiting_acceptance"


@pytest.mark.parametrize(("action", "by", "reason"), [("reject", "receiver", "rejected"),
                                                     ("cancel", "sender", "cancelled")])
async def test_reject_and_cancel_put_the_units_back(registry: Registry, action, by, reason):
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    await registry.fund(sender, 50)
    transfer_id = (await registry.transfer(sender, receiver, 20)).json()["id"]
    await registry.reaches(transfer_id, sender, "awaiting_acceptance")
    actor = receiver if by == "receiver" else sender
    wrong = sender if by == "receiver" else receiver
    assert (await registry.call("POST", f"/api/v1/transfers/{transfer_id}/{action}", wrong.headers)).status_code == 403
    done = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/{action}", actor.headers)
    assert done.status_code == 200 and done.json()["state"] == "reversing"
    final = await registry.reaches(transfer_id, sender, "reversed")
    assert final["reason"] == reason
    assert (await registry.balance(sender), await registry.balance(receiver)) == (50, 0)


async def test_not_accepted_within_the_window_goes_back_by_itself(registry: Registry, system):
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    await registry.fund(sender, 10)
    transfer_id = (await registry.transfer(sender, receiver, 10)).json()["id"]
    awaiting = await registry.reaches(transfer_id, sender, "awaiting_acceptance")
    assert awaiting["acceptance_deadline"]
    moved = await registry.http.put(f"{system.api_url('issuance')}/api/v1/programme/clock",
                                    json={"advance_seconds": 25 * 3600}, headers=registry.authority)
    assert moved.status_code == 200, moved.text
    final = await registry.reaches(transfer_id, sender, "reversed")
    assert final["reason"] == "expired"
    assert (await registry.balance(sender), await registry.balance(receiver)) == (10, 0)
    late = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/accept", receiver.headers)
    assert late.status_code == 409


async def test_bad_input_is_refused_with_its_code_and_nothing_moves(registry: Registry):
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    stranger = await registry.party()
    closed = await registry.party("intermediary", "intermediary")
    await registry.call("POST", f"/api/v1/accounts/{closed.account_id}/close", registry.admin,
                        {"reason": "holder dissolved"}, expect=200)
    await wait_for(lambda: registry.db.fetchval("SELECT state = 'closed' FROM known_accounts WHERE account_id = $1",
                                                closed.account_id), what="transfers to learn of the closure")
    await registry.fund(sender, 5)
    count_before = await registry.db.fetchval("SELECT count(*) FROM transfers WHERE sender_account_id = $1",
                                              sender.account_id)
    cases = [
        (await registry.transfer(stranger, receiver, 1, sender_account_id=sender.account_id), 403,
         "transfer.not_allowed", "sender_account_id"),
        (await registry.transfer(sender, sender, 1), 422, "transfer.same_account", "receiver_account_id"),
        (await registry.transfer(sender, closed, 1), 422, "transfer.receiver_not_open", "receiver_account_id"),
        (await registry.transfer(sender, receiver, 6), 422, "transfer.insufficient_units", "quantity"),
        (await registry.transfer(sender, receiver, 0), 422, "request.invalid", "quantity"),
        (await registry.transfer(sender, receiver, -3), 422, "request.invalid", "quantity"),
        (await registry.transfer(sender, receiver, 1.5), 422, "request.invalid", "quantity"),
        (await registry.transfer(sender, receiver, 1, unit_type="carbon"), 422, "request.invalid", "unit_type"),
    ]
    for answer, status, code, field in cases:
        problem = answer.json()
        assert (answer.status_code, problem["code"]) == (status, code), answer.text
        assert field in [e["field"] for e in problem.get("errors", [])], problem
    assert await registry.balance(sender) == 5
    assert await registry.db.fetchval("SELECT count(*) FROM transfers WHERE sender_account_id = $1",
                                      sender.account_id) == count_before


async def test_reconciliation_and_ledger_audit_are_clean(registry: Registry):
    """Last in this module: once the sagas above are final, every transfer matches its hold."""
    async def all_final() -> dict[str, Any] | None:
        report = (await registry.call("GET", "/api/v1/transfers/reconciliation", registry.authority,
                                      expect=200)).json()
        return report if report["final"] == report["transfers"] else None

    report = await wait_for(all_final, timeout=60, what="every transfer to be final")
    assert report["ok"], report["problems"]
    audit = (await registry.call("GET", "/api/v1/ledger/audit", registry.authority, expect=200)).json()
    assert audit["ok"], audit["discrepancies"]
