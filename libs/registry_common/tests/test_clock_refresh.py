"""The programme clock's refresh against a real database: concurrent requests share one read."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from registry_common.clock import ProgrammeClock


async def test_concurrent_refreshes_read_the_clock_once_and_force_reads_again(probe_db: AsyncEngine) -> None:
    async with probe_db.begin() as conn:
        await conn.execute(text("UPDATE programme_clock SET offset_us = 3600000000, version = version + 1 "
                                "WHERE id = 1"))
    reads: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "programme_clock" in statement:
            reads.append(statement)

    event.listen(probe_db.sync_engine, "before_cursor_execute", seen)
    try:
        clock = ProgrammeClock(probe_db, refresh_seconds=60)
        await asyncio.gather(*(clock.refresh() for _ in range(20)))
        assert len(reads) == 1 and clock.offset_us == 3_600_000_000
        await clock.refresh()  # still fresh: no read
        assert len(reads) == 1
        await clock.refresh(force=True)
        assert len(reads) == 2
    finally:
        event.remove(probe_db.sync_engine, "before_cursor_execute", seen)
