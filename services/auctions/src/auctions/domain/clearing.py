"""Uniform-price clearing of a sealed-bid, single-round auction (pure, I/O-free).

1. Bids below the reserve price (or not positive) take no part.
2. Price levels from the highest down; at each level a bidder's bids there count together, capped by what
   its purchase limit (and holding limit, if any) still allows after the higher levels.
3. While the level's demand fits in what is left of the lot, every bid there is filled in full. The first
   level that does not fit is the margin: what is left is shared among its bidders in proportion to their
   (capped) demand, in whole units: each gets ``floor(left × demand / level demand)``; the units that remain
   go one each to the bidders with the largest remainders ``left × demand mod level demand``, ties broken by
   the bidder's account id (ascending). Nothing here depends on the order the bids arrived in.
4. The clearing price is the lowest price at which units were awarded (never below the reserve, which no
   accepted bid is); everyone pays it. What no bid took is unsold.
5. A bidder's award is split over its bids at a level largest quantity first, then by bid id: the per-bid
   figures are for the record; the award (per bidder) is what settles.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any, NamedTuple


class Bid(NamedTuple):
    """A sealed bid. ``bid_id`` only orders a bidder's own bids at one price (the split of its award). The
    clearing reads bids by position, so a database row ``(id, bidder, price, quantity)`` serves as is."""

    bid_id: int | str
    bidder: str
    price: int  # cents
    quantity: int


@dataclass(frozen=True)
class Clearing:
    clearing_price: int | None  # None: nothing sold
    sold: int
    unsold: int
    awards: dict[str, int]  # bidder → units won (every bidder with a bid, 0 included)
    bid_quantity: dict[str, int]  # bidder → units bid at or above the reserve
    accepted: dict[int | str, int] = field(repr=False, default_factory=dict)  # bid id → units accepted
    total_bid: int = 0  # units bid at or above the reserve

    @property
    def bidders(self) -> int:
        return len(self.bid_quantity)


def pro_rata(left: int, demand: dict[str, int]) -> dict[str, int]:
    """Share ``left`` (< total demand) in proportion to ``demand``, whole units, largest remainder first,
    then the lowest key."""
    total = sum(demand.values())
    shares = {k: left * d // total for k, d in demand.items()}
    remainders = sorted(demand, key=lambda k: (-(left * demand[k] % total), k))
    for key in remainders[:left - sum(shares.values())]:
        shares[key] += 1
    return shares


ID, BIDDER, PRICE, QUANTITY = range(4)


def _split(units: int, bids: list[Sequence[Any]], accepted: dict[int | str, int]) -> None:
    if len(bids) == 1:
        accepted[bids[0][ID]] = units
        return
    for bid in sorted(bids, key=lambda b: (-b[QUANTITY], b[ID])):
        take = min(units, bid[QUANTITY])
        accepted[bid[ID]] = take
        units -= take


def clear(bids: Iterable[Sequence[Any]], *, supply: int, reserve_price: int, purchase_limit: int,
          holding_limit: int | None = None) -> Clearing:
    cap = purchase_limit if holding_limit is None else min(purchase_limit, holding_limit)
    all_bids = list(bids)
    accepted: dict[int | str, int] = dict.fromkeys((b[ID] for b in all_bids), 0)
    valid = sorted((b for b in all_bids if b[PRICE] >= reserve_price and b[PRICE] > 0 and b[QUANTITY] > 0),
                   key=itemgetter(PRICE), reverse=True)
    bid_quantity: dict[str, int] = defaultdict(int)
    for b in valid:
        bid_quantity[b[BIDDER]] += b[QUANTITY]
    won: dict[str, int] = dict.fromkeys(bid_quantity, 0)
    left, clearing_price = supply, None
    for price, level in groupby(valid, key=itemgetter(PRICE)):
        if left == 0:
            break
        by_bidder: dict[str, list[Sequence[Any]]] = defaultdict(list)
        for b in level:
            by_bidder[b[BIDDER]].append(b)
        demand = {bidder: min(sum(b[QUANTITY] for b in own), cap - won[bidder])
                  for bidder, own in by_bidder.items()}
        demand = {k: v for k, v in demand.items() if v > 0}
        wanted = sum(demand.values())
        if wanted == 0:
            continue
        given = demand if wanted <= left else pro_rata(left, demand)
        for bidder, units in given.items():
            if units:
                won[bidder] += units
                _split(units, by_bidder[bidder], accepted)
        awarded = sum(given.values())
        left -= awarded
        if awarded:
            clearing_price = price
    sold = supply - left
    return Clearing(clearing_price=clearing_price, sold=sold, unsold=left, awards=won,
                    bid_quantity=dict(bid_quantity), accepted=accepted, total_bid=sum(bid_quantity.values()))
