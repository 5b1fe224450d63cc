"""Clearing on hand-worked cases, and the property that the result does not depend on the order the bids
arrived in (nor on their ids' order)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from auctions.domain.clearing import Bid, clear, pro_rata


def bids(*rows: tuple[str, int, int]) -> list[Bid]:
    return [Bid(f"b{n:03d}", bidder, price, quantity) for n, (bidder, price, quantity) in enumerate(rows)]


def test_undersubscribed_every_bid_at_or_above_the_reserve_wins_and_the_rest_is_unsold():
    result = clear(bids(("A", 2000, 3000), ("B", 1800, 2000), ("C", 1700, 1000)), supply=10_000,
                   reserve_price=1700, purchase_limit=5000)
    assert result.awards == {"A": 3000, "B": 2000, "C": 1000}
    assert result.sold == 6000 and result.unsold == 4000
    assert result.clearing_price == 1700  # the lowest accepted price
    assert result.total_bid == 6000 and result.bidders == 3


def test_bids_below_the_reserve_take_no_part():
    result = clear(bids(("A", 2000, 3000), ("B", 1699, 5000)), supply=10_000, reserve_price=1700,
                   purchase_limit=10_000)
    assert result.awards == {"A": 3000}
    assert result.clearing_price == 2000 and result.unsold == 7000
    assert result.accepted["b001"] == 0


def test_nothing_at_or_above_the_reserve_sells_nothing():
    result = clear(bids(("A", 1000, 3000)), supply=5000, reserve_price=1700, purchase_limit=5000)
    assert result.clearing_price is None and result.sold == 0 and result.unsold == 5000 and result.awards == {}


def test_oversubscribed_with_a_tie_at_the_clearing_price_shares_pro_rata():
    # 10,000 units: A takes 4,000 at 25.00; 6,000 left for 3,000 + 5,000 + 1,000 = 9,000 at 20.00.
    # shares: B 6000*3000/9000 = 2000, C 6000*5000/9000 = 3333.33, D 6000*1000/9000 = 666.67
    # floors 2000 + 3333 + 666 = 5999; the remaining unit goes to the largest remainder: D (6,000,000 mod
    # 9,000 = 6,000) before C (30,000,000 mod 9,000 = 3,000).
    result = clear(bids(("A", 2500, 4000), ("B", 2000, 3000), ("C", 2000, 5000), ("D", 2000, 1000),
                        ("E", 1900, 2000)), supply=10_000, reserve_price=1500, purchase_limit=10_000)
    assert result.awards == {"A": 4000, "B": 2000, "C": 3333, "D": 667, "E": 0}
    assert result.clearing_price == 2000 and result.sold == 10_000 and result.unsold == 0
    assert result.total_bid == 15_000


def test_equal_remainders_go_to_the_lowest_account_id():
    result = clear(bids(("Z", 2000, 1000), ("M", 2000, 1000), ("A", 2000, 1000)), supply=1000,
                   reserve_price=100, purchase_limit=1000)
    assert result.awards == {"A": 334, "M": 333, "Z": 333}


def test_a_binding_purchase_limit_caps_the_award_and_the_next_price_clears():
    # A bids 6,000 but may win only 3,000; the rest goes to B at the lower price.
    result = clear(bids(("A", 3000, 4000), ("A", 2800, 2000), ("B", 2500, 5000)), supply=6000,
                   reserve_price=1000, purchase_limit=3000)
    assert result.awards == {"A": 3000, "B": 3000}
    assert result.clearing_price == 2500
    assert result.accepted == {"b000": 3000, "b001": 0, "b002": 3000}


def test_the_holding_limit_caps_too():
    result = clear(bids(("A", 3000, 4000), ("B", 2500, 5000)), supply=6000, reserve_price=1000,
                   purchase_limit=6000, holding_limit=1000)
    assert result.awards == {"A": 1000, "B": 1000} and result.unsold == 4000


def test_pro_rata_never_exceeds_demand_and_sums_to_what_is_left():
    shares = pro_rata(7, {"a": 1, "b": 1, "c": 10})
    assert sum(shares.values()) == 7 and all(shares[k] <= d for k, d in {"a": 1, "b": 1, "c": 10}.items())


bid_rows = st.lists(st.tuples(st.sampled_from("ABCDEFG"), st.integers(1, 12), st.integers(1, 9)),
                    min_size=0, max_size=40)


@settings(max_examples=300, deadline=None)
@given(rows=bid_rows, supply_lots=st.integers(1, 60), limit_lots=st.integers(1, 60), reserve=st.integers(1, 10),
       seed=st.integers(0, 2**32))
def test_the_result_does_not_depend_on_the_order_the_bids_arrived_in(rows, supply_lots, limit_lots, reserve, seed):
    lot = 1000
    original = [Bid(f"{n:04d}", bidder, price * 100, quantity * lot) for n, (bidder, price, quantity) in
                enumerate(rows)]
    shuffled = original[:]
    random.Random(seed).shuffle(shuffled)
    # the same bids arriving in another order get other ids (assigned on arrival)
    renamed = [Bid(f"x{n:04d}", b.bidder, b.price, b.quantity) for n, b in enumerate(shuffled)]
    kwargs = {"supply": supply_lots * lot, "reserve_price": reserve * 100, "purchase_limit": limit_lots * lot}
    first, second, third = clear(original, **kwargs), clear(shuffled, **kwargs), clear(renamed, **kwargs)
    assert first == second
    for a, b in ((first, third),):
        assert (a.clearing_price, a.sold, a.unsold, a.awards, a.bid_quantity) == \
               (b.clearing_price, b.sold, b.unsold, b.awards, b.bid_quantity)
    # and the invariants of a uniform-price clearing
    assert first.sold + first.unsold == kwargs["supply"]
    assert sum(first.awards.values()) == first.sold == sum(first.accepted.values())
    assert all(units <= kwargs["purchase_limit"] for units in first.awards.values())
    for bid in original:
        if bid.price < kwargs["reserve_price"]:
            assert first.accepted[bid.bid_id] == 0
        if first.clearing_price is not None and bid.price < first.clearing_price:
            assert first.accepted[bid.bid_id] == 0
    if first.clearing_price is not None:
        assert first.clearing_price >= kwargs["reserve_price"]
    if first.unsold:  # undersubscribed: every bid at or above the reserve was filled up to its bidder's limit
        for bidder, units in first.awards.items():
            assert units == min(first.bid_quantity[bidder], kwargs["purchase_limit"])
