"""What the compliance service brings to the chassis: verified emissions and their attestation, surrender,
the evaluation of each period with its reports and automatic cancellation."""

from pathlib import Path

from compliance import api_compliance, api_programme
from compliance.handlers import SUBSCRIPTIONS
from compliance.service import evaluator
from compliance.settings import ComplianceSettings
from compliance.tables import metadata
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="compliance",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[*api_compliance.routers, *api_programme.routers],
    subscriptions=SUBSCRIPTIONS,
    periodic_tasks=[("evaluator", "evaluate_interval_seconds", evaluator)],
    settings_class=ComplianceSettings,
    api_lifespan=api_programme.accounts_client,
)
