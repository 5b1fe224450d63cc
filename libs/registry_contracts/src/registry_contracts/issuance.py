"""Events owned by issuance."""

from __future__ import annotations

from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict

from registry_contracts.base import Event


class ProgrammeClockMoved(Event):
    """The programme clock now runs at real UTC + ``offset_us``; ``version`` only ever grows."""

    TYPE = "issuance.programme_clock_moved"
    VERSION = 1
    offset_us: int
    version: int
    programme_now: AwareDatetime
    moved_by: str


class PeriodScheduled(Event):
    """A compliance period and all its dates (UTC instants; ``local_dates`` in the programme's zone)."""

    TYPE = "issuance.period_scheduled"
    VERSION = 1
    period: str
    vintage: int
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    allocation_at: AwareDatetime
    reporting_opens_at: AwareDatetime
    reporting_closes_at: AwareDatetime
    surrender_deadline_at: AwareDatetime
    final: bool
    timezone: str
    local_dates: dict[str, str] = {}


class IssuedRange(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    account_id: str
    quantity: int
    serial_start: int
    serial_end: int  # inclusive


class CapGenerated(Event):
    """The allowances of an approved cap generation (initial or adjustment) are in the cap and reserve
    accounts, with their serial ranges."""

    TYPE = "issuance.cap_generated"
    VERSION = 1
    generation_id: UUID
    period: str
    vintage: int
    kind: str  # initial | adjustment
    cap: int
    reserves: dict[str, int]
    ranges: list[IssuedRange]
    approved_by: str | None = None


class AllocationDelivered(Event):
    """One installation's line of an allocation run reached its central account."""

    TYPE = "issuance.allocation_delivered"
    VERSION = 1
    table_id: UUID
    period: str | None
    vintage: int
    installation_account_id: str
    quantity: int
    movement_id: UUID
    method: str  # table | proportional


class DeliveredLine(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    installation_account_id: str
    quantity: int
    movement_id: UUID


class AllocationDeliveredBatch(Event):
    """The lines of one allocation table that one ledger batch answer delivered, each reaching its
    installation's central account: one event per table per answer instead of one per line. Each line
    stands for the ``AllocationDelivered`` it would have been (same table, period, vintage and method)."""

    TYPE = "issuance.allocation_delivered_batch"
    VERSION = 1
    table_id: UUID
    period: str | None
    vintage: int
    method: str  # table | proportional
    lines: list[DeliveredLine]

    def delivered(self) -> list[AllocationDelivered]:
        """Each line as the single event it stands for."""
        return [AllocationDelivered(table_id=self.table_id, period=self.period, vintage=self.vintage,
                                    installation_account_id=line.installation_account_id, quantity=line.quantity,
                                    movement_id=line.movement_id, method=self.method) for line in self.lines]


class OffsetCreditsIssued(Event):
    TYPE = "issuance.offset_credits_issued"
    VERSION = 1
    issuance_id: UUID
    project_id: str
    vintage: int
    quantity: int
    to_account_id: str
    serial_start: int
    serial_end: int
    verification_reference: str
