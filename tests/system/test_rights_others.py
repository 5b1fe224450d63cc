"""The rights matrix, continued: another participant's resources. Two installations, ``mine`` and
``theirs`` (each a real user representing its own account with every right), with a transfer, a surrender,
an emission report, inbox notifications and a webhook subscription each; ``mine`` then tries to read and act
on everything of ``theirs``, through the gateway. Every attempt is refused (403 or 404, as problem+json),
nothing of ``theirs`` appears in ``mine``'s lists, and nothing changed: no service wrote an audit row, and
each resource of ``theirs`` reads the same afterwards.

A registry of this module's own (its programme clock moves into the reporting window of 2020)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from registry_common.launcher import SystemPlan
from registry_common.settings import SERVICES
from registry_common.testing.fixtures import wait_for
from registry_common.testing.private_system import private_system
from registry_common.testing.registry_client import Party, RegistryClient

pytestmark = [pytest.mark.system, pytest.mark.integration]
ZONE = ZoneInfo("America/Mexico_City")
REFUSED = (403, 404)


@dataclass
class Side:
    """One participant and what it owns."""

    party: Party
    delivery_account_id: str = ""
    transfer_id: str = ""
    surrender_id: str = ""
    report_id: str = ""
    subscription_id: str = ""
    notification_ids: list[str] = field(default_factory=list)


@dataclass
class World:
    plan: SystemPlan
    env: dict[str, str]
    registry: RegistryClient
    mine: Side
    theirs: Side
    verifier: Party

    async def call(self, method: str, path: str, who: dict[str, str], body: Any = None, **kw: Any) -> httpx.Response:
        return await self.registry.call(method, path, who, body, **kw)

    def dsn(self, service: str) -> str:
        server = self.env["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
        return f"{server}/{self.env['REGISTRY_DATABASE_PREFIX']}{service}"

    async def audit_rows(self) -> dict[str, int]:
        counts = {}
        for service in SERVICES:
            conn = await asyncpg.connect(self.dsn(service))
            try:
                counts[service] = int(await conn.fetchval("SELECT count(*) FROM audit_log"))
            finally:
                await conn.close()
        return counts


async def knows(world_env: dict[str, str], service: str, account_id: str) -> None:
    server = world_env["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{server}/{world_env['REGISTRY_DATABASE_PREFIX']}{service}")
    try:
        await wait_for(lambda: conn.fetchval("SELECT count(*) FROM known_representatives WHERE account_id = $1",
                                             account_id), timeout=60, what=f"{service} to learn of {account_id}")
    finally:
        await conn.close()


async def furnish(registry: RegistryClient, env: dict[str, str], side: Side, other: Party, verifier: Party) -> None:
    """A transfer awaiting acceptance, a completed surrender, a submitted report, a webhook subscription and
    the inbox notifications these bring."""
    party = side.party
    account = (await registry.call("GET", f"/api/v1/accounts/{party.account_id}", registry.authority,
                                   expect=200)).json()
    side.delivery_account_id = account["paired_account_id"]
    await knows(env, "compliance", party.account_id)
    await knows(env, "notifications", party.account_id)
    for kind, to in (("issuance", "SYS-CAP"), ("allocation", party.account_id)):
        await registry.call("POST", "/api/v1/ledger/movements", registry.authority, {
            "kind": kind, "to_account_id": to, "unit_type": "allowance", "vintage": 2020, "quantity": 40,
            **({"from_account_id": "SYS-CAP"} if kind == "allocation" else {})}, key=True, expect=201)
    hook = await registry.call("POST", "/api/v1/webhook-subscriptions", party.headers, {
        "account_id": party.account_id, "url": f"https://localhost:9/hook/{uuid4().hex[:8]}"}, expect=201)
    side.subscription_id = hook.json()["id"]
    surrendered = await registry.call("POST", "/api/v1/surrenders", party.headers, {
        "central_account_id": party.account_id, "unit_type": "allowance", "quantity": 5}, key=True, expect=202)
    side.surrender_id = surrendered.json()["id"]
    sent = await registry.transfer(party, other, 3)
    assert sent.status_code == 201, sent.text
    side.transfer_id = sent.json()["id"]
    await registry.reaches(side.transfer_id, party, "awaiting_acceptance", within=60)

    async def decided() -> bool:
        row = (await registry.call("GET", f"/api/v1/surrenders/{side.surrender_id}", party.headers,
                                   expect=200)).json()
        return row["state"] != "requested"

    await wait_for(decided, timeout=60, what="the surrender to be decided")


@pytest.fixture(scope="module")
async def world(registry_env, tmp_path_factory, token_for) -> AsyncIterator[World]:
    # The acceptance window outlasts the clock's move to September 2021: the transfers stay awaiting.
    env = {"REGISTRY_AUTO_EVALUATE": "false", "REGISTRY_ACCEPTANCE_WINDOW_SECONDS": str(5 * 365 * 24 * 3600)}
    async with private_system(registry_env, tmp_path_factory.mktemp("rights-others"), "o", env) as (plan, own):
        server = own["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
        async with RegistryClient.open(
            plan.gateway_url, admin_password=own["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"],
            authority_token=token_for("authority-1", "authority", lifetime=timedelta(hours=1)),
            transfers_dsn=f"{server}/{own['REGISTRY_DATABASE_PREFIX']}transfers",
        ) as registry:
            mine, theirs = Side(await registry.party()), Side(await registry.party())
            verifier = await registry.party("verifier", "verifier")
            third = await registry.party("intermediary", "intermediary")  # receives both transfers
            await knows(own, "compliance", verifier.account_id)
            await furnish(registry, own, mine, third, verifier)
            await furnish(registry, own, theirs, third, verifier)
            # Reports are taken in the reporting window of 2020 (September 2021).
            moved = await registry.call("PUT", "/api/v1/programme/clock", registry.authority, {
                "programme_now": datetime(2021, 9, 10, 12, tzinfo=ZONE).isoformat(), "reason": "rights test"},
                expect=200)
            version = moved.json()["version"]

            async def everyone_moved() -> bool:
                for url in [plan.api_url(s) for s in SERVICES] + [plan.worker_url(s) for s in SERVICES]:
                    if (await registry.http.get(f"{url}/health")).json()["clock"]["version"] < version:
                        return False
                return True

            await wait_for(everyone_moved, timeout=30, what="every process to see the clock move")
            for side in (mine, theirs):
                report = await registry.call("POST", "/api/v1/emission-reports", side.party.headers, {
                    "installation_account_id": side.party.account_id, "period": "2020", "emissions": 10,
                    "rene_reference": f"RENE-{uuid4().hex[:6]}", "verifier_account_id": verifier.account_id},
                    expect=201)
                side.report_id = report.json()["id"]

            async def inbox_of(side: Side) -> list[str]:
                items = (await registry.call("GET", "/api/v1/notifications", side.party.headers,
                                             expect=200)).json()["items"]
                return [item["id"] for item in items]

            for side in (mine, theirs):
                side.notification_ids = await wait_for(lambda s=side: inbox_of(s), timeout=60,
                                                       what="inbox notifications")
            yield World(plan, own, registry, mine, theirs, verifier)


def attempts(world: World) -> list[tuple[str, str, Any]]:
    """Everything ``mine`` tries on ``theirs``: (method, path, body)."""
    t = world.theirs
    account, user = t.party.account_id, t.party.user_id
    return [
        # Accounts and the ledger.
        ("GET", f"/api/v1/accounts/{account}", None),
        ("GET", f"/api/v1/accounts/{account}/holdings", None),
        ("GET", f"/api/v1/accounts/{t.delivery_account_id}/holdings", None),
        ("GET", f"/api/v1/accounts/{account}/journal", None),
        ("GET", f"/api/v1/accounts/{account}/representatives", None),
        ("POST", f"/api/v1/accounts/{account}/representatives",
         {"user_id": world.mine.party.user_id, "rights": ["initiate", "approve", "view"]}),
        ("DELETE", f"/api/v1/accounts/{account}/representatives/{user}", None),
        ("GET", f"/api/v1/users/{user}", None),
        ("PATCH", f"/api/v1/users/{user}", {"display_name": "Otro"}),
        ("GET", f"/api/v1/ledger/holds/{t.transfer_id}", None),
        # Transfers: theirs, and one from their account.
        ("GET", f"/api/v1/transfers/{t.transfer_id}", None),
        ("POST", f"/api/v1/transfers/{t.transfer_id}/cancel", None),
        ("POST", f"/api/v1/transfers/{t.transfer_id}/approve", None),
        ("POST", f"/api/v1/transfers/{t.transfer_id}/decline", None),
        ("POST", "/api/v1/transfers", {"sender_account_id": account, "receiver_account_id": world.mine.party.account_id,
                                       "unit_type": "allowance", "quantity": 1}),
        ("PUT", f"/api/v1/transfers/accounts/{account}/settings", {"sender_approval_required": True}),
        # Surrenders, reports and compliance results.
        ("GET", f"/api/v1/surrenders/{t.surrender_id}", None),
        ("POST", "/api/v1/surrenders", {"central_account_id": account, "unit_type": "allowance", "quantity": 1}),
        ("GET", f"/api/v1/emission-reports/{t.report_id}", None),
        ("POST", "/api/v1/emission-reports", {
            "installation_account_id": account, "period": "2020", "emissions": 1, "rene_reference": "RENE-x",
            "verifier_account_id": world.verifier.account_id}),
        ("POST", f"/api/v1/emission-reports/{t.report_id}/attestation", {"decision": "attest"}),
        ("GET", f"/api/v1/compliance/periods/2020/installations/{account}", None),
        ("GET", f"/api/v1/compliance/installations/{account}/status", None),
        ("GET", f"/api/v1/compliance/installations/{account}/projection", None),
        # Notifications and webhooks.
        *[("POST", f"/api/v1/notifications/{n}/read", None) for n in t.notification_ids[:3]],
        ("GET", f"/api/v1/webhook-subscriptions/{t.subscription_id}", None),
        ("GET", f"/api/v1/webhook-subscriptions/{t.subscription_id}/deliveries", None),
        ("POST", f"/api/v1/webhook-subscriptions/{t.subscription_id}/deliveries/{uuid4()}/resend", None),
        ("DELETE", f"/api/v1/webhook-subscriptions/{t.subscription_id}", None),
        ("POST", "/api/v1/webhook-subscriptions", {"account_id": account, "url": "https://localhost:9/hook/x"}),
    ]


async def snapshot(world: World) -> dict[str, Any]:
    """What ``theirs`` sees of its own resources (the fields that only a request could change)."""
    t, who = world.theirs, world.theirs.party.headers

    async def get(path: str, headers: dict[str, str] | None = None) -> Any:
        answer = await world.call("GET", path, headers or who)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
        return answer.json()

    inbox = (await get("/api/v1/notifications"))["items"]
    representatives = await get(f"/api/v1/accounts/{t.party.account_id}/representatives")
    report = await get(f"/api/v1/emission-reports/{t.report_id}")
    return {
        "holdings": (await get(f"/api/v1/accounts/{t.party.account_id}/holdings"))["total"],
        "representatives": sorted(str(r) for r in (representatives.get("items", representatives)
                                                   if isinstance(representatives, dict) else representatives)),
        "transfer": (await get(f"/api/v1/transfers/{t.transfer_id}"))["state"],
        "surrender": (await get(f"/api/v1/surrenders/{t.surrender_id}"))["state"],
        "report": (report["state"], report["version"]),
        "subscription": (await get(f"/api/v1/webhook-subscriptions/{t.subscription_id}"))["active"],
        "read": {n["id"]: n.get("read_at") for n in inbox if n["id"] in t.notification_ids},
        "user": (await get(f"/api/v1/users/{t.party.user_id}", world.registry.admin))["display_name"],
    }


async def test_another_participants_resources_are_refused_and_nothing_changes(world: World) -> None:
    me = world.mine.party
    before, audit_before = await snapshot(world), await world.audit_rows()
    answers = []
    for method, path, body in attempts(world):
        answer = await world.call(method, path, me.headers, body, key=method == "POST")
        answers.append((method, path, answer.status_code, answer.headers.get("content-type"),
                        answer.text[:200]))
    allowed = [a for a in answers if a[2] not in REFUSED]
    assert not allowed, "another participant's resources answered:\n" + "\n".join(map(str, allowed))
    not_problems = [a for a in answers if a[3] != "application/problem+json"]
    assert not not_problems, not_problems
    # Nothing changed: their resources read the same, and no service recorded anything.
    assert await snapshot(world) == before
    assert await world.audit_rows() == audit_before


async def test_their_resources_are_not_in_my_lists(world: World) -> None:
    me, t = world.mine.party, world.theirs
    lists = {
        "/api/v1/transfers": ("id", t.transfer_id),
        "/api/v1/surrenders": ("id", t.surrender_id),
        "/api/v1/emission-reports": ("id", t.report_id),
        "/api/v1/webhook-subscriptions": ("id", t.subscription_id),
        "/api/v1/notifications": ("id", None),
    }
    for path, (key, theirs_id) in lists.items():
        for params in ({}, {"account_id": t.party.account_id}, {"central_account_id": t.party.account_id},
                       {"installation_account_id": t.party.account_id}):
            answer = await world.call("GET", path, me.headers, params=params)
            if answer.status_code in REFUSED:
                continue
            assert answer.status_code == 200, f"{path} {params}: {answer.status_code} {answer.text}"
            ids = {str(item[key]) for item in answer.json()["items"]}
            assert not ids & set(t.notification_ids), (path, params)
            if theirs_id is not None:
                assert theirs_id not in ids, (path, params)
    mine_accounts = (await world.call("GET", "/api/v1/accounts", me.headers)).json()
    listed = {a["id"] for a in mine_accounts.get("items", [])} if isinstance(mine_accounts, dict) else set()
    assert t.party.account_id not in listed and t.delivery_account_id not in listed


async def test_my_own_resources_are_mine(world: World) -> None:
    """The same calls on one's own resources are answered: the refusals above are about whose they are."""
    me = world.mine
    for path in (f"/api/v1/accounts/{me.party.account_id}", f"/api/v1/accounts/{me.party.account_id}/holdings",
                 f"/api/v1/transfers/{me.transfer_id}", f"/api/v1/surrenders/{me.surrender_id}",
                 f"/api/v1/emission-reports/{me.report_id}", f"/api/v1/webhook-subscriptions/{me.subscription_id}",
                 f"/api/v1/compliance/installations/{me.party.account_id}/status"):
        answer = await world.call("GET", path, me.party.headers)
        assert answer.status_code == 200, f"{path}: {answer.status_code} {answer.text}"
    read = await world.call("POST", f"/api/v1/notifications/{me.notification_ids[0]}/read", me.party.headers)
    assert read.status_code == 200, read.text
