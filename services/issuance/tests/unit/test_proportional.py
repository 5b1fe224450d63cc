"""Proportional non-onerous allocation (seed 003) in integer arithmetic on hundredths of MWh."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from issuance.domain.proportional import (
    ConsumptionError,
    Participant,
    parse_hundredths,
    proportional_shares,
    remainder_bounds,
)

BUDGET = 3_247_055
NATIONAL = 27_775_774_624  # 277,757,746.24 MWh
ELIGIBLE = 25_150_828_786  # 251,508,287.86 MWh, 99 participants
PUBLISHED_REMAINDER = 306_912


def split(total: int, parts: int, rng: random.Random) -> list[int]:
    cuts = sorted(rng.sample(range(1, total), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def seed_003_split() -> list[int]:
    """A split of the 99 eligible consumptions that leaves exactly the published remainder."""
    for seed in range(1000):
        parts = split(ELIGIBLE, 99, random.Random(seed))
        result = proportional_shares(BUDGET, NATIONAL, [Participant(str(i), c, True) for i, c in enumerate(parts)])
        if result.remainder == PUBLISHED_REMAINDER:
            return parts
    raise AssertionError("no split found")


def test_seed_003_published_remainder_is_reproduced():
    parts = seed_003_split()
    assert len(parts) == 99 and sum(parts) == ELIGIBLE
    people = [Participant(f"P{i}", c, True) for i, c in enumerate(parts)]
    people += [Participant("NOT-REGISTERED", NATIONAL - ELIGIBLE, False)]
    result = proportional_shares(BUDGET, NATIONAL, people)
    assert result.remainder == PUBLISHED_REMAINDER
    assert result.allocated + result.remainder == BUDGET
    assert result.shares["NOT-REGISTERED"] == 0


def test_bounds_are_the_issues_interval():
    assert remainder_bounds(BUDGET, NATIONAL, ELIGIBLE, 99) == (306_863, 306_961)


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.lists(st.booleans(), min_size=0, max_size=20))
def test_any_split_leaves_a_remainder_in_the_interval(rng: random.Random, ineligible_flags: list[bool]):
    parts = split(ELIGIBLE, 99, rng)
    people = [Participant(f"P{i}", c, True) for i, c in enumerate(parts)]
    others = NATIONAL - ELIGIBLE
    people += [Participant(f"X{i}", others // max(1, len(ineligible_flags)), False)
               for i, _ in enumerate(ineligible_flags)]
    result = proportional_shares(BUDGET, NATIONAL, people)
    assert 306_863 <= result.remainder <= 306_961
    assert result.allocated + result.remainder == BUDGET
    assert all(result.shares[p.id] == 0 for p in people if not p.eligible)
    assert all(result.shares[p.id] == BUDGET * p.consumption // NATIONAL for p in people if p.eligible)


@pytest.mark.parametrize(("text", "hundredths"), [
    ("251508287.86", 25150828786), (" 1,234.5 ", 123450), (12, 1200), (0.1, 10), ("0", 0), (1.25, 125)])
def test_parse_hundredths(text, hundredths):
    assert parse_hundredths(text) == hundredths


@pytest.mark.parametrize(("value", "code"), [
    ("1.234", "too_many_decimals"), (0.001, "too_many_decimals"), ("-1", "negative"), ("abc", "not_a_number"),
    (True, "not_a_number"), ("NaN", "not_a_number"), (None, "not_a_number")])
def test_parse_hundredths_refuses(value, code):
    with pytest.raises(ConsumptionError) as caught:
        parse_hundredths(value)
    assert caught.value.code == code


def test_eligible_above_national_is_refused():
    with pytest.raises(ValueError):
        proportional_shares(10, 100, [Participant("A", 101, True)])
