"""Helpers that act on the real servers in tests: count rows, close a broker connection, kill database
backends. Real faults, not mocks."""

from __future__ import annotations

import re
import subprocess
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine


async def count(engine: AsyncEngine, sql: str, **params: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(sql), params)).scalar_one())


def close_broker_connection(connection_name: str) -> None:
    """``rabbitmqctl close_connection`` for the connection(s) with that client-provided name."""
    listing = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
                             capture_output=True, text=True, check=True).stdout
    pids = [re.match(r"(<[^>]+>)", line).group(1)  # type: ignore[union-attr]
            for line in listing.splitlines() if f'"{connection_name}"' in line or connection_name in line]
    assert pids, f"no broker connection named {connection_name}: {listing}"
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "test closes the relay"], check=True)


async def terminate_backends(admin_url: str, application_name: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(admin_url)
    try:
        return len(await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            application_name))
    finally:
        await conn.close()

