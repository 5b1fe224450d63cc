"""Events owned by auctions (ARCHITECTURE.md: ``auction_scheduled``, ``auction_results_approved`` per
bidder, ``award_forfeited``; and ``auction_units_delivered`` when a paid award reaches the winner).

Money is a decimal string with its currency (``"16.68"``, ``"USD"``); quantities are whole units."""

from __future__ import annotations

from uuid import UUID

from pydantic import AwareDatetime

from registry_contracts.base import Event


class AuctionScheduled(Event):
    """The lot is in the auction account (consignment approved by a second authority user and moved by the
    ledger): the auction will take bids in its window."""

    TYPE = "auctions.auction_scheduled"
    VERSION = 1
    auction_id: UUID
    vintage: int
    quantity: int
    currency: str
    reserve_price: str
    price_step: str
    lot_size: int
    purchase_limit: int  # units one bidder may win
    bidding_opens_at: AwareDatetime
    bidding_closes_at: AwareDatetime
    payment_deadline: AwareDatetime
    source_account_id: str


class AuctionResultsApproved(Event):
    """A bidder's result, once a second authority user (not the one who cleared) approved the results: one
    event per bidder that bid, winning or not."""

    TYPE = "auctions.auction_results_approved"
    VERSION = 1
    auction_id: UUID
    bidder_account_id: str
    vintage: int
    bid_quantity: int
    awarded_quantity: int
    clearing_price: str | None  # None: nothing sold
    currency: str
    amount_due: str
    payment_deadline: AwareDatetime


class AwardForfeited(Event):
    """An award not paid by the payment deadline: its units follow the unsold rule (``returned_to``)."""

    TYPE = "auctions.award_forfeited"
    VERSION = 1
    auction_id: UUID
    bidder_account_id: str
    vintage: int
    quantity: int
    clearing_price: str
    currency: str
    amount_due: str
    returned_to: str | None  # a reserve account, or None when unsold units stay in the auction account


class AuctionUnitsDelivered(Event):
    """A paid award's units are in the winner's account (the ledger's ``auction_delivery``)."""

    TYPE = "auctions.auction_units_delivered"
    VERSION = 1
    auction_id: UUID
    bidder_account_id: str
    vintage: int
    quantity: int
    clearing_price: str
    currency: str
    movement_id: UUID
