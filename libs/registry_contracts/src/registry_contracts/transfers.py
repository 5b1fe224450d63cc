"""Events owned by transfers: the saga's milestones, for notifications and anyone else who listens."""

from __future__ import annotations

from uuid import UUID

from pydantic import AwareDatetime

from registry_contracts.base import Event


class _TransferFacts(Event):
    transfer_id: UUID
    sender_account_id: str
    receiver_account_id: str
    unit_type: str
    quantity: int
    vintage: int | None = None


class TransferRequested(_TransferFacts):
    TYPE = "transfers.transfer_requested"
    VERSION = 1
    requested_by: str


class TransferAwaitingAcceptance(_TransferFacts):
    """The "proposed" notice to the receiver: accept before ``acceptance_deadline`` (programme time)."""

    TYPE = "transfers.transfer_awaiting_acceptance"
    VERSION = 1
    acceptance_deadline: AwareDatetime


class TransferAcceptanceReminder(_TransferFacts):
    TYPE = "transfers.transfer_acceptance_reminder"
    VERSION = 1
    acceptance_deadline: AwareDatetime
    hours_left: int


class TransferCompleted(_TransferFacts):
    TYPE = "transfers.transfer_completed"
    VERSION = 1


class TransferReversed(_TransferFacts):
    """One notice, worded by ``reason``: rejected | cancelled | expired | settlement_refused."""

    TYPE = "transfers.transfer_reversed"
    VERSION = 1
    reason: str


class TransferFailed(_TransferFacts):
    """Tells the sender: ``code`` is the ledger's refusal code or the sender-side reason."""

    TYPE = "transfers.transfer_failed"
    VERSION = 1
    code: str
