"""The ledger's broker face: one handler per command, each calling the same operation as the HTTP face,
in the consumer's transaction (inbox claim + effect + outgoing event commit together). A refusal rolls
back to a savepoint, so nothing of the movement stays, and publishes its refusal event with the code. The
hold commands (hold, settle, release: two of every transfer) refuse before their first write, so they run
without the savepoint (two round trips fewer); their refusals are the same."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from accounts import ledger
from accounts.domain.ledger import Refusal
from registry_common.messaging.consumer import HandlerContext
from registry_contracts import Message
from registry_contracts.accounts import (
    BatchLineResult,
    HoldRefused,
    HoldUnits,
    IssueUnits,
    MovementRefused,
    MoveUnits,
    MoveUnitsBatch,
    ReleaseHold,
    SettleHold,
    UnitsMoved,
    UnitsMovedBatch,
)


def actor_of(ctx: HandlerContext, who: str) -> ledger.Actor:
    return ledger.Actor(id=who, at=ctx.clock.now(), correlation_id=ctx.envelope.correlation_id,
                        causation_id=str(ctx.envelope.message_id))


async def attempt(conn: AsyncConnection, work: Callable[[], Awaitable[Message | None]]) -> Message | Refusal | None:
    """Run ``work`` inside a savepoint; a refusal undoes it entirely and is returned, not raised."""
    savepoint = await conn.begin_nested()
    try:
        result = await work()
    except Refusal as refusal:
        await savepoint.rollback()
        return refusal
    await savepoint.commit()
    return result


async def refused_before_writing(work: Callable[[], Awaitable[Message | None]]) -> Message | Refusal | None:
    """Run ``work``, an operation whose every refusal comes before its first write: a refusal leaves
    nothing to undo, so it is returned, not raised, without a savepoint. (The rows it locked before
    refusing stay locked until the transaction ends, where a savepoint's rollback would free them.)"""
    try:
        return await work()
    except Refusal as refusal:
        return refusal


async def _publish(conn: AsyncConnection, ctx: HandlerContext, outcome: Message | Refusal | None,
                   refused: Callable[[Refusal], Message]) -> None:
    if isinstance(outcome, Refusal):
        await ctx.publish(conn, refused(outcome))
    elif outcome is not None:
        await ctx.publish(conn, outcome)


def _detail(refusal: Refusal) -> str:
    return ", ".join(f"{k}={v}" for k, v in refusal.params.items()) or refusal.code


async def on_issue_units(conn: AsyncConnection, command: IssueUnits, ctx: HandlerContext) -> None:
    outcome = await attempt(conn, lambda: ledger.issue_units(conn, command, actor_of(ctx, command.actor)))
    await _publish(conn, ctx, outcome, lambda r: MovementRefused(
        command="issue_units", reference_id=command.request_id, code=r.code, detail=_detail(r)))


async def on_move_units(conn: AsyncConnection, command: MoveUnits, ctx: HandlerContext) -> None:
    outcome = await attempt(conn, lambda: ledger.move_units(conn, command, actor_of(ctx, command.actor)))
    await _publish(conn, ctx, outcome, lambda r: MovementRefused(
        command="move_units", reference_id=command.movement_id, code=r.code, detail=_detail(r)))


async def on_move_units_batch(conn: AsyncConnection, command: MoveUnitsBatch, ctx: HandlerContext) -> None:
    """Every line in this one transaction; the answer is one ``units_moved_batch`` event with a result per
    line, in order (moved with its blocks, or refused with its code)."""
    if any(line.serial_range for line in command.lines):  # exact ranges: one savepoint per line
        frozen = await ledger.ledger_is_frozen(conn)
        outcomes = [await attempt(conn, lambda line=line: ledger.move_units(
            conn, line, actor_of(ctx, line.actor), frozen=frozen)) for line in command.lines]
    else:
        outcomes = list(await ledger.move_units_batch(conn, list(command.lines), actor_of(ctx, "ledger")))
    results = []
    for line, outcome in zip(command.lines, outcomes, strict=True):
        common = {"movement_id": line.movement_id, "movement_kind": line.kind, "from_account_id": line.from_account_id,
                  "to_account_id": line.to_account_id, "quantity": line.quantity}
        if isinstance(outcome, Refusal):
            results.append(BatchLineResult(**common, moved=False, code=outcome.code, detail=_detail(outcome)))
        else:
            assert isinstance(outcome, UnitsMoved)
            results.append(BatchLineResult(**common, moved=True, blocks=outcome.blocks))
    await ctx.publish(conn, UnitsMovedBatch(batch_id=command.batch_id, results=results))


async def on_hold_units(conn: AsyncConnection, command: HoldUnits, ctx: HandlerContext) -> None:
    outcome = await refused_before_writing(lambda: ledger.hold_units(conn, command, actor_of(ctx, command.actor)))
    await _publish(conn, ctx, outcome, lambda r: HoldRefused(
        transfer_id=command.transfer_id, sender_account_id=command.sender_account_id,
        receiver_account_id=command.receiver_account_id, quantity=command.quantity, code=r.code,
        detail=_detail(r)))


async def on_settle_hold(conn: AsyncConnection, command: SettleHold, ctx: HandlerContext) -> None:
    outcome = await refused_before_writing(lambda: ledger.settle_hold(conn, command, actor_of(ctx, command.actor)))
    await _publish(conn, ctx, outcome, lambda r: MovementRefused(
        command="settle_hold", reference_id=command.transfer_id, code=r.code, detail=_detail(r)))


async def on_release_hold(conn: AsyncConnection, command: ReleaseHold, ctx: HandlerContext) -> None:
    outcome = await refused_before_writing(lambda: ledger.release_hold(conn, command, actor_of(ctx, command.actor)))
    await _publish(conn, ctx, outcome, lambda r: MovementRefused(
        command="release_hold", reference_id=command.transfer_id, code=r.code, detail=_detail(r)))


SUBSCRIPTIONS: dict[type[Message], Any] = {
    IssueUnits: on_issue_units,
    MoveUnits: on_move_units,
    MoveUnitsBatch: on_move_units_batch,
    HoldUnits: on_hold_units,
    SettleHold: on_settle_hold,
    ReleaseHold: on_release_hold,
}
