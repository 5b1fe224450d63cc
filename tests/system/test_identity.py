"""Identity through the gateway, every process separate: sign-in, users, refusals, bad input, lockout."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from registry_common.auth import TokenCodec, generate_keypair
from registry_common.settings import SERVICES
from registry_common.testing.fixtures import wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration]
PASSWORD = "correct-horse-battery-staple"


async def sign_in(http: httpx.AsyncClient, gateway: str, username: str, password: str) -> httpx.Response:
    return await http.post(f"{gateway}/api/v1/auth/token", json={"username": username, "password": password})


@pytest.fixture(scope="module")
async def admin_token(system, provisioned_services) -> str:
    async with httpx.AsyncClient() as http:
        answer = await sign_in(http, system.gateway_url, "admin",
                               provisioned_services["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"])
    assert answer.status_code == 200, answer.text
    return answer.json()["access_token"]


def auth(token: str, language: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if language:
        headers["Accept-Language"] = language
    return headers


async def new_user(http: httpx.AsyncClient, gateway: str, admin_token: str, *roles: str) -> dict[str, Any]:
    username = f"user-{uuid4().hex[:10]}"
    answer = await http.post(f"{gateway}/api/v1/users", headers=auth(admin_token), json={
        "username": username, "display_name": "María Pérez", "email": f"{username}@example.mx",
        "language": "es", "roles": list(roles) or ["installation"], "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def user_count(http: httpx.AsyncClient, gateway: str, admin_token: str) -> int:
    return len((await http.get(f"{gateway}/api/v1/users?limit=500", headers=auth(admin_token))).json()["items"])


async def test_every_process_is_ready_behind_the_gateway(system, http):
    report = (await http.get(f"{system.gateway_url}/api/v1/health")).json()
    assert report["status"] == "ready"
    assert sorted(report["services"]) == sorted(SERVICES)
    assert all(p["status"] == "ready" for s in report["services"].values() for p in s.values())


async def test_administrator_signs_in_and_creates_a_user_who_can_sign_in(system, http, admin_token,
                                                                        provisioned_services):
    created = await http.post(f"{system.gateway_url}/api/v1/users", headers=auth(admin_token), json={
        "username": f"ana-{uuid4().hex[:8]}", "display_name": "Ana López", "email": "ana@example.mx",
        "language": "es", "roles": ["installation"], "password": PASSWORD})
    assert created.status_code == 201, created.text
    user = created.json()
    assert created.headers["location"] == f"/api/v1/users/{user['id']}"
    assert "password" not in created.text and "password_hash" not in created.text

    fetched = await http.get(f"{system.gateway_url}{created.headers['location']}", headers=auth(admin_token))
    assert fetched.json()["roles"] == ["installation"]
    signed_in = await sign_in(http, system.gateway_url, user["username"], PASSWORD)
    assert signed_in.status_code == 200
    me = await http.get(f"{system.gateway_url}/api/v1/users/me", headers=auth(signed_in.json()["access_token"]))
    assert me.json()["id"] == user["id"]

    refreshed = await http.post(f"{system.gateway_url}/api/v1/auth/refresh",
                                json={"refresh_token": signed_in.json()["refresh_token"]})
    assert refreshed.status_code == 200
    reused = await http.post(f"{system.gateway_url}/api/v1/auth/refresh",
                             json={"refresh_token": signed_in.json()["refresh_token"]})
    assert reused.status_code == 401 and reused.json()["code"] == "auth.refresh_invalid"

    audit = (await http.get(f"{system.gateway_url}/api/v1/accounts/audit-log?entity_id={user['id']}",
                            headers=auth(admin_token))).json()["items"]
    assert {"user.created", "auth.sign_in_succeeded", "auth.token_refreshed", "auth.refresh_reused"} <= {
        a["action"] for a in audit}


@pytest.fixture(scope="module")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> TokenCodec:
    folder: Path = tmp_path_factory.mktemp("other-key")
    generate_keypair(folder / "private.pem", folder / "public.pem")
    return TokenCodec(public_key_file=folder / "public.pem", private_key_file=folder / "private.pem",
                      issuer="registro-mx", audience="registro-mx")


async def test_refusals_are_problem_json_in_the_language_asked(system, http, admin_token, token_for, other_key):
    users_url = f"{system.gateway_url}/api/v1/users"
    before = await user_count(http, system.gateway_url, admin_token)

    none = await http.get(users_url, headers={"Accept-Language": "en"})
    assert (none.status_code, none.json()["code"]) == (401, "auth.required")
    assert none.headers["content-type"] == "application/problem+json"
    assert none.json()["title"] == "Sign-in is required."

    expired = token_for("someone", "administrator", lifetime=timedelta(minutes=-1))
    answer = await http.get(users_url, headers=auth(expired, "es"))
    assert (answer.status_code, answer.json()["code"]) == (401, "auth.token_expired")
    assert answer.json()["title"] == "El token expiró."

    forged = other_key.issue(user_id="intruder", username="intruder", roles=["administrator"],
                             lifetime=timedelta(minutes=5))
    answer = await http.post(users_url, headers=auth(forged), json={"username": "x"})
    assert (answer.status_code, answer.json()["code"]) == (401, "auth.token_invalid")

    installation = token_for(str(uuid4()), "installation")
    answer = await http.get(users_url, headers=auth(installation, "en"))
    assert (answer.status_code, answer.json()["code"]) == (403, "auth.forbidden")
    answer = await http.post(users_url, headers=auth(installation), json={
        "username": "sneaky", "display_name": "x", "email": "x@example.mx", "roles": ["administrator"],
        "password": PASSWORD})
    assert answer.status_code == 403
    assert await user_count(http, system.gateway_url, admin_token) == before


async def test_a_forged_identity_header_sent_straight_to_a_service_is_refused(system, http, other_key):
    accounts = system.api_url("accounts")
    forged_headers = {"X-User-Id": "admin", "X-Roles": "administrator", "X-Principal": "admin"}
    answer = await http.get(f"{accounts}/api/v1/users", headers=forged_headers)
    assert (answer.status_code, answer.json()["code"]) == (401, "auth.required")
    forged = other_key.issue(user_id="intruder", username="intruder", roles=["administrator"],
                             lifetime=timedelta(minutes=5))
    answer = await http.get(f"{accounts}/api/v1/users", headers={**forged_headers, **auth(forged)})
    assert (answer.status_code, answer.json()["code"]) == (401, "auth.token_invalid")


@pytest.mark.parametrize(("body", "field", "code"), [
    (b'{"username": "bad json",', "body", "request.malformed_json"),
    (b'{"username": "x-user-1", "display_name": "X", "email": "x@example.mx", "roles": ["installation"],'
     b' "password": "correct-horse-battery-staple", "favourite_colour": "green"}', "favourite_colour",
     "request.invalid"),
    (b'{"username": "x-user-2", "display_name": "X", "email": 42, "roles": ["installation"],'
     b' "password": "correct-horse-battery-staple"}', "email", "request.invalid"),
    (b'{"username": "x-user-3", "display_name": "X", "email": "x@example.mx", "roles": "installation",'
     b' "password": "correct-horse-battery-staple"}', "roles", "request.invalid"),
    (b'{"username": "x-user-4", "display_name": "X", "email": "x@example.mx", "roles": ["emperor"],'
     b' "password": "correct-horse-battery-staple"}', "roles.0", "request.invalid"),
    (b'{"username": "x-user-5", "display_name": "X", "email": "x@example.mx", "roles": ["installation"],'
     b' "password": "short"}', "password", "user.password_rejected"),
])
@pytest.mark.parametrize("language", ["es", "en"])
async def test_bad_input_names_the_field_and_changes_nothing(system, http, admin_token, body, field, code,
                                                             language):
    before = await user_count(http, system.gateway_url, admin_token)
    audit_url = f"{system.gateway_url}/api/v1/accounts/audit-log?limit=1"
    last_audit = (await http.get(audit_url, headers=auth(admin_token))).json()["items"][0]["id"]
    answer = await http.post(f"{system.gateway_url}/api/v1/users", content=body,
                             headers={**auth(admin_token, language), "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert problem["code"] == code and answer.headers["content-language"] == language
    assert field in [e["field"] for e in problem["errors"]], problem
    assert await user_count(http, system.gateway_url, admin_token) == before
    assert (await http.get(audit_url, headers=auth(admin_token))).json()["items"][0]["id"] == last_audit


async def test_ten_wrong_passwords_lock_the_user_for_the_configured_time(system, http, admin_token):
    user = await new_user(http, system.gateway_url, admin_token)
    answers = [await sign_in(http, system.gateway_url, user["username"], "wrong-password-123") for _ in range(10)]
    assert [a.status_code for a in answers] == [401] * 9 + [423]
    assert {a.json()["code"] for a in answers[:9]} == {"auth.invalid_credentials"}
    assert answers[9].json()["code"] == "auth.account_locked"

    locked = await sign_in(http, system.gateway_url, user["username"], PASSWORD)  # right password, still locked
    assert (locked.status_code, locked.json()["code"]) == (423, "auth.account_locked")

    audit = (await http.get(f"{system.gateway_url}/api/v1/accounts/audit-log?entity_id={user['id']}&limit=50",
                            headers=auth(admin_token))).json()["items"]
    actions = [a["action"] for a in audit]
    assert actions.count("auth.sign_in_failed") == 10
    assert "user.locked" in actions and "auth.sign_in_refused" in actions

    # The lock lasts REGISTRY_LOGIN_LOCK_MINUTES (a few seconds in this run); then the user is let in.
    await wait_for(lambda: _signs_in(http, system.gateway_url, user["username"]), timeout=30, interval=0.5,
                   what="the lock to run out")


async def _signs_in(http: httpx.AsyncClient, gateway: str, username: str) -> bool:
    return (await sign_in(http, gateway, username, PASSWORD)).status_code == 200


async def test_deactivated_user_cannot_sign_in_and_the_change_is_published(system, http, admin_token,
                                                                         provisioned_services):
    user = await new_user(http, system.gateway_url, admin_token, "verifier")
    deactivated = await http.post(f"{system.gateway_url}/api/v1/users/{user['id']}/deactivate",
                                  headers=auth(admin_token), json={"reason": "left the verification body"})
    assert deactivated.status_code == 200 and deactivated.json()["active"] is False
    refused = await sign_in(http, system.gateway_url, user["username"], PASSWORD)
    assert (refused.status_code, refused.json()["code"]) == (403, "auth.user_deactivated")

    import asyncpg

    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{base}/{provisioned_services['REGISTRY_DATABASE_PREFIX']}accounts")
    try:
        async def published() -> list[str]:
            rows = await conn.fetch(
                "SELECT routing_key FROM outbox WHERE envelope->>'correlation_id' = $1 AND published_at IS NOT NULL "
                "ORDER BY id", user["id"])
            return [r["routing_key"] for r in rows]

        events = await wait_for(lambda: _both(published), what="the user events to be published")
        assert events == ["accounts.user_registered.v1", "accounts.user_deactivated.v1"]
    finally:
        await conn.close()


async def _both(published: Any) -> list[str] | None:
    events = await published()
    return events if len(events) == 2 else None
