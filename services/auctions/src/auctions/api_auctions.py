"""``/api/v1/auctions``: scheduling (four-eyes consignment), applications and qualification, sealed bids,
clearing, approval of the results (another authority user, never the clearer), payment and delivery; and
``/api/v1/public/auctions``: the published summary of auctions whose results were approved (no sign-in)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from auctions import service
from auctions.domain.money import CURRENCY, format_cents, parse_cents, parse_share, ratio, share_of
from auctions.domain.rules import (
    AuctionRefusal,
    Terms,
    bidding_phase,
    check_allowed,
    check_terms,
    check_vintage,
    check_window,
)
from auctions.tables import applications, auctions, awards, bid_results, bids, calendar, directory
from registry_common import idempotency
from registry_common.approvals import effective_state
from registry_common.audit import record_audit
from registry_common.auth import OVERSIGHT_ROLES, Principal, Role, require_roles
from registry_common.errors import RegistryError
from registry_common.routes import ClockDep, ReadConn, WriteConn
from registry_common.tables import approvals

router = APIRouter(prefix="/api/v1/auctions", tags=["auctions"])
public_router = APIRouter(prefix="/api/v1/public/auctions", tags=["public"])

Authority = Annotated[Principal, Depends(require_roles(Role.AUTHORITY))]
Administrator = Annotated[Principal, Depends(require_roles(Role.ADMINISTRATOR))]
Settlement = Annotated[Principal, Depends(require_roles(Role.ADMINISTRATOR, Role.AUTHORITY))]
Bidder = Annotated[Principal, Depends(require_roles(Role.INSTALLATION, Role.INTERMEDIARY))]
Anyone = Annotated[Principal, Depends(require_roles(*Role))]
Reader = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES, Role.INSTALLATION, Role.INTERMEDIARY))]
BIDDER_ROLES = frozenset({Role.INSTALLATION, Role.INTERMEDIARY})


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuctionIn(Strict):
    vintage: int = Field(ge=2000, le=9999)
    quantity: int = Field(description="allowances offered: a positive multiple of the lot size")
    source: str = Field(default="cap", max_length=40, description="'cap' (SYS-CAP) or a reserve's name")
    currency: str = Field(description="ISO 4217, e.g. MXN or USD")
    reserve_price: str = Field(description="decimal string in whole cents, e.g. '16.68'")
    price_step: str = Field(default="0.01", description="bids are multiples of it (whole cents)")
    lot_size: int | None = Field(default=None, description="default: REGISTRY_AUCTION_DEFAULT_LOT_SIZE (1,000)")
    purchase_limit_share: str = Field(default="0.25", description="share of the lot one bidder may bid for and win")
    holding_limit: int | None = Field(default=None, description="optional further cap on what one bidder may win")
    bidding_opens_at: AwareDatetime
    bidding_closes_at: AwareDatetime
    payment_deadline: AwareDatetime
    unsold: str = Field(default="stay", max_length=40,
                        description="'stay' (in SYS-AUCTION) or a reserve's name: where unsold and forfeited units go")


class ApplicationIn(Strict):
    account_id: str = Field(min_length=1, max_length=40)


class QualifyIn(Strict):
    guarantee_reference: str = Field(min_length=1, max_length=200,
                                     description="the bid guarantee received (settled outside the registry)")


class RejectIn(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class BidIn(Strict):
    account_id: str = Field(min_length=1, max_length=40)
    price: str = Field(description="decimal string in whole cents")
    quantity: int
    currency: str | None = None


class BidChange(Strict):
    price: str
    quantity: int
    currency: str | None = None


class PaymentIn(Strict):
    reference: str | None = Field(default=None, max_length=200)


def _ttl(request: Request) -> timedelta:
    return timedelta(hours=request.app.state.settings.approval_ttl_hours)


def _account_for(name: str, reserves: str, *, field: str, code: str) -> str:
    key = name.strip().lower()
    if key == "cap" and field == "source":
        return service.CAP_ACCOUNT
    known = {n.strip().lower() for n in reserves.split(",") if n.strip()}
    if key in known:
        return service.reserve_account_id(key)
    raise RegistryError(code, field=field, source=name, value=name)


async def _approval_state(conn: AsyncConnection, approval_id: UUID | None, now: datetime) -> str | None:
    if approval_id is None:
        return None
    row = (await conn.execute(select(approvals).where(approvals.c.id == approval_id))).mappings().first()
    return None if row is None else effective_state(dict(row), now)


async def auction_out(conn: AsyncConnection, row: Any, now: datetime) -> dict[str, Any]:
    state = row.state
    if state == "awaiting_approval":
        approval = await _approval_state(conn, row.consignment_approval_id, now)
        state = approval if approval in ("rejected", "expired") else state
    out = {
        "id": str(row.id), "state": state, "vintage": row.vintage, "quantity": row.quantity,
        "currency": row.currency, "reserve_price": format_cents(row.reserve_price),
        "price_step": format_cents(row.price_step), "lot_size": row.lot_size,
        "purchase_limit_share": row.purchase_limit_share, "purchase_limit": row.purchase_limit,
        "holding_limit": row.holding_limit, "bidding_opens_at": row.bidding_opens_at.isoformat(),
        "bidding_closes_at": row.bidding_closes_at.isoformat(), "payment_deadline": row.payment_deadline.isoformat(),
        "bidding": bidding_phase(now, row.bidding_opens_at, row.bidding_closes_at),
        "source_account_id": row.source_account_id, "unsold_destination": row.unsold_destination,
        "consignment_approval_id": str(row.consignment_approval_id), "code": row.code,
        "scheduled_by": row.scheduled_by, "consignment_approved_by": row.consignment_approved_by,
        "created_at": row.created_at.isoformat(),
    }
    if row.state in ("cleared", "approved", "settled"):
        out["results"] = {
            "clearing_price": format_cents(row.clearing_price), "sold": row.sold, "unsold": row.unsold,
            "bidders": row.bidders, "total_bid": row.total_bid, "cleared_by": row.cleared_by,
            "results_approval_id": str(row.results_approval_id), "results_approved_by": row.results_approved_by,
            "results_approval_state": await _approval_state(conn, row.results_approval_id, now)}
    return out


# Scheduling -----------------------------------------------------------------------------------------------
@router.post("", status_code=202, responses={202: {"description": "awaiting the consignment's approval"}})
async def schedule_auction(body: AuctionIn, request: Request, conn: WriteConn, clock: ClockDep, who: Authority,
                           key: idempotency.IdempotencyKey) -> JSONResponse:
    """Schedule an auction; the lot moves from the cap or a reserve into ``SYS-AUCTION`` once another
    authority user approves at ``/api/v1/auctions/approvals/{approval_id}/approve`` with ``payload_hash``."""
    settings = request.app.state.settings
    now = clock.now()

    async def work() -> dict[str, Any]:
        try:
            if not CURRENCY.match(body.currency):
                raise AuctionRefusal("auction.invalid_currency", field="currency", currency=body.currency)
            reserve = parse_cents(body.reserve_price, field="reserve_price")
            step = parse_cents(body.price_step, field="price_step")
            lot = body.lot_size if body.lot_size is not None else settings.auction_default_lot_size
            share = parse_share(body.purchase_limit_share)
            terms = Terms(quantity=body.quantity, reserve_price=reserve, price_step=step, lot_size=lot,
                          purchase_limit=share_of(body.quantity, share, lot) if lot > 0 else 0,
                          holding_limit=body.holding_limit)
            check_terms(terms)
            check_window(body.bidding_opens_at, body.bidding_closes_at, body.payment_deadline, now)
            periods = await calendar.all(conn)
            check_allowed(body.bidding_opens_at, [p.starts_at for p in periods], settings.auctions_from_period)
            started = [p.vintage for p in periods if p.starts_at <= body.bidding_opens_at]
            current_vintage = next((p.vintage for p in periods if p.starts_at <= body.bidding_opens_at < p.ends_at),
                                   max(started, default=None))
            check_vintage(body.vintage, current_vintage, [p.vintage for p in periods],
                          settings.auction_advance_vintages)
        except AuctionRefusal as refusal:
            raise service.refused(refusal) from refusal
        source = _account_for(body.source, settings.reserves, field="source", code="auction.unknown_source")
        unsold = None if body.unsold.strip().lower() == "stay" else _account_for(
            body.unsold, settings.reserves, field="unsold", code="auction.unknown_destination")
        values = {"vintage": body.vintage, "quantity": body.quantity, "currency": body.currency,
                  "reserve_price": reserve, "price_step": step, "lot_size": lot,
                  "purchase_limit_share": str(share), "purchase_limit": terms.purchase_limit,
                  "holding_limit": body.holding_limit, "bidding_opens_at": body.bidding_opens_at,
                  "bidding_closes_at": body.bidding_closes_at, "payment_deadline": body.payment_deadline,
                  "source_account_id": source, "unsold_destination": unsold}
        return await service.schedule(conn, values, who=who, now=now, ttl=_ttl(request))

    stored = await idempotency.reserve(conn, key, who.user_id, body.model_dump(mode="json"))
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"])
    content = await work()
    await idempotency.remember(conn, key, who.user_id, 202, content)
    return JSONResponse(content, status_code=202, headers={"Location": f"/api/v1/auctions/{content['auction_id']}"})


@router.get("")
async def list_auctions(conn: ReadConn, clock: ClockDep, _who: Anyone, state: str | None = None,
                        limit: Annotated[int, Query(ge=1, le=500)] = 100) -> dict[str, Any]:
    query = select(auctions).order_by(auctions.c.bidding_opens_at.desc()).limit(limit)
    if state is not None:
        query = query.where(auctions.c.state == state)
    now = clock.now()
    return {"items": [await auction_out(conn, r, now) for r in (await conn.execute(query)).all()]}


@router.get("/{auction_id}")
async def get_auction(auction_id: UUID, conn: ReadConn, clock: ClockDep, _who: Anyone) -> dict[str, Any]:
    return await auction_out(conn, await service.get_auction(conn, auction_id), clock.now())


# Applications ---------------------------------------------------------------------------------------------
@router.post("/{auction_id}/applications", status_code=201)
async def apply(auction_id: UUID, body: ApplicationIn, conn: WriteConn, clock: ClockDep,
                who: Bidder) -> JSONResponse:
    """A representative (``initiate`` right) of an installation's central account or an intermediary's
    trading account applies to bid; an administrator qualifies it once the bid guarantee is received."""
    out = await service.apply(conn, auction_id, body.account_id, who=who, now=clock.now())
    return JSONResponse(out, status_code=201,
                        headers={"Location": f"/api/v1/auctions/{auction_id}/applications/{body.account_id}"})


@router.get("/{auction_id}/applications")
async def list_applications(auction_id: UUID, conn: ReadConn, who: Reader) -> dict[str, Any]:
    await service.get_auction(conn, auction_id)
    query = select(applications.c.account_id).where(applications.c.auction_id == auction_id)
    if not who.has_any(OVERSIGHT_ROLES):
        query = query.where(applications.c.account_id.in_(directory.accounts_of(who.user_id)))
    ids = (await conn.execute(query.order_by(applications.c.account_id))).scalars().all()
    return {"items": [await service.application_out(conn, auction_id, i) for i in ids]}


@router.post("/{auction_id}/applications/{account_id}/qualify")
async def qualify(auction_id: UUID, account_id: str, body: QualifyIn, conn: WriteConn, clock: ClockDep,
                  who: Administrator) -> dict[str, Any]:
    return await service.decide_application(conn, auction_id, account_id, qualify=True, who=who, now=clock.now(),
                                            guarantee_reference=body.guarantee_reference, reason=None)


@router.post("/{auction_id}/applications/{account_id}/reject")
async def reject_application(auction_id: UUID, account_id: str, body: RejectIn, conn: WriteConn, clock: ClockDep,
                             who: Administrator) -> dict[str, Any]:
    return await service.decide_application(conn, auction_id, account_id, qualify=False, who=who, now=clock.now(),
                                            guarantee_reference=None, reason=body.reason)


# Sealed bids ----------------------------------------------------------------------------------------------
def _price(value: str, currency: str | None, auction_currency: str) -> int:
    if currency is not None and currency != auction_currency:
        raise RegistryError("auction.invalid_currency", field="currency", currency=currency)
    try:
        return parse_cents(value, field="price")
    except AuctionRefusal as refusal:
        raise service.refused(refusal) from refusal


@router.post("/{auction_id}/bids", status_code=201)
async def submit_bid(auction_id: UUID, body: BidIn, conn: WriteConn, clock: ClockDep, who: Bidder,
                     key: idempotency.IdempotencyKey) -> JSONResponse:
    """A sealed bid (price, quantity) for a qualified account, during the window; several per bidder, their
    live total within the purchase limit. Nobody else sees it before the close."""
    stored = await idempotency.reserve(conn, key, who.user_id, {"auction_id": str(auction_id),
                                                                **body.model_dump(mode="json")})
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"])
    row = await service.get_auction(conn, auction_id)
    out = await service.submit_bid(conn, auction_id, body.account_id, who=who, now=clock.now(),
                                   price=_price(body.price, body.currency, row.currency), quantity=body.quantity)
    await idempotency.remember(conn, key, who.user_id, 201, out)
    return JSONResponse(out, status_code=201, headers={"Location": f"/api/v1/auctions/{auction_id}/bids/{out['id']}"})


@router.put("/{auction_id}/bids/{bid_id}")
async def change_bid(auction_id: UUID, bid_id: UUID, body: BidChange, conn: WriteConn, clock: ClockDep,
                     who: Bidder) -> dict[str, Any]:
    row = await service.get_auction(conn, auction_id)
    return await service.change_bid(conn, auction_id, bid_id, who=who, now=clock.now(),
                                    price=_price(body.price, body.currency, row.currency), quantity=body.quantity)


@router.delete("/{auction_id}/bids/{bid_id}")
async def withdraw_bid(auction_id: UUID, bid_id: UUID, conn: WriteConn, clock: ClockDep,
                       who: Bidder) -> dict[str, Any]:
    return await service.withdraw_bid(conn, auction_id, bid_id, who=who, now=clock.now())


@router.get("/{auction_id}/bids")
async def list_bids(auction_id: UUID, conn: WriteConn, clock: ClockDep, who: Reader,
                    account_id: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 500,
                    after: UUID | None = None) -> dict[str, Any]:
    """A bidder's representatives see their own account's bids at any time. The oversight roles see every
    bid only after the close, and each such view is in the audit log."""
    row = await service.get_auction(conn, auction_id)
    now = clock.now()
    query = select(bids, bid_results.c.accepted).outerjoin(bid_results, bid_results.c.bid_seq == bids.c.seq).where(
        bids.c.auction_id == auction_id).order_by(bids.c.id).limit(limit)
    if after is not None:
        query = query.where(bids.c.id > after)
    oversight = who.has_any(OVERSIGHT_ROLES)
    if account_id is not None and not oversight and not await directory.rights_on(conn, account_id, who.user_id):
        raise RegistryError("auction.not_representative", field="account_id", account=account_id, right="view")
    if not oversight:
        if account_id is None:
            raise RegistryError("request.invalid", field="account_id")
    elif bidding_phase(now, row.bidding_opens_at, row.bidding_closes_at) != "closed":
        raise RegistryError("auction.bids_sealed")
    if account_id is not None:
        query = query.where(bids.c.bidder_account_id == account_id)
    items = []
    for r in (await conn.execute(query)).all():
        item = service.bid_out(r, row.currency)
        item["accepted"] = r.accepted if row.state in ("approved", "settled") or oversight else None
        items.append(item)
    if oversight:
        await record_audit(conn, action="auction.bids_viewed", entity_type="auction", entity_id=str(auction_id),
                           actor=who.user_id, details={"account_id": account_id, "count": len(items)})
    return {"items": items, "next_after": items[-1]["id"] if len(items) == limit else None}


# Clearing, approval of the results, payment ----------------------------------------------------------------
@router.post("/{auction_id}/clear")
async def clear_auction(auction_id: UUID, request: Request, conn: WriteConn, clock: ClockDep, who: Authority,
                        key: idempotency.IdempotencyKey) -> JSONResponse:
    """After the close: the uniform-price clearing, stored; another authority user (never the one who
    cleared) approves the results at ``/api/v1/auctions/approvals/{approval_id}/approve``."""
    stored = await idempotency.reserve(conn, key, who.user_id, {"auction_id": str(auction_id)})
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"])
    row = await service.get_auction(conn, auction_id)
    now = clock.now()
    out = await service.clear_auction(conn, auction_id, who=who, now=now, ttl=_ttl(request),
                                      approval_state=await _approval_state(conn, row.results_approval_id, now))
    await idempotency.remember(conn, key, who.user_id, 200, out)
    return JSONResponse(out, status_code=200)


@router.get("/{auction_id}/results")
async def results(auction_id: UUID, conn: WriteConn, clock: ClockDep, who: Reader,
                  account_id: str | None = None) -> dict[str, Any]:
    """Oversight: the whole clearing once cleared (each view audited). A bidder's representatives: their
    account's award once the results are approved."""
    row = await service.get_auction(conn, auction_id)
    out = await auction_out(conn, row, clock.now())
    if who.has_any(OVERSIGHT_ROLES):
        if row.state not in ("cleared", "approved", "settled"):
            raise RegistryError("auction.wrong_state", state=row.state, action="show results")
        query = select(awards).where(awards.c.auction_id == auction_id).order_by(awards.c.bidder_account_id)
        if account_id is not None:
            query = query.where(awards.c.bidder_account_id == account_id)
        out["awards"] = [service.award_dict(a, row.currency) for a in (await conn.execute(query)).all()]
        await record_audit(conn, action="auction.results_viewed", entity_type="auction", entity_id=str(auction_id),
                           actor=who.user_id, details={"account_id": account_id})
        return out
    if account_id is None:
        raise RegistryError("request.invalid", field="account_id")
    if not await directory.rights_on(conn, account_id, who.user_id):
        raise RegistryError("auction.not_representative", field="account_id", account=account_id, right="view")
    if row.state not in ("approved", "settled"):
        raise RegistryError("auction.wrong_state", state=row.state, action="show results")
    out["awards"] = [await service.award_out(conn, auction_id, account_id, row.currency)]
    return out


@router.post("/{auction_id}/awards/{account_id}/payment")
async def confirm_payment(auction_id: UUID, account_id: str, body: PaymentIn, conn: WriteConn, clock: ClockDep,
                          who: Settlement, key: idempotency.IdempotencyKey) -> JSONResponse:
    """The winner paid (outside the registry) by the deadline: the ledger delivers the units from
    ``SYS-AUCTION`` to the winner's account."""
    stored = await idempotency.reserve(conn, key, who.user_id, {"auction_id": str(auction_id),
                                                                "account_id": account_id,
                                                                **body.model_dump(mode="json")})
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"])
    out = await service.confirm_payment(conn, auction_id, account_id, who=who, now=clock.now(),
                                        reference=body.reference)
    await idempotency.remember(conn, key, who.user_id, 202, out)
    return JSONResponse(out, status_code=202)


# Published summary ----------------------------------------------------------------------------------------
def summary(row: Any) -> dict[str, Any]:
    return {"id": str(row.id), "vintage": row.vintage, "currency": row.currency,
            "auction_date": row.bidding_closes_at.date().isoformat(), "offered": row.quantity,
            "reserve_price": format_cents(row.reserve_price), "clearing_price": format_cents(row.clearing_price),
            "volume_sold": row.sold, "unsold": row.unsold, "bidders": row.bidders, "total_bid": row.total_bid,
            "bid_to_cover": ratio(row.total_bid or 0, row.quantity)}


PUBLISHED = ("approved", "settled")


@public_router.get("")
async def public_auctions(conn: ReadConn) -> dict[str, Any]:
    """Every auction whose results were approved: clearing price, volume sold, bidders, bid-to-cover."""
    rows = (await conn.execute(select(auctions).where(auctions.c.state.in_(PUBLISHED))
                               .order_by(auctions.c.bidding_closes_at.desc()))).all()
    return {"items": [summary(r) for r in rows]}


@public_router.get("/{auction_id}")
async def public_auction(auction_id: UUID, conn: ReadConn) -> dict[str, Any]:
    row = (await conn.execute(select(auctions).where(auctions.c.id == auction_id,
                                                     auctions.c.state.in_(PUBLISHED)))).first()
    if row is None:
        raise RegistryError("auction.not_found", field="auction_id")
    return summary(row)
