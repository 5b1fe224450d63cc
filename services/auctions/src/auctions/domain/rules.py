"""An auction's terms and the rules a bid must pass (I/O-free). Every refusal has a stable code
(``auction.*``), registered with its Spanish and English messages in ``auctions.errors``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


class AuctionRefusal(Exception):
    def __init__(self, code: str, field: str | None = None, **params: object):
        super().__init__(code)
        self.code = code
        self.field = field
        self.params = params


@dataclass(frozen=True)
class Terms:
    """What the authority fixed when scheduling (money in integer cents)."""

    quantity: int
    reserve_price: int
    price_step: int
    lot_size: int
    purchase_limit: int  # units one bidder may hold in live bids and win
    holding_limit: int | None = None  # optional further cap on what one bidder may win here


def check_terms(terms: Terms) -> None:
    if terms.lot_size <= 0:
        raise AuctionRefusal("auction.invalid_lot_size", field="lot_size", lot_size=terms.lot_size)
    if terms.quantity <= 0 or terms.quantity % terms.lot_size:
        raise AuctionRefusal("auction.invalid_quantity", field="quantity", quantity=terms.quantity,
                             lot_size=terms.lot_size)
    if terms.reserve_price <= 0:
        raise AuctionRefusal("auction.invalid_price", field="reserve_price", value=terms.reserve_price)
    if terms.price_step <= 0:
        raise AuctionRefusal("auction.invalid_price", field="price_step", value=terms.price_step)
    if terms.purchase_limit < terms.lot_size or terms.purchase_limit > terms.quantity:
        raise AuctionRefusal("auction.invalid_purchase_limit", field="purchase_limit_share",
                             value=terms.purchase_limit)
    if terms.holding_limit is not None and terms.holding_limit <= 0:
        raise AuctionRefusal("auction.invalid_purchase_limit", field="holding_limit", value=terms.holding_limit)


def check_window(opens_at: datetime, closes_at: datetime, payment_deadline: datetime, now: datetime) -> None:
    if not opens_at < closes_at:
        raise AuctionRefusal("auction.invalid_window", field="bidding_closes_at",
                             detail="the window must close after it opens")
    if closes_at <= now:
        raise AuctionRefusal("auction.invalid_window", field="bidding_closes_at",
                             detail="the window must close in the future")
    if payment_deadline <= closes_at:
        raise AuctionRefusal("auction.invalid_window", field="payment_deadline",
                             detail="the payment deadline must come after the close")


def check_allowed(opens_at: datetime, period_starts: Sequence[datetime], from_period: int) -> None:
    """Auctions are allowed from the ``from_period``-th period of the programme (1-based): the window may
    not open before that period starts."""
    ordered = sorted(period_starts)
    if len(ordered) < from_period or (ordered and opens_at < ordered[from_period - 1]):
        raise AuctionRefusal("auction.not_allowed_yet", field="bidding_opens_at", period=from_period)


def check_vintage(vintage: int, current_vintage: int | None, known_vintages: Sequence[int], advance: int) -> None:
    """The vintage of a scheduled period, at most ``advance`` years after the current one."""
    if vintage not in known_vintages:
        raise AuctionRefusal("auction.unknown_vintage", field="vintage", vintage=vintage)
    if current_vintage is not None and vintage > current_vintage + advance:
        raise AuctionRefusal("auction.future_vintage_not_allowed", field="vintage", vintage=vintage,
                             allowed=current_vintage + advance)


def check_bid(terms: Terms, *, price: int, quantity: int, other_live_quantity: int) -> None:
    """A bid's own rules: positive, not below the reserve, on the price step and the lot size, and the
    bidder's live bids (this one included) within the purchase limit."""
    if price <= 0:
        raise AuctionRefusal("auction.invalid_price", field="price", value=price)
    if quantity <= 0:
        raise AuctionRefusal("auction.invalid_quantity", field="quantity", quantity=quantity,
                             lot_size=terms.lot_size)
    if price < terms.reserve_price:
        raise AuctionRefusal("auction.below_reserve", field="price")
    if price % terms.price_step:
        raise AuctionRefusal("auction.off_price_step", field="price", step=terms.price_step)
    if quantity % terms.lot_size:
        raise AuctionRefusal("auction.off_lot_size", field="quantity", lot_size=terms.lot_size)
    if other_live_quantity + quantity > terms.purchase_limit:
        raise AuctionRefusal("auction.over_purchase_limit", field="quantity", limit=terms.purchase_limit,
                             live=other_live_quantity)


def bidding_phase(now: datetime, opens_at: datetime, closes_at: datetime) -> str:
    """``before`` | ``open`` | ``closed`` (the close instant itself is closed)."""
    if now < opens_at:
        return "before"
    return "open" if now < closes_at else "closed"
