"""Driving compliance through the gateway in system tests: a registry client plus the programme clock,
ledger funding, surrenders and the compliance read model's progress."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx

from registry_common.launcher import SystemPlan
from registry_common.settings import SERVICES
from registry_common.testing.fixtures import wait_for
from registry_common.testing.registry_client import Party, RegistryClient

ZONE = ZoneInfo("America/Mexico_City")


def local(*args: int) -> str:
    """An ISO instant at programme-local time (the pilot's time zone)."""
    return datetime(*args, tzinfo=ZONE).isoformat()


@dataclass
class ComplianceWorld:
    plan: SystemPlan
    env: dict[str, str]
    registry: RegistryClient
    compliance_db: asyncpg.Connection
    installations: dict[str, Party] = field(default_factory=dict)
    delivery: dict[str, str] = field(default_factory=dict)
    verifier: Party | None = None
    other_verifier: Party | None = None
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)

    async def call(self, method: str, path: str, who: dict[str, str], body: Any = None, **kw: Any) -> httpx.Response:
        return await self.registry.call(method, path, who, body, **kw)

    async def move_clock(self, when: str, *, except_services: Collection[str] = ()) -> None:
        """Move the programme clock and wait until every process sees it (``except_services``: services
        whose worker is stopped: it stores the move, which their API reads, when it starts again)."""
        moved = await self.call("PUT", "/api/v1/programme/clock", self.registry.authority,
                                {"programme_now": when, "reason": "compliance system test"}, expect=200)
        version = moved.json()["version"]
        running = [s for s in SERVICES if s not in except_services]
        urls = [self.plan.api_url(s) for s in running] + [self.plan.worker_url(s) for s in running]

        async def everyone() -> bool:
            for url in urls:
                clock = (await self.registry.http.get(f"{url}/health")).json()["clock"]
                if clock["version"] < version:
                    return False
            return True

        await wait_for(everyone, timeout=30, what="every process to see the clock move")

    async def holdings(self, account_id: str, unit_type: str | None = None) -> int:
        answer = await self.call("GET", f"/api/v1/accounts/{account_id}/holdings", self.registry.authority,
                                 expect=200)
        return sum(line["quantity"] for line in answer.json()["by_type_and_vintage"]
                   if unit_type in (None, line["unit_type"]))

    async def issue(self, party: Party, unit_type: str, vintage: int, quantity: int) -> None:
        if unit_type == "allowance":
            await self.call("POST", "/api/v1/ledger/movements", self.registry.authority, {
                "kind": "issuance", "to_account_id": "SYS-CAP", "unit_type": "allowance", "vintage": vintage,
                "quantity": quantity}, key=True, expect=201)
            await self.call("POST", "/api/v1/ledger/movements", self.registry.authority, {
                "kind": "allocation", "from_account_id": "SYS-CAP", "to_account_id": party.account_id,
                "unit_type": "allowance", "vintage": vintage, "quantity": quantity}, key=True, expect=201)
        else:
            await self.call("POST", "/api/v1/ledger/movements", self.registry.authority, {
                "kind": "offset_issuance", "to_account_id": party.account_id, "unit_type": "offset",
                "vintage": vintage, "quantity": quantity}, key=True, expect=201)

    async def surrender(self, party: Party, unit_type: str, quantity: int, vintage: int | None = None,
                        **extra: Any) -> httpx.Response:
        return await self.call("POST", "/api/v1/surrenders", party.headers, {
            "central_account_id": party.account_id, "unit_type": unit_type, "quantity": quantity,
            **({"vintage": vintage} if vintage else {}), **extra}, key=True)

    async def surrendered(self, surrender_id: str, party: Party) -> dict[str, Any]:
        async def done() -> dict[str, Any] | None:
            row = (await self.call("GET", f"/api/v1/surrenders/{surrender_id}", party.headers, expect=200)).json()
            return row if row["state"] != "requested" else None

        return await wait_for(done, timeout=30, what=f"surrender {surrender_id} to be decided")

    async def knows(self, account_id: str) -> None:
        await wait_for(lambda: self.compliance_db.fetchval(
            "SELECT count(*) FROM known_representatives WHERE account_id = $1", account_id),
            timeout=30, what=f"compliance to learn of {account_id}")




@asynccontextmanager
async def compliance_world(registry_env: dict[str, str], run_dir: Any, name: str, env: dict[str, str],
                           token_for: Any) -> AsyncIterator[ComplianceWorld]:
    """A registry of the caller's own (``private_system``) and a world driving it as the authority."""
    from registry_common.testing.private_system import private_system

    async with private_system(registry_env, run_dir, name, env) as (plan, own):
        server = own["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
        db = await asyncpg.connect(f"{server}/{own['REGISTRY_DATABASE_PREFIX']}compliance")
        try:
            async with RegistryClient.open(
                plan.gateway_url, admin_password=own["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"],
                authority_token=token_for("authority-1", "authority", lifetime=timedelta(hours=2)),
                transfers_dsn=f"{server}/{own['REGISTRY_DATABASE_PREFIX']}transfers",
            ) as registry:
                yield ComplianceWorld(plan, own, registry, db)
        finally:
            await db.close()
