"""The programme clock: now = real UTC + one offset, the same for every process.

Issuance owns it (``GET/PUT /api/v1/programme/clock``, only where ``REGISTRY_CLOCK_CONTROL=true``);
each change is published as ``issuance.programme_clock_moved.v1``; every worker stores the offset in
its own database (``programme_clock``, with a growing ``version`` so a late message never moves it
back) and its API processes read it from there. Every process shows its offset in ``/health``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from registry_common.tables import programme_clock, programme_clock_history

if TYPE_CHECKING:
    from registry_common.messaging.consumer import HandlerContext
    from registry_contracts.issuance import ProgrammeClockMoved


_CLOCK_ROW = select(programme_clock).where(programme_clock.c.id == 1)


class ProgrammeClock:
    """Reads the offset from the service's database, at most every ``refresh_seconds``; requests arriving
    while a read is under way wait for that read rather than each starting its own."""

    def __init__(self, engine: AsyncEngine | None, refresh_seconds: float = 0.5, offset_us: int = 0):
        self.engine = engine
        self.refresh_seconds = refresh_seconds
        self.offset_us = offset_us
        self.version = 0
        self._loaded_at = float("-inf")
        self._reading = asyncio.Lock()

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(microseconds=self.offset_us)

    async def refresh(self, *, force: bool = False) -> None:
        if self.engine is None:
            return
        if not force and time.monotonic() - self._loaded_at < self.refresh_seconds:
            return
        async with self._reading:  # one read at a time; those who waited find it fresh
            if not force and time.monotonic() - self._loaded_at < self.refresh_seconds:
                return
            async with self.engine.connect() as conn:
                row = (await conn.execute(_CLOCK_ROW)).first()
            if row is not None:
                self.offset_us, self.version = row.offset_us, row.version
            self._loaded_at = time.monotonic()

    def describe(self) -> dict[str, Any]:
        return {
            "programme_now": self.now().isoformat(),
            "offset_seconds": round(self.offset_us / 1_000_000, 6),
            "version": self.version,
        }


async def read_clock(conn: AsyncConnection, *, for_update: bool = False) -> tuple[int, int]:
    query = select(programme_clock.c.offset_us, programme_clock.c.version).where(programme_clock.c.id == 1)
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return (row.offset_us, row.version) if row is not None else (0, 0)


async def store_clock(conn: AsyncConnection, offset_us: int, version: int, message_id: Any = None) -> bool:
    """Store a newer clock. Returns False (and changes nothing) for a version already seen."""
    _, current = await read_clock(conn, for_update=True)
    if version <= current:
        return False
    changed = await conn.execute(
        update(programme_clock).where(programme_clock.c.id == 1).values(offset_us=offset_us, version=version)
    )
    if changed.rowcount == 0:
        await conn.execute(insert(programme_clock).values(id=1, offset_us=offset_us, version=version))
    await conn.execute(
        insert(programme_clock_history).values(offset_us=offset_us, version=version, message_id=message_id)
    )
    return True


async def on_programme_clock_moved(conn: AsyncConnection, message: ProgrammeClockMoved,
                                   ctx: HandlerContext) -> None:
    """Every worker: adopt the announced clock if it is newer than what this service has."""
    await store_clock(conn, message.offset_us, message.version, ctx.envelope.message_id)
