"""The transfer saga, free of I/O: states, the transition table, and the reaction of a transfer in every
state to every message and request. Each method returns what the transfer now asks of the ledger (a
command) and tells the world (events); the service writes them to its outbox with the new state.

    AWAITING_SENDER_APPROVAL --approved--> REQUESTED      (optional second person on the sending side)
    REQUESTED --units held--> AWAITING_ACCEPTANCE --accepted--> ACCEPTED --hold settled--> COMPLETED
        |                         |  \\--rejected / cancelled--> REVERSING --hold released--> REVERSED
        \\--hold refused--> FAILED  \\--deadline passed--> REVERSING --> REVERSED
    ACCEPTED --settlement refused--> REVERSING (settlement_refused)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class State(StrEnum):
    AWAITING_SENDER_APPROVAL = "awaiting_sender_approval"
    REQUESTED = "requested"
    AWAITING_ACCEPTANCE = "awaiting_acceptance"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    REVERSING = "reversing"
    REVERSED = "reversed"
    FAILED = "failed"


FINAL = frozenset({State.COMPLETED, State.REVERSED, State.FAILED})
S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.AWAITING_SENDER_APPROVAL: frozenset({S.REQUESTED, S.FAILED}),
    S.REQUESTED: frozenset({S.AWAITING_ACCEPTANCE, S.FAILED}),
    S.AWAITING_ACCEPTANCE: frozenset({S.ACCEPTED, S.REVERSING}),
    S.ACCEPTED: frozenset({S.COMPLETED, S.REVERSING}),
    S.REVERSING: frozenset({S.REVERSED}),
    S.COMPLETED: frozenset(), S.REVERSED: frozenset(), S.FAILED: frozenset(),
}


class Reason(StrEnum):
    """Why a transfer was reversed or failed without a ledger code."""

    REJECTED = "rejected"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    SETTLEMENT_REFUSED = "settlement_refused"
    SENDER_APPROVAL_DECLINED = "sender_approval_declined"
    SENDER_APPROVAL_EXPIRED = "sender_approval_expired"


class TransferConflict(Exception):
    """A request the transfer's state does not allow (answered 409 with the state)."""

    def __init__(self, code: str, state: State):
        super().__init__(code)
        self.code = code
        self.state = state


class IllegalMessage(Exception):
    """A ledger message that cannot happen in this state: a bug or a mix-up; it is dead-lettered."""


@dataclass(frozen=True)
class Outgoing:
    """What a step asks for: ``command`` to the ledger (``hold``, ``settle``, ``release``) and events by name."""

    command: str | None = None
    events: tuple[str, ...] = ()
    release_reason: str | None = None


@dataclass
class Transfer:
    id: Any
    sender_account_id: str
    receiver_account_id: str
    quantity: int
    state: State
    acceptance_deadline: datetime | None = None
    reason: str | None = None
    failure_code: str | None = None
    history: list[tuple[State, State, str]] = field(default_factory=list)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def _to(self, new: State, why: str) -> None:
        if new not in TRANSITIONS[self.state]:
            raise IllegalMessage(f"{self.state} -> {new}")
        self.history.append((self.state, new, why))
        self.state = new

    # Requests by people ----------------------------------------------------------------------------
    def approve_by_sender(self) -> Outgoing:
        if self.state is not S.AWAITING_SENDER_APPROVAL:
            raise TransferConflict("transfer.not_awaiting_sender_approval", self.state)
        self._to(S.REQUESTED, "sender_approved")
        return Outgoing(command="hold", events=("transfer_requested",))

    def decline_by_sender(self, reason: Reason = Reason.SENDER_APPROVAL_DECLINED) -> Outgoing:
        if self.state is not S.AWAITING_SENDER_APPROVAL:
            raise TransferConflict("transfer.not_awaiting_sender_approval", self.state)
        self.reason = reason
        self._to(S.FAILED, reason)
        return Outgoing(events=("transfer_failed",))

    def accept(self, now: datetime) -> Outgoing | None:
        """None: already accepted (or completed): a repeated accept answers with the state."""
        if self.state in (S.ACCEPTED, S.COMPLETED):
            return None
        if self.state is not S.AWAITING_ACCEPTANCE:
            raise TransferConflict("transfer.not_awaiting_acceptance", self.state)
        assert self.acceptance_deadline is not None
        if now >= self.acceptance_deadline:
            raise TransferConflict("transfer.acceptance_window_closed", self.state)
        self._to(S.ACCEPTED, "accepted")
        return Outgoing(command="settle")

    def reject(self) -> Outgoing | None:
        if self.state is S.REVERSING and self.reason == Reason.REJECTED:
            return None
        if self.state is not S.AWAITING_ACCEPTANCE:
            raise TransferConflict("transfer.not_awaiting_acceptance", self.state)
        return self._reverse(Reason.REJECTED)

    def cancel(self) -> Outgoing:
        if self.state is S.AWAITING_SENDER_APPROVAL:
            self.reason = Reason.CANCELLED
            self._to(S.FAILED, Reason.CANCELLED)
            return Outgoing(events=("transfer_failed",))
        if self.state is not S.AWAITING_ACCEPTANCE:
            raise TransferConflict("transfer.not_cancellable", self.state)
        return self._reverse(Reason.CANCELLED)

    def expire(self, now: datetime) -> Outgoing | None:
        """The sweeper: None unless it awaits acceptance and its deadline has passed."""
        if self.state is not S.AWAITING_ACCEPTANCE or self.acceptance_deadline is None:
            return None
        if now < self.acceptance_deadline:
            return None
        return self._reverse(Reason.EXPIRED)

    def _reverse(self, reason: Reason) -> Outgoing:
        self.reason = reason
        self._to(S.REVERSING, reason)
        return Outgoing(command="release", release_reason=reason)

    # Reactions to the ledger -----------------------------------------------------------------------
    def on_units_held(self, now: datetime, window: timedelta) -> Outgoing | None:
        if self.state is not S.REQUESTED:
            return None  # a duplicate, or late: ignore
        self.acceptance_deadline = now + window
        self._to(S.AWAITING_ACCEPTANCE, "units_held")
        return Outgoing(events=("transfer_awaiting_acceptance",))

    def on_hold_refused(self, code: str) -> Outgoing | None:
        if self.final:
            return None
        if self.state is not S.REQUESTED:
            raise IllegalMessage(f"hold_refused in {self.state}")
        self.failure_code = code
        self._to(S.FAILED, code)
        return Outgoing(events=("transfer_failed",))

    def on_hold_settled(self) -> Outgoing | None:
        if self.final:
            return None
        if self.state is not S.ACCEPTED:
            raise IllegalMessage(f"hold_settled in {self.state}")
        self._to(S.COMPLETED, "hold_settled")
        return Outgoing(events=("transfer_completed",))

    def on_hold_released(self) -> Outgoing | None:
        if self.final:
            return None
        if self.state is not S.REVERSING:
            raise IllegalMessage(f"hold_released in {self.state}")
        self._to(S.REVERSED, "hold_released")
        return Outgoing(events=("transfer_reversed",))

    def on_settlement_refused(self, code: str) -> Outgoing | None:
        if self.state is not S.ACCEPTED:
            return None if self.final or self.state is S.REVERSING else _illegal(self.state)
        self.failure_code = code
        return self._reverse(Reason.SETTLEMENT_REFUSED)


def _illegal(state: State) -> Outgoing:
    raise IllegalMessage(f"settlement refused in {state}")


# The reconciliation's expectations: which hold states go with which transfer state. -----------------
HOLD_STATES_FOR: dict[State, frozenset[str | None]] = {
    S.AWAITING_SENDER_APPROVAL: frozenset({None}),
    S.REQUESTED: frozenset({None, "held"}),
    S.AWAITING_ACCEPTANCE: frozenset({"held"}),
    S.ACCEPTED: frozenset({"held", "settled"}),
    S.REVERSING: frozenset({"held", "released"}),
    S.COMPLETED: frozenset({"settled"}),
    S.REVERSED: frozenset({"released"}),
    S.FAILED: frozenset({None, "released"}),
}


def reconcile(transfers: dict[Any, tuple[State, datetime]], holds: dict[Any, str], *, now: datetime,
              stuck_after: timedelta) -> list[dict[str, Any]]:
    """Every transfer against its hold (by transfer id), every hold against a transfer; and transfers
    not final after ``stuck_after``. Returns the mismatches."""
    problems: list[dict[str, Any]] = []
    for transfer_id, (state, updated_at) in transfers.items():
        hold_state = holds.get(transfer_id)
        if hold_state not in HOLD_STATES_FOR[state]:
            problems.append({"code": "transfer.hold_mismatch", "transfer_id": str(transfer_id), "state": state,
                             "hold_state": hold_state})
        if state not in FINAL and now - updated_at > stuck_after:
            problems.append({"code": "transfer.stuck", "transfer_id": str(transfer_id), "state": state,
                             "since": updated_at.isoformat()})
    for transfer_id, hold_state in holds.items():
        if transfer_id not in transfers:
            problems.append({"code": "transfer.orphan_hold", "transfer_id": str(transfer_id),
                             "hold_state": hold_state})
    return problems
