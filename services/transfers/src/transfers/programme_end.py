"""The end of the programme as transfers sees it: from the final period's surrender deadline (programme
clock) no new transfer of the programme's units starts; pending ones still resolve (accept, reject, expire),
so that the end-of-programme cancellation sees every unit where it finally lies."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.errors import RegistryError, register_errors
from transfers.tables import calendar

register_errors({
    "transfer.programme_ended": (409, "El programa terminó el {deadline}: ya no se transfieren sus unidades.",
                                 "The programme ended on {deadline}: its units no longer transfer."),
})


_FINAL_DEADLINE = (select(calendar.periods.c.surrender_deadline_at).where(calendar.periods.c.final)
                   .order_by(calendar.periods.c.surrender_deadline_at.desc()).limit(1))


async def check_programme_open(conn: AsyncConnection, now: datetime) -> None:
    final = (await conn.execute(_FINAL_DEADLINE)).scalar()
    if final is not None and now > final:
        raise RegistryError("transfer.programme_ended", deadline=final.isoformat())
