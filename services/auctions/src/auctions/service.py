"""Auctions' state changes, shared by the HTTP face, the approved actions, the message handlers and the
sweeper. Every change writes its audit row and its outgoing messages in the caller's transaction.

Units are never written here: consignment, delivery and returns are ``accounts.move_units`` commands
(kinds ``auction_consignment``, ``auction_delivery``, ``unsold_return``) with our own movement ids; the
ledger's ``units_moved`` / ``movement_refused`` for those ids move the local rows on, under state guards,
so a repeated or late answer changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import case, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from auctions import errors as _errors  # noqa: F401  (registers the codes)
from auctions.domain.clearing import Clearing, clear
from auctions.domain.money import format_cents
from auctions.domain.rules import AuctionRefusal, Terms, bidding_phase, check_bid
from auctions.tables import applications, auctions, awards, bids, calendar, directory, movements
from registry_common.approvals import payload_hash, register_approval_action, request_approval
from registry_common.audit import record_audit
from registry_common.auth import Principal
from registry_common.clock import read_clock
from registry_common.errors import RegistryError
from registry_common.messaging.consumer import HandlerContext
from registry_common.messaging.outbox import Outbox
from registry_contracts.accounts import MovementRefused, MoveUnits, UnitsMoved
from registry_contracts.auctions import (
    AuctionResultsApproved,
    AuctionScheduled,
    AuctionUnitsDelivered,
    AwardForfeited,
)

log = logging.getLogger("auctions")
OUTBOX = Outbox("auctions")
AUCTION_ACCOUNT = "SYS-AUCTION"
CAP_ACCOUNT = "SYS-CAP"
DUPLICATE = "ledger.duplicate_movement"


def reserve_account_id(name: str) -> str:
    return f"SYS-RES-{name.strip().upper()}"


def refused(refusal: AuctionRefusal) -> RegistryError:
    return RegistryError(refusal.code, field=refusal.field, **refusal.params)


async def programme_now(conn: AsyncConnection) -> datetime:
    """The programme time as this service's database holds it (for approved actions, which get no clock)."""
    offset, _ = await read_clock(conn)
    return datetime.now(UTC) + timedelta(microseconds=offset)


def terms_of(row: Any) -> Terms:
    return Terms(quantity=row.quantity, reserve_price=row.reserve_price, price_step=row.price_step,
                 lot_size=row.lot_size, purchase_limit=row.purchase_limit, holding_limit=row.holding_limit)


async def get_auction(conn: AsyncConnection, auction_id: UUID, *, lock: str | None = None) -> Any:
    query = select(auctions).where(auctions.c.id == auction_id)
    if lock == "update":
        query = query.with_for_update()
    elif lock == "share":
        query = query.with_for_update(read=True)
    row = (await conn.execute(query)).first()
    if row is None:
        raise RegistryError("auction.not_found", field="auction_id")
    return row


async def _send_move(conn: AsyncConnection, *, auction_id: UUID, purpose: str, kind: str, from_account_id: str,
                     to_account_id: str, quantity: int, vintage: int, actor: str,
                     bidder_account_id: str | None = None) -> UUID:
    movement_id = uuid4()
    await conn.execute(insert(movements).values(
        movement_id=movement_id, auction_id=auction_id, purpose=purpose, kind=kind, from_account_id=from_account_id,
        to_account_id=to_account_id, quantity=quantity, bidder_account_id=bidder_account_id, state="sent"))
    await OUTBOX.add(conn, MoveUnits(
        movement_id=movement_id, kind=kind, from_account_id=from_account_id, to_account_id=to_account_id,
        unit_type="allowance", quantity=quantity, vintage=vintage, actor=actor,
        reason=f"auction {auction_id}: {purpose}"), correlation_id=str(auction_id))
    return movement_id


# Scheduling and consignment (four eyes) ----------------------------------------------------------------
async def schedule(conn: AsyncConnection, values: dict[str, Any], *, who: Principal, now: datetime,
                   ttl: timedelta) -> dict[str, Any]:
    """Store the auction awaiting the consignment's approval by another authority user."""
    auction_id, movement_id = uuid4(), uuid4()
    payload = {"auction_id": str(auction_id), "vintage": values["vintage"], "quantity": values["quantity"],
               "source_account_id": values["source_account_id"], "currency": values["currency"],
               "reserve_price": format_cents(values["reserve_price"]),
               "price_step": format_cents(values["price_step"]), "lot_size": values["lot_size"],
               "purchase_limit": values["purchase_limit"], "holding_limit": values["holding_limit"],
               "bidding_opens_at": values["bidding_opens_at"].isoformat(),
               "bidding_closes_at": values["bidding_closes_at"].isoformat(),
               "payment_deadline": values["payment_deadline"].isoformat(),
               "unsold_destination": values["unsold_destination"]}
    approval_id = await request_approval(conn, action="auctions.consign", payload=payload, requested_by=who,
                                         required_roles=["authority"], now=now, ttl=ttl)
    await conn.execute(insert(auctions).values(
        id=auction_id, state="awaiting_approval", consignment_movement_id=movement_id,
        consignment_approval_id=approval_id, scheduled_by=who.user_id, **values))
    await record_audit(conn, action="auction.scheduled", entity_type="auction", entity_id=str(auction_id),
                       actor=who.user_id, details=payload)
    return {"auction_id": str(auction_id), "approval_id": str(approval_id), "state": "awaiting_approval",
            "payload": payload, "payload_hash": payload_hash(payload)}


async def _approved_consignment(conn: AsyncConnection, payload: dict[str, Any], decider: Principal) -> None:
    row = await get_auction(conn, UUID(payload["auction_id"]), lock="update")
    if row.state != "awaiting_approval":
        raise RegistryError("auction.wrong_state", state=row.state, action="approve the consignment")
    await conn.execute(insert(movements).values(
        movement_id=row.consignment_movement_id, auction_id=row.id, purpose="consignment",
        kind="auction_consignment", from_account_id=row.source_account_id, to_account_id=AUCTION_ACCOUNT,
        quantity=row.quantity, state="sent"))
    await OUTBOX.add(conn, MoveUnits(
        movement_id=row.consignment_movement_id, kind="auction_consignment", from_account_id=row.source_account_id,
        to_account_id=AUCTION_ACCOUNT, unit_type="allowance", quantity=row.quantity, vintage=row.vintage,
        actor=decider.user_id, reason=f"auction {row.id}: consignment"), correlation_id=str(row.id))
    await conn.execute(update(auctions).where(auctions.c.id == row.id)
                       .values(state="consigning", consignment_approved_by=decider.user_id))
    await record_audit(conn, action="auction.consignment_approved", entity_type="auction", entity_id=str(row.id),
                       actor=decider.user_id, details={"movement_id": str(row.consignment_movement_id)})


register_approval_action("auctions.consign", _approved_consignment)


async def _consigned(conn: AsyncConnection, movement: Any, ctx: HandlerContext, *, code: str | None) -> None:
    row = await get_auction(conn, movement.auction_id, lock="update")
    if row.state != "consigning":
        return
    if code is not None:
        await conn.execute(update(auctions).where(auctions.c.id == row.id)
                           .values(state="consignment_refused", code=code))
        await record_audit(conn, action="auction.consignment_refused", entity_type="auction",
                           entity_id=str(row.id), actor="auctions", details={"code": code})
        return
    await conn.execute(update(auctions).where(auctions.c.id == row.id).values(state="scheduled"))
    await ctx.publish(conn, AuctionScheduled(
        auction_id=row.id, vintage=row.vintage, quantity=row.quantity, currency=row.currency,
        reserve_price=format_cents(row.reserve_price), price_step=format_cents(row.price_step),
        lot_size=row.lot_size, purchase_limit=row.purchase_limit, bidding_opens_at=row.bidding_opens_at,
        bidding_closes_at=row.bidding_closes_at, payment_deadline=row.payment_deadline,
        source_account_id=row.source_account_id))
    await record_audit(conn, action="auction.consigned", entity_type="auction", entity_id=str(row.id),
                       actor="auctions", details={"quantity": row.quantity, "from": row.source_account_id})


# Applications -------------------------------------------------------------------------------------------
async def bidder_account(conn: AsyncConnection, account_id: str, who: Principal, right: str) -> Any:
    account = await directory.account(conn, account_id)
    if account is None or account.kind not in ("central", "trading") or account.state != "active":
        raise RegistryError("auction.not_a_bidder_account", field="account_id", account=account_id)
    if right not in await directory.rights_on(conn, account_id, who.user_id):
        raise RegistryError("auction.not_representative", field="account_id", account=account_id, right=right)
    return account


async def apply(conn: AsyncConnection, auction_id: UUID, account_id: str, *, who: Principal,
                now: datetime) -> dict[str, Any]:
    row = await get_auction(conn, auction_id)
    if row.state not in ("awaiting_approval", "consigning", "scheduled"):
        raise RegistryError("auction.wrong_state", state=row.state, action="apply")
    if now >= row.bidding_closes_at:
        raise RegistryError("auction.closed")
    await bidder_account(conn, account_id, who, "initiate")
    inserted = (await conn.execute(pg_insert(applications).values(
        auction_id=auction_id, account_id=account_id, state="applied", applied_by=who.user_id,
    ).on_conflict_do_nothing().returning(applications.c.account_id))).first()
    if inserted is None:
        raise RegistryError("auction.already_applied", field="account_id", account=account_id)
    await record_audit(conn, action="auction.applied", entity_type="auction", entity_id=str(auction_id),
                       actor=who.user_id, details={"account_id": account_id})
    return await application_out(conn, auction_id, account_id)


async def application_out(conn: AsyncConnection, auction_id: UUID, account_id: str) -> dict[str, Any]:
    row = (await conn.execute(select(applications).where(
        applications.c.auction_id == auction_id, applications.c.account_id == account_id))).first()
    if row is None:
        raise RegistryError("auction.application_not_found", field="account_id", account=account_id)
    return {"auction_id": str(row.auction_id), "account_id": row.account_id, "state": row.state,
            "guarantee": row.guarantee, "guarantee_reference": row.guarantee_reference,
            "applied_by": row.applied_by, "decided_by": row.decided_by, "reason": row.reason,
            "applied_at": row.applied_at.isoformat(), "decided_at": row.decided_at.isoformat() if row.decided_at
            else None}


async def decide_application(conn: AsyncConnection, auction_id: UUID, account_id: str, *, qualify: bool,
                             who: Principal, now: datetime, guarantee_reference: str | None,
                             reason: str | None) -> dict[str, Any]:
    row = await get_auction(conn, auction_id)
    if now >= row.bidding_closes_at:
        raise RegistryError("auction.closed")
    current = (await conn.execute(select(applications).where(
        applications.c.auction_id == auction_id, applications.c.account_id == account_id).with_for_update())).first()
    if current is None:
        raise RegistryError("auction.application_not_found", field="account_id", account=account_id)
    state = "qualified" if qualify else "rejected"
    await conn.execute(update(applications).where(
        applications.c.auction_id == auction_id, applications.c.account_id == account_id).values(
        state=state, guarantee="received" if qualify else current.guarantee,
        guarantee_reference=guarantee_reference if qualify else current.guarantee_reference,
        decided_by=who.user_id, decided_at=now, reason=reason))
    await record_audit(conn, action=f"auction.bidder_{state}", entity_type="auction", entity_id=str(auction_id),
                       actor=who.user_id, reason=reason,
                       details={"account_id": account_id, "guarantee_reference": guarantee_reference})
    return await application_out(conn, auction_id, account_id)


# Sealed bids ------------------------------------------------------------------------------------------
async def _bidding(conn: AsyncConnection, auction_id: UUID, account_id: str, who: Principal,
                   now: datetime) -> Any:
    """The auction (share-locked, so clearing waits for bids in flight) and the bidder's application
    (locked: one bidder's bids are checked against its purchase limit one at a time)."""
    row = await get_auction(conn, auction_id, lock="share")
    phase = bidding_phase(now, row.bidding_opens_at, row.bidding_closes_at)
    if phase == "closed" or row.state in ("cleared", "approved", "settled"):
        raise RegistryError("auction.closed")
    if row.state != "scheduled" or phase != "open":
        raise RegistryError("auction.not_open", phase=phase if row.state == "scheduled" else row.state)
    await bidder_account(conn, account_id, who, "initiate")
    application = (await conn.execute(select(applications.c.state).where(
        applications.c.auction_id == auction_id, applications.c.account_id == account_id).with_for_update())).first()
    if application is None or application.state != "qualified":
        raise RegistryError("auction.not_qualified", field="account_id", account=account_id)
    return row


async def _live_quantity(conn: AsyncConnection, auction_id: UUID, account_id: str, *,
                         excluding: UUID | None = None) -> int:
    query = select(func.coalesce(func.sum(bids.c.quantity), 0)).where(
        bids.c.auction_id == auction_id, bids.c.bidder_account_id == account_id, bids.c.state == "live")
    if excluding is not None:
        query = query.where(bids.c.id != excluding)
    return int((await conn.execute(query)).scalar_one())


def bid_out(row: Any, currency: str) -> dict[str, Any]:
    return {"id": str(row.id), "auction_id": str(row.auction_id), "account_id": row.bidder_account_id,
            "price": format_cents(row.price), "currency": currency, "quantity": row.quantity, "state": row.state,
            "submitted_by": row.submitted_by, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat()}


async def submit_bid(conn: AsyncConnection, auction_id: UUID, account_id: str, *, price: int, quantity: int,
                     who: Principal, now: datetime) -> dict[str, Any]:
    row = await _bidding(conn, auction_id, account_id, who, now)
    try:
        check_bid(terms_of(row), price=price, quantity=quantity,
                  other_live_quantity=await _live_quantity(conn, auction_id, account_id))
    except AuctionRefusal as refusal:
        raise refused(refusal) from refusal
    bid_id = uuid4()
    created = (await conn.execute(insert(bids).values(
        id=bid_id, auction_id=auction_id, bidder_account_id=account_id, price=price, quantity=quantity,
        state="live", submitted_by=who.user_id).returning(*bids.c))).one()
    # sealed: the audit row names the bid, never its price or quantity
    await record_audit(conn, action="auction.bid_submitted", entity_type="auction", entity_id=str(auction_id),
                       actor=who.user_id, details={"bid_id": str(bid_id), "account_id": account_id})
    return bid_out(created, row.currency)


async def _own_bid(conn: AsyncConnection, auction_id: UUID, bid_id: UUID) -> Any:
    bid = (await conn.execute(select(bids).where(bids.c.id == bid_id, bids.c.auction_id == auction_id)
                              .with_for_update())).first()
    if bid is None:
        raise RegistryError("auction.bid_not_found", field="bid_id")
    return bid


async def change_bid(conn: AsyncConnection, auction_id: UUID, bid_id: UUID, *, price: int, quantity: int,
                     who: Principal, now: datetime) -> dict[str, Any]:
    bid = await _own_bid(conn, auction_id, bid_id)
    row = await _bidding(conn, auction_id, bid.bidder_account_id, who, now)
    if bid.state != "live":
        raise RegistryError("auction.bid_not_found", field="bid_id")
    try:
        check_bid(terms_of(row), price=price, quantity=quantity,
                  other_live_quantity=await _live_quantity(conn, auction_id, bid.bidder_account_id, excluding=bid_id))
    except AuctionRefusal as refusal:
        raise refused(refusal) from refusal
    changed = (await conn.execute(update(bids).where(bids.c.id == bid_id).values(
        price=price, quantity=quantity, updated_at=func.now()).returning(*bids.c))).one()
    await record_audit(conn, action="auction.bid_changed", entity_type="auction", entity_id=str(auction_id),
                       actor=who.user_id, details={"bid_id": str(bid_id), "account_id": bid.bidder_account_id})
    return bid_out(changed, row.currency)


async def withdraw_bid(conn: AsyncConnection, auction_id: UUID, bid_id: UUID, *, who: Principal,
                       now: datetime) -> dict[str, Any]:
    bid = await _own_bid(conn, auction_id, bid_id)
    row = await _bidding(conn, auction_id, bid.bidder_account_id, who, now)
    if bid.state != "live":
        return bid_out(bid, row.currency)
    changed = (await conn.execute(update(bids).where(bids.c.id == bid_id).values(
        state="withdrawn", updated_at=func.now()).returning(*bids.c))).one()
    await record_audit(conn, action="auction.bid_withdrawn", entity_type="auction", entity_id=str(auction_id),
                       actor=who.user_id, details={"bid_id": str(bid_id), "account_id": bid.bidder_account_id})
    return bid_out(changed, row.currency)


# Clearing ---------------------------------------------------------------------------------------------
def results_hash(result: Clearing) -> str:
    lines = [f"price={result.clearing_price};sold={result.sold};unsold={result.unsold}"]
    lines += [f"{bidder}={result.awards.get(bidder, 0)}/{result.bid_quantity[bidder]}"
              for bidder in sorted(result.bid_quantity)]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


async def clear_auction(conn: AsyncConnection, auction_id: UUID, *, who: Principal, now: datetime,
                        ttl: timedelta, approval_state: str | None) -> dict[str, Any]:
    """Set-based: one SELECT of the live bids, the pure clearing, the per-bid results by COPY, the
    per-bidder awards in one INSERT; then the results await a second authority user's approval."""
    row = await get_auction(conn, auction_id, lock="update")
    again = row.state == "cleared" and approval_state in ("rejected", "expired")
    if row.state != "scheduled" and not again:
        raise RegistryError("auction.wrong_state", state=row.state, action="clear")
    if now < row.bidding_closes_at:
        raise RegistryError("auction.not_closed")
    raw = (await conn.get_raw_connection()).driver_connection
    if again:
        await raw.execute("DELETE FROM auction_bid_results WHERE bid_seq IN "
                          "(SELECT seq FROM auction_bids WHERE auction_id = $1)", auction_id)
        await raw.execute("DELETE FROM auction_awards WHERE auction_id = $1", auction_id)
    records = await raw.fetch("SELECT seq, bidder_account_id, price, quantity FROM auction_bids "
                              "WHERE auction_id = $1 AND state = 'live'", auction_id)
    result = clear(records, supply=row.quantity, reserve_price=row.reserve_price,
                   purchase_limit=row.purchase_limit, holding_limit=row.holding_limit)
    await raw.copy_records_to_table("auction_bid_results", columns=["bid_seq", "accepted"],
                                    records=result.accepted.items())
    price = result.clearing_price or 0
    await raw.copy_records_to_table(
        "auction_awards", columns=["auction_id", "bidder_account_id", "bid_quantity", "awarded", "amount_due", "state"],
        records=[(auction_id, bidder, quantity, result.awards.get(bidder, 0), result.awards.get(bidder, 0) * price,
                  "cleared") for bidder, quantity in sorted(result.bid_quantity.items())])
    digest = results_hash(result)
    payload = {"auction_id": str(auction_id), "clearing_price": format_cents(result.clearing_price),
               "currency": row.currency, "sold": result.sold, "unsold": result.unsold, "bidders": result.bidders,
               "total_bid": result.total_bid, "results_hash": digest}
    approval_id = await request_approval(conn, action="auctions.approve_results", payload=payload,
                                         requested_by=who, required_roles=["authority"], now=now, ttl=ttl)
    await conn.execute(update(auctions).where(auctions.c.id == auction_id).values(
        state="cleared", cleared_by=who.user_id, cleared_at=now, clearing_price=result.clearing_price,
        sold=result.sold, unsold=result.unsold, bidders=result.bidders, total_bid=result.total_bid,
        results_hash=digest, results_approval_id=approval_id))
    await record_audit(conn, action="auction.cleared", entity_type="auction", entity_id=str(auction_id),
                       actor=who.user_id, details={**payload, "bids": len(records)})
    return {**payload, "state": "cleared", "approval_id": str(approval_id), "payload_hash": payload_hash(payload)}


async def _approved_results(conn: AsyncConnection, payload: dict[str, Any], decider: Principal) -> None:
    row = await get_auction(conn, UUID(payload["auction_id"]), lock="update")
    if row.state != "cleared":
        raise RegistryError("auction.wrong_state", state=row.state, action="approve the results")
    if decider.user_id == row.cleared_by:
        raise RegistryError("auction.clearer_cannot_approve")
    if payload["results_hash"] != row.results_hash:
        raise RegistryError("auction.results_changed", field="payload_hash")
    now = await programme_now(conn)
    await conn.execute(update(awards).where(awards.c.auction_id == row.id).values(
        state=case((awards.c.awarded > 0, "awaiting_payment"), else_="not_awarded"), updated_at=func.now()))
    rows = (await conn.execute(select(awards).where(awards.c.auction_id == row.id)
                               .order_by(awards.c.bidder_account_id))).all()
    await OUTBOX.add_many(conn, [AuctionResultsApproved(
        auction_id=row.id, bidder_account_id=a.bidder_account_id, vintage=row.vintage, bid_quantity=a.bid_quantity,
        awarded_quantity=a.awarded, clearing_price=format_cents(row.clearing_price), currency=row.currency,
        amount_due=format_cents(a.amount_due), payment_deadline=row.payment_deadline) for a in rows],
        correlation_id=str(row.id))
    if row.unsold and row.unsold_destination:
        await _send_move(conn, auction_id=row.id, purpose="unsold_return", kind="unsold_return",
                         from_account_id=AUCTION_ACCOUNT, to_account_id=row.unsold_destination, quantity=row.unsold,
                         vintage=row.vintage, actor=decider.user_id)
    await conn.execute(update(auctions).where(auctions.c.id == row.id).values(
        state="approved", results_approved_by=decider.user_id, results_approved_at=now))
    await record_audit(conn, action="auction.results_approved", entity_type="auction", entity_id=str(row.id),
                       actor=decider.user_id, details={"results_hash": row.results_hash, "bidders": len(rows)})


register_approval_action("auctions.approve_results", _approved_results)


# Payment, delivery, forfeiture -------------------------------------------------------------------------
async def confirm_payment(conn: AsyncConnection, auction_id: UUID, account_id: str, *, who: Principal,
                          now: datetime, reference: str | None) -> dict[str, Any]:
    row = await get_auction(conn, auction_id)
    award = (await conn.execute(select(awards).where(
        awards.c.auction_id == auction_id, awards.c.bidder_account_id == account_id).with_for_update())).first()
    if award is None or row.state not in ("approved", "settled"):
        raise RegistryError("auction.award_not_found", field="account_id", account=account_id)
    if award.state != "awaiting_payment":
        raise RegistryError("auction.award_wrong_state", state=award.state)
    if now >= row.payment_deadline:
        raise RegistryError("auction.payment_deadline_passed")
    movement_id = await _send_move(conn, auction_id=auction_id, purpose="delivery", kind="auction_delivery",
                                   from_account_id=AUCTION_ACCOUNT, to_account_id=account_id,
                                   quantity=award.awarded, vintage=row.vintage, actor=who.user_id,
                                   bidder_account_id=account_id)
    await conn.execute(update(awards).where(
        awards.c.auction_id == auction_id, awards.c.bidder_account_id == account_id).values(
        state="paid", payment_reference=reference, payment_confirmed_by=who.user_id, paid_at=now,
        movement_id=movement_id, updated_at=func.now()))
    await record_audit(conn, action="auction.payment_confirmed", entity_type="auction", entity_id=str(auction_id),
                       actor=who.user_id, details={"account_id": account_id, "reference": reference,
                                                   "amount_due": format_cents(award.amount_due),
                                                   "movement_id": str(movement_id)})
    return await award_out(conn, auction_id, account_id, row.currency)


async def award_out(conn: AsyncConnection, auction_id: UUID, account_id: str, currency: str) -> dict[str, Any]:
    a = (await conn.execute(select(awards).where(
        awards.c.auction_id == auction_id, awards.c.bidder_account_id == account_id))).first()
    if a is None:
        raise RegistryError("auction.award_not_found", field="account_id", account=account_id)
    return award_dict(a, currency)


def award_dict(a: Any, currency: str) -> dict[str, Any]:
    return {"account_id": a.bidder_account_id, "bid_quantity": a.bid_quantity, "awarded": a.awarded,
            "amount_due": format_cents(a.amount_due), "currency": currency, "state": a.state,
            "payment_reference": a.payment_reference, "movement_id": str(a.movement_id) if a.movement_id else None,
            "code": a.code}


async def forfeit_due(conn: AsyncConnection, now: datetime, ctx: Any) -> int:
    """Awards not paid by the deadline are forfeited (row lock + state guard: once); their units follow
    the unsold rule."""
    due = (await conn.execute(
        select(awards, auctions.c.vintage, auctions.c.clearing_price, auctions.c.currency,
               auctions.c.unsold_destination)
        .join(auctions, auctions.c.id == awards.c.auction_id)
        .where(awards.c.state == "awaiting_payment", auctions.c.payment_deadline <= now)
        .with_for_update(of=awards, skip_locked=True).limit(500))).all()
    for a in due:
        movement_id = None
        if a.unsold_destination:
            movement_id = await _send_move(conn, auction_id=a.auction_id, purpose="forfeit_return",
                                           kind="unsold_return", from_account_id=AUCTION_ACCOUNT,
                                           to_account_id=a.unsold_destination, quantity=a.awarded,
                                           vintage=a.vintage, actor="auctions", bidder_account_id=a.bidder_account_id)
        await conn.execute(update(awards).where(
            awards.c.auction_id == a.auction_id, awards.c.bidder_account_id == a.bidder_account_id).values(
            state="forfeited", movement_id=movement_id, updated_at=func.now()))
        await OUTBOX.add(conn, AwardForfeited(
            auction_id=a.auction_id, bidder_account_id=a.bidder_account_id, vintage=a.vintage, quantity=a.awarded,
            clearing_price=format_cents(a.clearing_price), currency=a.currency, amount_due=format_cents(a.amount_due),
            returned_to=a.unsold_destination), correlation_id=str(a.auction_id))
        await record_audit(conn, action="auction.award_forfeited", entity_type="auction",
                           entity_id=str(a.auction_id), actor="auctions",
                           details={"account_id": a.bidder_account_id, "quantity": a.awarded,
                                    "returned_to": a.unsold_destination})
    return len(due)


async def settle_finished(conn: AsyncConnection) -> int:
    """Approved auctions with no award awaiting payment or delivery and no movement awaiting the ledger
    are settled."""
    open_award = exists().where(awards.c.auction_id == auctions.c.id,
                                awards.c.state.in_(("awaiting_payment", "paid")))
    open_move = exists().where(movements.c.auction_id == auctions.c.id, movements.c.state == "sent")
    rows = (await conn.execute(select(auctions.c.id).where(
        auctions.c.state == "approved", ~open_award, ~open_move).with_for_update(skip_locked=True))).all()
    for r in rows:
        await conn.execute(update(auctions).where(auctions.c.id == r.id).values(state="settled"))
        await record_audit(conn, action="auction.settled", entity_type="auction", entity_id=str(r.id),
                           actor="auctions")
    return len(rows)


async def sweep(ctx: Any) -> None:
    """Periodic task: forfeit awards past their payment deadline (programme clock), then settle what is done."""
    async with ctx.engine.begin() as conn:
        await forfeit_due(conn, ctx.clock.now(), ctx)
    async with ctx.engine.begin() as conn:
        await settle_finished(conn)


# The ledger's answers -------------------------------------------------------------------------------
async def _movement_answered(conn: AsyncConnection, movement_id: UUID, ctx: HandlerContext, *,
                             code: str | None) -> None:
    movement = (await conn.execute(
        update(movements).where(movements.c.movement_id == movement_id, movements.c.state == "sent")
        .values(state="refused" if code else "moved", code=code, updated_at=func.now())
        .returning(*movements.c))).first()
    if movement is None:
        return  # not ours, or already answered
    if movement.purpose == "consignment":
        await _consigned(conn, movement, ctx, code=code)
        return
    if code is not None:
        await record_audit(conn, action=f"auction.{movement.purpose}_refused", entity_type="auction",
                           entity_id=str(movement.auction_id), actor="auctions",
                           details={"movement_id": str(movement_id), "code": code,
                                    "account_id": movement.bidder_account_id})
    if movement.purpose != "delivery":
        return
    award = (await conn.execute(
        update(awards).where(awards.c.movement_id == movement_id, awards.c.state == "paid")
        .values(state="delivery_refused" if code else "delivered", code=code, updated_at=func.now())
        .returning(*awards.c))).first()
    if award is None or code is not None:
        return
    row = await get_auction(conn, movement.auction_id)
    await ctx.publish(conn, AuctionUnitsDelivered(
        auction_id=row.id, bidder_account_id=award.bidder_account_id, vintage=row.vintage, quantity=award.awarded,
        clearing_price=format_cents(row.clearing_price), currency=row.currency, movement_id=movement_id))
    await record_audit(conn, action="auction.units_delivered", entity_type="auction", entity_id=str(row.id),
                       actor="auctions", details={"account_id": award.bidder_account_id, "quantity": award.awarded,
                                                  "movement_id": str(movement_id)})


async def on_units_moved(conn: AsyncConnection, event: UnitsMoved, ctx: HandlerContext) -> None:
    if event.movement_kind in ("auction_consignment", "auction_delivery", "unsold_return"):
        await _movement_answered(conn, event.movement_id, ctx, code=None)


async def on_movement_refused(conn: AsyncConnection, event: MovementRefused, ctx: HandlerContext) -> None:
    if event.code == DUPLICATE or event.command != "move_units":
        return  # a repeated command: the first one's own answer settles it
    await _movement_answered(conn, event.reference_id, ctx, code=event.code)


SUBSCRIPTIONS: dict[Any, Any] = {
    **directory.subscriptions,
    **calendar.subscriptions,
    UnitsMoved: on_units_moved,
    MovementRefused: on_movement_refused,
}
