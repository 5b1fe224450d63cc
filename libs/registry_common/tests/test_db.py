"""The engine's pool against a real PostgreSQL: connections the server closed while they sat in the
pool are replaced at checkout (no ping round trip on every checkout)."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from registry_common.db import make_engine
from registry_common.settings import RegistrySettings
from registry_common.testing.fixtures import wait_for
from registry_common.testing.servers import terminate_backends


async def test_pooled_connections_killed_while_idle_are_replaced_at_checkout(probe_settings: RegistrySettings):
    name = f"{probe_settings.namespace}probe-pool"
    engine = make_engine(probe_settings.app_database_url, pool_size=3, application_name=name)
    gate = asyncio.Barrier(3)
    drivers = []

    async def backend_pid() -> int:
        async with engine.connect() as conn:
            await gate.wait()  # all three checked out at once: three pooled connections
            drivers.append((await conn.get_raw_connection()).driver_connection)
            return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())

    try:
        before = set(await asyncio.gather(*(backend_pid() for _ in range(3))))
        assert len(before) == 3
        assert not engine.sync_engine.pool._pre_ping  # no round trip per checkout
        assert await terminate_backends(probe_settings.admin_database_url, name) == 3

        await wait_for(lambda: all(d.is_closed() for d in drivers),
                       what="the pooled connections to see their backends gone")
        gate = asyncio.Barrier(3)
        after = set(await asyncio.gather(*(backend_pid() for _ in range(3))))  # no error: replaced
        assert len(after) == 3 and not after & before
    finally:
        await engine.dispose()
