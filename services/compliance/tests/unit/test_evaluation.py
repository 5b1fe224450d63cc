"""The compliance rules (pure): counting order, eligibility, offsets limit, penalty, adjustments, windows."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compliance.domain.evaluation import Lot, Reason, Rules, Status, adjusted, evaluate
from compliance.domain.windows import ComplianceRefusal, check_evaluation_due, check_reporting_open, surrender_period

PILOT = Rules()


def test_compliant_counts_oldest_vintage_first_and_returns_the_rest() -> None:
    outcome = evaluate(period_vintage=2021, emissions=1000, carried_in=0, rules=PILOT,
                       delivered=[Lot("allowance", 2021, 800), Lot("allowance", 2020, 500)])
    assert outcome.status is Status.COMPLIANT and outcome.shortfall == 0
    assert outcome.counted == (Lot("allowance", 2020, 500), Lot("allowance", 2021, 500))
    assert outcome.returned == (Lot("allowance", 2021, 300),)
    assert outcome.over_delivered == 300


def test_short_installation_is_non_compliant_with_its_shortfall() -> None:
    outcome = evaluate(period_vintage=2020, emissions=1000, carried_in=0, rules=PILOT,
                       delivered=[Lot("allowance", 2020, 600)])
    assert (outcome.status, outcome.reason, outcome.shortfall) == (Status.NON_COMPLIANT, Reason.SHORTFALL, 400)
    assert outcome.counted_total == 600 and outcome.returned == ()
    assert outcome.carried_out == 0  # the pilot has no penalty


def test_future_vintage_is_not_counted_and_goes_back() -> None:
    outcome = evaluate(period_vintage=2020, emissions=100, carried_in=0, rules=PILOT,
                       delivered=[Lot("allowance", 2021, 100)])
    assert outcome.status is Status.NON_COMPLIANT and outcome.shortfall == 100
    assert outcome.counted == () and outcome.returned == (Lot("allowance", 2021, 100),)
    assert outcome.future_vintage == 100


def test_offsets_count_after_allowances_up_to_eight_percent() -> None:
    outcome = evaluate(period_vintage=2020, emissions=1000, carried_in=0, rules=PILOT,
                       delivered=[Lot("allowance", 2020, 900), Lot("offset", 2020, 100)])
    assert outcome.counted_allowances == 900 and outcome.counted_offsets == 80
    assert outcome.offsets_over_limit == 20 and outcome.shortfall == 20
    assert outcome.returned == (Lot("offset", 2020, 20),)


def test_offsets_not_needed_are_over_delivery_not_over_the_limit() -> None:
    outcome = evaluate(period_vintage=2020, emissions=100, carried_in=0, rules=PILOT,
                       delivered=[Lot("allowance", 2020, 100), Lot("offset", 2020, 5)])
    assert outcome.status is Status.COMPLIANT and outcome.counted_offsets == 0
    assert outcome.offsets_over_limit == 0 and outcome.over_delivered == 5


def test_no_attested_report_is_non_compliant_for_that_reason_and_everything_goes_back() -> None:
    outcome = evaluate(period_vintage=2020, emissions=None, carried_in=0, rules=PILOT,
                       delivered=[Lot("allowance", 2020, 50)])
    assert (outcome.status, outcome.reason) == (Status.NON_COMPLIANT, Reason.NO_ATTESTED_REPORT)
    assert outcome.counted == () and outcome.returned == (Lot("allowance", 2020, 50),)


def test_penalty_rule_carries_four_for_one_and_the_carried_obligation_counts_next_time() -> None:
    rules = Rules(penalty_enabled=True, penalty_extra_per_missing=3)
    first = evaluate(period_vintage=2020, emissions=100, carried_in=0, delivered=[Lot("allowance", 2020, 90)],
                     rules=rules)
    assert first.shortfall == 10 and first.carried_out == 40
    second = evaluate(period_vintage=2021, emissions=100, carried_in=first.carried_out, rules=rules,
                      delivered=[Lot("allowance", 2021, 140)])
    assert second.obligation == 140 and second.status is Status.COMPLIANT


def test_adjustment_changes_the_result_but_nothing_counted_comes_back() -> None:
    original = evaluate(period_vintage=2020, emissions=100, carried_in=0, rules=PILOT,
                        delivered=[Lot("allowance", 2020, 100)])
    lower = adjusted(original, emissions=80, rules=PILOT)
    assert lower.counted == original.counted and lower.status is Status.COMPLIANT and lower.over_delivered == 20
    higher = adjusted(original, emissions=130, rules=PILOT)
    assert higher.status is Status.NON_COMPLIANT and higher.shortfall == 30 and higher.counted_total == 100


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        evaluate(period_vintage=2020, emissions=-1, carried_in=0, delivered=[], rules=PILOT)
    with pytest.raises(ValueError):
        evaluate(period_vintage=2020, emissions=1, carried_in=0, delivered=[Lot("allowance", 2020, -1)], rules=PILOT)


lots = st.lists(st.builds(Lot, st.sampled_from(["allowance", "offset"]), st.integers(2018, 2024),
                          st.integers(0, 10_000)), max_size=8)


@given(delivered=lots, emissions=st.one_of(st.none(), st.integers(0, 50_000)), carried=st.integers(0, 5_000),
       share=st.sampled_from([Decimal("0"), Decimal("0.04"), Decimal("0.08"), Decimal("1")]))
def test_every_unit_is_either_counted_or_returned_and_the_rules_hold(delivered: list[Lot], emissions: int | None,
                                                                      carried: int, share: Decimal) -> None:
    rules = Rules(offset_share=share)
    outcome = evaluate(period_vintage=2021, emissions=emissions, carried_in=carried, delivered=delivered, rules=rules)
    assert outcome.delivered_total == sum(lot.quantity for lot in delivered)
    assert outcome.counted_total <= outcome.obligation
    assert outcome.counted_offsets <= rules.offset_limit(outcome.obligation)
    assert all(lot.vintage <= 2021 for lot in outcome.counted)
    assert outcome.shortfall == outcome.obligation - outcome.counted_total
    assert (outcome.status is Status.COMPLIANT) == (emissions is not None and outcome.shortfall == 0)
    assert all(lot.quantity > 0 for lot in (*outcome.counted, *outcome.returned))


def test_reporting_window_and_evaluation_due() -> None:
    period = SimpleNamespace(period="2020", reporting_opens_at=datetime(2021, 9, 1, tzinfo=UTC),
                             reporting_closes_at=datetime(2021, 9, 30, tzinfo=UTC),
                             surrender_deadline_at=datetime(2021, 11, 1, tzinfo=UTC))
    with pytest.raises(ComplianceRefusal) as refused:
        check_reporting_open(period, datetime(2021, 8, 31, tzinfo=UTC))
    assert refused.value.code == "compliance.reporting_not_open"
    check_reporting_open(period, datetime(2021, 9, 15, tzinfo=UTC))
    with pytest.raises(ComplianceRefusal) as refused:
        check_reporting_open(period, datetime(2021, 10, 1, tzinfo=UTC))
    assert refused.value.code == "compliance.reporting_closed"
    with pytest.raises(ComplianceRefusal) as refused:
        check_evaluation_due(period, datetime(2021, 10, 31, tzinfo=UTC))
    assert refused.value.code == "compliance.period_not_due"
    check_evaluation_due(period, datetime(2021, 11, 2, tzinfo=UTC))


def test_surrender_counts_for_the_earliest_open_period_only() -> None:
    p2020 = SimpleNamespace(period="2020", surrender_deadline_at=datetime(2021, 11, 1, tzinfo=UTC))
    p2021 = SimpleNamespace(period="2021", surrender_deadline_at=datetime(2022, 11, 1, tzinfo=UTC))
    periods = [p2020, p2021]
    assert surrender_period(periods, datetime(2021, 5, 1, tzinfo=UTC), None) is p2020
    assert surrender_period(periods, datetime(2021, 11, 2, tzinfo=UTC), None) is p2021
    for when, named, code in ((datetime(2021, 11, 2, tzinfo=UTC), "2020", "compliance.surrender_deadline_passed"),
                              (datetime(2021, 5, 1, tzinfo=UTC), "2021", "compliance.surrender_period_not_open"),
                              (datetime(2021, 5, 1, tzinfo=UTC), "1999", "compliance.unknown_period"),
                              (datetime(2023, 1, 1, tzinfo=UTC), None, "compliance.no_open_period")):
        with pytest.raises(ComplianceRefusal) as refused:
            surrender_period(periods, when, named)
        assert refused.value.code == code


def test_banking_keeps_the_share_and_cancels_the_excess_oldest_vintage_first() -> None:
    from compliance.domain.banking import HeldBlock, banking_excess, programme_units

    blocks = [HeldBlock("A", "allowance", 2021, 100, 199), HeldBlock("A", "allowance", 2020, 1, 50),
              HeldBlock("B", "offset", 2020, 500, 509)]
    assert banking_excess(blocks, Decimal("1")) == []
    excess = banking_excess(blocks, Decimal("0.6"))  # A holds 150, keeps 90: 60 go; B holds 10, keeps 6: 4 go
    assert excess == [HeldBlock("A", "allowance", 2020, 1, 50), HeldBlock("A", "allowance", 2021, 100, 109),
                      HeldBlock("B", "offset", 2020, 500, 503)]
    assert sum(b.quantity for b in banking_excess(blocks, Decimal("0"))) == 160
    assert programme_units(blocks, [2020]) == [HeldBlock("A", "allowance", 2020, 1, 50),
                                               HeldBlock("B", "offset", 2020, 500, 509)]
    with pytest.raises(ValueError):
        banking_excess(blocks, Decimal("1.5"))
