"""California's intermediate-year rule (pure): each intermediate year's window and deadline, the rounding
of its obligation, counting up to that year's vintage, and the final obligation net of what was counted."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compliance.domain.evaluation import (
    IntermediateStanding,
    Lot,
    Reason,
    Rules,
    Status,
    adjusted,
    evaluate,
    evaluate_intermediate,
    final_obligation,
    intermediate_standing,
    period_emissions,
)
from compliance.domain.windows import (
    ComplianceRefusal,
    check_intermediate_due,
    due_intermediate_years,
    eligible_vintage,
    intermediate_year,
    next_intermediate_year,
    period_years,
    report_year,
)

ZONE = "America/Mexico_City"
CALIFORNIA = Rules(intermediate_share=Decimal("0.30"))


def at(d: date, t: time = time(0, 0)) -> datetime:
    return datetime.combine(d, t, ZoneInfo(ZONE)).astimezone(UTC)


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(ZONE))


END = time(23, 59, 59)


def period(first: int, last: int, *, vintage: int | None = None, code: str | None = None) -> SimpleNamespace:
    """As issuance's ``multi_year`` (and ``calendar_year`` when first == last) schedules it."""
    return SimpleNamespace(
        period=code or (str(first) if first == last else f"{first}-{last}"), vintage=vintage or first,
        timezone=ZONE, starts_at=at(date(first, 1, 1)), ends_at=at(date(last, 12, 31), END),
        reporting_opens_at=at(date(last + 1, 9, 1)), reporting_closes_at=at(date(last + 1, 9, 30), END),
        surrender_deadline_at=at(date(last + 1, 11, 1), END))


def test_each_year_before_the_last_is_intermediate_with_its_own_window_and_deadline() -> None:
    years = period_years(period(2021, 2023))
    assert [(w.year, w.intermediate) for w in years] == [(2021, True), (2022, True), (2023, False)]
    y2021 = years[0]
    assert y2021.reporting_opens_at == local(2022, 9, 1)
    assert y2021.reporting_closes_at == local(2022, 9, 30, 23, 59, 59)
    assert y2021.surrender_deadline_at == local(2022, 11, 1, 23, 59, 59)
    assert years[1].surrender_deadline_at == local(2023, 11, 1, 23, 59, 59)
    # The last year's are the period's own.
    p = period(2021, 2023)
    assert (years[2].reporting_opens_at, years[2].surrender_deadline_at) == (p.reporting_opens_at,
                                                                            p.surrender_deadline_at)


def test_an_annual_period_has_one_year_and_no_intermediate_one() -> None:
    p = period(2020, 2020)
    years = period_years(p)
    assert [(w.year, w.intermediate) for w in years] == [(2020, False)]
    assert due_intermediate_years(p, local(2030, 1, 1)) == []
    with pytest.raises(ComplianceRefusal) as refused:
        intermediate_year(p, 2020)
    assert (refused.value.code, refused.value.field) == ("compliance.not_intermediate_year", "year")
    assert eligible_vintage(p) == 2020


def test_a_configured_window_moves_back_with_the_year() -> None:
    p = period(2021, 2022)
    p.reporting_opens_at, p.reporting_closes_at = at(date(2023, 8, 1)), at(date(2023, 8, 31), END)
    p.surrender_deadline_at = at(date(2023, 10, 15), END)
    first = period_years(p)[0]
    assert (first.reporting_opens_at, first.reporting_closes_at, first.surrender_deadline_at) == (
        local(2022, 8, 1), local(2022, 8, 31, 23, 59, 59), local(2022, 10, 15, 23, 59, 59))


def test_report_year_named_or_the_open_window() -> None:
    p = period(2021, 2022)
    in_window = local(2022, 9, 10, 12)
    assert report_year(p, in_window, None).year == 2021
    assert report_year(p, in_window, 2021).year == 2021
    assert report_year(p, local(2023, 9, 10), None).year == 2022
    for year, code in ((2020, "compliance.year_outside_period"), (2023, "compliance.year_outside_period"),
                       (2022, "compliance.year_not_open")):
        with pytest.raises(ComplianceRefusal) as refused:
            report_year(p, in_window, year)
        assert (refused.value.code, refused.value.field) == (code, "year")
    # No window open and no year named: the period's own refusal, as for an annual period.
    with pytest.raises(ComplianceRefusal) as refused:
        report_year(p, local(2022, 10, 5), None)
    assert (refused.value.code, refused.value.field) == ("compliance.reporting_not_open", "period")
    with pytest.raises(ComplianceRefusal) as refused:
        report_year(period(2020, 2020), local(2021, 10, 5), None)
    assert refused.value.code == "compliance.reporting_closed"


def test_intermediate_deadline_is_the_first_of_november_end_of_day() -> None:
    window = intermediate_year(period(2021, 2022), 2021)
    with pytest.raises(ComplianceRefusal) as refused:
        check_intermediate_due(window, local(2022, 11, 1, 23, 59, 59))
    assert (refused.value.code, refused.value.field) == ("compliance.intermediate_not_due", "year")
    check_intermediate_due(window, local(2022, 11, 2, 0, 0, 0))
    assert [w.year for w in due_intermediate_years(period(2021, 2023), local(2023, 11, 2))] == [2021, 2022]
    assert [w.year for w in due_intermediate_years(period(2021, 2023), local(2023, 11, 1, 12))] == [2021]


@pytest.mark.parametrize(("emissions", "owed"), [(0, 0), (1, 1), (10, 3), (11, 4), (1000, 300), (1001, 301),
                                                 (333, 100), (334, 101)])
def test_the_intermediate_obligation_is_rounded_up(emissions: int, owed: int) -> None:
    assert CALIFORNIA.intermediate_obligation(emissions) == owed


def test_intermediate_evaluation_counts_the_share_up_to_that_years_vintage_and_returns_the_rest() -> None:
    outcome = evaluate_intermediate(year=2021, emissions=1000, rules=CALIFORNIA, delivered=[
        Lot("allowance", 2021, 250), Lot("allowance", 2022, 100), Lot("offset", 2021, 50), Lot("allowance", 2020, 20)])
    # 30 % of 1000; oldest vintage first, then offsets up to 8 % of 300 = 24; 2022 would be borrowing: back.
    assert outcome.obligation == 300
    assert outcome.counted == (Lot("allowance", 2020, 20), Lot("allowance", 2021, 250), Lot("offset", 2021, 24))
    assert (outcome.status, outcome.shortfall, outcome.offsets_over_limit) == (Status.NON_COMPLIANT, 6, 6)
    assert outcome.returned == (Lot("offset", 2021, 26), Lot("allowance", 2022, 100))


def test_intermediate_shortfall_carries_no_penalty_and_no_report_is_its_own_reason() -> None:
    rules = Rules(intermediate_share=Decimal("0.30"), penalty_enabled=True)
    short = evaluate_intermediate(year=2021, emissions=1000, rules=rules, delivered=[Lot("allowance", 2021, 100)])
    assert (short.status, short.reason, short.shortfall, short.carried_out) == (
        Status.NON_COMPLIANT, Reason.SHORTFALL, 200, 0)
    missing = evaluate_intermediate(year=2021, emissions=None, rules=rules, delivered=[Lot("allowance", 2021, 100)])
    assert (missing.reason, missing.obligation, missing.counted) == (Reason.NO_ATTESTED_REPORT, 0, ())
    assert missing.returned == (Lot("allowance", 2021, 100),)


def test_the_final_obligation_is_net_of_what_intermediate_years_counted() -> None:
    # 2021: 1000 (300 owed, 100 counted: 200 short); 2022: 800 → final owes 1800 - 100 = 1700.
    emissions, reported = period_emissions({2021: 1000, 2022: 800}, [2021, 2022], every_year=True)
    assert (emissions, reported) == (1800, True)
    outcome = evaluate(period_vintage=2022, emissions=emissions, carried_in=0, credited=100, reported=reported,
                       rules=CALIFORNIA, delivered=[Lot("allowance", 2021, 1000), Lot("allowance", 2022, 800)])
    assert (outcome.obligation, outcome.counted_total, outcome.shortfall, outcome.credited) == (1700, 1700, 0, 100)
    assert outcome.returned == (Lot("allowance", 2022, 100),)
    assert final_obligation(50, credited=100, carried_in=7) == 7  # cancelled units never come back
    # A correction afterwards keeps what was credited.
    fixed = adjusted(outcome, emissions=2000, rules=CALIFORNIA)
    assert (fixed.obligation, fixed.shortfall, fixed.credited) == (1900, 200, 100)
    intermediate = evaluate_intermediate(year=2021, emissions=1000, rules=CALIFORNIA,
                                         delivered=[Lot("allowance", 2021, 300)])
    assert adjusted(intermediate, emissions=500, rules=CALIFORNIA, intermediate=True).obligation == 150


def test_a_year_without_an_attested_report_is_non_compliant_when_the_rule_is_on() -> None:
    emissions, reported = period_emissions({2022: 800}, [2021, 2022], every_year=True)
    assert (emissions, reported) == (800, False)
    outcome = evaluate(period_vintage=2022, emissions=emissions, carried_in=0, reported=reported, rules=CALIFORNIA,
                       delivered=[Lot("allowance", 2022, 800)])
    assert (outcome.reason, outcome.obligation, outcome.counted_total) == (Reason.NO_ATTESTED_REPORT, 800, 800)
    assert period_emissions({2022: 800}, [2021, 2022], every_year=False) == (800, True)
    assert period_emissions({}, [2021, 2022], every_year=True) == (None, False)


def test_the_final_evaluation_of_a_multi_year_period_counts_vintages_up_to_its_last_year() -> None:
    assert eligible_vintage(period(2021, 2023)) == 2023
    assert eligible_vintage(period(2021, 2022, vintage=2024)) == 2024


@given(years=st.lists(st.integers(0, 20_000), min_size=2, max_size=4),
       share=st.decimals(min_value=0, max_value=1, places=2),
       delivered=st.lists(st.integers(0, 8_000), min_size=2, max_size=4))
def test_intermediate_then_final_never_counts_more_than_the_period_emissions(
        years: list[int], share: Decimal, delivered: list[int]) -> None:
    """Whatever is delivered each year, what the intermediate evaluations and the final one count together
    is exactly the period's emissions when enough is delivered at the end, and never more."""
    rules = Rules(intermediate_share=share)
    credited = 0
    for index, emissions in enumerate(years[:-1]):
        quantity = delivered[index % len(delivered)]
        outcome = evaluate_intermediate(year=2021 + index, emissions=emissions, rules=rules,
                                        delivered=[Lot("allowance", 2021, quantity)])
        assert outcome.obligation == rules.intermediate_obligation(emissions) <= emissions
        assert outcome.counted_total == min(quantity, outcome.obligation)
        credited += outcome.counted_total
    total = sum(years)
    final = evaluate(period_vintage=2021 + len(years) - 1, emissions=total, carried_in=0, credited=credited,
                     rules=rules, delivered=[Lot("allowance", 2021, total)])
    assert final.shortfall == 0 and credited + final.counted_total == total


def test_the_next_intermediate_year_is_the_first_whose_deadline_is_to_come_and_not_evaluated() -> None:
    three = period(2021, 2023)
    assert next_intermediate_year(three, local(2021, 6, 1)).year == 2021
    assert next_intermediate_year(three, local(2022, 11, 1, 23, 59, 59)).year == 2021  # its deadline, inclusive
    assert next_intermediate_year(three, local(2022, 11, 2)).year == 2022
    assert next_intermediate_year(three, local(2022, 6, 1), evaluated={2021}).year == 2022
    assert next_intermediate_year(three, local(2023, 11, 2)) is None  # what is due now is the period's own
    assert next_intermediate_year(period(2021, 2021), local(2021, 6, 1)) is None  # annual: none


def test_intermediate_standing_counts_as_the_intermediate_evaluation_would() -> None:
    delivered = [Lot("allowance", 2021, 200), Lot("allowance", 2022, 500), Lot("offset", 2020, 100)]
    standing = intermediate_standing(year=2021, emissions=1000, delivered=delivered, rules=CALIFORNIA)
    # 300 owed: 200 allowances of 2021 count, offsets up to 8 % of 300 = 24; vintage 2022 cannot count.
    assert standing == IntermediateStanding(year=2021, emissions=1000, obligation=300, delivered_eligible=224,
                                            shortfall=76)
    outcome = evaluate_intermediate(year=2021, emissions=1000, delivered=delivered, rules=CALIFORNIA)
    assert (standing.delivered_eligible, standing.shortfall) == (outcome.counted_total, outcome.shortfall)
    covered = intermediate_standing(year=2021, emissions=100, delivered=delivered, rules=CALIFORNIA)
    assert (covered.obligation, covered.delivered_eligible, covered.shortfall) == (30, 30, 0)
    unreported = intermediate_standing(year=2021, emissions=None, delivered=delivered, rules=CALIFORNIA)
    assert (unreported.emissions, unreported.obligation, unreported.delivered_eligible,
            unreported.shortfall) == (None, 0, 0, 0)
