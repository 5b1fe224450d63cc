"""Programme dates: local to America/Mexico_City, stored in UTC; configuration, not code."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import pytest

from issuance.domain.periods import (
    PILOT,
    PeriodRefusal,
    calendar_year,
    is_due,
    multi_year,
    programme_from_setting,
)


def test_pilot_is_three_calendar_years_the_last_final():
    assert [p.code for p in PILOT] == ["2020", "2021", "2022"]
    assert [p.final for p in PILOT] == [False, False, True]
    assert PILOT[1].allocation_on == date(2021, 10, 1)
    assert PILOT[1].reporting_opens_on == date(2022, 9, 1) and PILOT[1].reporting_closes_on == date(2022, 9, 30)
    assert PILOT[1].surrender_deadline_on == date(2022, 11, 1)


def test_instants_are_local_dates_in_utc():
    instants = calendar_year(2021).instants("America/Mexico_City")
    assert instants["allocation_at"] == datetime(2021, 10, 1, 5, 0, tzinfo=UTC)  # CDT, UTC-5
    assert instants["surrender_deadline_at"] == datetime(2022, 11, 2, 5, 59, 59, tzinfo=UTC)  # 23:59:59 CST
    assert instants["starts_at"] == datetime(2021, 1, 1, 6, 0, tzinfo=UTC)
    # Mexico has no summer time since 2023: allocation in October 2024 is UTC-6
    assert calendar_year(2024).instants("America/Mexico_City")["allocation_at"] == datetime(2024, 10, 1, 6, 0,
                                                                                            tzinfo=UTC)


def test_multi_year_period_is_configuration():
    spec = multi_year(2021, 3)
    assert spec.code == "2021-2023" and spec.surrender_deadline_on == date(2024, 11, 1)
    spec.check()


def test_programme_setting():
    assert programme_from_setting(None, production=False) == PILOT
    assert programme_from_setting(None, production=True) == ()
    assert programme_from_setting("none", production=False) == ()
    custom = [{"code": "2030", "vintage": 2030, "starts_on": "2030-01-01", "ends_on": "2030-12-31",
               "allocation_on": "2030-10-15", "reporting_opens_on": "2031-09-01", "reporting_closes_on": "2031-09-30",
               "surrender_deadline_on": "2031-11-01", "final": True}]
    (spec,) = programme_from_setting(json.dumps(custom), production=True)
    assert spec.allocation_on == date(2030, 10, 15) and spec.final


def test_dates_out_of_order_are_refused():
    bad = calendar_year(2021)
    with pytest.raises(PeriodRefusal) as caught:
        type(bad)(**{**bad.__dict__, "surrender_deadline_on": date(2022, 8, 1)}).check()
    assert caught.value.field == "surrender_deadline_on"


def test_due_only_when_the_date_has_come_and_the_period_existed_before():
    at = datetime(2021, 10, 1, 5, tzinfo=UTC)
    assert not is_due(at, datetime(2021, 9, 30, tzinfo=UTC), datetime(2020, 1, 1, tzinfo=UTC))
    assert is_due(at, at, datetime(2020, 1, 1, tzinfo=UTC))
    assert not is_due(at, datetime(2021, 11, 1, tzinfo=UTC), datetime(2021, 10, 20, tzinfo=UTC))
