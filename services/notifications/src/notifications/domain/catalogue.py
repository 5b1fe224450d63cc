"""Which event becomes which notification, for whom (README, "Notifications"): the parties are accounts
(each active representative of the account, by e-mail and inbox, and the account's webhooks), plus the
authority's configured recipients for the events that concern it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from registry_contracts import Message
from registry_contracts.auctions import (
    AuctionResultsApproved,
    AuctionScheduled,
    AuctionUnitsDelivered,
    AwardForfeited,
)
from registry_contracts.compliance import (
    BankingExcessCancelled,
    BankingExcessPreviewed,
    ComplianceEvaluated,
    InstallationStatusChanged,
    ProgrammeEndPreviewed,
    ProgrammeUnitsCancelled,
    SurrenderedUnitsCancelled,
)
from registry_contracts.issuance import AllocationDelivered, AllocationDeliveredBatch
from registry_contracts.transfers import (
    TransferAcceptanceReminder,
    TransferAwaitingAcceptance,
    TransferCompleted,
    TransferFailed,
    TransferReversed,
)

Party = tuple[str, str]  # (account_id, side)


def _both(message: Any) -> list[Party]:
    return [(message.sender_account_id, "sender"), (message.receiver_account_id, "receiver")]


def _sender(message: Any) -> list[Party]:
    return [(message.sender_account_id, "sender")]


def _installation(message: Any) -> list[Party]:
    return [(message.installation_account_id, "installation")]


def _bidder(message: Any) -> list[Party]:
    return [(message.bidder_account_id, "bidder")]


def _nobody(message: Any) -> list[Party]:
    return []


def _holder(message: Any) -> list[Party]:
    return [(message.told_account_id, "holder")]


@dataclass(frozen=True)
class Rule:
    notification_type: str  # the template's name
    parties: Callable[[Any], list[Party]]
    authority: bool = False  # also the authority's configured recipients (e-mail)


RULES: dict[type[Message], Rule] = {
    TransferAwaitingAcceptance: Rule("transfer_proposed", _both),
    TransferAcceptanceReminder: Rule("transfer_reminder", _both),
    TransferCompleted: Rule("transfer_accepted", _both),
    TransferReversed: Rule("transfer_reversed", _both),  # worded by reason
    TransferFailed: Rule("transfer_failed", _sender),
    AllocationDelivered: Rule("allocation_delivered", _installation),
    # Seed function f and g: installation and authority, in case of compliance and of non-compliance.
    ComplianceEvaluated: Rule("compliance_evaluated", _installation, authority=True),  # worded by status
    SurrenderedUnitsCancelled: Rule("units_cancelled", _installation, authority=True),
    InstallationStatusChanged: Rule("compliance_status", _installation),
    # Seed function h: holders and the authority, at the preview and at the cancellation (worded by kind).
    BankingExcessPreviewed: Rule("cancellation_previewed", _holder, authority=True),
    ProgrammeEndPreviewed: Rule("cancellation_previewed", _holder, authority=True),
    BankingExcessCancelled: Rule("cancellation_done", _holder, authority=True),
    ProgrammeUnitsCancelled: Rule("cancellation_done", _holder, authority=True),
    # Auctions: the authority hears of a consigned auction; each bidder of its result, delivery or forfeiture.
    AuctionScheduled: Rule("auction_scheduled", _nobody, authority=True),
    AuctionResultsApproved: Rule("auction_results", _bidder),  # worded by whether anything was won
    AuctionUnitsDelivered: Rule("auction_delivered", _bidder),
    AwardForfeited: Rule("auction_forfeited", _bidder, authority=True),
}


def _allocation_lines(batch: AllocationDeliveredBatch) -> list[tuple[str, Message]]:
    return [(str(line.movement_id), line) for line in batch.delivered()]


# Batch events told as the single events they stand for, each keyed (unique within the batch) for its own
# event id: the rows are exactly those the single events would have made.
BATCHES: dict[type[Message], Callable[[Any], list[tuple[str, Message]]]] = {
    AllocationDeliveredBatch: _allocation_lines,  # one per table per ledger batch answer
}
