"""Four eyes and the audit log on a real service database (compliance, chosen at random: the mechanism is
the chassis's), through the service's API in-process, with made-up users."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from compliance.definition import DEFINITION
from registry_common.api import create_app
from registry_common.approvals import payload_hash, register_approval_action, request_approval
from registry_common.audit import record_audit
from registry_common.auth import Principal
from registry_common.testing.fixtures import settings_from_env

pytestmark = pytest.mark.integration
PAYLOAD = {"account_id": "MX-100-1", "units": 250, "reason": "correction of a data-entry error"}
EXECUTED: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
async def api(provisioned_services: dict[str, str]) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = settings_from_env(provisioned_services, "compliance")
    app = create_app(DEFINITION, settings)

    async def execute(conn: Any, payload: dict[str, Any], decider: Principal) -> None:
        EXECUTED.append(payload)
        await record_audit(conn, action="test.correction_executed", entity_type="test", entity_id="1",
                           actor=decider.user_id)

    register_approval_action("test.correction", execute)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://compliance") as client:
        yield client, app


def user(user_id: str, *roles: str) -> Principal:
    return Principal(user_id=user_id, username=user_id, roles=frozenset(roles))


async def new_request(app: Any, *, requested_by: Principal, ttl: timedelta = timedelta(days=1),
                      payload: dict[str, Any] = PAYLOAD) -> str:
    async with app.state.engine.begin() as conn:
        approval_id = await request_approval(conn, action="test.correction", payload=payload,
                                             requested_by=requested_by, required_roles=["authority"],
                                             now=app.state.clock.now(), ttl=ttl)
    return str(approval_id)


async def test_four_eyes_refusals_and_one_approval(api, token_for: Callable[..., str]):
    client, app = api
    maker = user("authority-maker", "authority")
    approval_id = await new_request(app, requested_by=maker)

    def as_(user_id: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(user_id, *roles)}", "Accept-Language": "en"}

    right_hash = {"payload_hash": payload_hash(PAYLOAD)}
    url = f"/api/v1/compliance/approvals/{approval_id}/approve"

    own = await client.post(url, json=right_hash, headers=as_("authority-maker", "authority"))
    assert own.status_code == 403 and own.json()["code"] == "approval.self_approval"

    wrong_role = await client.post(url, json=right_hash, headers=as_("admin-2", "administrator"))
    assert wrong_role.status_code == 403 and wrong_role.json()["code"] == "approval.wrong_role"

    changed = payload_hash({**PAYLOAD, "units": 2500})
    tampered = await client.post(url, json={"payload_hash": changed}, headers=as_("authority-checker", "authority"))
    assert tampered.status_code == 409 and tampered.json()["code"] == "approval.payload_mismatch"
    assert tampered.json()["errors"][0]["field"] == "payload_hash"
    assert EXECUTED == []

    pending = await client.get("/api/v1/compliance/approvals?state=pending",
                               headers=as_("reader", "authority-readonly"))
    assert [a["id"] for a in pending.json()["items"]] == [approval_id]

    approved = await client.post(url, json=right_hash, headers=as_("authority-checker", "authority"))
    assert approved.status_code == 200 and approved.json()["state"] == "approved"
    assert EXECUTED == [PAYLOAD]

    again = await client.post(url, json=right_hash, headers=as_("authority-third", "authority"))
    assert again.status_code == 409 and again.json()["code"] == "approval.not_pending"

    audit = (await client.get("/api/v1/compliance/audit-log?entity_type=approval",
                              headers=as_("reader", "authority-readonly"))).json()["items"]
    assert [(a["action"], a["actor"]) for a in audit if a["entity_id"] == approval_id] == [
        ("approval.approved", "authority-checker"), ("approval.requested", "authority-maker")]


async def test_expired_approval_is_refused(api, token_for: Callable[..., str]):
    client, app = api
    approval_id = await new_request(app, requested_by=user("authority-maker", "authority"),
                                    ttl=timedelta(seconds=-1))
    answer = await client.post(f"/api/v1/compliance/approvals/{approval_id}/approve",
                               json={"payload_hash": payload_hash(PAYLOAD)},
                               headers={"Authorization": f"Bearer {token_for('checker', 'authority')}"})
    assert answer.status_code == 409 and answer.json()["code"] == "approval.expired"
    assert answer.json()["title"] == "La aprobación expiró."  # Spanish unless asked otherwise


async def test_audit_log_readable_only_by_oversight(api, token_for: Callable[..., str]):
    client, _ = api
    denied = await client.get("/api/v1/compliance/audit-log",
                              headers={"Authorization": f"Bearer {token_for('inst', 'installation')}"})
    assert denied.status_code == 403 and denied.headers["content-type"] == "application/problem+json"
    anonymous = await client.get("/api/v1/compliance/audit-log")
    assert anonymous.status_code == 401


@pytest.mark.parametrize("statement", ["UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log",
                                       "TRUNCATE audit_log"])
async def test_app_role_cannot_change_the_audit_log(api, provisioned_services, statement):
    _, app = api
    async with app.state.engine.begin() as conn:  # connected as compliance_app
        await record_audit(conn, action="test.row", entity_type="test", entity_id="x", actor="t")
    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("@", 1)[1].rsplit("/", 1)[0]
    database = f"{provisioned_services['REGISTRY_DATABASE_PREFIX']}compliance"
    for role in ("compliance_app", "compliance_owner"):  # the grant refuses the app; the trigger everyone
        conn = await asyncpg.connect(f"postgresql://{role}@{base}/{database}")
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        finally:
            await conn.close()
