"""What the issuance routes share: roles, idempotent answers, approval states."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common import idempotency
from registry_common.approvals import effective_state
from registry_common.auth import OVERSIGHT_ROLES, Principal, Role, require_roles
from registry_common.tables import approvals

Authority = Annotated[Principal, Depends(require_roles(Role.AUTHORITY))]
Reader = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES))]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


async def idempotent(conn: AsyncConnection, key: str, who: Principal, body: Any, status: int,
                     work: Callable[[], Awaitable[dict[str, Any]]], location: str | None = None) -> JSONResponse:
    """Reserve the key, do the work, remember the answer: a repeat with the same key gets the same answer."""
    stored = await idempotency.reserve(conn, key, who.user_id, body)
    if stored is not None:
        return JSONResponse(stored["response"], status_code=stored["status_code"])
    content = await work()
    await idempotency.remember(conn, key, who.user_id, status, content)
    return JSONResponse(_jsonable(content), status_code=status, headers={"Location": location} if location else None)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (UUID, datetime)):
        return str(value) if isinstance(value, UUID) else value.isoformat()
    return value


async def approval_state(conn: AsyncConnection, approval_id: UUID | None, now: datetime) -> str | None:
    if approval_id is None:
        return None
    row = (await conn.execute(select(approvals).where(approvals.c.id == approval_id))).mappings().first()
    return None if row is None else effective_state(dict(row), now)
