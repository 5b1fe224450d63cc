"""The chassis tables every service's database holds, created by the chassis migration branch.

They are SQLAlchemy Core tables on one shared ``MetaData``; a service's own tables live on its own
``MetaData`` and its migrations depend on the chassis branch.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

chassis_metadata = MetaData()

# Transactional outbox: a row per outgoing message, written in the transaction of the state change.
# ``exchange`` is the logical name ("events", "commands" or "direct" for a named queue); the relay
# adds the namespace. ``available_at`` lets a row wait (a delayed send).
outbox = Table(
    "outbox",
    chassis_metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("message_id", Uuid, nullable=False),
    Column("exchange", String(40), nullable=False),
    Column("routing_key", String(200), nullable=False),
    Column("envelope", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("available_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Index("ix_outbox_pending", "id", postgresql_where=text("published_at IS NULL")),
    Index("ix_outbox_message_id", "message_id"),
)

# Inbox: a message applied by a consumer, stored in the same transaction as its effect.
inbox = Table(
    "inbox",
    chassis_metadata,
    Column("consumer", String(120), primary_key=True),
    Column("message_id", Uuid, primary_key=True),
    Column("message_type", String(200), nullable=False),
    Column("handled_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A message whose handling failed, waiting for its next attempt (growing delays).
consumer_retries = Table(
    "consumer_retries",
    chassis_metadata,
    Column("consumer", String(120), primary_key=True),
    Column("message_id", Uuid, primary_key=True),
    Column("envelope", JSONB, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("last_error", Text, nullable=False),
    Column("first_failed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_consumer_retries_due", "next_attempt_at"),
)

# A message that kept failing: kept with its error for operators to list and replay.
dead_letters = Table(
    "dead_letters",
    chassis_metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("consumer", String(120), nullable=False),
    Column("message_id", Uuid, nullable=False),
    Column("message_type", String(200), nullable=False),
    Column("envelope", JSONB, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("error", Text, nullable=False),
    Column("dead_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("state", String(20), nullable=False, server_default="dead"),  # dead | replayed | resolved
    Column("replayed_at", DateTime(timezone=True)),
    Column("replayed_by", String(120)),
    Index("ix_dead_letters_state", "state", "id"),
)

# Append-only audit log: who, when, what and why, written in the transaction of every state change.
audit_log = Table(
    "audit_log",
    chassis_metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(120), nullable=False),
    Column("action", String(120), nullable=False),
    Column("entity_type", String(80), nullable=False),
    Column("entity_id", String(120), nullable=False),
    Column("reason", Text),
    Column("details", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("request_id", String(80)),
    Column("correlation_id", String(80)),
    Index("ix_audit_log_entity", "entity_type", "entity_id"),
)

# Four eyes: a request bound to the hash of its payload, decided by a different user with a role.
approvals = Table(
    "approvals",
    chassis_metadata,
    Column("id", Uuid, primary_key=True),
    Column("action", String(120), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("payload_hash", String(64), nullable=False),
    Column("required_roles", JSONB, nullable=False),
    Column("requested_by", String(120), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("state", String(20), nullable=False),  # pending | approved | rejected
    Column("decided_by", String(120)),
    Column("decided_at", DateTime(timezone=True)),
    Column("reason", Text),
    Index("ix_approvals_state", "state", "requested_at"),
)

# HTTP Idempotency-Key: the stored answer to a POST, replayed for the same key and body.
idempotency_keys = Table(
    "idempotency_keys",
    chassis_metadata,
    Column("key", String(200), primary_key=True),
    Column("principal", String(120), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The programme clock as this service last heard it: one row, the offset from real UTC.
programme_clock = Table(
    "programme_clock",
    chassis_metadata,
    Column("id", Integer, primary_key=True),
    Column("offset_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("moved_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Every change of the clock this service applied (append-only history).
programme_clock_history = Table(
    "programme_clock_history",
    chassis_metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("offset_us", BigInteger, nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("message_id", Uuid),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

APPEND_ONLY_TABLES: tuple[str, ...] = ("audit_log", "programme_clock_history")
"""Tables the service's ``_app`` role may only SELECT and INSERT; a trigger refuses changes too."""
