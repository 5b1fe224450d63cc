"""Events owned by issuance."""

from __future__ import annotations

from pydantic import AwareDatetime

from registry_contracts.base import Event


class ProgrammeClockMoved(Event):
    """The programme clock now runs at real UTC + ``offset_us``; ``version`` only ever grows."""

    TYPE = "issuance.programme_clock_moved"
    VERSION = 1
    offset_us: int
    version: int
    programme_now: AwareDatetime
    moved_by: str
