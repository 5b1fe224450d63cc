"""What the notifications service brings to the chassis: every party told of what concerns it by e-mail,
signed webhook and an in-app inbox, in Spanish or English, once per (event, recipient, channel)."""

from pathlib import Path

from notifications.api_notifications import hooks, inbox
from notifications.delivery import deliver_due
from notifications.service import SUBSCRIPTIONS
from notifications.settings import NotificationsSettings
from notifications.tables import metadata
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="notifications",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[inbox, hooks],
    subscriptions=SUBSCRIPTIONS,
    periodic_tasks=[("deliveries", "delivery_poll_seconds", deliver_due)],
    settings_class=NotificationsSettings,
)
