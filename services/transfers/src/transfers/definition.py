"""What the transfers service brings to the chassis: the two-sided transfer saga (ARCHITECTURE.md), with
its acceptance window, sweeper, reconciliation, and read models of accounts and representatives."""

from pathlib import Path

from registry_common.service import ServiceDefinition
from transfers.api_transfers import api_resources, router
from transfers.service import SUBSCRIPTIONS, sweep
from transfers.settings import TransfersSettings
from transfers.tables import calendar, metadata

DEFINITION = ServiceDefinition(
    name="transfers",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[router],
    subscriptions={**SUBSCRIPTIONS, **calendar.subscriptions},
    periodic_tasks=[("sweeper", "sweep_interval_seconds", sweep)],
    settings_class=TransfersSettings,
    api_lifespan=api_resources,
)
