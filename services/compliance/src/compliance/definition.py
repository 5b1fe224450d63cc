"""What the compliance service brings to the chassis: verified emissions and their attestation, surrender,
the evaluation of each period with its reports and automatic cancellation."""

from pathlib import Path

from compliance.api_compliance import routers
from compliance.service import SUBSCRIPTIONS, evaluator
from compliance.settings import ComplianceSettings
from compliance.tables import metadata
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="compliance",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=routers,
    subscriptions=SUBSCRIPTIONS,
    periodic_tasks=[("evaluator", "evaluate_interval_seconds", evaluator)],
    settings_class=ComplianceSettings,
)
