"""An auction's terms, its window, the second-period rule, vintages and a bid's own rules, each refusal with
its code; money in whole cents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from auctions.domain.money import format_cents, parse_cents, parse_share, ratio, share_of
from auctions.domain.rules import (
    AuctionRefusal,
    Terms,
    bidding_phase,
    check_allowed,
    check_bid,
    check_terms,
    check_vintage,
    check_window,
)

TERMS = Terms(quantity=10_000, reserve_price=1668, price_step=5, lot_size=1000, purchase_limit=2500)
T0 = datetime(2021, 3, 1, tzinfo=UTC)


def code_of(call, *args, **kwargs) -> str | None:
    try:
        call(*args, **kwargs)
    except AuctionRefusal as refusal:
        return refusal.code
    return None


@pytest.mark.parametrize(("text", "cents"), [("16.68", 1668), ("16.6", 1660), ("16", 1600), ("0.01", 1),
                                             ("-2.50", -250)])
def test_money_in_whole_cents(text, cents):
    assert parse_cents(text, field="price") == cents


@pytest.mark.parametrize("text", ["16.685", "1e3", "abc", "", "16,68", " ", "NaN", True, 16.68])
def test_money_that_is_not_whole_cents_is_refused(text):
    assert code_of(parse_cents, text, field="price") == "auction.invalid_price"


def test_formatting_shares_and_ratios():
    assert format_cents(1668) == "16.68" and format_cents(5) == "0.05" and format_cents(None) is None
    assert share_of(10_000, parse_share("0.25"), 1000) == 2000  # 2,500 rounded down to whole lots
    assert share_of(10_000, Decimal(1), 1000) == 10_000
    assert code_of(parse_share, "0") == code_of(parse_share, "1.01") == "auction.invalid_purchase_limit"
    assert ratio(15_000, 10_000) == "1.50" and ratio(1, 3) == "0.33" and ratio(5, 0) == "0.00"


@pytest.mark.parametrize(("price", "quantity", "other", "code"), [
    (0, 1000, 0, "auction.invalid_price"), (-100, 1000, 0, "auction.invalid_price"),
    (2000, 0, 0, "auction.invalid_quantity"), (2000, -1000, 0, "auction.invalid_quantity"),
    (1665, 1000, 0, "auction.below_reserve"), (1668, 1000, 0, "auction.off_price_step"),
    (2000, 1500, 0, "auction.off_lot_size"), (2000, 2000, 1000, "auction.over_purchase_limit"),
    (2000, 2000, 0, None), (1670, 1000, 1000, None),
])
def test_a_bids_rules(price, quantity, other, code):
    assert code_of(check_bid, TERMS, price=price, quantity=quantity, other_live_quantity=other) == code


def test_terms_and_window():
    assert code_of(check_terms, TERMS) is None
    assert code_of(check_terms, Terms(10_500, 1668, 1, 1000, 2000)) == "auction.invalid_quantity"
    assert code_of(check_terms, Terms(10_000, 0, 1, 1000, 2000)) == "auction.invalid_price"
    assert code_of(check_terms, Terms(10_000, 1668, 1, 1000, 0)) == "auction.invalid_purchase_limit"
    assert code_of(check_window, T0, T0 + timedelta(hours=1), T0 + timedelta(days=1), T0) is None
    assert code_of(check_window, T0, T0, T0 + timedelta(days=1), T0 - timedelta(days=1)) == "auction.invalid_window"
    assert code_of(check_window, T0, T0 + timedelta(hours=1), T0 + timedelta(hours=1), T0) == "auction.invalid_window"
    assert code_of(check_window, T0 - timedelta(days=2), T0 - timedelta(days=1), T0 + timedelta(days=1),
                   T0) == "auction.invalid_window"
    assert [bidding_phase(T0 + timedelta(minutes=m), T0, T0 + timedelta(hours=1)) for m in (-1, 0, 59, 60)] == \
        ["before", "open", "open", "closed"]


def test_auctions_from_the_second_period_and_vintages():
    starts = [datetime(2020, 1, 1, 6, tzinfo=UTC), datetime(2021, 1, 1, 6, tzinfo=UTC)]
    assert code_of(check_allowed, datetime(2020, 6, 1, tzinfo=UTC), starts, 2) == "auction.not_allowed_yet"
    assert code_of(check_allowed, datetime(2021, 6, 1, tzinfo=UTC), starts, 2) is None
    assert code_of(check_allowed, datetime(2021, 6, 1, tzinfo=UTC), starts[:1], 2) == "auction.not_allowed_yet"
    assert code_of(check_allowed, datetime(2020, 6, 1, tzinfo=UTC), starts, 1) is None
    assert code_of(check_vintage, 2021, 2021, [2020, 2021, 2022], 0) is None
    assert code_of(check_vintage, 2020, 2021, [2020, 2021, 2022], 0) is None
    assert code_of(check_vintage, 2022, 2021, [2020, 2021, 2022], 0) == "auction.future_vintage_not_allowed"
    assert code_of(check_vintage, 2022, 2021, [2020, 2021, 2022], 1) is None
    assert code_of(check_vintage, 2030, 2021, [2020, 2021, 2022], 9) == "auction.unknown_vintage"
