"""Compliance evaluation as pure rules (seed functions f and g), free of I/O.

For one installation and one period:

- **obligation** = attested emissions for the period + any obligation carried from the previous period
  (a penalty, when the penalty rule is on); no attested report → non-compliant for that reason (the
  units it delivered are still counted against what it carried, and the rest goes back);
- **units counted**, in this order: eligible allowances (vintage not later than the period: no
  borrowing), oldest vintage first (the ledger takes the lowest serials of a vintage first); then offset
  credits of eligible vintage, up to ``floor(offset_share × obligation)``;
- **status**: compliant when counted = obligation, else non-compliant with the shortfall;
- what is counted is cancelled; everything else in the delivery account (future vintages, offsets over
  the limit, over-delivery) goes back to the installation's central account;
- with the penalty rule on, each missing unit is owed again plus ``penalty_extra_per_missing`` more in
  the next period (California–Québec: 3 extra, "4 for 1").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from enum import StrEnum

ALLOWANCE = "allowance"
OFFSET = "offset"


class Status(StrEnum):
    COMPLIANT = "compliant"
    NON_COMPLIANT = "non_compliant"


class Reason(StrEnum):
    SHORTFALL = "shortfall"  # attested emissions, not enough eligible units delivered
    NO_ATTESTED_REPORT = "no_attested_report"


@dataclass(frozen=True)
class Rules:
    """The configurable rules of comparable systems (defaults: the pilot)."""

    offset_share: Decimal = Decimal("0.08")  # California and Québec: 8 % of the obligation
    penalty_enabled: bool = False  # the pilot has no penalty; California–Québec: on
    penalty_extra_per_missing: int = 3  # extra units owed per missing unit when the penalty is on

    def offset_limit(self, obligation: int) -> int:
        return int((Decimal(obligation) * self.offset_share).to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True)
class Lot:
    """Units of one type and vintage in a delivery account."""

    unit_type: str
    vintage: int
    quantity: int


@dataclass(frozen=True)
class Outcome:
    obligation: int
    emissions: int | None
    carried_in: int
    counted: tuple[Lot, ...]  # cancelled, in counting order
    returned: tuple[Lot, ...]  # back to the central account
    status: Status
    reason: Reason | None
    shortfall: int
    carried_out: int  # owed in the next period (penalty rule)
    offsets_over_limit: int = 0
    future_vintage: int = 0
    over_delivered: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def counted_total(self) -> int:
        return sum(lot.quantity for lot in self.counted)

    @property
    def counted_allowances(self) -> int:
        return sum(lot.quantity for lot in self.counted if lot.unit_type == ALLOWANCE)

    @property
    def counted_offsets(self) -> int:
        return sum(lot.quantity for lot in self.counted if lot.unit_type == OFFSET)

    @property
    def delivered_total(self) -> int:
        return self.counted_total + sum(lot.quantity for lot in self.returned)


def evaluate(*, period_vintage: int, emissions: int | None, carried_in: int, delivered: Iterable[Lot],
             rules: Rules) -> Outcome:
    """One installation's result. ``emissions`` None: no attested report for the period."""
    if emissions is not None and emissions < 0:
        raise ValueError("emissions cannot be negative")
    if carried_in < 0:
        raise ValueError("a carried obligation cannot be negative")
    obligation = (emissions or 0) + carried_in
    lots = _merged(delivered)
    eligible = sorted((lot for lot in lots if lot.vintage <= period_vintage), key=lambda lot: lot.vintage)
    future = [lot for lot in lots if lot.vintage > period_vintage]
    counted: list[Lot] = []
    returned: list[Lot] = list(future)
    remaining = obligation
    for lot in (lot for lot in eligible if lot.unit_type == ALLOWANCE):
        take = min(remaining, lot.quantity)
        remaining -= take
        counted, returned = _split(lot, take, counted, returned)
    before_offsets = remaining
    offset_room = min(remaining, rules.offset_limit(obligation))
    for lot in (lot for lot in eligible if lot.unit_type == OFFSET):
        take = min(offset_room, lot.quantity)
        offset_room -= take
        remaining -= take
        counted, returned = _split(lot, take, counted, returned)
    eligible_offsets = sum(lot.quantity for lot in eligible if lot.unit_type == OFFSET)
    counted_offsets = sum(lot.quantity for lot in counted if lot.unit_type == OFFSET)
    offsets_over_limit = min(eligible_offsets, before_offsets) - counted_offsets
    over_delivered = sum(lot.quantity for lot in eligible) - sum(lot.quantity for lot in counted) - offsets_over_limit
    shortfall = remaining
    if emissions is None:
        status, reason = Status.NON_COMPLIANT, Reason.NO_ATTESTED_REPORT
    elif shortfall > 0:
        status, reason = Status.NON_COMPLIANT, Reason.SHORTFALL
    else:
        status, reason = Status.COMPLIANT, None
    carried_out = shortfall * (1 + rules.penalty_extra_per_missing) if rules.penalty_enabled else 0
    return Outcome(obligation=obligation, emissions=emissions, carried_in=carried_in, counted=tuple(counted),
                   returned=tuple(_merged(returned)), status=status, reason=reason, shortfall=shortfall,
                   carried_out=carried_out, offsets_over_limit=offsets_over_limit,
                   future_vintage=sum(lot.quantity for lot in future), over_delivered=over_delivered)


def adjusted(original: Outcome, *, emissions: int, rules: Rules) -> Outcome:
    """The result after an authority's correction of the emissions, once the evaluation has run: the
    counted (cancelled) units stay cancelled and nothing more moves; only the obligation, status,
    shortfall and carried penalty change."""
    if emissions < 0:
        raise ValueError("emissions cannot be negative")
    obligation = emissions + original.carried_in
    shortfall = max(0, obligation - original.counted_total)
    status, reason = (Status.COMPLIANT, None) if shortfall == 0 else (Status.NON_COMPLIANT, Reason.SHORTFALL)
    carried_out = shortfall * (1 + rules.penalty_extra_per_missing) if rules.penalty_enabled else 0
    return Outcome(obligation=obligation, emissions=emissions, carried_in=original.carried_in,
                   counted=original.counted, returned=original.returned, status=status, reason=reason,
                   shortfall=shortfall, carried_out=carried_out, offsets_over_limit=original.offsets_over_limit,
                   future_vintage=original.future_vintage, over_delivered=max(0, original.counted_total - obligation))


def _split(lot: Lot, take: int, counted: list[Lot], returned: list[Lot]) -> tuple[list[Lot], list[Lot]]:
    if take > 0:
        counted = [*counted, Lot(lot.unit_type, lot.vintage, take)]
    if lot.quantity - take > 0:
        returned = [*returned, Lot(lot.unit_type, lot.vintage, lot.quantity - take)]
    return counted, returned


def _merged(lots: Iterable[Lot]) -> list[Lot]:
    totals: dict[tuple[str, int], int] = {}
    for lot in lots:
        if lot.quantity < 0:
            raise ValueError("a delivered quantity cannot be negative")
        if lot.quantity:
            totals[(lot.unit_type, lot.vintage)] = totals.get((lot.unit_type, lot.vintage), 0) + lot.quantity
    return [Lot(t, v, q) for (t, v), q in sorted(totals.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
