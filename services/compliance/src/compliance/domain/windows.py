"""When people may do what, on the programme clock (pure): the reporting window of a period, the
surrender deadline, and when an evaluation is due; for a multi-year period, each year's window and each
intermediate year's surrender deadline."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo


class ComplianceRefusal(Exception):
    """A request the rules refuse; ``code`` is stable, ``field`` names the input at fault."""

    def __init__(self, code: str, field: str | None = None, **params: object):
        super().__init__(code)
        self.code, self.field, self.params = code, field, params


class PeriodDates(Protocol):
    period: str
    reporting_opens_at: datetime
    reporting_closes_at: datetime
    surrender_deadline_at: datetime


def check_reporting_open(period: PeriodDates, now: datetime) -> None:
    if now < period.reporting_opens_at:
        raise ComplianceRefusal("compliance.reporting_not_open", field="period", period=period.period,
                                opens_at=period.reporting_opens_at.isoformat())
    if now > period.reporting_closes_at:
        raise ComplianceRefusal("compliance.reporting_closed", field="period", period=period.period,
                                closed_at=period.reporting_closes_at.isoformat())


def check_emissions(emissions: int) -> None:
    if emissions < 0:
        raise ComplianceRefusal("compliance.invalid_emissions", field="emissions", emissions=emissions)


def surrender_period(periods: Sequence[Any], now: datetime, requested: str | None) -> Any:
    """The period a surrender counts for: the earliest whose deadline has not passed (units in a delivery
    account are not earmarked, so only one period takes surrenders at a time). A named period must be
    that one: refused once its deadline has passed, or while an earlier one is still open."""
    open_ = sorted((p for p in periods if now <= p.surrender_deadline_at), key=lambda p: p.surrender_deadline_at)
    if requested is not None:
        match = [p for p in periods if p.period == requested]
        if not match:
            raise ComplianceRefusal("compliance.unknown_period", field="period", period=requested)
        if now > match[0].surrender_deadline_at:
            raise ComplianceRefusal("compliance.surrender_deadline_passed", field="period", period=requested,
                                    deadline=match[0].surrender_deadline_at.isoformat())
        if open_[0].period != requested:
            raise ComplianceRefusal("compliance.surrender_period_not_open", field="period", period=requested,
                                    current=open_[0].period)
        return match[0]
    if not open_:
        raise ComplianceRefusal("compliance.no_open_period", field="period")
    return open_[0]


def check_evaluation_due(period: PeriodDates, now: datetime) -> None:
    if now <= period.surrender_deadline_at:
        raise ComplianceRefusal("compliance.period_not_due", field="period", period=period.period,
                                deadline=period.surrender_deadline_at.isoformat())


# Intermediate years of a multi-year period (California: 30 % of the previous year's emissions) ---------------
@dataclass(frozen=True)
class YearWindow:
    """One calendar year of a period: when its emissions are reported and, for an intermediate year, by
    when its share is surrendered. The last year's window and deadline are the period's own."""

    period: str
    year: int
    intermediate: bool
    reporting_opens_at: datetime
    reporting_closes_at: datetime
    surrender_deadline_at: datetime


class PeriodCalendar(PeriodDates, Protocol):
    vintage: int
    starts_at: datetime
    ends_at: datetime
    timezone: str


def _years_earlier(instant: datetime, zone: ZoneInfo, years: int) -> datetime:
    """The same programme-local date and time ``years`` earlier (29 February → 28 February)."""
    local = instant.astimezone(zone)
    try:
        shifted = local.replace(year=local.year - years)
    except ValueError:
        shifted = local.replace(year=local.year - years, day=28)
    return shifted.astimezone(UTC)


def period_years(period: PeriodCalendar) -> list[YearWindow]:
    """Every calendar year of the period (programme-local), oldest first. Each year Y before the last is an
    intermediate year: its window and deadline are the period's own, moved back to the year after Y (the
    pilot's rule: reporting 1–30 September, surrender by 1 November 23:59:59, of Y+1). An annual period
    has one year, not intermediate, with the period's own dates."""
    zone = ZoneInfo(period.timezone)
    first, last = period.starts_at.astimezone(zone).year, period.ends_at.astimezone(zone).year
    years = []
    for year in range(first, last + 1):
        back = last - year
        years.append(YearWindow(
            period=period.period, year=year, intermediate=year < last,
            reporting_opens_at=_years_earlier(period.reporting_opens_at, zone, back),
            reporting_closes_at=_years_earlier(period.reporting_closes_at, zone, back),
            surrender_deadline_at=_years_earlier(period.surrender_deadline_at, zone, back)))
    return years


def last_year(period: PeriodCalendar) -> int:
    return period.ends_at.astimezone(ZoneInfo(period.timezone)).year


def eligible_vintage(period: PeriodCalendar) -> int:
    """The latest vintage a period's final evaluation counts (no borrowing): its last year's, or the period's
    own vintage if later. For an annual period, its vintage."""
    return max(period.vintage, last_year(period))


def year_of(period: PeriodCalendar, year: int) -> YearWindow:
    for window in period_years(period):
        if window.year == year:
            return window
    raise ComplianceRefusal("compliance.year_outside_period", field="year", period=period.period, year=year)


def report_year(period: PeriodCalendar, now: datetime, requested: int | None) -> YearWindow:
    """The year a report submitted now is for. A named year must be the period's and its window open
    (refused 422 on ``year``); without one, the year whose window is open (an annual period's only year),
    or the period's own refusal when none is."""
    if requested is not None:
        window = year_of(period, requested)
        if not window.reporting_opens_at <= now <= window.reporting_closes_at:
            raise ComplianceRefusal("compliance.year_not_open", field="year", period=period.period, year=requested,
                                    opens_at=window.reporting_opens_at.isoformat(),
                                    closes_at=window.reporting_closes_at.isoformat())
        return window
    for window in period_years(period):
        if window.reporting_opens_at <= now <= window.reporting_closes_at:
            return window
    check_reporting_open(period, now)
    raise AssertionError("unreachable: the period's own window is its last year's")  # pragma: no cover


def intermediate_year(period: PeriodCalendar, year: int) -> YearWindow:
    window = year_of(period, year)
    if not window.intermediate:
        raise ComplianceRefusal("compliance.not_intermediate_year", field="year", period=period.period, year=year)
    return window


def check_intermediate_due(window: YearWindow, now: datetime) -> None:
    if now <= window.surrender_deadline_at:
        raise ComplianceRefusal("compliance.intermediate_not_due", field="year", period=window.period,
                                year=window.year, deadline=window.surrender_deadline_at.isoformat())


def due_intermediate_years(period: PeriodCalendar, now: datetime) -> list[YearWindow]:
    """Intermediate years whose surrender deadline has passed, oldest first."""
    return [w for w in period_years(period) if w.intermediate and now > w.surrender_deadline_at]


def next_intermediate_year(period: PeriodCalendar, now: datetime,
                           evaluated: Collection[int] = ()) -> YearWindow | None:
    """The intermediate year whose deadline comes next: not passed, and its evaluation (``evaluated``: the
    years already evaluated) not run. None for an annual period or once the last intermediate deadline has
    passed (what is due then is the period's own)."""
    for window in period_years(period):
        if window.intermediate and now <= window.surrender_deadline_at and window.year not in evaluated:
            return window
    return None
