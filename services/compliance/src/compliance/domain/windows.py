"""When people may do what, on the programme clock (pure): the reporting window of a period, the
surrender deadline, and when an evaluation is due."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol


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
