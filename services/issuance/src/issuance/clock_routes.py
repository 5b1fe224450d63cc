"""``GET/PUT /api/v1/programme/clock``: the programme clock, movable forward only, and only where the
deployment enables clock control (tests, demos). Every move is audited and announced to all services."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from registry_common.audit import record_audit
from registry_common.auth import Principal, Role, require_roles
from registry_common.clock import read_clock, store_clock
from registry_common.errors import RegistryError
from registry_common.routes import ClockDep, WriteConn
from registry_contracts.issuance import ProgrammeClockMoved

router = APIRouter(prefix="/api/v1/programme", tags=["programme"])
ClockKeeper = Annotated[Principal, Depends(require_roles(Role.AUTHORITY, Role.ADMINISTRATOR))]


async def require_clock_control(request: Request) -> None:
    if not request.app.state.settings.clock_control:
        raise RegistryError("clock.control_disabled")


class ClockMove(BaseModel):
    """Either the programme time to move to, or how far to move forward."""

    model_config = ConfigDict(extra="forbid")
    programme_now: AwareDatetime | None = None
    advance_seconds: float | None = Field(default=None, gt=0)
    reason: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _one_of(self) -> ClockMove:
        if (self.programme_now is None) == (self.advance_seconds is None):
            raise ValueError("give exactly one of programme_now and advance_seconds")
        return self


def next_offset_us(current_offset_us: int, move: ClockMove, real_now: datetime) -> int:
    """The offset after ``move``; the clock never goes back."""
    if move.advance_seconds is not None:
        return current_offset_us + round(move.advance_seconds * 1_000_000)
    assert move.programme_now is not None
    target = round((move.programme_now - real_now).total_seconds() * 1_000_000)
    if target < current_offset_us:
        raise RegistryError("clock.backwards", field="programme_now")
    return target


@router.get("/clock", dependencies=[Depends(require_clock_control)])
async def get_clock(clock: ClockDep, _who: ClockKeeper) -> dict[str, Any]:
    await clock.refresh(force=True)
    return clock.describe()


@router.put("/clock", dependencies=[Depends(require_clock_control)])
async def move_clock(move: ClockMove, request: Request, conn: WriteConn, clock: ClockDep,
                     who: ClockKeeper) -> dict[str, Any]:
    offset, version = await read_clock(conn, for_update=True)
    real_now = datetime.now(UTC)
    new_offset = next_offset_us(offset, move, real_now)
    await store_clock(conn, new_offset, version + 1)
    programme_now = datetime.fromtimestamp(real_now.timestamp() + new_offset / 1e6, UTC)
    await request.app.state.outbox.add(
        conn, ProgrammeClockMoved(offset_us=new_offset, version=version + 1, programme_now=programme_now,
                                  moved_by=who.user_id)
    )
    await record_audit(conn, action="programme_clock.moved", entity_type="programme_clock", entity_id="1",
                       actor=who.user_id, reason=move.reason,
                       details={"from_offset_us": offset, "to_offset_us": new_offset, "version": version + 1})
    clock.offset_us, clock.version = new_offset, version + 1
    return {"programme_now": programme_now.isoformat(), "offset_seconds": new_offset / 1e6,
            "version": version + 1}
