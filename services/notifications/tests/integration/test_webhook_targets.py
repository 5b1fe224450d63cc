"""The production rule for webhook targets, through the notifications API in-process on its real database:
loopback, private and link-local hosts are refused (the host is resolved); test and development allow them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from uuid import uuid4

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager

from notifications.definition import DEFINITION
from registry_common.api import create_app
from registry_common.testing.fixtures import settings_from_env

pytestmark = pytest.mark.integration


async def _client(provisioned_services: dict[str, str], **overrides: object) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_from_env(provisioned_services, "notifications", **overrides)
    app = create_app(DEFINITION, settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://notifications") as client:
        yield client


@pytest.fixture(scope="module")
async def representative(provisioned_services: dict[str, str]) -> tuple[str, str]:
    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    db = await asyncpg.connect(f"{base}/{provisioned_services['REGISTRY_DATABASE_PREFIX']}notifications")
    user_id, account_id = str(uuid4()), f"MX-T-{uuid4().hex[:8]}"
    try:
        await db.execute("INSERT INTO known_accounts (account_id, kind, state) VALUES ($1, 'trading', 'active')",
                         account_id)
        await db.execute("INSERT INTO known_representatives (account_id, user_id, rights) VALUES ($1, $2, $3)",
                         account_id, user_id, ["view"])
    finally:
        await db.close()
    return user_id, account_id


@pytest.fixture(scope="module")
async def production(provisioned_services: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    test_settings = settings_from_env(provisioned_services, "notifications")
    async for client in _client(provisioned_services, environment="production", clock_control=False, faults="",
                                database_url=test_settings.app_database_url,
                                amqp_url="amqp://registry:not-guest@127.0.0.1:5672/"):
        yield client


@pytest.fixture(scope="module")
async def testing(provisioned_services: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(provisioned_services):
        yield client


@pytest.mark.parametrize(("url", "code"), [
    ("https://127.0.0.1:8443/hook", "notification.webhook_private_target"),
    ("https://localhost/hook", "notification.webhook_private_target"),
    ("https://10.0.0.7/hook", "notification.webhook_private_target"),
    ("https://192.168.10.1/hook", "notification.webhook_private_target"),
    ("https://169.254.169.254/latest/meta-data", "notification.webhook_private_target"),
    ("https://[::1]/hook", "notification.webhook_private_target"),
    ("http://8.8.8.8/hook", "notification.webhook_not_https"),
    ("https://no-such-host.invalid/hook", "notification.webhook_unresolvable"),
])
async def test_production_refuses_non_public_targets(production, representative, token_for: Callable[..., str],
                                                     url, code):
    user_id, account_id = representative
    answer = await production.post("/api/v1/webhook-subscriptions", json={"account_id": account_id, "url": url},
                                   headers={"Authorization": f"Bearer {token_for(user_id, 'intermediary')}",
                                            "Accept-Language": "en"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["code"] == code
    assert answer.json()["errors"][0]["field"] == "url"


async def test_outside_production_a_local_target_is_allowed_and_the_secret_shown_once(
        testing, representative, token_for: Callable[..., str]):
    user_id, account_id = representative
    headers = {"Authorization": f"Bearer {token_for(user_id, 'intermediary')}"}
    created = await testing.post("/api/v1/webhook-subscriptions", headers=headers,
                                 json={"account_id": account_id, "url": "https://127.0.0.1:8443/hook"})
    assert created.status_code == 201, created.text
    assert created.json()["secret"].startswith("whsec_")
    listed = await testing.get("/api/v1/webhook-subscriptions", headers=headers)
    assert [s["id"] for s in listed.json()["items"]] == [created.json()["id"]]
    assert "secret" not in listed.json()["items"][0]
    other = {"Authorization": f"Bearer {token_for(str(uuid4()), 'intermediary')}"}
    assert (await testing.get(f"/api/v1/webhook-subscriptions/{created.json()['id']}", headers=other)
            ).status_code == 404
