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

A multi-year period with the intermediate rule on (``intermediate_share`` > 0; California: 30 %): at each
intermediate year's deadline the obligation is ``ceil(share × attested emissions of that year)``, counted
the same way with eligibility up to that year (no penalty there); the period's final obligation is then its
attested emissions of all years **less the units already counted** at its intermediate evaluations (plus a
carried penalty), so an intermediate shortfall is owed at the final deadline.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
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
    intermediate_share: Decimal = Decimal("0")  # California: 0.30 of each intermediate year; 0 = off

    def offset_limit(self, obligation: int) -> int:
        return int((Decimal(obligation) * self.offset_share).to_integral_value(rounding=ROUND_FLOOR))

    def intermediate_obligation(self, emissions: int) -> int:
        """What an intermediate year's attested emissions oblige to surrender by its deadline (rounded up)."""
        if emissions < 0:
            raise ValueError("emissions cannot be negative")
        return int((Decimal(emissions) * self.intermediate_share).to_integral_value(rounding=ROUND_CEILING))


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
    credited: int = 0  # units already counted for this period at its intermediate evaluations

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
             rules: Rules, credited: int = 0, reported: bool | None = None) -> Outcome:
    """One installation's result. ``emissions`` None: no attested report for the period. ``credited``: units
    already counted at the period's intermediate evaluations, deducted from its emissions; ``reported``
    False: some year of the period has no attested report (non-compliant for that reason; what is
    attested still counts)."""
    if emissions is not None and emissions < 0:
        raise ValueError("emissions cannot be negative")
    if credited < 0:
        raise ValueError("units already counted cannot be negative")
    obligation = final_obligation(emissions or 0, credited=credited, carried_in=carried_in)
    return _count(period_vintage=period_vintage, obligation=obligation, emissions=emissions, carried_in=carried_in,
                  credited=credited, reported=emissions is not None if reported is None else reported,
                  delivered=delivered, rules=rules, penalty=True)


def final_obligation(emissions: int, *, credited: int, carried_in: int) -> int:
    """A period's obligation at its deadline: its attested emissions less what its intermediate evaluations
    already counted (never below zero: cancelled units never come back), plus any carried penalty."""
    if carried_in < 0:
        raise ValueError("a carried obligation cannot be negative")
    return max(0, emissions - credited) + carried_in


def period_emissions(attested: Mapping[int, int], years: Sequence[int], *,
                     every_year: bool) -> tuple[int | None, bool]:
    """(emissions, reported) a period's final evaluation counts: the sum of its years' attested figures
    (None when no year has one); ``reported``: every year has one (``every_year``, when the intermediate
    rule is on: a year left unreported must not lower the obligation) or any year has one (the period
    reported as a whole)."""
    figures = [attested[year] for year in years if year in attested]
    if not figures:
        return None, False
    return sum(figures), len(figures) == len(years) if every_year else True


def evaluate_intermediate(*, year: int, emissions: int | None, delivered: Iterable[Lot], rules: Rules) -> Outcome:
    """One installation's result at an intermediate year's deadline: ``ceil(share × emissions of the
    year)`` counted as at the period's end, with eligible vintages up to ``year`` (no borrowing). No
    penalty is carried: a shortfall stays owed at the period's final evaluation."""
    if emissions is not None and emissions < 0:
        raise ValueError("emissions cannot be negative")
    obligation = rules.intermediate_obligation(emissions or 0)
    return _count(period_vintage=year, obligation=obligation, emissions=emissions, carried_in=0, credited=0,
                  reported=emissions is not None, delivered=delivered, rules=rules, penalty=False)


@dataclass(frozen=True)
class IntermediateStanding:
    """What an intermediate year's coming deadline asks of one installation, with what its delivery account
    holds now."""

    year: int
    emissions: int | None  # the year's attested emissions; None: no attested report yet
    obligation: int  # ceil(share × emissions); 0 without a report
    delivered_eligible: int  # delivered units that would count (up to the obligation)
    shortfall: int


def intermediate_standing(*, year: int, emissions: int | None, delivered: Iterable[Lot],
                          rules: Rules) -> IntermediateStanding:
    """The intermediate evaluation's own count (``evaluate_intermediate``) run now: vintages up to ``year``,
    offsets up to the limit share of the year's obligation; the shortfall is what is still to surrender by
    its deadline."""
    outcome = evaluate_intermediate(year=year, emissions=emissions, delivered=delivered, rules=rules)
    return IntermediateStanding(year=year, emissions=emissions, obligation=outcome.obligation,
                                delivered_eligible=outcome.counted_total, shortfall=outcome.shortfall)


def _count(*, period_vintage: int, obligation: int, emissions: int | None, carried_in: int, credited: int,
           reported: bool, delivered: Iterable[Lot], rules: Rules, penalty: bool) -> Outcome:
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
    if not reported:
        status, reason = Status.NON_COMPLIANT, Reason.NO_ATTESTED_REPORT
    elif shortfall > 0:
        status, reason = Status.NON_COMPLIANT, Reason.SHORTFALL
    else:
        status, reason = Status.COMPLIANT, None
    carried_out = shortfall * (1 + rules.penalty_extra_per_missing) if penalty and rules.penalty_enabled else 0
    return Outcome(obligation=obligation, emissions=emissions, carried_in=carried_in, counted=tuple(counted),
                   returned=tuple(_merged(returned)), status=status, reason=reason, shortfall=shortfall,
                   carried_out=carried_out, offsets_over_limit=offsets_over_limit,
                   future_vintage=sum(lot.quantity for lot in future), over_delivered=over_delivered,
                   credited=credited)


def adjusted(original: Outcome, *, emissions: int, rules: Rules, intermediate: bool = False) -> Outcome:
    """The result after an authority's correction of the emissions, once the evaluation has run: the
    counted (cancelled) units stay cancelled and nothing more moves; only the obligation, status,
    shortfall and carried penalty change. ``emissions``: the corrected figure the evaluation counts (for a
    multi-year period's final evaluation, all its years'); ``intermediate``: an intermediate year's result."""
    if emissions < 0:
        raise ValueError("emissions cannot be negative")
    if intermediate:
        obligation = rules.intermediate_obligation(emissions)
    else:
        obligation = final_obligation(emissions, credited=original.credited, carried_in=original.carried_in)
    shortfall = max(0, obligation - original.counted_total)
    status, reason = (Status.COMPLIANT, None) if shortfall == 0 else (Status.NON_COMPLIANT, Reason.SHORTFALL)
    penalty = rules.penalty_enabled and not intermediate
    carried_out = shortfall * (1 + rules.penalty_extra_per_missing) if penalty else 0
    return Outcome(obligation=obligation, emissions=emissions, carried_in=original.carried_in,
                   counted=original.counted, returned=original.returned, status=status, reason=reason,
                   shortfall=shortfall, carried_out=carried_out, offsets_over_limit=original.offsets_over_limit,
                   future_vintage=original.future_vintage, over_delivered=max(0, original.counted_total - obligation),
                   credited=original.credited)


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
