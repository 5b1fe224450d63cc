"""Auctions' tables: the auctions and their terms, applications (qualification and bid guarantee), sealed
bids, the stored clearing (per bid and per bidder), the movements sent to the ledger; and the read models
of accounts, representatives and periods kept from accounts' and issuance's events."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    func,
)

from registry_common.read_models import AccountDirectory, ProgrammeCalendar

metadata = MetaData()
directory = AccountDirectory(metadata)
calendar = ProgrammeCalendar(metadata)


def _ts(name: str, nullable: bool = True, **kw: object) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable, **kw)


auctions = Table(
    "auctions", metadata,
    Column("id", Uuid, primary_key=True),
    # awaiting_approval | consigning | consignment_refused | scheduled | cleared | approved | settled
    Column("state", String(30), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reserve_price", BigInteger, nullable=False),  # cents
    Column("price_step", BigInteger, nullable=False),  # cents
    Column("lot_size", Integer, nullable=False),
    Column("purchase_limit_share", String(12), nullable=False),
    Column("purchase_limit", BigInteger, nullable=False),  # units
    Column("holding_limit", BigInteger),
    _ts("bidding_opens_at", False), _ts("bidding_closes_at", False), _ts("payment_deadline", False),
    Column("source_account_id", String(40), nullable=False),
    Column("unsold_destination", String(40)),  # a reserve account; None: unsold units stay in SYS-AUCTION
    Column("consignment_movement_id", Uuid, nullable=False, unique=True),
    Column("consignment_approval_id", Uuid),
    Column("code", String(80)),  # the ledger's refusal of the consignment
    Column("scheduled_by", String(120), nullable=False),
    Column("consignment_approved_by", String(120)),
    Column("cleared_by", String(120)), _ts("cleared_at"),
    Column("clearing_price", BigInteger), Column("sold", BigInteger), Column("unsold", BigInteger),
    Column("bidders", Integer), Column("total_bid", BigInteger),
    Column("results_hash", String(64)),
    Column("results_approval_id", Uuid),
    Column("results_approved_by", String(120)), _ts("results_approved_at"),
    _ts("created_at", False, server_default=func.now()),
    Index("ix_auctions_state", "state"),
)

applications = Table(
    "auction_applications", metadata,
    Column("auction_id", Uuid, ForeignKey("auctions.id"), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("state", String(20), nullable=False),  # applied | qualified | rejected
    Column("applied_by", String(120), nullable=False),
    Column("guarantee", String(20), nullable=False, server_default="none"),  # none | received
    Column("guarantee_reference", String(200)),
    Column("decided_by", String(120)),
    Column("reason", Text),
    _ts("applied_at", False, server_default=func.now()), _ts("decided_at"),
    PrimaryKeyConstraint("auction_id", "account_id"),
)

bids = Table(
    "auction_bids", metadata,
    Column("id", Uuid, primary_key=True),
    Column("seq", BigInteger, Identity(always=False), nullable=False, unique=True),  # the clearing's key
    Column("auction_id", Uuid, ForeignKey("auctions.id"), nullable=False),
    Column("bidder_account_id", String(40), nullable=False),
    Column("price", BigInteger, nullable=False),  # cents
    Column("quantity", BigInteger, nullable=False),
    Column("state", String(20), nullable=False),  # live | withdrawn
    Column("submitted_by", String(120), nullable=False),
    _ts("created_at", False, server_default=func.now()), _ts("updated_at", False, server_default=func.now()),
    Index("ix_auction_bids_bidder", "auction_id", "bidder_account_id"),
)

bid_results = Table(
    # the clearing, per bid (auction_bids.seq), written in bulk by COPY when the auction is cleared
    "auction_bid_results", metadata,
    Column("bid_seq", BigInteger, primary_key=True),
    Column("accepted", BigInteger, nullable=False),
)

awards = Table(
    # the clearing, per bidder, and what became of it
    "auction_awards", metadata,
    Column("auction_id", Uuid, ForeignKey("auctions.id"), nullable=False),
    Column("bidder_account_id", String(40), nullable=False),
    Column("bid_quantity", BigInteger, nullable=False),
    Column("awarded", BigInteger, nullable=False),
    Column("amount_due", BigInteger, nullable=False),  # cents
    # cleared | not_awarded | awaiting_payment | paid | delivered | delivery_refused | forfeited
    Column("state", String(20), nullable=False),
    Column("payment_reference", String(200)),
    Column("payment_confirmed_by", String(120)), _ts("paid_at"),
    Column("movement_id", Uuid, unique=True),  # the delivery, or the return of a forfeited award
    Column("code", String(80)),
    _ts("updated_at", False, server_default=func.now()),
    PrimaryKeyConstraint("auction_id", "bidder_account_id"),
    Index("ix_auction_awards_state", "state"),
)

movements = Table(
    # every movement asked of the ledger, by our own movement id
    "auction_movements", metadata,
    Column("movement_id", Uuid, primary_key=True),
    Column("auction_id", Uuid, ForeignKey("auctions.id"), nullable=False),
    Column("purpose", String(20), nullable=False),  # consignment | delivery | unsold_return | forfeit_return
    Column("kind", String(30), nullable=False),  # the ledger's movement kind
    Column("from_account_id", String(40), nullable=False),
    Column("to_account_id", String(40), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("bidder_account_id", String(40)),
    Column("state", String(20), nullable=False),  # sent | moved | refused
    Column("code", String(80)),
    _ts("created_at", False, server_default=func.now()), _ts("updated_at"),
    Index("ix_auction_movements_auction", "auction_id", "state"),
)
