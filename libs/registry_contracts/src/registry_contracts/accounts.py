"""Events owned by accounts. Consumers keep read models of users (e-mail, language, roles)."""

from __future__ import annotations

from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PositiveInt

from registry_contracts.base import Command, Event


class UserRegistered(Event):
    TYPE = "accounts.user_registered"
    VERSION = 1
    user_id: UUID
    username: str
    display_name: str
    email: str
    language: str
    roles: list[str]
    active: bool = True


class UserUpdated(Event):
    """The user's current state after any change (details, roles, reactivation)."""

    TYPE = "accounts.user_updated"
    VERSION = 1
    user_id: UUID
    username: str
    display_name: str
    email: str
    language: str
    roles: list[str]
    active: bool


class UserDeactivated(Event):
    TYPE = "accounts.user_deactivated"
    VERSION = 1
    user_id: UUID
    username: str
    reason: str | None = None


# Accounts and representatives ----------------------------------------------------------------------
class AccountOpened(Event):
    TYPE = "accounts.account_opened"
    VERSION = 1
    account_id: str
    kind: str  # central | delivery | trading | verifier | cap | reserve | allocation | auction | cancellation
    holder_id: UUID | None = None
    holder_name: str | None = None
    installation_id: str | None = None  # the central account an installation's delivery account belongs to
    name: str


class _AccountStateChange(Event):
    """What every change of an account's state carries."""

    account_id: str
    reason: str | None = None


class AccountSuspended(_AccountStateChange):
    TYPE = "accounts.account_suspended"
    VERSION = 1


class AccountReactivated(_AccountStateChange):
    TYPE = "accounts.account_reactivated"
    VERSION = 1


class AccountClosed(_AccountStateChange):
    TYPE = "accounts.account_closed"
    VERSION = 1


class RepresentativeLinked(Event):
    TYPE = "accounts.representative_linked"
    VERSION = 1
    account_id: str
    user_id: UUID
    rights: list[str]  # initiate | approve | view


class RepresentativeUnlinked(Event):
    TYPE = "accounts.representative_unlinked"
    VERSION = 1
    account_id: str
    user_id: UUID


# The ledger: commands (handled by accounts) and events -----------------------------------------------
class SerialRange(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    start: int
    end: int  # inclusive


class IssueUnits(Command):
    TYPE = "accounts.issue_units"
    VERSION = 1
    request_id: UUID  # the caller's id for this issuance: the same id never issues twice
    to_account_id: str
    unit_type: Literal["allowance", "offset"]
    vintage: int
    quantity: PositiveInt
    origin: str = ""
    kind: str = "issuance"
    reason: str | None = None
    actor: str


class MoveUnits(Command):
    TYPE = "accounts.move_units"
    VERSION = 1
    movement_id: UUID  # the caller's id for this movement: the same id never moves twice
    kind: str  # a movement kind of the catalogue
    from_account_id: str
    to_account_id: str
    unit_type: Literal["allowance", "offset"]
    quantity: PositiveInt
    vintage: int | None = None
    serial_range: SerialRange | None = None
    reason: str | None = None
    actor: str


class MoveUnitsBatch(Command):
    """Up to 1,000 movements in one transaction, a result per line (``units_moved`` per success,
    ``movement_refused`` per refusal)."""

    TYPE = "accounts.move_units_batch"
    VERSION = 1
    batch_id: UUID
    lines: list[MoveUnits] = Field(min_length=1, max_length=1000)


class HoldUnits(Command):
    TYPE = "accounts.hold_units"
    VERSION = 1
    transfer_id: UUID
    sender_account_id: str
    receiver_account_id: str
    unit_type: Literal["allowance", "offset"]
    quantity: PositiveInt
    vintage: int | None = None
    serial_range: SerialRange | None = None
    actor: str


class SettleHold(Command):
    TYPE = "accounts.settle_hold"
    VERSION = 1
    transfer_id: UUID
    actor: str = "transfers"


class ReleaseHold(Command):
    TYPE = "accounts.release_hold"
    VERSION = 1
    transfer_id: UUID
    reason: str
    actor: str = "transfers"


class MovedBlock(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    unit_type: str
    vintage: int
    origin: str = ""
    ranges: list[SerialRange]
    quantity: int


class UnitsIssued(Event):
    TYPE = "accounts.units_issued"
    VERSION = 1
    request_id: UUID
    to_account_id: str
    unit_type: str
    vintage: int
    origin: str = ""
    serial_range: SerialRange
    quantity: int
    movement_kind: str = "issuance"


class UnitsMoved(Event):
    TYPE = "accounts.units_moved"
    VERSION = 1
    movement_id: UUID
    movement_kind: str
    from_account_id: str
    to_account_id: str
    quantity: int
    blocks: list[MovedBlock]
    batch_id: UUID | None = None


class _HoldFacts(Event):
    """What every event about a hold carries."""

    transfer_id: UUID
    hold_id: UUID
    sender_account_id: str
    receiver_account_id: str
    quantity: int
    blocks: list[MovedBlock]


class UnitsHeld(_HoldFacts):
    TYPE = "accounts.units_held"
    VERSION = 1


class HoldRefused(Event):
    TYPE = "accounts.hold_refused"
    VERSION = 1
    transfer_id: UUID
    sender_account_id: str
    receiver_account_id: str
    quantity: int
    code: str
    detail: str | None = None


class HoldSettled(_HoldFacts):
    TYPE = "accounts.hold_settled"
    VERSION = 1


class HoldReleased(_HoldFacts):
    TYPE = "accounts.hold_released"
    VERSION = 1
    reason: str


class MovementRefused(Event):
    TYPE = "accounts.movement_refused"
    VERSION = 1
    command: str  # issue_units | move_units | settle_hold ...
    reference_id: UUID  # the movement, request or transfer id of the refused command
    code: str
    detail: str | None = None
    batch_id: UUID | None = None


class JournalCheckpointed(Event):
    TYPE = "accounts.journal_checkpointed"
    VERSION = 1
    seq: int
    chain_hash: str
    file: str
    signed_at: AwareDatetime


class BatchLineResult(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    movement_id: UUID
    movement_kind: str
    from_account_id: str
    to_account_id: str
    quantity: int
    moved: bool
    blocks: list[MovedBlock] = Field(default_factory=list)  # when moved
    code: str | None = None  # when refused
    detail: str | None = None


class UnitsMovedBatch(Event):
    """The answer to ``move_units_batch``: one result per line, in the order of the lines, in one message
    (bulk work is answered in bulk; ``units_moved`` / ``movement_refused`` answer single movements)."""

    TYPE = "accounts.units_moved_batch"
    VERSION = 1
    batch_id: UUID
    results: list[BatchLineResult]
