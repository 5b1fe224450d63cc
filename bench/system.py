"""A whole registry for a benchmark: its own databases and broker names (``bench_<hex>_``), keys, every API
and worker started by the launcher ``make up`` uses, and everything stopped and dropped afterwards."""

from __future__ import annotations

import re
import secrets
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.harness import Context
from registry_common.ports import free_ports


@dataclass
class BenchRegistry:
    plan: Any  # registry_common.launcher.SystemPlan
    prefix: str
    codec: Any  # registry_common.auth.TokenCodec

    def bearer(self, user: str, *roles: str) -> dict[str, str]:
        token = self.codec.issue(user_id=user, username=user, roles=list(roles or ["authority"]),
                                 lifetime=timedelta(hours=1))
        return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def running_registry(ctx: Context, label: str, *, clock_start: str, env: dict[str, str] | None = None,
                           seed: Callable[[str], Awaitable[None]] | None = None) -> AsyncIterator[BenchRegistry]:
    """Provision, ``seed(prefix)`` (e.g. COPY into the fresh databases), start, wait until ready."""
    from registry_common.auth import TokenCodec, generate_keypair
    from registry_common.launcher import SystemPlan, start, stop, wait_ready
    from registry_common.provision import provision
    from registry_common.settings import SERVICES

    prefix = f"bench_{secrets.token_hex(4)}_"
    host, port = re.search(r"@([^/:]+):(\d+)", ctx.admin_dsn).groups()  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as tmp:
        workdir = Path(tmp)
        private_key, public_key = workdir / "jwt_private.pem", workdir / "jwt_public.pem"
        generate_keypair(private_key, public_key)
        full = {
            "REGISTRY_ENVIRONMENT": "test", "REGISTRY_ADMIN_DATABASE_URL": ctx.admin_dsn,
            "REGISTRY_DATABASE_HOST": host, "REGISTRY_DATABASE_PORT": port, "REGISTRY_DATABASE_PREFIX": prefix,
            "REGISTRY_AMQP_URL": ctx.amqp_url, "REGISTRY_NAMESPACE": prefix,
            "REGISTRY_JWT_PUBLIC_KEY_FILE": str(public_key), "REGISTRY_JWT_PRIVATE_KEY_FILE": str(private_key),
            "REGISTRY_CLOCK_CONTROL": "true", "REGISTRY_CLOCK_START": clock_start,
            "REGISTRY_LOG_JSON": "true", "REGISTRY_BOOTSTRAP_ADMIN_PASSWORD": f"bench-{secrets.token_urlsafe(12)}",
            "REGISTRY_JOURNAL_CHECKPOINT_DIR": str(workdir / "checkpoints"),
            "REGISTRY_JOURNAL_CHECKPOINT_KEY": secrets.token_urlsafe(32), **(env or {}),
        }
        await provision(list(SERVICES), **{k.removeprefix("REGISTRY_").lower(): v for k, v in full.items()})
        plan = None
        try:
            if seed is not None:
                await seed(prefix)
            ports = free_ports(1 + 2 * len(SERVICES))
            plan = SystemPlan(run_dir=workdir / "system", gateway_port=ports[0],
                              api_ports=dict(zip(SERVICES, ports[1:1 + len(SERVICES)], strict=True)),
                              worker_ports=dict(zip(SERVICES, ports[1 + len(SERVICES):], strict=True)), env=full)
            plan.run_dir.mkdir(parents=True, exist_ok=True)
            start(plan)
            await wait_ready(plan, timeout=120)
            codec = TokenCodec(public_key_file=public_key, private_key_file=private_key, issuer="registro-mx",
                               audience="registro-mx")
            yield BenchRegistry(plan, prefix, codec)
        finally:
            if plan is not None:
                stop(plan)
            await drop_system(ctx, prefix)


async def drop_system(ctx: Context, prefix: str) -> None:
    """A benchmark system's databases (``<prefix><service>``) and broker namespace, dropped."""
    from registry_common.messaging.topology import delete_namespace
    from registry_common.settings import SERVICES

    admin = await ctx.admin_connection()
    try:
        for service in SERVICES:
            await admin.execute(f'DROP DATABASE IF EXISTS "{prefix}{service}" WITH (FORCE)')
    finally:
        await admin.close()
    await delete_namespace(ctx.amqp_url, prefix, SERVICES)
