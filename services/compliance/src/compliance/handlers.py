"""Compliance's message handlers, composed: the read models (accounts, periods, allocations), the ledger's
answers for surrenders, evaluations and previewed cancellations, and the live status they change."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from compliance import programme, service
from compliance.tables import calendar, directory
from registry_common.messaging.consumer import HandlerContext
from registry_contracts import Message
from registry_contracts.accounts import MovementRefused, UnitsMoved, UnitsMovedBatch


async def on_units_moved(conn: AsyncConnection, message: UnitsMoved, ctx: HandlerContext) -> None:
    await service.on_units_moved(conn, message, ctx)
    if message.movement_kind == "allocation":
        await programme.record_allocations(conn, [(message.movement_id, message.to_account_id, message.blocks)])
    if message.movement_kind == "surrender":
        await programme.refresh_status(conn, message.from_account_id, now=ctx.clock.now(),
                                       rules=service.rules_of(ctx.settings), ctx=ctx)


async def on_units_moved_batch(conn: AsyncConnection, message: UnitsMovedBatch, ctx: HandlerContext) -> None:
    await service.on_units_moved_batch(conn, message, ctx)
    await programme.record_allocations(conn, [(r.movement_id, r.to_account_id, r.blocks) for r in message.results
                                              if r.moved and r.movement_kind == "allocation"])
    await programme.apply_cancellation_batch(conn, message, ctx)


SUBSCRIPTIONS: dict[type[Message], Any] = {
    **directory.subscriptions,
    **calendar.subscriptions,
    UnitsMoved: on_units_moved,
    UnitsMovedBatch: on_units_moved_batch,
    MovementRefused: service.on_movement_refused,
}
