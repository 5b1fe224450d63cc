"""The append-only audit log: every state change writes who, when, what and why in its own transaction.
The service's ``_app`` role may only SELECT and INSERT it, and a trigger refuses UPDATE and DELETE."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.context import actor_var, correlation_id_var, request_id_var
from registry_common.tables import audit_log

_AUDIT_ROW = insert(audit_log).values(
    actor=bindparam("actor"), action=bindparam("action"), entity_type=bindparam("entity_type"),
    entity_id=bindparam("entity_id"), reason=bindparam("reason"), details=bindparam("details"),
    request_id=bindparam("request_id"), correlation_id=bindparam("correlation_id"))  # built once


async def record_audit(
    conn: AsyncConnection, *, action: str, entity_type: str, entity_id: str, actor: str | None = None,
    reason: str | None = None, details: dict[str, Any] | None = None,
) -> None:
    await conn.execute(_AUDIT_ROW, {
        "actor": actor or actor_var.get() or "system", "action": action, "entity_type": entity_type,
        "entity_id": entity_id, "reason": reason, "details": details or {}, "request_id": request_id_var.get(),
        "correlation_id": correlation_id_var.get()})
