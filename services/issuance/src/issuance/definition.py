"""What the issuance service brings to the chassis: compliance periods, cap and reserves, allocation,
offsets, and the programme clock it owns."""

from pathlib import Path

from issuance.api_allocation import router as allocation_router
from issuance.api_offsets import router as offsets_router
from issuance.api_periods import router as periods_router
from issuance.clock_routes import router as clock_router
from issuance.service import SUBSCRIPTIONS, allocation_scheduler, provision_issuance
from issuance.settings import IssuanceSettings
from issuance.tables import metadata
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="issuance",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[clock_router, periods_router, allocation_router, offsets_router],
    subscriptions=SUBSCRIPTIONS,
    periodic_tasks=[("allocation-scheduler", 0.5, allocation_scheduler)],
    settings_class=IssuanceSettings,
    provision_hook=provision_issuance,
)
