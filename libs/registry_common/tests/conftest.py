"""Fixtures of the chassis's own integration tests: a probe service with its own database and queue."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from registry_common.db import make_engine
from registry_common.messaging.topology import delete_namespace
from registry_common.provision import provision_definitions
from registry_common.settings import RegistrySettings
from registry_common.testing.fixtures import drop_databases, settings_from_env
from registry_common.testing.probe import PROBE, probe_metadata

PROBE_TABLES = "outbox, inbox, consumer_retries, dead_letters, probe_effects"


@pytest.fixture(scope="session")
async def probe_settings(registry_env: dict[str, str]) -> AsyncIterator[RegistrySettings]:
    overrides = {k.removeprefix("REGISTRY_").lower(): v for k, v in registry_env.items()}
    await provision_definitions([PROBE], **overrides)
    settings = settings_from_env(registry_env, "probe", consumer_max_attempts=4,
                                 consumer_retry_base_seconds=0.2, relay_batch_size=50,
                                 relay_poll_seconds=0.5)
    owner = make_engine(settings.owner_database_url, pool_size=0, application_name="probe-setup")
    async with owner.begin() as conn:
        await conn.run_sync(probe_metadata.create_all)
        await conn.execute(text("GRANT SELECT, INSERT, UPDATE, DELETE ON probe_effects TO probe_app"))
    await owner.dispose()
    yield settings
    await drop_databases(registry_env["REGISTRY_ADMIN_DATABASE_URL"], [settings.db_name])
    await delete_namespace(settings.amqp_url, settings.namespace, ["probe"])


@pytest.fixture
async def probe_db(probe_settings: RegistrySettings) -> AsyncIterator[AsyncEngine]:
    """The probe's database, emptied before each test; an engine connected as the app role."""
    owner = make_engine(probe_settings.owner_database_url, pool_size=0, application_name="probe-reset")
    async with owner.begin() as conn:
        await conn.execute(text(f"TRUNCATE {PROBE_TABLES}"))
    await owner.dispose()
    engine = make_engine(probe_settings.app_database_url, pool_size=0, application_name="probe-test")
    yield engine
    await engine.dispose()
