"""The ledger's rules, free of I/O: the one catalogue of movement kinds, which accounts may send and
receive what, who may start a movement, and how a quantity is taken from blocks of serial numbers.

Every refusal has a stable code (``ledger.*``), registered with its messages in ``accounts.ledger``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class UnitType(StrEnum):
    ALLOWANCE = "allowance"  # derecho de emisión
    OFFSET = "offset"  # crédito de compensación


class AccountKind(StrEnum):
    CENTRAL = "central"  # an installation's holding account
    DELIVERY = "delivery"  # an installation's surrender account
    TRADING = "trading"  # an intermediary's account
    VERIFIER = "verifier"  # a verification body: users, no units
    CAP = "cap"  # system: issuance under the cap
    RESERVE = "reserve"  # system: named reserves
    ALLOCATION = "allocation"  # system: staging of free allocation
    AUCTION = "auction"  # system: units consigned to auction
    CANCELLATION = "cancellation"  # system: cancelled units, which never leave


class MovementKind(StrEnum):
    ISSUANCE = "issuance"
    OFFSET_ISSUANCE = "offset_issuance"
    ALLOCATION = "allocation"
    TRANSFER_HOLD = "transfer_hold"
    TRANSFER_SETTLE = "transfer_settle"
    TRANSFER_RELEASE = "transfer_release"
    SURRENDER = "surrender"
    COMPLIANCE_CANCELLATION = "compliance_cancellation"
    SURRENDER_RETURN = "surrender_return"
    AUCTION_CONSIGNMENT = "auction_consignment"
    AUCTION_DELIVERY = "auction_delivery"
    UNSOLD_RETURN = "unsold_return"
    BANKING_CANCELLATION = "banking_cancellation"
    PROGRAMME_END_CANCELLATION = "programme_end_cancellation"
    CORRECTION = "correction"


class Refusal(Exception):
    """A movement the rules refuse; ``code`` is stable, ``field`` names the input at fault."""

    def __init__(self, code: str, field: str | None = None, **params: object):
        super().__init__(code)
        self.code = code
        self.field = field
        self.params = params


HOLDING = frozenset({AccountKind.CENTRAL, AccountKind.TRADING})
PARTICIPANT_HOLDING = frozenset({AccountKind.CENTRAL, AccountKind.DELIVERY, AccountKind.TRADING})
BOTH_TYPES = frozenset(UnitType)
AUTHORITY = frozenset({"authority"})
REPRESENTATIVE = "representative"  # a user with the ``initiate`` right on the sending account
SYSTEM = "system"  # only the registry itself, as a consequence of another movement
ANY_KIND = frozenset(AccountKind) - {AccountKind.VERIFIER}


@dataclass(frozen=True)
class MovementRule:
    kind: MovementKind
    from_kinds: frozenset[AccountKind] | None  # None: the units come into existence
    to_kinds: frozenset[AccountKind] | None  # None: the units go to a hold (escrow)
    unit_types: frozenset[UnitType]
    initiators: frozenset[str]  # roles, REPRESENTATIVE or SYSTEM
    four_eyes: bool = False
    same_installation: bool = False  # from and to belong to one installation
    allowed_when_frozen: bool = False

    def check(self, *, from_kind: AccountKind | None, to_kind: AccountKind | None, unit_type: UnitType) -> None:
        if unit_type not in self.unit_types:
            raise Refusal("ledger.unit_type_not_allowed", field="unit_type", unit_type=unit_type, kind=self.kind)
        if self.from_kinds is not None and from_kind not in self.from_kinds:
            raise Refusal("ledger.sender_kind_not_allowed", field="from_account_id", kind=self.kind,
                          account_kind=from_kind)
        if self.to_kinds is not None and to_kind not in self.to_kinds:
            raise Refusal("ledger.receiver_kind_not_allowed", field="to_account_id", kind=self.kind,
                          account_kind=to_kind)

    def may_initiate(self, roles: Iterable[str], *, represents_sender: bool) -> bool:
        roles = set(roles)
        if roles & self.initiators:
            return True
        return REPRESENTATIVE in self.initiators and represents_sender


def _rule(kind: MovementKind, from_kinds: Iterable[AccountKind] | None, to_kinds: Iterable[AccountKind] | None,
          unit_types: Iterable[UnitType], initiators: Iterable[str], **flags: bool) -> MovementRule:
    return MovementRule(kind, None if from_kinds is None else frozenset(from_kinds),
                        None if to_kinds is None else frozenset(to_kinds), frozenset(unit_types),
                        frozenset(initiators), **flags)


K, M, U = AccountKind, MovementKind, UnitType
CATALOGUE: dict[MovementKind, MovementRule] = {r.kind: r for r in (
    _rule(M.ISSUANCE, None, {K.CAP, K.RESERVE}, {U.ALLOWANCE}, AUTHORITY),
    _rule(M.OFFSET_ISSUANCE, None, HOLDING, {U.OFFSET}, AUTHORITY),
    _rule(M.ALLOCATION, {K.CAP, K.ALLOCATION, K.RESERVE}, {K.CENTRAL, K.ALLOCATION}, {U.ALLOWANCE}, AUTHORITY),
    _rule(M.TRANSFER_HOLD, HOLDING, None, BOTH_TYPES, {*AUTHORITY, REPRESENTATIVE}),
    _rule(M.TRANSFER_SETTLE, None, HOLDING, BOTH_TYPES, {SYSTEM}),
    _rule(M.TRANSFER_RELEASE, None, HOLDING, BOTH_TYPES, {SYSTEM}, allowed_when_frozen=True),
    _rule(M.SURRENDER, {K.CENTRAL}, {K.DELIVERY}, BOTH_TYPES, {*AUTHORITY, REPRESENTATIVE}, same_installation=True),
    _rule(M.COMPLIANCE_CANCELLATION, {K.DELIVERY}, {K.CANCELLATION}, BOTH_TYPES, {SYSTEM, *AUTHORITY}),
    _rule(M.SURRENDER_RETURN, {K.DELIVERY}, {K.CENTRAL}, BOTH_TYPES, {SYSTEM, *AUTHORITY}, same_installation=True),
    _rule(M.AUCTION_CONSIGNMENT, {K.CAP, K.RESERVE}, {K.AUCTION}, {U.ALLOWANCE}, AUTHORITY),
    _rule(M.AUCTION_DELIVERY, {K.AUCTION}, HOLDING, {U.ALLOWANCE}, AUTHORITY),
    _rule(M.UNSOLD_RETURN, {K.AUCTION}, {K.RESERVE}, {U.ALLOWANCE}, AUTHORITY),
    _rule(M.BANKING_CANCELLATION, PARTICIPANT_HOLDING, {K.CANCELLATION}, BOTH_TYPES, AUTHORITY, four_eyes=True),
    _rule(M.PROGRAMME_END_CANCELLATION, PARTICIPANT_HOLDING, {K.CANCELLATION}, BOTH_TYPES, AUTHORITY,
          four_eyes=True),
    _rule(M.CORRECTION, ANY_KIND, ANY_KIND, BOTH_TYPES, AUTHORITY, four_eyes=True, allowed_when_frozen=True),
)}


def rule_for(kind: str) -> MovementRule:
    try:
        return CATALOGUE[MovementKind(kind)]
    except ValueError as exc:
        raise Refusal("ledger.unknown_movement_kind", field="kind", kind=kind) from exc


# Accounts as movements see them ----------------------------------------------------------------------
SENDING_STATES = frozenset({"active"})
RECEIVING_STATES = frozenset({"active", "suspended"})  # a suspended account still receives


def check_sender_state(account_id: str, state: str) -> None:
    if state not in SENDING_STATES:
        raise Refusal("ledger.sender_not_active", field="from_account_id", account_id=account_id, state=state)


def check_receiver_state(account_id: str, state: str) -> None:
    if state not in RECEIVING_STATES:
        raise Refusal("ledger.receiver_not_open", field="to_account_id", account_id=account_id, state=state)


# Taking a quantity from blocks -----------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    id: int
    vintage: int
    origin: str
    start: int
    end: int  # inclusive

    @property
    def quantity(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Take:
    """Serials ``start..end`` of ``block`` move; what is left of the block stays where it is."""

    block: Block
    start: int
    end: int

    @property
    def whole(self) -> bool:
        return self.start == self.block.start and self.end == self.block.end

    @property
    def quantity(self) -> int:
        return self.end - self.start + 1


def take_quantity(blocks: Sequence[Block], quantity: int) -> list[Take]:
    """Oldest vintage first, then lowest serial: whole blocks, and the head of the last one."""
    if quantity <= 0:
        raise Refusal("ledger.invalid_quantity", field="quantity", quantity=quantity)
    takes: list[Take] = []
    remaining = quantity
    for block in sorted(blocks, key=lambda b: (b.vintage, b.start)):
        if remaining == 0:
            break
        count = min(remaining, block.quantity)
        takes.append(Take(block, block.start, block.start + count - 1))
        remaining -= count
    if remaining:
        raise Refusal("ledger.insufficient_units", field="quantity", requested=quantity,
                      available=quantity - remaining)
    return takes


def take_range(blocks: Sequence[Block], start: int, end: int) -> list[Take]:
    """Exactly the serials ``start..end``, which must all be held (possibly across adjacent blocks)."""
    if start < 1 or end < start:
        raise Refusal("ledger.invalid_serial_range", field="serial_range", start=start, end=end)
    takes: list[Take] = []
    cursor = start
    for block in sorted(blocks, key=lambda b: b.start):
        if block.end < cursor or block.start > end:
            continue
        if block.start > cursor:
            break
        stop = min(block.end, end)
        takes.append(Take(block, cursor, stop))
        cursor = stop + 1
        if cursor > end:
            return takes
    raise Refusal("ledger.serial_range_unavailable", field="serial_range", start=start, end=end)


def readable_serial(unit_type: str, vintage: int, serial: int) -> str:
    """``MX-DE-2021-000000000001`` (derecho de emisión) or ``MX-CC-...`` (crédito de compensación)."""
    prefix = "DE" if unit_type == UnitType.ALLOWANCE else "CC"
    return f"MX-{prefix}-{vintage}-{serial:012d}"


def parse_serial(text: str) -> int:
    """The number in a readable serial, or a bare number."""
    tail = text.rsplit("-", 1)[-1]
    if not tail.isdigit() or int(tail) < 1:
        raise Refusal("ledger.invalid_serial", field="serial", serial=text)
    return int(tail)


def take_in_order(blocks: Sequence[Block], requests: Sequence[tuple[int, int | None]]) -> list[list[Take] | Refusal]:
    """Serve ``(quantity, vintage)`` requests one after another from the same blocks, as separate movements
    would: each sees what the ones before it left (oldest vintage, lowest serial first). A request that
    cannot be served is refused and takes nothing."""
    left = {b.id: b for b in sorted(blocks, key=lambda b: (b.vintage, b.start))}
    results: list[list[Take] | Refusal] = []
    for quantity, vintage in requests:
        candidates = [b for b in left.values() if vintage is None or b.vintage == vintage]
        try:
            takes = take_quantity(candidates, quantity)
        except Refusal as refusal:
            results.append(refusal)
            continue
        for take in takes:
            rest = Block(take.block.id, take.block.vintage, take.block.origin, take.end + 1, take.block.end)
            if rest.start > rest.end:
                del left[take.block.id]
            else:
                left[take.block.id] = rest
        results.append(takes)
    return results
