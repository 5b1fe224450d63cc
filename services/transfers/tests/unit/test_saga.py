"""The saga's reaction table, every message and request in every state (ARCHITECTURE.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from transfers.domain.saga import (
    FINAL,
    HOLD_STATES_FOR,
    IllegalMessage,
    State,
    Transfer,
    TransferConflict,
    reconcile,
)

NOW = datetime(2021, 5, 1, 12, tzinfo=UTC)
WINDOW = timedelta(hours=24)
S = State


def transfer(state: State, deadline: datetime | None = NOW + WINDOW) -> Transfer:
    return Transfer(id="t1", sender_account_id="CEN-1", receiver_account_id="TRD-1", quantity=5, state=state,
                    acceptance_deadline=deadline)


# Expected outcome per state: a new state and the ledger command; "ignore" (nothing changes);
# "conflict" (409); "illegal" (dead-lettered).
UNITS_HELD = {S.REQUESTED: (S.AWAITING_ACCEPTANCE, None), S.AWAITING_SENDER_APPROVAL: "ignore",
              S.AWAITING_ACCEPTANCE: "ignore", S.ACCEPTED: "ignore", S.REVERSING: "ignore",
              S.COMPLETED: "ignore", S.REVERSED: "ignore", S.FAILED: "ignore"}
HOLD_REFUSED = {S.REQUESTED: (S.FAILED, None), S.AWAITING_SENDER_APPROVAL: "illegal",
                S.AWAITING_ACCEPTANCE: "illegal", S.ACCEPTED: "illegal", S.REVERSING: "illegal",
                S.COMPLETED: "ignore", S.REVERSED: "ignore", S.FAILED: "ignore"}
HOLD_SETTLED = {S.ACCEPTED: (S.COMPLETED, None), S.REQUESTED: "illegal", S.AWAITING_SENDER_APPROVAL: "illegal",
                S.AWAITING_ACCEPTANCE: "illegal", S.REVERSING: "illegal", S.COMPLETED: "ignore",
                S.REVERSED: "ignore", S.FAILED: "ignore"}
HOLD_RELEASED = {S.REVERSING: (S.REVERSED, None), S.REQUESTED: "illegal", S.AWAITING_SENDER_APPROVAL: "illegal",
                 S.AWAITING_ACCEPTANCE: "illegal", S.ACCEPTED: "illegal", S.COMPLETED: "ignore",
                 S.REVERSED: "ignore", S.FAILED: "ignore"}
SETTLEMENT_REFUSED = {S.ACCEPTED: (S.REVERSING, "release"), S.REQUESTED: "illegal",
                      S.AWAITING_SENDER_APPROVAL: "illegal", S.AWAITING_ACCEPTANCE: "illegal",
                      S.REVERSING: "ignore", S.COMPLETED: "ignore", S.REVERSED: "ignore", S.FAILED: "ignore"}
ACCEPT = {S.AWAITING_ACCEPTANCE: (S.ACCEPTED, "settle"), S.ACCEPTED: "ignore", S.COMPLETED: "ignore",
          S.REQUESTED: "conflict", S.AWAITING_SENDER_APPROVAL: "conflict", S.REVERSING: "conflict",
          S.REVERSED: "conflict", S.FAILED: "conflict"}
REJECT = {S.AWAITING_ACCEPTANCE: (S.REVERSING, "release"), S.REQUESTED: "conflict", S.ACCEPTED: "conflict",
          S.AWAITING_SENDER_APPROVAL: "conflict", S.COMPLETED: "conflict", S.REVERSED: "conflict",
          S.FAILED: "conflict", S.REVERSING: "conflict"}
CANCEL = {S.AWAITING_ACCEPTANCE: (S.REVERSING, "release"), S.AWAITING_SENDER_APPROVAL: (S.FAILED, None),
          S.REQUESTED: "conflict", S.ACCEPTED: "conflict", S.REVERSING: "conflict", S.COMPLETED: "conflict",
          S.REVERSED: "conflict", S.FAILED: "conflict"}
DEADLINE = {S.AWAITING_ACCEPTANCE: (S.REVERSING, "release"), **{s: "ignore" for s in State
                                                                 if s is not S.AWAITING_ACCEPTANCE}}
APPROVE = {S.AWAITING_SENDER_APPROVAL: (S.REQUESTED, "hold"), **{s: "conflict" for s in State
                                                                 if s is not S.AWAITING_SENDER_APPROVAL}}

TABLE = {
    "units_held": (UNITS_HELD, lambda t: t.on_units_held(NOW, WINDOW)),
    "hold_refused": (HOLD_REFUSED, lambda t: t.on_hold_refused("ledger.insufficient_units")),
    "hold_settled": (HOLD_SETTLED, lambda t: t.on_hold_settled()),
    "hold_released": (HOLD_RELEASED, lambda t: t.on_hold_released()),
    "settlement_refused": (SETTLEMENT_REFUSED, lambda t: t.on_settlement_refused("ledger.frozen")),
    "accept": (ACCEPT, lambda t: t.accept(NOW)),
    "reject": (REJECT, lambda t: t.reject()),
    "cancel": (CANCEL, lambda t: t.cancel()),
    "deadline": (DEADLINE, lambda t: t.expire(NOW + WINDOW)),
    "approve": (APPROVE, lambda t: t.approve_by_sender()),
}


@pytest.mark.parametrize("message", sorted(TABLE))
@pytest.mark.parametrize("state", list(State))
def test_every_message_in_every_state(message: str, state: State):
    expected_by_state, step = TABLE[message]
    assert set(expected_by_state) == set(State), f"{message}: the table must name every state"
    expected = expected_by_state[state]
    subject = transfer(state)
    if expected == "conflict":
        with pytest.raises(TransferConflict) as conflict:
            step(subject)
        assert conflict.value.state is state
    elif expected == "illegal":
        with pytest.raises(IllegalMessage):
            step(subject)
    elif expected == "ignore":
        outgoing = step(subject)
        assert outgoing is None and subject.state is state and not subject.history
    else:
        new_state, command = expected
        outgoing = step(subject)
        assert subject.state is new_state
        assert (outgoing.command if outgoing else None) == command
        assert subject.history[-1][:2] == (state, new_state)


def test_the_deadline_is_set_when_units_are_held_and_accept_after_it_is_refused():
    subject = transfer(S.REQUESTED, deadline=None)
    subject.on_units_held(NOW, WINDOW)
    assert subject.acceptance_deadline == NOW + WINDOW
    assert subject.expire(NOW + WINDOW - timedelta(microseconds=1)) is None
    with pytest.raises(TransferConflict) as late:
        subject.accept(NOW + WINDOW)
    assert late.value.code == "transfer.acceptance_window_closed"
    assert subject.state is S.AWAITING_ACCEPTANCE


def test_reversal_reasons_and_failure_codes_are_kept():
    rejected = transfer(S.AWAITING_ACCEPTANCE)
    rejected.reject()
    assert rejected.reason == "rejected"
    expired = transfer(S.AWAITING_ACCEPTANCE)
    expired.expire(NOW + WINDOW)
    assert expired.reason == "expired"
    refused = transfer(S.REQUESTED)
    refused.on_hold_refused("ledger.insufficient_units")
    assert refused.failure_code == "ledger.insufficient_units"
    settlement = transfer(S.ACCEPTED)
    settlement.on_settlement_refused("ledger.frozen")
    assert (settlement.reason, settlement.failure_code) == ("settlement_refused", "ledger.frozen")


def test_reconciliation_pairs():
    stamp = NOW
    transfers = {state: (state, stamp) for state in State}
    holds = {S.REQUESTED: "held", S.AWAITING_ACCEPTANCE: "held", S.ACCEPTED: "settled",
             S.REVERSING: "released", S.COMPLETED: "settled", S.REVERSED: "released"}
    assert reconcile(transfers, holds, now=stamp, stuck_after=timedelta(minutes=5)) == []
    wrong = reconcile({"x": (S.COMPLETED, stamp)}, {"x": "released", "orphan": "held"}, now=stamp,
                      stuck_after=timedelta(minutes=5))
    assert {p["code"] for p in wrong} == {"transfer.hold_mismatch", "transfer.orphan_hold"}
    stuck = reconcile({"y": (S.REQUESTED, stamp)}, {}, now=stamp + timedelta(minutes=6),
                      stuck_after=timedelta(minutes=5))
    assert [p["code"] for p in stuck] == ["transfer.stuck"]
    assert set(HOLD_STATES_FOR) == set(State) and FINAL <= set(State)
