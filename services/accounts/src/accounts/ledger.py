"""The unit ledger's operations: issue, move, hold, settle, release. One implementation serves the broker
commands and the HTTP face. Each runs on the caller's transaction and touches O(blocks), never O(units).

Locking: every account a movement takes units from or places units into is locked FOR UPDATE for the
whole movement (two accounts in id order). That serialises movements out of one account, which makes
"no negative holding" a matter of reading its blocks, and placements into one account, whose merging
with adjacent blocks reads before it writes; and no account can be closed underneath. Serials are placed with
an exclusion constraint behind them: a block in two places cannot be committed.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    Uuid,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, INT8MULTIRANGE
from sqlalchemy.ext.asyncio import AsyncConnection

from accounts.domain.ledger import (
    AccountKind,
    Block,
    MovementKind,
    MovementRule,
    Refusal,
    Take,
    UnitType,
    check_receiver_state,
    check_sender_state,
    rule_for,
    take_in_order,
    take_quantity,
    take_range,
)
from accounts.tables import accounts, holds, journal, ledger_settings, unit_blocks
from registry_common.errors import register_errors
from registry_contracts.accounts import (
    HoldReleased,
    HoldSettled,
    HoldUnits,
    IssueUnits,
    MovedBlock,
    MoveUnits,
    ReleaseHold,
    SerialRange,
    SettleHold,
    UnitsHeld,
    UnitsIssued,
    UnitsMoved,
)

register_errors({
    "ledger.invalid_quantity": (422, "La cantidad debe ser un entero positivo.",
                                "The quantity must be a positive integer."),
    "ledger.unknown_movement_kind": (422, "Tipo de movimiento desconocido: {kind}.", "Unknown movement kind: {kind}."),
    "ledger.unit_type_not_allowed": (422, "El tipo de unidad {unit_type} no se permite en {kind}.",
                                     "Unit type {unit_type} is not allowed in {kind}."),
    "ledger.sender_kind_not_allowed": (422, "Una cuenta {account_kind} no puede enviar en {kind}.",
                                       "A {account_kind} account cannot send in {kind}."),
    "ledger.receiver_kind_not_allowed": (422, "Una cuenta {account_kind} no puede recibir en {kind}.",
                                         "A {account_kind} account cannot receive in {kind}."),
    "ledger.account_not_found": (404, "La cuenta {account_id} no existe.", "Account {account_id} does not exist."),
    "ledger.sender_not_active": (409, "La cuenta {account_id} no puede enviar: está {state}.",
                                 "Account {account_id} cannot send: it is {state}."),
    "ledger.receiver_not_open": (409, "La cuenta {account_id} no puede recibir: está {state}.",
                                 "Account {account_id} cannot receive: it is {state}."),
    "ledger.same_account": (422, "Origen y destino son la misma cuenta.",
                            "Source and destination are the same account."),
    "ledger.not_same_installation": (422, "Origen y destino deben ser de la misma instalación.",
                                     "Source and destination must belong to one installation."),
    "ledger.insufficient_units": (409, "Unidades insuficientes: se pidieron {requested}, hay {available}.",
                                  "Insufficient units: {requested} requested, {available} available."),
    "ledger.invalid_serial_range": (422, "Rango de números de serie no válido.", "Invalid serial range."),
    "ledger.serial_range_unavailable": (409, "La cuenta no tiene todas las unidades {start}–{end}.",
                                        "The account does not hold every unit {start}–{end}."),
    "ledger.invalid_serial": (422, "Número de serie no válido: {serial}.", "Invalid serial number: {serial}."),
    "ledger.frozen": (423, "El registro está congelado: solo se permiten correcciones.",
                      "The ledger is frozen: only corrections are allowed."),
    "ledger.not_allowed_to_initiate": (403, "No puede iniciar movimientos de esta cuenta.",
                                       "You may not initiate movements from this account."),
    "ledger.duplicate_movement": (409, "Ese movimiento ya se registró.", "That movement was already recorded."),
    "ledger.hold_not_found": (404, "La retención no existe.", "The hold does not exist."),
    "ledger.hold_not_held": (409, "La retención ya está {state}.", "The hold is already {state}."),
})


@dataclass(frozen=True)
class Actor:
    """Who causes a movement, and when (programme time)."""

    id: str
    at: datetime
    correlation_id: str | None = None
    causation_id: str | None = None


@dataclass(frozen=True)
class Location:
    account_id: str | None = None
    hold_id: UUID | None = None

    def where(self) -> Any:
        if self.hold_id is not None:
            return unit_blocks.c.hold_id == self.hold_id
        return unit_blocks.c.account_id == self.account_id

    @property
    def kind(self) -> str:
        return "hold" if self.hold_id is not None else "account"

    @property
    def id(self) -> Any:
        return self.hold_id if self.hold_id is not None else self.account_id


# Statements every transfer runs, built once (the same SQL as building them in place).
_FROZEN = select(ledger_settings.c.frozen).where(ledger_settings.c.id == 1)
_ACCOUNT = select(accounts.c.id, accounts.c.kind, accounts.c.state, accounts.c.installation_id).where(
    accounts.c.id == bindparam("account_id"))
_LOCK_ACCOUNT = {False: _ACCOUNT.with_for_update(), True: _ACCOUNT.with_for_update(read=True)}
# A transfer's hold, if it has one (a repeated hold command), and the frozen flag, in one read.
_HOLD_OF_AND_FROZEN = select(
    select(holds.c.id).where(holds.c.transfer_id == bindparam("transfer_id")).scalar_subquery().label("hold_id"),
    _FROZEN.scalar_subquery().label("frozen"))
_LOCK_HOLD = select(holds).where(holds.c.transfer_id == bindparam("transfer_id")).with_for_update()
# The hold locked, with the frozen flag read in the same statement (the flag's row is not locked).
_LOCK_HOLD_AND_READ_FROZEN = select(holds, _FROZEN.scalar_subquery().label("frozen")).where(
    holds.c.transfer_id == bindparam("transfer_id")).with_for_update(of=holds)
# A new hold, its blocks and its journal rows (a transfer_hold movement), in one statement. Blocks and
# journal rows come as arrays, element i of each for block (row) i; the rows are journalled in that order.
_NEW_HOLD = text(
    "WITH new_hold AS ("
    "  INSERT INTO holds (id, transfer_id, sender_account_id, receiver_account_id, unit_type, vintage, quantity, state)"
    "  VALUES (:hold_id, :transfer_id, :sender_account_id, :receiver_account_id, :unit_type, :vintage, :quantity,"
    "          'held')), "
    "held_blocks AS ("
    "  INSERT INTO unit_blocks (hold_id, unit_type, vintage, origin, serial_start, serial_end)"
    "  SELECT :hold_id, :unit_type, * FROM unnest(:block_vintages, :block_origins, :block_starts, :block_ends)) "
    "INSERT INTO journal (movement_id, kind, from_account_id, hold_id, unit_type, vintage, origin, serials, quantity,"
    "                     actor, correlation_id, causation_id, at) "
    "SELECT :movement_id, 'transfer_hold', :sender_account_id, :hold_id, :unit_type, j.vintage, j.origin,"
    "       CAST(j.serials AS int8multirange), j.quantity, :actor, :correlation_id, :causation_id, :at "
    "FROM unnest(:journal_vintages, :journal_origins, :journal_serials, :journal_quantities) WITH ORDINALITY"
    "     AS j(vintage, origin, serials, quantity, n) "
    "ORDER BY j.n"
).bindparams(
    bindparam("hold_id", type_=Uuid), bindparam("transfer_id", type_=Uuid),
    bindparam("sender_account_id", type_=String), bindparam("receiver_account_id", type_=String),
    bindparam("unit_type", type_=String), bindparam("vintage", type_=Integer), bindparam("quantity", type_=BigInteger),
    bindparam("block_vintages", type_=ARRAY(Integer)), bindparam("block_origins", type_=ARRAY(String)),
    bindparam("block_starts", type_=ARRAY(BigInteger)), bindparam("block_ends", type_=ARRAY(BigInteger)),
    bindparam("movement_id", type_=Uuid), bindparam("actor", type_=String), bindparam("correlation_id", type_=String),
    bindparam("causation_id", type_=String), bindparam("at", type_=DateTime(timezone=True)),
    bindparam("journal_vintages", type_=ARRAY(Integer)), bindparam("journal_origins", type_=ARRAY(String)),
    bindparam("journal_serials", type_=ARRAY(String)), bindparam("journal_quantities", type_=ARRAY(BigInteger)))
_RECORDED = select(journal.c.id).where(journal.c.movement_id == bindparam("movement_id")).limit(1)
# A hold closed (``:state``) and every block taken out of it, in one statement (the blocks returned in no
# particular order).
_CLOSE_AND_EMPTY_HOLD = delete(unit_blocks).where(unit_blocks.c.hold_id == bindparam("hold_id")).returning(
    unit_blocks.c.id, unit_blocks.c.vintage, unit_blocks.c.origin, unit_blocks.c.serial_start,
    unit_blocks.c.serial_end,
).add_cte(update(holds).where(holds.c.id == bindparam("hold_id")).values(
    state=bindparam("state"), closed_at=func.now()).cte("closed_hold"))
_DELETE_BLOCK = delete(unit_blocks).where(unit_blocks.c.id == bindparam("block_id"))
_SET_START = update(unit_blocks).where(unit_blocks.c.id == bindparam("block_id")).values(
    serial_start=bindparam("serial"))
_SET_END = update(unit_blocks).where(unit_blocks.c.id == bindparam("block_id")).values(
    serial_end=bindparam("serial"))
# Both neighbours of start..end at a location, in one read: the block of the same kind there ending just
# before ``start`` and the one starting just after ``end`` (serials are unique: at most one of each).
_NEIGHBOURS = {
    place_by: select(unit_blocks.c.id, unit_blocks.c.serial_start, unit_blocks.c.serial_end).where(
        column == bindparam("place"), unit_blocks.c.unit_type == bindparam("unit_type"),
        unit_blocks.c.vintage == bindparam("vintage"), unit_blocks.c.origin == bindparam("origin"),
        or_(unit_blocks.c.serial_end == bindparam("start", type_=BigInteger) - 1,
            unit_blocks.c.serial_start == bindparam("end", type_=BigInteger) + 1))
    for place_by, column in (("hold", unit_blocks.c.hold_id), ("account", unit_blocks.c.account_id))
}
_NEW_BLOCK = insert(unit_blocks).inline().values(
    account_id=bindparam("account_id"), hold_id=bindparam("hold_id"), unit_type=bindparam("unit_type"),
    vintage=bindparam("vintage"), origin=bindparam("origin"), serial_start=bindparam("serial_start"),
    serial_end=bindparam("serial_end"))
_JOURNAL_ROW = insert(journal).inline().values(
    movement_id=bindparam("movement_id"), kind=bindparam("kind"), from_account_id=bindparam("from_account_id"),
    to_account_id=bindparam("to_account_id"), hold_id=bindparam("hold_id"), unit_type=bindparam("unit_type"),
    vintage=bindparam("vintage"), origin=bindparam("origin"),
    serials=cast(bindparam("serials", type_=String), INT8MULTIRANGE), quantity=bindparam("quantity"),
    actor=bindparam("actor"), reason=bindparam("reason"), correlation_id=bindparam("correlation_id"),
    causation_id=bindparam("causation_id"), at=bindparam("at"))


# Accounts -------------------------------------------------------------------------------------------
async def ledger_is_frozen(conn: AsyncConnection) -> bool:
    return bool((await conn.execute(_FROZEN)).scalar())


async def lock_account(conn: AsyncConnection, account_id: str, *, field: str, share: bool = False) -> Any:
    row = (await conn.execute(_LOCK_ACCOUNT[share], {"account_id": account_id})).first()
    if row is None:
        raise Refusal("ledger.account_not_found", field=field, account_id=account_id)
    return row


async def lock_pair(conn: AsyncConnection, sender_id: str, receiver_id: str) -> tuple[Any, Any]:
    """Both accounts of a movement, locked FOR UPDATE in id order (two opposite movements cannot
    deadlock). Placing units into an account merges with its blocks, so the receiver is locked too."""
    first, second = sorted((sender_id, receiver_id))
    rows = {}
    for account_id in (first, second):
        field = "from_account_id" if account_id == sender_id else "to_account_id"
        rows[account_id] = await lock_account(conn, account_id, field=field)
    return rows[sender_id], rows[receiver_id]


def installation_of(row: Any) -> str:
    return row.installation_id or row.id


def _check_frozen(rule: MovementRule, frozen: bool) -> None:
    if frozen and not rule.allowed_when_frozen:
        raise Refusal("ledger.frozen")


# Blocks ---------------------------------------------------------------------------------------------
def _candidates_statement(place_column: Any, of_one_vintage: bool) -> Any:
    """The blocks at a place (``:place``) of ``:unit_type`` (and ``:vintage``), oldest vintage and lowest
    serial first, up to the first whose running sum reaches ``:quantity``."""
    size = unit_blocks.c.serial_end - unit_blocks.c.serial_start + 1
    conditions = [place_column == bindparam("place"), unit_blocks.c.unit_type == bindparam("unit_type")]
    if of_one_vintage:
        conditions.append(unit_blocks.c.vintage == bindparam("vintage"))
    ordered = select(
        unit_blocks.c.id, unit_blocks.c.vintage, unit_blocks.c.origin, unit_blocks.c.serial_start,
        unit_blocks.c.serial_end,
        func.sum(size).over(order_by=(unit_blocks.c.vintage, unit_blocks.c.serial_start)).label("running"),
        size.label("size"),
    ).where(*conditions).subquery()
    return (select(ordered).where(ordered.c.running - ordered.c.size < bindparam("quantity", type_=BigInteger))
            .order_by(ordered.c.vintage, ordered.c.serial_start))


# By location kind and whether one vintage is asked for.
_CANDIDATES = {
    (place_by, of_one_vintage): _candidates_statement(column, of_one_vintage)
    for place_by, column in (("hold", unit_blocks.c.hold_id), ("account", unit_blocks.c.account_id))
    for of_one_vintage in (False, True)
}


async def candidate_blocks(conn: AsyncConnection, location: Location, unit_type: str, vintage: int | None,
                           quantity: int) -> list[Block]:
    """The blocks a quantity would be taken from: oldest vintage, lowest serial first, only as many as
    needed (a running sum), so a movement reads O(blocks taken), whatever the account holds."""
    parameters: dict[str, Any] = {"place": location.id, "unit_type": unit_type, "quantity": quantity}
    if vintage is not None:
        parameters["vintage"] = vintage
    rows = (await conn.execute(_CANDIDATES[(location.kind, vintage is not None)], parameters)).all()
    return [Block(r.id, r.vintage, r.origin, r.serial_start, r.serial_end) for r in rows]


async def blocks_covering(conn: AsyncConnection, location: Location, unit_type: str, start: int, end: int
                          ) -> list[Block]:
    rows = (await conn.execute(
        select(unit_blocks).where(
            location.where(), unit_blocks.c.unit_type == unit_type,
            func.int8range(unit_blocks.c.serial_start, unit_blocks.c.serial_end, "[]").op("&&")(
                func.int8range(start, end, "[]")),
        ).order_by(unit_blocks.c.serial_start)
    )).all()
    return [Block(r.id, r.vintage, r.origin, r.serial_start, r.serial_end) for r in rows]


async def place(conn: AsyncConnection, location: Location, unit_type: str, vintage: int, origin: str,
                start: int, end: int) -> None:
    """Put serials start..end at ``location``, merged with an adjacent block of the same kind there."""
    neighbours = (await conn.execute(_NEIGHBOURS[location.kind], {
        "place": location.id, "unit_type": unit_type, "vintage": vintage, "origin": origin, "start": start,
        "end": end})).all()
    before = next((n for n in neighbours if n.serial_end == start - 1), None)
    after = next((n for n in neighbours if n.serial_start == end + 1), None)
    if before is not None and after is not None:
        await conn.execute(_DELETE_BLOCK, {"block_id": after.id})
        await conn.execute(_SET_END, {"block_id": before.id, "serial": after.serial_end})
    elif before is not None:
        await conn.execute(_SET_END, {"block_id": before.id, "serial": end})
    elif after is not None:
        await conn.execute(_SET_START, {"block_id": after.id, "serial": start})
    else:
        await conn.execute(_NEW_BLOCK, {
            "account_id": location.account_id, "hold_id": location.hold_id, "unit_type": unit_type,
            "vintage": vintage, "origin": origin, "serial_start": start, "serial_end": end})


async def cut(conn: AsyncConnection, take: Take, unit_type: str, source: Location) -> None:
    """Cut a take out of its block; the rest stays at the source."""
    block = take.block
    if take.whole:
        await conn.execute(_DELETE_BLOCK, {"block_id": block.id})
    elif take.start == block.start:
        await conn.execute(_SET_START, {"block_id": block.id, "serial": take.end + 1})
    elif take.end == block.end:
        await conn.execute(_SET_END, {"block_id": block.id, "serial": take.start - 1})
    else:  # from the middle: the block becomes its head, and its tail a new block
        await conn.execute(_SET_END, {"block_id": block.id, "serial": take.start - 1})
        await conn.execute(_NEW_BLOCK, {
            "account_id": source.account_id, "hold_id": source.hold_id, "unit_type": unit_type,
            "vintage": block.vintage, "origin": block.origin, "serial_start": take.end + 1,
            "serial_end": block.end})


async def move_takes(conn: AsyncConnection, takes: list[Take], unit_type: str, destination: Location,
                     source: Location) -> None:
    """Cut each take out of its block (the rest stays at the source) and place it at the destination."""
    for take in takes:
        await cut(conn, take, unit_type, source)
        await place(conn, destination, unit_type, take.block.vintage, take.block.origin, take.start, take.end)


async def open_hold(conn: AsyncConnection, hold_id: UUID, command: HoldUnits, sender_id: str, receiver_id: str,
                    takes: list[Take], journalled: list[MovedBlock], actor: Actor) -> None:
    """The new hold, the takes in it and its journal rows (one per vintage and origin, as ``write_journal``
    writes them), in one statement. The hold's blocks are those ``place`` would leave in it, new and so
    empty: adjacent takes of one vintage and origin as one block (no read for neighbours)."""
    spans: dict[tuple[int, str], list[list[int]]] = defaultdict(list)
    for take in takes:
        spans[(take.block.vintage, take.block.origin)].append([take.start, take.end])
    blocks = [(vintage, origin, start, end)
              for (vintage, origin), vintage_spans in spans.items() for start, end in _merged(vintage_spans)]
    await conn.execute(_NEW_HOLD, {
        "hold_id": hold_id, "transfer_id": command.transfer_id, "sender_account_id": sender_id,
        "receiver_account_id": receiver_id, "unit_type": command.unit_type, "vintage": command.vintage,
        "quantity": command.quantity, "block_vintages": [b[0] for b in blocks], "block_origins": [b[1] for b in blocks],
        "block_starts": [b[2] for b in blocks], "block_ends": [b[3] for b in blocks],
        "movement_id": uuid4(), "actor": actor.id, "correlation_id": actor.correlation_id,
        "causation_id": actor.causation_id, "at": actor.at,
        "journal_vintages": [j.vintage for j in journalled], "journal_origins": [j.origin for j in journalled],
        "journal_serials": [multirange_text(j.ranges) for j in journalled],
        "journal_quantities": [j.quantity for j in journalled]})


def moved_blocks(unit_type: str, ranges: list[tuple[int, str, int, int]]) -> list[MovedBlock]:
    """Group (vintage, origin, start, end) ranges into one MovedBlock per vintage and origin."""
    grouped: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    for vintage, origin, start, end in ranges:
        grouped[(vintage, origin)].append((start, end))
    return [
        MovedBlock(unit_type=unit_type, vintage=vintage, origin=origin,
                   ranges=[SerialRange(start=s, end=e) for s, e in sorted(spans)],
                   quantity=sum(e - s + 1 for s, e in spans))
        for (vintage, origin), spans in sorted(grouped.items())
    ]


def multirange_text(ranges: list[SerialRange]) -> str:
    """PostgreSQL's text form of an int8multirange holding the serial ranges (each end inclusive)."""
    return "{" + ",".join(f"[{r.start},{r.end}]" for r in ranges) + "}"


async def write_journal(conn: AsyncConnection, *, movement_id: UUID, kind: str, from_account: str | None,
                        to_account: str | None, hold_id: UUID | None, blocks: list[MovedBlock], actor: Actor,
                        reason: str | None) -> None:
    """One journal row per vintage and origin moved, all in one statement."""
    rows = [{
        "movement_id": movement_id, "kind": kind, "from_account_id": from_account, "to_account_id": to_account,
        "hold_id": hold_id, "unit_type": block.unit_type, "vintage": block.vintage, "origin": block.origin,
        "serials": multirange_text(block.ranges), "quantity": block.quantity, "actor": actor.id,
        "reason": reason, "correlation_id": actor.correlation_id, "causation_id": actor.causation_id,
        "at": actor.at} for block in blocks]
    if rows:
        await conn.execute(_JOURNAL_ROW, rows[0] if len(rows) == 1 else rows)


async def _already_recorded(conn: AsyncConnection, movement_id: UUID) -> bool:
    return (await conn.execute(_RECORDED, {"movement_id": movement_id})).first() is not None


def _takes_as_ranges(takes: list[Take]) -> list[tuple[int, str, int, int]]:
    return [(t.block.vintage, t.block.origin, t.start, t.end) for t in takes]


# Operations -----------------------------------------------------------------------------------------
async def issue_units(conn: AsyncConnection, command: IssueUnits, actor: Actor) -> UnitsIssued:
    """New serials, allocated from the one counter, into a cap, reserve or (offsets) holding account."""
    rule = rule_for(command.kind)
    if rule.kind not in (MovementKind.ISSUANCE, MovementKind.OFFSET_ISSUANCE):
        raise Refusal("ledger.unknown_movement_kind", field="kind", kind=command.kind)
    settings_row = (await conn.execute(select(ledger_settings).where(ledger_settings.c.id == 1)
                                       .with_for_update())).one()  # issuance is rare: one counter is fine
    _check_frozen(rule, settings_row.frozen)
    receiver = await lock_account(conn, command.to_account_id, field="to_account_id")
    check_receiver_state(receiver.id, receiver.state)
    rule.check(from_kind=None, to_kind=AccountKind(receiver.kind), unit_type=UnitType(command.unit_type))
    if await _already_recorded(conn, command.request_id):
        raise Refusal("ledger.duplicate_movement", field="request_id")
    start = settings_row.next_serial
    end = start + command.quantity - 1
    await conn.execute(update(ledger_settings).where(ledger_settings.c.id == 1).values(next_serial=end + 1))
    await place(conn, Location(account_id=receiver.id), command.unit_type, command.vintage, command.origin, start, end)
    blocks = moved_blocks(command.unit_type, [(command.vintage, command.origin, start, end)])
    await write_journal(conn, movement_id=command.request_id, kind=rule.kind, from_account=None,
                        to_account=receiver.id, hold_id=None, blocks=blocks, actor=actor, reason=command.reason)
    return UnitsIssued(request_id=command.request_id, to_account_id=receiver.id, unit_type=command.unit_type,
                       vintage=command.vintage, origin=command.origin, serial_range=SerialRange(start=start, end=end),
                       quantity=command.quantity, movement_kind=rule.kind)


async def _take(conn: AsyncConnection, source: Location, unit_type: str, quantity: int, vintage: int | None,
                serial_range: SerialRange | None) -> list[Take]:
    if serial_range is not None:
        takes = take_range(await blocks_covering(conn, source, unit_type, serial_range.start, serial_range.end),
                           serial_range.start, serial_range.end)
        if sum(t.quantity for t in takes) != quantity:
            raise Refusal("ledger.invalid_serial_range", field="serial_range")
        return takes
    return take_quantity(await candidate_blocks(conn, source, unit_type, vintage, quantity), quantity)


async def move_units(conn: AsyncConnection, command: MoveUnits, actor: Actor, *,
                     frozen: bool | None = None) -> UnitsMoved:
    rule = rule_for(command.kind)
    if rule.from_kinds is None or rule.to_kinds is None:  # issuance and holds have their own commands
        raise Refusal("ledger.unknown_movement_kind", field="kind", kind=command.kind)
    _check_frozen(rule, await ledger_is_frozen(conn) if frozen is None else frozen)
    if command.from_account_id == command.to_account_id:
        raise Refusal("ledger.same_account", field="to_account_id")
    sender, receiver = await lock_pair(conn, command.from_account_id, command.to_account_id)
    if rule.kind is not MovementKind.CORRECTION:
        check_sender_state(sender.id, sender.state)
        check_receiver_state(receiver.id, receiver.state)
    rule.check(from_kind=AccountKind(sender.kind), to_kind=AccountKind(receiver.kind),
               unit_type=UnitType(command.unit_type))
    if rule.same_installation and installation_of(sender) != installation_of(receiver):
        raise Refusal("ledger.not_same_installation", field="to_account_id")
    if await _already_recorded(conn, command.movement_id):
        raise Refusal("ledger.duplicate_movement", field="movement_id")
    source = Location(account_id=sender.id)
    takes = await _take(conn, source, command.unit_type, command.quantity, command.vintage, command.serial_range)
    await move_takes(conn, takes, command.unit_type, Location(account_id=receiver.id), source)
    blocks = moved_blocks(command.unit_type, _takes_as_ranges(takes))
    await write_journal(conn, movement_id=command.movement_id, kind=rule.kind, from_account=sender.id,
                        to_account=receiver.id, hold_id=None, blocks=blocks, actor=actor, reason=command.reason)
    return UnitsMoved(movement_id=command.movement_id, movement_kind=rule.kind, from_account_id=sender.id,
                      to_account_id=receiver.id, quantity=command.quantity, blocks=blocks)


async def hold_units(conn: AsyncConnection, command: HoldUnits, actor: Actor) -> UnitsHeld | None:
    """Move units from the sender into a new hold (escrow) of their own. None: this transfer already
    has a hold (a repeated command), nothing changes. Every refusal comes before the first write (the
    broker face runs it without a savepoint)."""
    rule = rule_for(MovementKind.TRANSFER_HOLD)
    existing = (await conn.execute(_HOLD_OF_AND_FROZEN, {"transfer_id": command.transfer_id})).one()
    if existing.hold_id is not None:
        return None
    _check_frozen(rule, bool(existing.frozen))
    if command.sender_account_id == command.receiver_account_id:
        raise Refusal("ledger.same_account", field="receiver_account_id")
    sender = await lock_account(conn, command.sender_account_id, field="sender_account_id")
    receiver = await lock_account(conn, command.receiver_account_id, field="receiver_account_id", share=True)
    check_sender_state(sender.id, sender.state)
    check_receiver_state(receiver.id, receiver.state)
    rule.check(from_kind=AccountKind(sender.kind), to_kind=None, unit_type=UnitType(command.unit_type))
    settle_rule = rule_for(MovementKind.TRANSFER_SETTLE)
    settle_rule.check(from_kind=None, to_kind=AccountKind(receiver.kind), unit_type=UnitType(command.unit_type))
    source = Location(account_id=sender.id)
    takes = await _take(conn, source, command.unit_type, command.quantity, command.vintage, command.serial_range)
    for take in takes:
        await cut(conn, take, command.unit_type, source)
    hold_id = uuid4()
    blocks = moved_blocks(command.unit_type, _takes_as_ranges(takes))
    await open_hold(conn, hold_id, command, sender.id, receiver.id, takes, blocks, actor)
    return UnitsHeld(transfer_id=command.transfer_id, hold_id=hold_id, sender_account_id=sender.id,
                     receiver_account_id=receiver.id, quantity=command.quantity, blocks=blocks)


async def _lock_hold(conn: AsyncConnection, transfer_id: UUID) -> Any:
    """The hold locked FOR UPDATE, with the ledger's frozen flag as ``frozen``."""
    row = (await conn.execute(_LOCK_HOLD_AND_READ_FROZEN, {"transfer_id": transfer_id})).first()
    if row is None:
        raise Refusal("ledger.hold_not_found", field="transfer_id")
    return row


async def _close_and_empty_hold(conn: AsyncConnection, hold: Any, state: str, to_account: str, kind: MovementKind,
                                actor: Actor, reason: str | None) -> list[MovedBlock]:
    """The hold closed as ``state`` and every block taken out of it (one statement), then each placed at
    ``to_account``, lowest serial first, and journalled."""
    rows = sorted((await conn.execute(_CLOSE_AND_EMPTY_HOLD, {"hold_id": hold.id, "state": state})).all(),
                  key=lambda r: r.serial_start)
    destination = Location(account_id=to_account)
    for r in rows:
        await place(conn, destination, hold.unit_type, r.vintage, r.origin, r.serial_start, r.serial_end)
    blocks = moved_blocks(hold.unit_type, [(r.vintage, r.origin, r.serial_start, r.serial_end) for r in rows])
    await write_journal(conn, movement_id=uuid4(), kind=kind, from_account=hold.sender_account_id,
                        to_account=to_account, hold_id=hold.id, blocks=blocks, actor=actor, reason=reason)
    return blocks


async def settle_hold(conn: AsyncConnection, command: SettleHold, actor: Actor) -> HoldSettled | None:
    """Held units go to the receiver. Refused only while the ledger is frozen (or if the hold was
    released), before any write; None when it was already settled."""
    hold = await _lock_hold(conn, command.transfer_id)
    if hold.state == "settled":
        return None
    if hold.state != "held":
        raise Refusal("ledger.hold_not_held", state=hold.state)
    _check_frozen(rule_for(MovementKind.TRANSFER_SETTLE), bool(hold.frozen))
    await lock_account(conn, hold.receiver_account_id, field="receiver_account_id")
    blocks = await _close_and_empty_hold(conn, hold, "settled", hold.receiver_account_id, MovementKind.TRANSFER_SETTLE,
                                         actor, None)
    return HoldSettled(transfer_id=hold.transfer_id, hold_id=hold.id, sender_account_id=hold.sender_account_id,
                       receiver_account_id=hold.receiver_account_id, quantity=hold.quantity, blocks=blocks)


async def release_hold(conn: AsyncConnection, command: ReleaseHold, actor: Actor) -> HoldReleased | None:
    """Held units go back to the sender. Never refused; None when there is nothing to release (no such
    hold, or already released or settled)."""
    row = (await conn.execute(_LOCK_HOLD, {"transfer_id": command.transfer_id})).first()
    if row is None or row.state != "held":
        return None
    await lock_account(conn, row.sender_account_id, field="sender_account_id")  # units are placed there
    blocks = await _close_and_empty_hold(conn, row, "released", row.sender_account_id, MovementKind.TRANSFER_RELEASE,
                                         actor, command.reason)
    return HoldReleased(transfer_id=row.transfer_id, hold_id=row.id, sender_account_id=row.sender_account_id,
                        receiver_account_id=row.receiver_account_id, quantity=row.quantity, reason=command.reason,
                        blocks=blocks)


# Reading --------------------------------------------------------------------------------------------
_HELD_BLOCKS = (select(unit_blocks.c.unit_type, unit_blocks.c.vintage, unit_blocks.c.origin, unit_blocks.c.serial_start,
                       unit_blocks.c.serial_end)
                .where(unit_blocks.c.account_id == bindparam("account_id"))
                .order_by(unit_blocks.c.unit_type, unit_blocks.c.vintage, unit_blocks.c.serial_start))
# The account's open holds, both ways, by side, unit type and vintage (one statement).
_OPEN_HOLDS = text(
    "SELECT sender_account_id = :account_id AS outgoing, unit_type, vintage, sum(quantity) AS q FROM holds "
    "WHERE state = 'held' AND (sender_account_id = :account_id OR receiver_account_id = :account_id) "
    "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3")


async def holdings(conn: AsyncConnection, account_id: str) -> dict[str, Any]:
    rows = (await conn.execute(_HELD_BLOCKS, {"account_id": account_id})).all()
    totals: dict[tuple[str, int], dict[str, Any]] = {}
    for r in rows:
        entry = totals.setdefault((r.unit_type, r.vintage), {"unit_type": r.unit_type, "vintage": r.vintage,
                                                             "quantity": 0, "blocks": []})
        entry["quantity"] += r.serial_end - r.serial_start + 1
        entry["blocks"].append({"start": r.serial_start, "end": r.serial_end, "origin": r.origin,
                                "quantity": r.serial_end - r.serial_start + 1})
    open_holds = (await conn.execute(_OPEN_HOLDS, {"account_id": account_id})).all()
    incoming = [r for r in open_holds if not r.outgoing]
    return {"account_id": account_id, "total": sum(e["quantity"] for e in totals.values()),
            "held_outgoing": sum(int(r.q) for r in open_holds if r.outgoing),
            "held_incoming": sum(int(r.q) for r in incoming),
            "held_incoming_by_type_and_vintage": [{"unit_type": r.unit_type, "vintage": r.vintage,
                                                   "quantity": int(r.q)} for r in incoming],
            "by_type_and_vintage": list(totals.values())}


async def supply_audit(conn: AsyncConnection) -> dict[str, Any]:
    """Recompute supply from blocks and from the journal: issued = held + in holds + cancelled for every
    unit type and vintage, each account's blocks = its journal net, and every hold's escrow = its
    quantity while held. Lists every discrepancy."""
    issued = {(r.unit_type, r.vintage): int(r.q) for r in (await conn.execute(text(
        "SELECT unit_type, vintage, sum(quantity) AS q FROM journal WHERE from_account_id IS NULL "
        "AND hold_id IS NULL GROUP BY 1, 2"))).all()}
    located = (await conn.execute(text(
        "SELECT b.unit_type, b.vintage, "
        "  sum(CASE WHEN b.hold_id IS NOT NULL THEN q END) AS in_holds, "
        "  sum(CASE WHEN a.kind = 'cancellation' THEN q END) AS cancelled, "
        "  sum(CASE WHEN b.account_id IS NOT NULL AND a.kind <> 'cancellation' THEN q END) AS held "
        "FROM (SELECT *, serial_end - serial_start + 1 AS q FROM unit_blocks) b "
        "LEFT JOIN accounts a ON a.id = b.account_id GROUP BY 1, 2"))).all()
    where = {(r.unit_type, r.vintage): (int(r.held or 0), int(r.in_holds or 0), int(r.cancelled or 0))
             for r in located}
    supply, discrepancies = [], []
    for key in sorted(set(issued) | set(where)):
        held, in_holds, cancelled = where.get(key, (0, 0, 0))
        line = {"unit_type": key[0], "vintage": key[1], "issued": issued.get(key, 0), "held": held,
                "in_holds": in_holds, "cancelled": cancelled}
        supply.append(line)
        if line["issued"] != held + in_holds + cancelled:
            discrepancies.append({"code": "ledger.supply_mismatch", **line})
    accounts_net = (await conn.execute(text(
        "WITH moves AS ("
        "  SELECT to_account_id AS account_id, quantity FROM journal WHERE to_account_id IS NOT NULL "
        "    AND kind <> 'transfer_hold' "
        "  UNION ALL SELECT from_account_id, -quantity FROM journal WHERE from_account_id IS NOT NULL "
        "    AND kind NOT IN ('transfer_settle', 'transfer_release')), "
        "net AS (SELECT account_id, sum(quantity) AS q FROM moves GROUP BY 1), "
        "blocks AS (SELECT account_id, sum(serial_end - serial_start + 1) AS q FROM unit_blocks "
        "  WHERE account_id IS NOT NULL GROUP BY 1) "
        "SELECT coalesce(n.account_id, b.account_id) AS account_id, coalesce(n.q, 0) AS journal_net, "
        "  coalesce(b.q, 0) AS blocks FROM net n FULL JOIN blocks b ON b.account_id = n.account_id "
        "WHERE coalesce(n.q, 0) <> coalesce(b.q, 0)"))).all()
    discrepancies += [{"code": "ledger.account_mismatch", "account_id": r.account_id,
                       "journal_net": int(r.journal_net), "blocks": int(r.blocks)} for r in accounts_net]
    bad_holds = (await conn.execute(text(
        "SELECT h.id, h.state, h.quantity, coalesce(sum(b.serial_end - b.serial_start + 1), 0) AS escrow "
        "FROM holds h LEFT JOIN unit_blocks b ON b.hold_id = h.id GROUP BY h.id "
        "HAVING coalesce(sum(b.serial_end - b.serial_start + 1), 0) <> "
        "  CASE WHEN h.state = 'held' THEN h.quantity ELSE 0 END"))).all()
    discrepancies += [{"code": "ledger.hold_mismatch", "hold_id": str(r.id), "state": r.state,
                       "quantity": int(r.quantity), "escrow": int(r.escrow)} for r in bad_holds]
    return {"ok": not discrepancies, "supply": supply, "discrepancies": discrepancies}


async def unit_history(conn: AsyncConnection, serial: int) -> dict[str, Any]:
    rows = (await conn.execute(
        select(journal).where(journal.c.serials.op("@>")(literal(serial, BigInteger)))
        .order_by(journal.c.id)
    )).mappings().all()
    block = (await conn.execute(select(unit_blocks).where(
        func.int8range(unit_blocks.c.serial_start, unit_blocks.c.serial_end, "[]").op("@>")(
            literal(serial, BigInteger))))).mappings().first()
    return {
        "serial": serial,
        "location": None if block is None else {"account_id": block["account_id"],
                                                "hold_id": block["hold_id"], "unit_type": block["unit_type"],
                                                "vintage": block["vintage"], "origin": block["origin"]},
        "history": [{k: v for k, v in r.items() if k != "serials"} for r in rows],
    }



async def move_units_batch(conn: AsyncConnection, lines: list[MoveUnits], actor: Actor) -> list[UnitsMoved | Refusal]:
    """Up to 1,000 movements in one transaction, in a few set-based statements: every account involved is
    locked once (in id order), every sender's blocks read once, each line served in order from what the
    lines before it left, then the blocks, journal rows and results written together. A line the rules
    refuse takes nothing; the others are applied. (Lines naming a serial range go through ``move_units``.)"""
    results: list[UnitsMoved | Refusal | None] = [None] * len(lines)
    frozen = await ledger_is_frozen(conn)
    account_ids = sorted({a for line in lines for a in (line.from_account_id, line.to_account_id)})
    known = {r.id: r for r in (await conn.execute(
        select(accounts.c.id, accounts.c.kind, accounts.c.state, accounts.c.installation_id)
        .where(accounts.c.id.in_(account_ids)).order_by(accounts.c.id).with_for_update())).all()}
    recorded = set((await conn.execute(select(journal.c.movement_id).where(
        journal.c.movement_id.in_([line.movement_id for line in lines])))).scalars())
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for index, line in enumerate(lines):
        try:
            _check_batch_line(line, known, frozen, recorded)
        except Refusal as refusal:
            results[index] = refusal
            continue
        recorded.add(line.movement_id)
        groups[(line.from_account_id, line.unit_type)].append(index)

    takes_of: dict[int, list[Take]] = {}
    # Vintage-specific lines may need blocks beyond the oldest ones: those senders' blocks are read whole,
    # all of them in one statement (many small accounts, as in a compliance evaluation); the others only
    # as many blocks as their lines need (one big account, as the cap in an allocation).
    whole = [key for key, indexes in groups.items() if any(lines[i].vintage is not None for i in indexes)]
    every_block = await blocks_of_accounts(conn, whole)
    for (sender, unit_type), indexes in groups.items():
        if (sender, unit_type) in every_block:
            blocks = every_block.get((sender, unit_type), [])
        else:
            need = sum(lines[i].quantity for i in indexes)
            blocks = await candidate_blocks(conn, Location(account_id=sender), unit_type, None, need)
        served = take_in_order(blocks, [(lines[i].quantity, lines[i].vintage) for i in indexes])
        for index, outcome in zip(indexes, served, strict=True):
            if isinstance(outcome, Refusal):
                results[index] = outcome
            else:
                takes_of[index] = outcome
    await _apply_batch(conn, lines, takes_of, actor)
    for index, takes in takes_of.items():
        line = lines[index]
        results[index] = UnitsMoved(
            movement_id=line.movement_id, movement_kind=line.kind, from_account_id=line.from_account_id,
            to_account_id=line.to_account_id, quantity=line.quantity,
            blocks=moved_blocks(line.unit_type, _takes_as_ranges(takes)))
    return [r for r in results if r is not None]


async def blocks_of_accounts(conn: AsyncConnection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[Block]]:
    """Every block of each (account, unit type), in one statement, oldest vintage and lowest serial first."""
    if not keys:
        return {}
    found: dict[tuple[str, str], list[Block]] = {key: [] for key in keys}
    rows = (await conn.execute(
        select(unit_blocks.c.id, unit_blocks.c.account_id, unit_blocks.c.unit_type, unit_blocks.c.vintage,
               unit_blocks.c.origin, unit_blocks.c.serial_start, unit_blocks.c.serial_end)
        .where(unit_blocks.c.account_id.in_(sorted({a for a, _ in keys})))
        .order_by(unit_blocks.c.account_id, unit_blocks.c.vintage, unit_blocks.c.serial_start))).all()
    for r in rows:
        if (r.account_id, r.unit_type) in found:
            found[(r.account_id, r.unit_type)].append(Block(r.id, r.vintage, r.origin, r.serial_start, r.serial_end))
    return found


def _check_batch_line(line: MoveUnits, known: dict[str, Any], frozen: bool, recorded: set[UUID]) -> None:
    rule = rule_for(line.kind)
    if rule.from_kinds is None or rule.to_kinds is None:
        raise Refusal("ledger.unknown_movement_kind", field="kind", kind=line.kind)
    _check_frozen(rule, frozen)
    if line.from_account_id == line.to_account_id:
        raise Refusal("ledger.same_account", field="to_account_id")
    if line.serial_range is not None:
        raise Refusal("ledger.invalid_serial_range", field="serial_range")  # not served by batches
    sender, receiver = known.get(line.from_account_id), known.get(line.to_account_id)
    if sender is None:
        raise Refusal("ledger.account_not_found", field="from_account_id", account_id=line.from_account_id)
    if receiver is None:
        raise Refusal("ledger.account_not_found", field="to_account_id", account_id=line.to_account_id)
    if rule.kind is not MovementKind.CORRECTION:
        check_sender_state(sender.id, sender.state)
        check_receiver_state(receiver.id, receiver.state)
    rule.check(from_kind=AccountKind(sender.kind), to_kind=AccountKind(receiver.kind),
               unit_type=UnitType(line.unit_type))
    if rule.same_installation and installation_of(sender) != installation_of(receiver):
        raise Refusal("ledger.not_same_installation", field="to_account_id")
    if line.movement_id in recorded:
        raise Refusal("ledger.duplicate_movement", field="movement_id")


# A batch's writes, each one statement whatever the number of lines (arrays, element i for row i): the
# source blocks shrunk, the moved ranges placed, the journal rows written in the order given.
_SHRINK_BLOCKS = text(
    "UPDATE unit_blocks SET serial_start = s.new_start "
    "FROM unnest(:block_ids, :new_starts) AS s(id, new_start) WHERE unit_blocks.id = s.id"
).bindparams(bindparam("block_ids", type_=ARRAY(BigInteger)), bindparam("new_starts", type_=ARRAY(BigInteger)))
_PLACE_BLOCKS = text(
    "INSERT INTO unit_blocks (account_id, unit_type, vintage, origin, serial_start, serial_end) "
    "SELECT * FROM unnest(:account_ids, :unit_types, :vintages, :origins, :starts, :ends)"
).bindparams(
    bindparam("account_ids", type_=ARRAY(String)), bindparam("unit_types", type_=ARRAY(String)),
    bindparam("vintages", type_=ARRAY(Integer)), bindparam("origins", type_=ARRAY(String)),
    bindparam("starts", type_=ARRAY(BigInteger)), bindparam("ends", type_=ARRAY(BigInteger)))
_JOURNAL_BATCH = text(
    "INSERT INTO journal (movement_id, kind, from_account_id, to_account_id, unit_type, vintage, origin, serials,"
    "                     quantity, actor, reason, correlation_id, causation_id, at) "
    "SELECT j.movement_id, j.kind, j.from_account_id, j.to_account_id, j.unit_type, j.vintage, j.origin,"
    "       CAST(j.serials AS int8multirange), j.quantity, j.actor, j.reason, :correlation_id, :causation_id, :at "
    "FROM unnest(:movement_ids, :kinds, :from_account_ids, :to_account_ids, :unit_types, :vintages, :origins,"
    "            :serials, :quantities, :actors, :reasons) WITH ORDINALITY"
    "     AS j(movement_id, kind, from_account_id, to_account_id, unit_type, vintage, origin, serials, quantity,"
    "          actor, reason, n) "
    "ORDER BY j.n"
).bindparams(
    bindparam("movement_ids", type_=ARRAY(Uuid)), bindparam("kinds", type_=ARRAY(String)),
    bindparam("from_account_ids", type_=ARRAY(String)), bindparam("to_account_ids", type_=ARRAY(String)),
    bindparam("unit_types", type_=ARRAY(String)), bindparam("vintages", type_=ARRAY(Integer)),
    bindparam("origins", type_=ARRAY(String)), bindparam("serials", type_=ARRAY(String)),
    bindparam("quantities", type_=ARRAY(BigInteger)), bindparam("actors", type_=ARRAY(String)),
    bindparam("reasons", type_=ARRAY(String)), bindparam("correlation_id", type_=String),
    bindparam("causation_id", type_=String), bindparam("at", type_=DateTime(timezone=True)))


_JOURNAL_BATCH_COLUMNS = ("movement_ids", "kinds", "from_account_ids", "to_account_ids", "unit_types", "vintages",
                          "origins", "serials", "quantities", "actors", "reasons")
_PLACE_BLOCKS_COLUMNS = ("account_ids", "unit_types", "vintages", "origins", "starts", "ends")


def _as_arrays(names: tuple[str, ...], rows: list[tuple[Any, ...]]) -> dict[str, list[Any]]:
    """Rows as one array per column, named for an ``unnest`` statement's parameters."""
    columns = zip(*rows, strict=True) if rows else ((),) * len(names)
    return {name: list(column) for name, column in zip(names, columns, strict=True)}


async def _apply_batch(conn: AsyncConnection, lines: list[MoveUnits], takes_of: dict[int, list[Take]],
                       actor: Actor) -> None:
    """Shrink or delete the source blocks, then insert the moved ranges (adjacent ones for one destination
    merged), then the journal: at most four statements whatever the number of lines (arrays through
    ``unnest``, not one execution per row)."""
    if not takes_of:
        return
    originals: dict[int, Block] = {}
    taken_to: dict[int, int] = {}
    placed: dict[tuple[str, str, int, str], list[list[int]]] = defaultdict(list)
    journal_rows: list[tuple[Any, ...]] = []
    for index, takes in takes_of.items():
        line = lines[index]
        for take in takes:
            originals.setdefault(take.block.id, take.block)
            taken_to[take.block.id] = max(taken_to.get(take.block.id, 0), take.end)
            placed[(line.to_account_id, line.unit_type, take.block.vintage, take.block.origin)].append(
                [take.start, take.end])
        journal_rows.extend(
            (line.movement_id, line.kind, line.from_account_id, line.to_account_id, block.unit_type, block.vintage,
             block.origin, multirange_text(block.ranges), block.quantity, line.actor, line.reason)
            for block in moved_blocks(line.unit_type, _takes_as_ranges(takes)))
    emptied = [block_id for block_id, last in taken_to.items() if last >= _block_end(originals, block_id)]
    shrunk = [(block_id, last + 1) for block_id, last in taken_to.items() if last < _block_end(originals, block_id)]
    if emptied:
        await conn.execute(delete(unit_blocks).where(unit_blocks.c.id.in_(emptied)))
    if shrunk:
        await conn.execute(_SHRINK_BLOCKS, _as_arrays(("block_ids", "new_starts"), shrunk))
    new_blocks = [(account_id, unit_type, vintage, origin, start, end)
                  for (account_id, unit_type, vintage, origin), spans in placed.items()
                  for start, end in _merged(spans)]
    await conn.execute(_PLACE_BLOCKS, _as_arrays(_PLACE_BLOCKS_COLUMNS, new_blocks))
    await conn.execute(_JOURNAL_BATCH, {**_as_arrays(_JOURNAL_BATCH_COLUMNS, journal_rows),
                                        "correlation_id": actor.correlation_id, "causation_id": actor.causation_id,
                                        "at": actor.at})


def _block_end(originals: dict[int, Block], block_id: int) -> int:
    return originals[block_id].end


def _merged(spans: list[list[int]]) -> list[tuple[int, int]]:
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start == merged[-1][1] + 1:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]
