"""The ledger's pure rules: the movement catalogue and taking quantities or ranges from blocks."""

from __future__ import annotations

import pytest

from accounts.domain.ledger import (
    CATALOGUE,
    AccountKind,
    Block,
    MovementKind,
    Refusal,
    UnitType,
    check_receiver_state,
    check_sender_state,
    parse_serial,
    readable_serial,
    rule_for,
    take_quantity,
    take_range,
)

BLOCKS = [Block(1, 2022, "", 100, 149), Block(2, 2021, "", 500, 509), Block(3, 2021, "", 10, 19)]


def test_every_movement_kind_has_exactly_one_rule():
    assert set(CATALOGUE) == set(MovementKind)


def test_oldest_vintage_then_lowest_serial_first():
    takes = take_quantity(BLOCKS, 25)
    assert [(t.block.id, t.start, t.end) for t in takes] == [(3, 10, 19), (2, 500, 509), (1, 100, 104)]
    assert [t.whole for t in takes] == [True, True, False]
    assert sum(t.quantity for t in takes) == 25


@pytest.mark.parametrize("quantity", [0, -1])
def test_quantity_must_be_positive(quantity):
    with pytest.raises(Refusal) as refused:
        take_quantity(BLOCKS, quantity)
    assert refused.value.code == "ledger.invalid_quantity" and refused.value.field == "quantity"


def test_more_than_held_is_refused_with_what_is_available():
    with pytest.raises(Refusal) as refused:
        take_quantity(BLOCKS, 71)
    assert refused.value.code == "ledger.insufficient_units"
    assert refused.value.params == {"requested": 71, "available": 70}


def test_exact_serial_range_across_adjacent_blocks_and_from_the_middle():
    adjacent = [Block(1, 2021, "", 1, 10), Block(2, 2021, "", 11, 20)]
    assert [(t.start, t.end) for t in take_range(adjacent, 5, 15)] == [(5, 10), (11, 15)]
    middle = take_range([Block(7, 2021, "", 1, 100)], 40, 60)
    assert [(t.start, t.end, t.whole) for t in middle] == [(40, 60, False)]


@pytest.mark.parametrize(("start", "end", "code"), [(5, 25, "ledger.serial_range_unavailable"),
                                                    (0, 3, "ledger.invalid_serial_range"),
                                                    (9, 3, "ledger.invalid_serial_range")])
def test_a_range_not_wholly_held_is_refused(start, end, code):
    with pytest.raises(Refusal) as refused:
        take_range([Block(1, 2021, "", 1, 10), Block(2, 2021, "", 12, 20)], start, end)
    assert refused.value.code == code


@pytest.mark.parametrize(("kind", "sender", "receiver", "unit_type", "code"), [
    ("issuance", None, AccountKind.CENTRAL, UnitType.ALLOWANCE, "ledger.receiver_kind_not_allowed"),
    ("issuance", None, AccountKind.CAP, UnitType.OFFSET, "ledger.unit_type_not_allowed"),
    ("allocation", AccountKind.CENTRAL, AccountKind.CENTRAL, UnitType.ALLOWANCE, "ledger.sender_kind_not_allowed"),
    ("surrender", AccountKind.CENTRAL, AccountKind.TRADING, UnitType.ALLOWANCE, "ledger.receiver_kind_not_allowed"),
    ("correction", AccountKind.VERIFIER, AccountKind.CENTRAL, UnitType.ALLOWANCE, "ledger.sender_kind_not_allowed"),
    ("auction_delivery", AccountKind.AUCTION, AccountKind.CENTRAL, UnitType.OFFSET, "ledger.unit_type_not_allowed"),
])
def test_catalogue_refuses_what_it_does_not_list(kind, sender, receiver, unit_type, code):
    with pytest.raises(Refusal) as refused:
        rule_for(kind).check(from_kind=sender, to_kind=receiver, unit_type=unit_type)
    assert refused.value.code == code


@pytest.mark.parametrize(("kind", "sender", "receiver", "unit_type"), [
    ("issuance", None, AccountKind.RESERVE, UnitType.ALLOWANCE),
    ("offset_issuance", None, AccountKind.TRADING, UnitType.OFFSET),
    ("allocation", AccountKind.CAP, AccountKind.CENTRAL, UnitType.ALLOWANCE),
    ("surrender", AccountKind.CENTRAL, AccountKind.DELIVERY, UnitType.OFFSET),
    ("compliance_cancellation", AccountKind.DELIVERY, AccountKind.CANCELLATION, UnitType.ALLOWANCE),
])
def test_catalogue_allows_what_it_lists(kind, sender, receiver, unit_type):
    rule_for(kind).check(from_kind=sender, to_kind=receiver, unit_type=unit_type)


def test_unknown_kind_and_who_may_initiate():
    with pytest.raises(Refusal) as refused:
        rule_for("teleport")
    assert refused.value.code == "ledger.unknown_movement_kind"
    hold = rule_for(MovementKind.TRANSFER_HOLD)
    assert hold.may_initiate({"installation"}, represents_sender=True)
    assert not hold.may_initiate({"installation"}, represents_sender=False)
    assert hold.may_initiate({"authority"}, represents_sender=False)
    assert not rule_for(MovementKind.CORRECTION).may_initiate({"administrator"}, represents_sender=True)
    assert rule_for(MovementKind.CORRECTION).four_eyes and rule_for(MovementKind.CORRECTION).allowed_when_frozen
    assert not rule_for(MovementKind.TRANSFER_HOLD).allowed_when_frozen


def test_suspended_accounts_receive_but_do_not_send():
    check_receiver_state("X", "suspended")
    with pytest.raises(Refusal):
        check_sender_state("X", "suspended")
    for state in ("closed", "requested", "rejected"):
        with pytest.raises(Refusal):
            check_receiver_state("X", state)


def test_readable_serials_round_trip():
    assert readable_serial("allowance", 2021, 1) == "MX-DE-2021-000000000001"
    assert readable_serial("offset", 2022, 42) == "MX-CC-2022-000000000042"
    assert parse_serial("MX-DE-2021-000000000001") == 1 and parse_serial("77") == 77
    with pytest.raises(Refusal):
        parse_serial("MX-DE-2021-abc")


def test_requests_in_order_each_see_what_the_previous_left():
    from accounts.domain.ledger import take_in_order

    served = take_in_order(BLOCKS, [(15, None), (100, None), (5, 2022), (10, 2021), (50, None)])
    assert [(t.start, t.end) for t in served[0]] == [(10, 19), (500, 504)]
    assert isinstance(served[1], Refusal) and served[1].code == "ledger.insufficient_units"
    assert [(t.start, t.end) for t in served[2]] == [(100, 104)]
    assert isinstance(served[3], Refusal)  # only 5 of vintage 2021 are left
    assert [(t.start, t.end) for t in served[4]] == [(505, 509), (105, 149)]
