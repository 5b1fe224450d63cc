"""The account lifecycle's pure rules: every state × action, the closure precondition, who sees and acts
on an account, numbering, reserves and the RFC format."""

from __future__ import annotations

import pytest

from accounts.domain.ledger import AccountKind
from accounts.domain.lifecycle import (
    Access,
    AccountState,
    Action,
    LifecycleRefusal,
    access_decision,
    account_number,
    check_closable,
    check_linkable,
    may_request,
    next_state,
    normalise_rfc,
    reserve_account_id,
    reserve_names,
)

S, A = AccountState, Action
# The whole table, written out by hand: None means refused with account.illegal_transition.
EXPECTED: dict[AccountState, dict[Action, AccountState | None]] = {
    S.REQUESTED: {A.APPROVE: S.ACTIVE, A.REJECT: S.REJECTED, A.SUSPEND: None, A.REACTIVATE: None, A.CLOSE: None},
    S.ACTIVE: {A.APPROVE: None, A.REJECT: None, A.SUSPEND: S.SUSPENDED, A.REACTIVATE: None, A.CLOSE: S.CLOSED},
    S.SUSPENDED: {A.APPROVE: None, A.REJECT: None, A.SUSPEND: None, A.REACTIVATE: S.ACTIVE, A.CLOSE: S.CLOSED},
    S.CLOSED: {A.APPROVE: None, A.REJECT: None, A.SUSPEND: None, A.REACTIVATE: None, A.CLOSE: None},
    S.REJECTED: {A.APPROVE: None, A.REJECT: None, A.SUSPEND: None, A.REACTIVATE: None, A.CLOSE: None},
}
PARTICIPANT_KINDS = [AccountKind.CENTRAL, AccountKind.DELIVERY, AccountKind.TRADING, AccountKind.VERIFIER]
SYSTEM_KINDS = [AccountKind.CAP, AccountKind.RESERVE, AccountKind.ALLOCATION, AccountKind.AUCTION,
                AccountKind.CANCELLATION]


def test_the_expected_table_covers_every_state_and_action():
    assert set(EXPECTED) == set(AccountState)
    assert all(set(row) == set(Action) for row in EXPECTED.values())


@pytest.mark.parametrize("kind", PARTICIPANT_KINDS)
@pytest.mark.parametrize("state", list(AccountState))
@pytest.mark.parametrize("action", list(Action))
def test_every_state_and_action(kind, state, action):
    expected = EXPECTED[state][action]
    if expected is None:
        with pytest.raises(LifecycleRefusal) as refusal:
            next_state(kind, state, action)
        assert refusal.value.code == "account.illegal_transition"
        assert refusal.value.params == {"action": action, "state": state}
    else:
        assert next_state(kind, state.value, action.value) is expected


@pytest.mark.parametrize("kind", SYSTEM_KINDS)
@pytest.mark.parametrize("state", list(AccountState))
@pytest.mark.parametrize("action", list(Action))
def test_system_accounts_have_no_lifecycle(kind, state, action):
    with pytest.raises(LifecycleRefusal) as refusal:
        next_state(kind, state, action)
    assert refusal.value.code == "account.system_account"


def test_unknown_state_or_action_is_an_illegal_transition():
    for state, action in (("frozen", "approve"), ("active", "delete")):
        with pytest.raises(LifecycleRefusal) as refusal:
            next_state("trading", state, action)
        assert refusal.value.code == "account.illegal_transition"


@pytest.mark.parametrize("state", list(AccountState))
def test_representatives_are_linked_only_while_the_account_is_not_final(state):
    if state in (S.CLOSED, S.REJECTED):
        with pytest.raises(LifecycleRefusal) as refusal:
            check_linkable("central", state)
        assert refusal.value.code == "account.illegal_transition"
        assert refusal.value.params["action"] == "link_representative"
    else:
        check_linkable("central", state)
    with pytest.raises(LifecycleRefusal) as refusal:
        check_linkable("cap", state)
    assert refusal.value.code == "account.system_account"


@pytest.mark.parametrize(("blocks", "holds", "closable"), [(0, 0, True), (1, 0, False), (0, 1, False),
                                                            (3, 2, False)])
def test_closure_only_with_zero_holdings_and_no_open_hold(blocks, holds, closable):
    if closable:
        check_closable(blocks=blocks, open_holds=holds)
        return
    with pytest.raises(LifecycleRefusal) as refusal:
        check_closable(blocks=blocks, open_holds=holds)
    assert refusal.value.code == "account.not_empty"
    assert refusal.value.params == {"blocks": blocks, "holds": holds}


def test_closure_counts_cannot_be_negative():
    with pytest.raises(ValueError):
        check_closable(blocks=-1, open_holds=0)


# Who sees and acts -------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["authority", "authority-readonly", "administrator"])
def test_oversight_reads_every_account_but_never_acts_as_a_representative(role):
    assert access_decision(roles={role}, rights=set(), needed=None) is Access.GRANTED
    assert access_decision(roles={role}, rights=set(), needed="view") is Access.GRANTED
    assert access_decision(roles={role}, rights=set(), needed="initiate") is Access.FORBIDDEN
    # even if linked, the enforcement office and other oversight roles move nothing as representatives
    assert access_decision(roles={role}, rights={"initiate"}, needed="initiate") is Access.FORBIDDEN


@pytest.mark.parametrize("role", ["installation", "intermediary", "verifier"])
def test_participants_see_only_what_they_represent(role):
    assert access_decision(roles={role}, rights=set(), needed=None) is Access.NOT_FOUND
    assert access_decision(roles={role}, rights=set(), needed="initiate") is Access.NOT_FOUND
    assert access_decision(roles={role}, rights={"view"}, needed=None) is Access.GRANTED
    assert access_decision(roles={role}, rights={"approve"}, needed="view") is Access.GRANTED  # any right reads
    assert access_decision(roles={role}, rights={"view"}, needed="initiate") is Access.FORBIDDEN
    assert access_decision(roles={role}, rights={"initiate"}, needed="initiate") is Access.GRANTED
    assert access_decision(roles={role}, rights={"initiate"}, needed="approve") is Access.FORBIDDEN
    assert access_decision(roles={role}, rights={"approve", "view"}, needed="approve") is Access.GRANTED


def test_the_requester_reads_its_request_but_cannot_act_on_it():
    assert access_decision(roles={"intermediary"}, rights=set(), needed=None,
                           requester_in_request_phase=True) is Access.GRANTED
    assert access_decision(roles={"intermediary"}, rights=set(), needed="initiate",
                           requester_in_request_phase=True) is Access.FORBIDDEN


def test_an_unknown_right_is_a_programming_error():
    with pytest.raises(ValueError):
        access_decision(roles={"administrator"}, rights=set(), needed="own")


@pytest.mark.parametrize(("roles", "kind", "allowed"), [
    ({"administrator"}, "installation", True), ({"administrator"}, "verifier", True),
    ({"installation"}, "installation", True), ({"installation"}, "intermediary", False),
    ({"intermediary"}, "intermediary", True), ({"intermediary"}, "verifier", False),
    ({"verifier"}, "verifier", True), ({"verifier"}, "installation", False),
    ({"authority"}, "installation", False), ({"authority-readonly"}, "verifier", False),
])
def test_who_may_request_which_kind(roles, kind, allowed):
    assert may_request(roles, kind) is allowed


# Numbers, reserves, RFC --------------------------------------------------------------------------
def test_account_numbers():
    assert account_number(AccountKind.CENTRAL, 1) == "CEN-000001"
    assert account_number(AccountKind.DELIVERY, 1) == "ENT-000001"
    assert account_number(AccountKind.TRADING, 42) == "TRD-000042"
    assert account_number(AccountKind.VERIFIER, 1234567) == "VER-1234567"
    with pytest.raises(ValueError):
        account_number(AccountKind.TRADING, 0)


def test_reserve_names_and_ids():
    assert reserve_names(" price_containment, new_entrants,,price_containment ") == ["price_containment",
                                                                                    "new_entrants"]
    assert reserve_account_id("new_entrants") == "SYS-RES-NEW_ENTRANTS"
    assert len(reserve_account_id("a" * 31)) <= 40
    for bad in ("new entrants", "a" * 32, "1st", "reserva-ñ"):
        with pytest.raises(ValueError):
            reserve_names(bad)


@pytest.mark.parametrize(("given", "normalised"), [
    ("ABC850101AB1", "ABC850101AB1"),  # persona moral: 12 characters
    ("GODE561231GR8", "GODE561231GR8"),  # persona física: 13 characters
    ("gode-561231-gr8", "GODE561231GR8"),
    ("ÑA&000229XYA", "ÑA&000229XYA"),  # 29 February 2000
])
def test_valid_rfc(given, normalised):
    assert normalise_rfc(given) == normalised


@pytest.mark.parametrize("given", [
    "ABC850101AB", "GODEX561231GR8", "AB1850101AB1", "ABC851301AB1", "ABC850132AB1", "ABC850230AB1",
    "ABC850101ABZ", "ABC8501010AB1", "", "1234567890123",
])
def test_invalid_rfc(given):
    with pytest.raises(LifecycleRefusal) as refusal:
        normalise_rfc(given)
    assert refusal.value.code == "holder.invalid_tax_id"
    assert refusal.value.field == "holder.tax_id"
