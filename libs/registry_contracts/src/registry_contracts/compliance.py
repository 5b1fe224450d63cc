"""Events owned by compliance: an installation's result for a period (told to the installation and the
authority, compliant or not), and the units its evaluation cancelled."""

from __future__ import annotations

from uuid import UUID

from pydantic import AwareDatetime

from registry_contracts.accounts import MovedBlock
from registry_contracts.base import Event


class ComplianceEvaluated(Event):
    """One installation's result for a period. ``adjustment``: a correction after the evaluation changed
    it (nothing more moves; cancelled units never come back). ``intermediate_year``: the result of that
    intermediate year of a multi-year period (its share of the year's emissions), not of the period."""

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
    intermediate_year: int | None = None


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
    intermediate_year: int | None = None  # counted at that intermediate year's evaluation


class _CancellationFacts(Event):
    """One account's part of a published cancellation preview (banking excess or end of the programme)."""

    preview_id: UUID
    kind: str  # banking_excess | programme_end
    period: str
    account_id: str
    told_account_id: str  # whose representatives are told: the account, or for a delivery account its central one
    quantity: int
    blocks: list[MovedBlock]
    executable_from: AwareDatetime  # programme time: the notice ends


class BankingExcessPreviewed(_CancellationFacts):
    TYPE = "compliance.banking_excess_previewed"
    VERSION = 1


class ProgrammeEndPreviewed(_CancellationFacts):
    TYPE = "compliance.programme_end_previewed"
    VERSION = 1


class BankingExcessCancelled(_CancellationFacts):
    TYPE = "compliance.banking_excess_cancelled"
    VERSION = 1


class ProgrammeUnitsCancelled(_CancellationFacts):
    TYPE = "compliance.programme_units_cancelled"
    VERSION = 1


class InstallationStatusChanged(Event):
    """An installation's live status for the open period: no_verified_emissions | must_surrender | covered."""

    TYPE = "compliance.installation_status_changed"
    VERSION = 1
    installation_account_id: str
    period: str
    status: str
    to_surrender: int  # units still to surrender (0 when covered)
    emissions: int | None = None
    delivered_eligible: int = 0
