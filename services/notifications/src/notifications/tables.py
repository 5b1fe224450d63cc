"""Notifications' tables: read models of users (its own) and of accounts and representatives (the shared
account directory), all from accounts' events; webhook subscriptions, one row per (event, recipient,
channel) with its delivery state, and every delivery attempt (append-only)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from registry_common.read_models import AccountDirectory

metadata = MetaData()
directory = AccountDirectory(metadata)  # known_accounts, known_representatives: from accounts' events

known_users = Table(
    "known_users",
    metadata,
    Column("user_id", Uuid, primary_key=True),
    Column("username", String(120), nullable=False),
    Column("display_name", String(200), nullable=False, server_default=""),
    Column("email", String(320)),
    Column("language", String(5), nullable=False, server_default="es"),
    Column("roles", ARRAY(String(30)), nullable=False, server_default=text("'{}'::varchar[]")),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("email_enabled", Boolean, nullable=False, server_default="true"),  # the user's preference
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),  # whsec_<base64>, shown once to its creator
    Column("description", String(200)),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("created_by", String(120), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("disabled_at", DateTime(timezone=True)),
    Index("ix_webhook_subscriptions_account", "account_id", postgresql_where=text("active")),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("event_id", Uuid, nullable=False),  # the envelope's message_id
    Column("event_type", String(120), nullable=False),
    Column("notification_type", String(60), nullable=False),  # the template
    Column("recipient", String(200), nullable=False),  # user:<uuid> | authority:<email> | webhook:<uuid>
    Column("channel", String(10), nullable=False),  # email | inbox | webhook
    Column("user_id", Uuid),
    Column("account_id", String(40)),
    Column("subscription_id", Uuid),
    Column("address", Text),  # the e-mail address or the webhook URL at the time of the event
    Column("language", String(5), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),  # the e-mail text, the inbox text or the webhook JSON (exact bytes)
    Column("stable_id", String(200), nullable=False),  # Message-ID or webhook-id: the receiver's dedupe key
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("read_at", DateTime(timezone=True)),
    # Delivery (email, webhook): pending -> delivered | failed (given up); inbox rows are delivered at once.
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("give_up_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_error", Text),
    UniqueConstraint("event_id", "recipient", "channel", name="uq_notifications_once"),
    CheckConstraint("channel IN ('email', 'inbox', 'webhook')", name="notifications_channel"),
    CheckConstraint("state IN ('pending', 'delivered', 'failed')", name="notifications_state"),
    Index("ix_notifications_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
    Index("ix_notifications_inbox", "user_id", "created_at", postgresql_where=text("channel = 'inbox'")),
    Index("ix_notifications_subscription", "subscription_id", "created_at"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("notification_id", Uuid, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("outcome", String(12), nullable=False),  # delivered | failed | gave_up
    Column("status_code", Integer),
    Column("error", Text),
    Index("ix_delivery_attempts_notification", "notification_id", "id"),
)
