"""Accounts through the accounts service's API in-process, on its real database: requests, the lifecycle
of every kind, the closure precondition and its race with the ledger's row lock, representatives, who
sees what, bad input, and the system accounts of provisioning."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import delete, insert, select, text

from accounts import account_service
from accounts.api_accounts import accounts_router, holders_router
from accounts.definition import DEFINITION
from accounts.system_accounts import ensure_system_accounts, provision_accounts
from accounts.tables import holds, unit_blocks
from registry_common.api import create_app
from registry_common.auth import Principal
from registry_common.errors import RegistryError
from registry_common.provision import run_as_owner
from registry_common.tables import audit_log, outbox
from registry_common.testing.fixtures import settings_from_env, wait_for

pytestmark = pytest.mark.integration
SYSTEM_IDS = {"SYS-CAP", "SYS-RES-PRICE_CONTAINMENT", "SYS-RES-NEW_ENTRANTS", "SYS-ALLOC", "SYS-AUCTION",
              "SYS-CANCEL"}
FAR_SERIAL = 9_000_000_000_000  # far from anything the ledger's own tests issue


def with_account_routes() -> Any:
    """The service's definition with these routes, whether or not definition.py lists them yet."""
    routers = list(DEFINITION.routers)
    routers += [r for r in (accounts_router, holders_router) if r not in routers]
    return replace(DEFINITION, routers=routers)


class Api:
    def __init__(self, client: httpx.AsyncClient, app: Any, token_for: Callable[..., str], env: dict[str, str]):
        self.client, self.app, self.token_for, self.env = client, app, token_for, env
        self.admin = self.as_("admin-" + secrets.token_hex(3), "administrator")

    def as_(self, user_id: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token_for(user_id, *roles)}", "Accept-Language": "en"}

    async def user(self, role: str) -> tuple[str, dict[str, str]]:
        """A real user (representatives reference users) and a token for it."""
        name = f"{role[:5]}-{secrets.token_hex(4)}"
        answer = await self.client.post("/api/v1/users", headers=self.admin, json={
            "username": name, "display_name": name, "email": f"{name}@example.mx", "roles": [role],
            "password": "correct horse battery staple"})
        assert answer.status_code == 201, answer.text
        user_id = answer.json()["id"]
        return user_id, self.as_(user_id, role)

    async def request(self, kind: str, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        body.setdefault("name", f"{kind} {secrets.token_hex(2)}")
        if "holder_id" not in body:
            body.setdefault("holder", new_holder())
        return await self.client.post("/api/v1/accounts", json={"kind": kind, **body}, headers=headers or self.admin)

    async def act(self, account_id: str, action: str, headers: dict[str, str] | None = None,
                  **body: Any) -> httpx.Response:
        return await self.client.post(f"/api/v1/accounts/{account_id}/{action}", json=body,
                                      headers=headers or self.admin)

    async def get(self, path: str, headers: dict[str, str] | None = None, **params: Any) -> httpx.Response:
        return await self.client.get(path, headers=headers or self.admin, params=params)

    async def events(self, name: str, account_id: str) -> list[dict[str, Any]]:
        async with self.app.state.engine.connect() as conn:
            rows = (await conn.execute(select(outbox.c.envelope).where(
                outbox.c.routing_key == f"accounts.{name}.v1",
                outbox.c.envelope["payload"]["account_id"].astext == account_id).order_by(outbox.c.id))).scalars()
            return [r["payload"] for r in rows]

    async def audit(self, account_id: str) -> list[str]:
        async with self.app.state.engine.connect() as conn:
            return list((await conn.execute(select(audit_log.c.action).where(
                audit_log.c.entity_type == "account", audit_log.c.entity_id == account_id)
                .order_by(audit_log.c.id))).scalars())


_rfc_counter = iter(range(1, 10**6))


def new_rfc() -> str:
    """A unique, well-formed RFC of a persona moral (12 characters)."""
    letters = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(3))
    return f"{letters}{next(_rfc_counter) % 28 + 1:02d}01{next(_rfc_counter) % 28 + 1:02d}A{secrets.randbelow(10)}1"


def new_holder(**overrides: Any) -> dict[str, Any]:
    return {"name": "Cementos del Norte, S.A. de C.V.", "tax_id": new_rfc(),
            "address": "Av. Constitución 100, Monterrey, N.L.",
            "contacts": [{"name": "Ana Pérez", "email": "ana@example.mx", "phone": "+52 81 5555 0000"}],
            **overrides}


@pytest.fixture(scope="module")
async def api(provisioned_services: dict[str, str], token_for: Callable[..., str]) -> AsyncIterator[Api]:
    settings = settings_from_env(provisioned_services, "accounts")
    await run_as_owner(settings, provision_accounts)  # what provisioning does (idempotent), as it does it
    app = create_app(with_account_routes(), settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://accounts") as client:
        yield Api(client, app, token_for, provisioned_services)


async def test_an_installation_is_requested_opened_suspended_and_closed_as_a_pair(api: Api):
    asked = await api.request("installation")
    assert asked.status_code == 201, asked.text
    central = asked.json()
    number = central["id"].removeprefix("CEN-")
    assert central["kind"] == "central" and central["state"] == "requested" and len(number) >= 6
    assert central["paired_account_id"] == f"ENT-{number}"
    assert asked.headers["location"] == f"/api/v1/accounts/{central['id']}"
    delivery = (await api.get(f"/api/v1/accounts/ENT-{number}")).json()
    assert (delivery["kind"], delivery["state"], delivery["installation_id"], delivery["paired_account_id"]) == (
        "delivery", "requested", central["id"], central["id"])
    assert await api.events("account_opened", central["id"]) == []

    opened = await api.act(delivery["id"], "approve")  # approving either account opens both
    assert opened.status_code == 200, opened.text
    assert opened.json()["state"] == "active" and opened.json()["version"] == 2
    assert (await api.get(f"/api/v1/accounts/{central['id']}")).json()["state"] == "active"
    [event] = await api.events("account_opened", delivery["id"])
    assert event["kind"] == "delivery" and event["installation_id"] == central["id"]
    assert event["holder_name"] == "Cementos del Norte, S.A. de C.V." and event["holder_id"] == central["holder_id"]
    assert len(await api.events("account_opened", central["id"])) == 1

    again = await api.act(central["id"], "approve")
    assert again.status_code == 409 and again.json()["code"] == "account.illegal_transition"
    assert "active" in again.json()["detail"]

    suspended = await api.act(central["id"], "suspend", reason="inspection pending")
    assert suspended.json()["state"] == "suspended" and suspended.json()["state_reason"] == "inspection pending"
    assert (await api.get(f"/api/v1/accounts/{delivery['id']}")).json()["state"] == "active"  # only the one named
    assert (await api.act(central["id"], "suspend", reason="twice")).json()["code"] == "account.illegal_transition"
    assert [e["reason"] for e in await api.events("account_suspended", central["id"])] == ["inspection pending"]
    reactivated = await api.act(central["id"], "reactivate")
    assert reactivated.json()["state"] == "active" and reactivated.json()["version"] == 4
    assert len(await api.events("account_reactivated", central["id"])) == 1
    await api.act(central["id"], "suspend", reason="closing down")

    closed = await api.act(central["id"], "close", reason="plant closed")
    assert closed.status_code == 200, closed.text
    assert closed.json()["state"] == "closed"
    assert (await api.get(f"/api/v1/accounts/{delivery['id']}")).json()["state"] == "closed"
    for account_id in (central["id"], delivery["id"]):
        assert [e["reason"] for e in await api.events("account_closed", account_id)] == ["plant closed"]
    assert await api.audit(central["id"]) == ["account.requested", "account.approved", "account.suspended",
                                              "account.reactivated", "account.suspended", "account.closed"]
    assert await api.audit(delivery["id"]) == ["account.requested", "account.approved", "account.closed"]
    for action in ("approve", "reactivate", "suspend", "close"):
        refused = await api.act(delivery["id"], action, reason="after closure")
        assert refused.status_code == 409 and refused.json()["code"] == "account.illegal_transition", action


async def test_a_rejected_request_is_final_and_publishes_nothing(api: Api):
    trading = (await api.request("intermediary")).json()
    assert trading["id"].startswith("TRD-") and trading["paired_account_id"] is None
    no_reason = await api.act(trading["id"], "reject")
    assert no_reason.status_code == 422 and no_reason.json()["errors"][0]["field"] == "reason"
    rejected = await api.act(trading["id"], "reject", reason="incomplete documents")
    assert rejected.json()["state"] == "rejected" and rejected.json()["state_reason"] == "incomplete documents"
    assert (await api.act(trading["id"], "approve")).json()["code"] == "account.illegal_transition"
    for name in ("account_opened", "account_closed", "account_suspended"):
        assert await api.events(name, trading["id"]) == []
    verifier = (await api.request("verifier", holder_id=trading["holder_id"])).json()
    assert verifier["id"].startswith("VER-") and verifier["holder_id"] == trading["holder_id"]


async def test_closure_needs_zero_holdings_and_no_open_hold_either_way(api: Api):
    trading = (await api.request("intermediary")).json()["id"]
    central = (await api.request("installation")).json()
    await api.act(trading, "approve")
    await api.act(central["id"], "approve")
    delivery = central["paired_account_id"]
    serial = FAR_SERIAL + secrets.randbelow(10**6) * 10
    transfer = uuid4()
    try:
        async with api.app.state.engine.begin() as conn:
            await conn.execute(insert(unit_blocks).values(account_id=delivery, unit_type="allowance", vintage=2021,
                                                          serial_start=serial, serial_end=serial + 4))
        refused = await api.act(central["id"], "close", reason="too early")  # the pair counts together
        assert refused.status_code == 409 and refused.json()["code"] == "account.not_empty"
        assert "1 blocks" in refused.json()["detail"]
        async with api.app.state.engine.begin() as conn:
            await conn.execute(delete(unit_blocks).where(unit_blocks.c.serial_start == serial))
            await conn.execute(insert(holds).values(id=uuid4(), transfer_id=transfer, sender_account_id=trading,
                                                    receiver_account_id=delivery, unit_type="allowance",
                                                    quantity=5, state="held"))
        for account_id in (central["id"], trading):  # a hold blocks the receiver and the sender
            refused = await api.act(account_id, "close", reason="hold open")
            assert refused.status_code == 409 and refused.json()["code"] == "account.not_empty", account_id
        assert (await api.get(f"/api/v1/accounts/{delivery}")).json()["state"] == "active"
        async with api.app.state.engine.begin() as conn:
            await conn.execute(holds.update().where(holds.c.transfer_id == transfer).values(state="released"))
        assert (await api.act(central["id"], "close", reason="empty now")).json()["state"] == "closed"
        assert (await api.act(trading, "close", reason="empty now")).json()["state"] == "closed"
    finally:
        async with api.app.state.engine.begin() as conn:
            await conn.execute(delete(unit_blocks).where(unit_blocks.c.serial_start == serial))
            await conn.execute(delete(holds).where(holds.c.transfer_id == transfer))


async def test_closure_waits_for_a_movement_holding_the_account_row(api: Api):
    """A ledger movement locks the account row; a closure started meanwhile waits for it and then sees
    the units it brought, instead of closing an account that is about to hold them."""
    trading = (await api.request("intermediary")).json()["id"]
    await api.act(trading, "approve")
    serial = FAR_SERIAL + 10**8 + secrets.randbelow(10**6) * 10
    admin = await asyncpg.connect(api.env["REGISTRY_ADMIN_DATABASE_URL"])
    database = f"{api.env['REGISTRY_DATABASE_PREFIX']}accounts"
    try:
        async with api.app.state.engine.connect() as movement:
            transaction = await movement.begin()
            await movement.execute(text("SELECT id FROM accounts WHERE id = :id FOR UPDATE"), {"id": trading})
            await movement.execute(insert(unit_blocks).values(account_id=trading, unit_type="allowance", vintage=2021,
                                                              serial_start=serial, serial_end=serial))
            closing = asyncio.create_task(api.act(trading, "close", reason="race"))

            async def closure_waits_on_the_lock() -> bool:
                return bool(await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock' "
                    "AND query ILIKE '%FROM accounts%FOR UPDATE%'", database))

            await wait_for(closure_waits_on_the_lock, timeout=10, what="the closure to wait for the row lock")
            assert not closing.done()
            await transaction.commit()
        answer = await asyncio.wait_for(closing, timeout=10)
        assert answer.status_code == 409 and answer.json()["code"] == "account.not_empty"
        assert (await api.get(f"/api/v1/accounts/{trading}")).json()["state"] == "active"
    finally:
        await admin.close()
        async with api.app.state.engine.begin() as conn:
            await conn.execute(delete(unit_blocks).where(unit_blocks.c.serial_start == serial))


async def test_representatives_and_what_participants_see(api: Api):
    alice_id, alice = await api.user("installation")
    bob_id, bob = await api.user("installation")
    central = (await api.request("installation")).json()
    account = central["id"]
    await api.act(account, "approve")
    url = f"/api/v1/accounts/{account}/representatives"

    linked = await api.client.post(url, json={"user_id": alice_id, "rights": ["view", "initiate"]}, headers=api.admin)
    assert linked.status_code == 201, linked.text
    assert linked.json()["rights"] == ["initiate", "view"] and linked.json()["user_id"] == alice_id
    same = await api.client.post(url, json={"user_id": alice_id, "rights": ["initiate", "view", "view"]},
                                 headers=api.admin)
    assert same.status_code == 200
    assert [e["rights"] for e in await api.events("representative_linked", account)] == [["initiate", "view"]]
    changed = await api.client.post(url, json={"user_id": alice_id, "rights": ["view"]}, headers=api.admin)
    assert changed.status_code == 200 and changed.json()["rights"] == ["view"]
    assert len(await api.events("representative_linked", account)) == 2
    await api.client.post(url, json={"user_id": alice_id, "rights": ["view", "initiate"]}, headers=api.admin)

    # Alice sees the account she represents, not its delivery account nor anybody else's; Bob sees nothing.
    listed = (await api.get("/api/v1/accounts", alice)).json()
    assert [a["id"] for a in listed["items"]] == [account]
    assert (await api.get(f"/api/v1/accounts/{account}", alice)).status_code == 200
    for path in (f"/api/v1/accounts/{account}", f"/api/v1/accounts/{central['paired_account_id']}", url):
        hidden = await api.get(path, bob)
        assert hidden.status_code == 404 and hidden.json()["code"] == "account.not_found", path
    assert (await api.get("/api/v1/accounts", bob)).json()["items"] == []
    reps = (await api.get(url, alice)).json()["items"]
    assert [(r["user_id"], r["rights"]) for r in reps] == [(alice_id, ["initiate", "view"])]
    holder = central["holder_id"]
    assert (await api.get(f"/api/v1/account-holders/{holder}", alice)).json()["tax_id"]
    assert (await api.get(f"/api/v1/account-holders/{holder}", bob)).json()["code"] == "holder.not_found"
    assert [h["id"] for h in (await api.get("/api/v1/account-holders", alice)).json()["items"]] == [holder]

    # The ledger's questions.
    async with api.app.state.engine.connect() as conn:
        assert await account_service.representative_rights(conn, account, alice_id) == {"initiate", "view"}
        assert await account_service.representative_rights(conn, account, bob_id) == set()
        assert await account_service.representative_rights(conn, account, "not-a-uuid") == set()
        as_alice = Principal(alice_id, "alice", frozenset({"installation"}))
        assert (await account_service.require_account_access(conn, as_alice, account, "initiate")).id == account
        cases = [(as_alice, "approve", "account.right_missing"),
                 (Principal(bob_id, "bob", frozenset({"installation"})), "view", "account.not_found"),
                 (Principal("reader", "reader", frozenset({"authority-readonly"})), "initiate",
                  "account.right_missing"),
                 (as_alice, "view", None)]
        for principal, right, code in cases:
            if code is None:
                await account_service.require_account_access(conn, principal, account, right)
                continue
            with pytest.raises(RegistryError) as refusal:
                await account_service.require_account_access(conn, principal, account, right)
            assert refusal.value.code == code, (principal, right)
        with pytest.raises(RegistryError) as refusal:
            await account_service.require_account_access(conn, as_alice, "CEN-NOPE", None)
        assert refusal.value.code == "account.not_found"

    # Participants change nothing on the account's lifecycle or links.
    assert (await api.act(account, "suspend", alice, reason="mine")).status_code == 403
    assert (await api.client.post(url, json={"user_id": bob_id, "rights": ["view"]}, headers=alice)).status_code == 403

    gone = await api.client.delete(f"{url}/{alice_id}", headers=api.admin)
    assert gone.status_code == 204
    assert await api.events("representative_unlinked", account) == [{"account_id": account, "user_id": alice_id}]
    assert (await api.get(f"/api/v1/accounts/{account}", alice)).status_code == 404
    again = await api.client.delete(f"{url}/{alice_id}", headers=api.admin)
    assert again.status_code == 404 and again.json()["code"] == "representative.not_found"
    assert await api.audit(account) == ["account.requested", "account.approved", "representative.linked",
                                        "representative.linked", "representative.linked", "representative.unlinked"]


async def test_linking_refusals(api: Api):
    user_id, _ = await api.user("intermediary")
    trading = (await api.request("intermediary")).json()["id"]

    async def link(account_id: str, **body: Any) -> httpx.Response:
        return await api.client.post(f"/api/v1/accounts/{account_id}/representatives",
                                     json={"user_id": user_id, "rights": ["view"], **body}, headers=api.admin)

    assert (await link(trading)).status_code == 201  # a requested account may be prepared
    unknown = await link(trading, user_id=str(uuid4()))
    assert unknown.status_code == 404 and unknown.json()["code"] == "user.not_found"
    assert unknown.json()["errors"][0]["field"] == "user_id"
    bad_right = await link(trading, rights=["own"])
    assert bad_right.status_code == 422 and bad_right.json()["errors"][0]["field"] == "rights.0"
    assert (await link(trading, rights=[])).status_code == 422
    assert (await link("SYS-CAP")).json()["code"] == "account.system_account"
    assert (await link("TRD-NOPE")).json()["code"] == "account.not_found"
    await api.act(trading, "reject", reason="no")
    closed = await link(trading, rights=["view", "approve"])
    assert closed.status_code == 409 and closed.json()["code"] == "account.illegal_transition"
    await api.client.post(f"/api/v1/users/{user_id}/deactivate", json={}, headers=api.admin)
    other = (await api.request("intermediary")).json()["id"]
    deactivated = await link(other)
    assert deactivated.status_code == 409 and deactivated.json()["code"] == "representative.user_deactivated"


async def test_participants_request_accounts_of_their_own_kind_only(api: Api):
    carla_id, carla = await api.user("intermediary")
    mine = await api.request("intermediary", carla)
    assert mine.status_code == 201, mine.text
    account = mine.json()["id"]
    assert mine.json()["requested_by"] == carla_id
    # she follows her request while it is pending, and may add another account for the same holder
    assert [a["id"] for a in (await api.get("/api/v1/accounts", carla)).json()["items"]] == [account]
    second = await api.request("intermediary", carla, holder_id=mine.json()["holder_id"])
    assert second.status_code == 201
    other_kind = await api.request("installation", carla)
    assert other_kind.status_code == 403 and other_kind.json()["code"] == "account.kind_not_allowed"
    someone_elses = (await api.request("intermediary")).json()["holder_id"]
    hidden = await api.request("intermediary", carla, holder_id=someone_elses)
    assert hidden.status_code == 404 and hidden.json()["code"] == "holder.not_found"
    for role in ("authority", "authority-readonly"):
        refused = await api.request("intermediary", api.as_("x", role))
        assert refused.status_code == 403 and refused.json()["code"] == "auth.forbidden", role
    # once opened, the account is the representatives' (linked by an administrator)
    await api.act(account, "approve")
    assert (await api.get(f"/api/v1/accounts/{account}", carla)).status_code == 404
    await api.client.post(f"/api/v1/accounts/{account}/representatives",
                          json={"user_id": carla_id, "rights": ["view"]}, headers=api.admin)
    assert (await api.get(f"/api/v1/accounts/{account}", carla)).json()["state"] == "active"


async def test_oversight_reads_everything_and_only_the_right_roles_change_state(api: Api):
    trading = (await api.request("intermediary")).json()["id"]
    reader = api.as_("reader", "authority-readonly")
    authority = api.as_("regulator", "authority")
    assert (await api.get(f"/api/v1/accounts/{trading}", reader)).json()["state"] == "requested"
    for action in ("approve", "reject", "close"):
        for headers in (reader, authority):
            refused = await api.act(trading, action, headers, reason="x")
            assert refused.status_code == 403 and refused.json()["code"] == "auth.forbidden", action
    await api.act(trading, "approve")
    assert (await api.act(trading, "suspend", reader, reason="x")).status_code == 403
    assert (await api.act(trading, "suspend", authority, reason="enforcement")).json()["state"] == "suspended"
    assert (await api.act(trading, "reactivate", authority)).json()["state"] == "active"
    system = await api.act("SYS-CAP", "suspend", reason="never")
    assert system.status_code == 409 and system.json()["code"] == "account.system_account"
    assert (await api.act("CEN-NOPE", "approve")).json()["code"] == "account.not_found"
    anonymous = await api.client.get(f"/api/v1/accounts/{trading}")
    assert anonymous.status_code == 401


async def test_listing_filters_and_pages(api: Api):
    holder = (await api.request("intermediary")).json()["holder_id"]
    ids = [(await api.request("intermediary", holder_id=holder)).json()["id"] for _ in range(4)]
    everything = (await api.get("/api/v1/accounts", holder_id=holder)).json()["items"]
    assert len(everything) == 5 and all(a["holder_id"] == holder for a in everything)
    seen, cursor = [], None
    while True:
        params = {"holder_id": holder, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/v1/accounts", **params)).json()
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(a["id"] for a in everything)
    await api.act(ids[0], "approve")
    active = (await api.get("/api/v1/accounts", holder_id=holder, state="active")).json()["items"]
    assert [a["id"] for a in active] == [ids[0]]
    caps = (await api.get("/api/v1/accounts", kind="cap")).json()["items"]
    assert [a["id"] for a in caps] == ["SYS-CAP"]
    assert (await api.get("/api/v1/accounts", state="open")).status_code == 422
    assert (await api.get("/api/v1/accounts", kind="user")).status_code == 422
    assert (await api.get("/api/v1/accounts", limit=0)).status_code == 422


@pytest.mark.parametrize(("body", "status", "code", "field"), [
    ({"kind": "installation", "name": "x", "holder": new_holder(tax_id="ABC85010")}, 422, "request.invalid",
     "holder.tax_id"),
    ({"kind": "installation", "name": "x", "holder": new_holder(tax_id="ABC851301AB1")}, 422,
     "holder.invalid_tax_id", "holder.tax_id"),
    ({"kind": "installation", "name": "x"}, 422, "account.holder_choice", "holder_id"),
    ({"kind": "installation", "name": "x", "holder": new_holder(), "holder_id": str(uuid4())}, 422,
     "account.holder_choice", "holder_id"),
    ({"kind": "installation", "name": "x", "holder_id": str(uuid4())}, 404, "holder.not_found", "holder_id"),
    ({"kind": "cap", "name": "x", "holder": new_holder()}, 422, "request.invalid", "kind"),
    ({"kind": "verifier", "name": "x", "holder": new_holder(), "state": "active"}, 422, "request.invalid", "state"),
    ({"kind": "verifier", "name": "", "holder": new_holder()}, 422, "request.invalid", "name"),
    ({"kind": "verifier", "name": "x", "holder": new_holder(contacts=[])}, 422, "request.invalid",
     "holder.contacts"),
    ({"kind": "verifier", "name": "x", "holder": new_holder(contacts=[{"name": "A", "email": "no"}])}, 422,
     "request.invalid", "holder.contacts.0.email"),
])
async def test_bad_requests_name_their_field(api: Api, body, status, code, field):
    answer = await api.client.post("/api/v1/accounts", json=body, headers=api.admin)
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == code
    assert field in [e["field"] for e in answer.json()["errors"]]


async def test_a_tax_id_belongs_to_one_holder(api: Api):
    rfc = new_rfc()
    first = await api.request("verifier", holder=new_holder(tax_id=rfc.lower()))
    assert first.status_code == 201
    holder = (await api.get(f"/api/v1/account-holders/{first.json()['holder_id']}")).json()
    assert holder["tax_id"] == rfc and holder["contacts"][0]["email"] == "ana@example.mx"
    assert [h["id"] for h in (await api.get("/api/v1/account-holders", tax_id=rfc)).json()["items"]] == [holder["id"]]
    taken = await api.request("verifier", holder=new_holder(tax_id=rfc))
    assert taken.status_code == 409 and taken.json()["code"] == "holder.tax_id_taken"
    assert taken.json()["errors"][0]["field"] == "holder.tax_id"


async def test_system_accounts_are_created_once(api: Api):
    async with api.app.state.engine.connect() as conn:
        transaction = await conn.begin()  # rolled back: the run's database is shared with other tests
        await ensure_system_accounts(conn, SimpleNamespace())  # provisioning may have run it already
        assert await ensure_system_accounts(conn, SimpleNamespace()) == []
        later = await ensure_system_accounts(conn, SimpleNamespace(reserves="price_containment,strategic"))
        assert later == ["SYS-RES-STRATEGIC"]
        published = (await conn.execute(select(outbox.c.envelope["payload"]["account_id"].astext).where(
            outbox.c.routing_key == "accounts.account_opened.v1",
            outbox.c.envelope["payload"]["account_id"].astext.like("SYS-%")))).scalars().all()
        assert sorted(published) == sorted(SYSTEM_IDS | {"SYS-RES-STRATEGIC"})
        rows = (await conn.execute(text("SELECT id, kind, state, holder_id FROM accounts WHERE id LIKE 'SYS-%'"))).all()
        assert {r.id: (r.kind, r.state, r.holder_id) for r in rows} == {
            "SYS-CAP": ("cap", "active", None), "SYS-RES-PRICE_CONTAINMENT": ("reserve", "active", None),
            "SYS-RES-NEW_ENTRANTS": ("reserve", "active", None), "SYS-RES-STRATEGIC": ("reserve", "active", None),
            "SYS-ALLOC": ("allocation", "active", None), "SYS-AUCTION": ("auction", "active", None),
            "SYS-CANCEL": ("cancellation", "active", None)}
        await transaction.rollback()

