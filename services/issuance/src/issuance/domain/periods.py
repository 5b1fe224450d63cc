"""Compliance periods as configuration, free of I/O: each period's dates are local to the programme's
time zone and stored as UTC instants.

- the allocation runs from 00:00 local on the allocation date;
- the reporting window runs from 00:00 local on its first day to 23:59:59 local on its last;
- "by 1 November" means until 23:59:59 local time that day (the surrender deadline instant);
- the period itself runs from 00:00 local on its first day to 23:59:59 local on its last.

The pilot's programme (the development default) is three calendar years, 2020, 2021 and 2022, the last
one final; other schedules (multi-year periods as in California and Québec) are a JSON list of
:class:`PeriodSpec`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

END_OF_DAY = time(23, 59, 59)


class PeriodRefusal(Exception):
    def __init__(self, code: str, field: str | None = None, **params: object):
        super().__init__(code)
        self.code, self.field, self.params = code, field, params


@dataclass(frozen=True)
class PeriodSpec:
    code: str  # e.g. "2021" or "2021-2023"
    vintage: int  # the vintage of the allowances generated for it
    starts_on: date
    ends_on: date
    allocation_on: date
    reporting_opens_on: date
    reporting_closes_on: date
    surrender_deadline_on: date
    final: bool = False

    def check(self) -> None:
        """Refuses dates out of order (the field named is the first one at fault)."""
        order = [("starts_on", self.starts_on), ("ends_on", self.ends_on)]
        if self.ends_on < self.starts_on:
            raise PeriodRefusal("period.invalid_dates", field="ends_on", detail="ends_on before starts_on")
        if self.reporting_closes_on < self.reporting_opens_on:
            raise PeriodRefusal("period.invalid_dates", field="reporting_closes_on",
                                detail="reporting_closes_on before reporting_opens_on")
        if self.surrender_deadline_on < self.reporting_closes_on:
            raise PeriodRefusal("period.invalid_dates", field="surrender_deadline_on",
                                detail="surrender deadline before the end of reporting")
        if self.reporting_opens_on <= self.ends_on:
            raise PeriodRefusal("period.invalid_dates", field="reporting_opens_on",
                                detail="reporting must open after the period ends")
        if self.allocation_on > self.ends_on:
            raise PeriodRefusal("period.invalid_dates", field="allocation_on",
                                detail="allocation after the end of the period")
        del order

    def instants(self, zone: str) -> dict[str, datetime]:
        """The period's dates as UTC instants."""
        tz = ZoneInfo(zone)

        def start(d: date) -> datetime:
            return datetime.combine(d, time(0, 0), tz).astimezone(UTC)

        def end(d: date) -> datetime:
            return datetime.combine(d, END_OF_DAY, tz).astimezone(UTC)

        return {
            "starts_at": start(self.starts_on), "ends_at": end(self.ends_on),
            "allocation_at": start(self.allocation_on),
            "reporting_opens_at": start(self.reporting_opens_on),
            "reporting_closes_at": end(self.reporting_closes_on),
            "surrender_deadline_at": end(self.surrender_deadline_on),
        }

    def local_dates(self) -> dict[str, str]:
        return {k: v.isoformat() for k, v in asdict(self).items() if isinstance(v, date)}


def calendar_year(year: int, *, final: bool = False, allocation_month: int = 10) -> PeriodSpec:
    """An annual period as in the pilot: allocation on 1 October of the year (configurable month),
    reporting in September of the following year, surrender by 1 November of the following year."""
    return PeriodSpec(code=str(year), vintage=year, starts_on=date(year, 1, 1), ends_on=date(year, 12, 31),
                      allocation_on=date(year, allocation_month, 1), reporting_opens_on=date(year + 1, 9, 1),
                      reporting_closes_on=date(year + 1, 9, 30), surrender_deadline_on=date(year + 1, 11, 1),
                      final=final)


def multi_year(first: int, years: int, *, final: bool = False) -> PeriodSpec:
    """A multi-year period (California / Québec): allocation in October of the first year, surrender by
    1 November after the last year."""
    last = first + years - 1
    return PeriodSpec(code=f"{first}-{last}", vintage=first, starts_on=date(first, 1, 1),
                      ends_on=date(last, 12, 31), allocation_on=date(first, 10, 1),
                      reporting_opens_on=date(last + 1, 9, 1), reporting_closes_on=date(last + 1, 9, 30),
                      surrender_deadline_on=date(last + 1, 11, 1), final=final)


PILOT = (calendar_year(2020), calendar_year(2021), calendar_year(2022, final=True))


def programme_from_setting(value: str | None, *, production: bool) -> tuple[PeriodSpec, ...]:
    """``None`` → the pilot (none in production); ``"pilot"``; ``"none"``; or a JSON list of periods."""
    if value is None:
        return () if production else PILOT
    text = value.strip()
    if text.lower() == "pilot":
        return PILOT
    if text.lower() in ("none", ""):
        return ()
    specs = []
    for item in json.loads(text):
        specs.append(PeriodSpec(
            code=str(item["code"]), vintage=int(item["vintage"]), final=bool(item.get("final", False)),
            **{k: date.fromisoformat(item[k]) for k in (
                "starts_on", "ends_on", "allocation_on", "reporting_opens_on", "reporting_closes_on",
                "surrender_deadline_on")}))
    for spec in specs:
        spec.check()
    return tuple(specs)


def is_due(allocation_at: datetime, now: datetime, period_created_at: datetime | None) -> bool:
    """An approved allocation runs by itself once the programme clock reaches the allocation instant,
    unless the allocation instant had already passed when the period was created (such a deadline is
    not run by itself: only on command)."""
    if now < allocation_at:
        return False
    return period_created_at is None or period_created_at <= allocation_at
