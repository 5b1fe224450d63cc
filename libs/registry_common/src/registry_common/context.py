"""Per-request and per-message context, carried in context variables so logs, errors and outgoing
messages pick it up without threading it through every call."""

from __future__ import annotations

from contextvars import ContextVar
from uuid import UUID

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)
causation_id_var: ContextVar[UUID | None] = ContextVar("causation_id", default=None)
actor_var: ContextVar[str | None] = ContextVar("actor", default=None)
