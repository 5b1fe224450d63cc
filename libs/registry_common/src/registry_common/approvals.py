"""Four eyes: one mechanism for every service.

A request is bound to the SHA-256 of its canonical payload, names the roles that may decide it and
expires. A decision is refused when the decider requested it, lacks the role, confirms a different
payload hash, or comes after expiry; only a pending request can be decided. Services register what an
approved action does (``APPROVAL_ACTIONS``) and it runs in the transaction of the approval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.audit import record_audit
from registry_common.auth import Principal
from registry_common.errors import RegistryError
from registry_common.tables import approvals

ApprovedAction = Callable[[AsyncConnection, dict[str, Any], Principal], Awaitable[Any]]
APPROVAL_ACTIONS: dict[str, ApprovedAction] = {}


def register_approval_action(action: str, run: ApprovedAction) -> None:
    APPROVAL_ACTIONS[action] = run


def payload_hash(payload: dict[str, Any]) -> str:
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class PendingApproval:
    """The pure rule: may ``decider`` decide this request, confirming ``confirmed_hash``, at ``now``?"""

    requested_by: str
    required_roles: frozenset[str]
    payload_hash: str
    expires_at: datetime
    state: str

    def check_decision(self, decider: Principal, confirmed_hash: str | None, now: datetime,
                       *, approving: bool) -> None:
        if self.state != "pending":
            raise RegistryError("approval.not_pending", state=self.state)
        if now >= self.expires_at:
            raise RegistryError("approval.expired")
        if not decider.has_any(self.required_roles):
            raise RegistryError("approval.wrong_role")
        if approving and decider.user_id == self.requested_by:
            raise RegistryError("approval.self_approval")
        if approving and confirmed_hash != self.payload_hash:
            raise RegistryError("approval.payload_mismatch", field="payload_hash")


async def request_approval(
    conn: AsyncConnection, *, action: str, payload: dict[str, Any], requested_by: Principal,
    required_roles: Iterable[str], now: datetime, ttl: timedelta = timedelta(days=7),
) -> UUID:
    approval_id = uuid4()
    await conn.execute(
        insert(approvals).values(
            id=approval_id, action=action, payload=payload, payload_hash=payload_hash(payload),
            required_roles=sorted(required_roles), requested_by=requested_by.user_id, requested_at=now,
            expires_at=now + ttl, state="pending",
        )
    )
    await record_audit(conn, action="approval.requested", entity_type="approval", entity_id=str(approval_id),
                       actor=requested_by.user_id, details={"action": action, "payload": payload})
    return approval_id


async def decide_approval(
    conn: AsyncConnection, approval_id: UUID, *, decider: Principal, approve: bool, now: datetime,
    confirmed_hash: str | None = None, reason: str | None = None,
) -> dict[str, Any]:
    row = (
        await conn.execute(select(approvals).where(approvals.c.id == approval_id).with_for_update())
    ).mappings().first()
    if row is None:
        raise RegistryError("approval.not_found")
    pending = PendingApproval(
        requested_by=row["requested_by"], required_roles=frozenset(row["required_roles"]),
        payload_hash=row["payload_hash"], expires_at=row["expires_at"], state=row["state"],
    )
    pending.check_decision(decider, confirmed_hash, now, approving=approve)
    state = "approved" if approve else "rejected"
    await conn.execute(
        update(approvals).where(approvals.c.id == approval_id)
        .values(state=state, decided_by=decider.user_id, decided_at=now, reason=reason)
    )
    await record_audit(conn, action=f"approval.{state}", entity_type="approval", entity_id=str(approval_id),
                       actor=decider.user_id, reason=reason, details={"action": row["action"]})
    if approve and (run := APPROVAL_ACTIONS.get(row["action"])) is not None:
        await run(conn, dict(row["payload"]), decider)
    return {**row, "state": state, "decided_by": decider.user_id, "decided_at": now}


def effective_state(row: dict[str, Any], now: datetime) -> str:
    """Pending requests past their expiry read as expired."""
    return "expired" if row["state"] == "pending" and now >= row["expires_at"] else row["state"]
