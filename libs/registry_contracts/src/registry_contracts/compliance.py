"""Events owned by compliance: an installation's result for a period (told to the installation and the
authority, compliant or not), and the units its evaluation cancelled."""

from __future__ import annotations

from uuid import UUID

from registry_contracts.accounts import MovedBlock
from registry_contracts.base import Event


class ComplianceEvaluated(Event):
    """One installation's result for a period. ``adjustment``: a correction after the evaluation changed
    it (nothing more moves; cancelled units never come back)."""

    TYPE = "compliance.compliance_evaluated"
    VERSION = 1
    evaluation_id: UUID
    period: str
    installation_account_id: str
    status: str  # compliant | non_compliant
    reason: str | None = None  # shortfall | no_attested_report
    emissions: int | None = None
    obligation: int
    counted: int
    shortfall: int
    carried_to_next_period: int = 0
    adjustment: bool = False


class SurrenderedUnitsCancelled(Event):
    """The units counted for an installation's compliance went to the cancellation account (seed function
    g: automatically); the rest of its delivery account went back to its central account."""

    TYPE = "compliance.surrendered_units_cancelled"
    VERSION = 1
    evaluation_id: UUID
    period: str
    installation_account_id: str
    cancelled_quantity: int
    cancelled_blocks: list[MovedBlock]
    returned_quantity: int = 0
