"""Provisioning: database roles, one database per service, migrations, grants, the initial clock and the
broker topology. Idempotent: ``make up``, compose's ``migrate`` job and the test fixtures all call it.

    python -m registry_common.provision --all          # every service
    python -m registry_common.provision accounts       # one service

Each service has two roles: ``<svc>_owner`` owns the database and runs migrations; ``<svc>_app`` is what
the service runs as, with SELECT/INSERT/UPDATE/DELETE on its tables except the append-only ones
(SELECT and INSERT only).
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.db import asyncpg_dsn, make_engine
from registry_common.migrations.helpers import APPEND_ONLY_TRIGGER
from registry_common.service import ServiceDefinition, load_definition
from registry_common.settings import (
    DEFAULT_ADMIN_URL,
    SERVICES,
    Environment,
    RegistrySettings,
    UnsafeConfiguration,
    load_settings,
)
from registry_common.tables import chassis_metadata


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


async def ensure_roles_and_database(settings: RegistrySettings) -> None:
    """Create ``<svc>_owner``, ``<svc>_app`` and the database if missing (as the administrator)."""
    owner, app = f"{settings.service}_owner", f"{settings.service}_app"
    admin = await asyncpg.connect(asyncpg_dsn(settings.admin_database_url))
    try:
        for role in (owner, app):
            # CREATE ROLE has no IF NOT EXISTS; concurrent provisioners may race, so tolerate it.
            if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                try:
                    await admin.execute(f"CREATE ROLE {_quote(role)} LOGIN")
                except asyncpg.DuplicateObjectError:
                    pass
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", settings.db_name):
            try:
                await admin.execute(f"CREATE DATABASE {_quote(settings.db_name)} OWNER {_quote(owner)}")
            except asyncpg.DuplicateDatabaseError:
                pass
        await admin.execute(f"REVOKE ALL ON DATABASE {_quote(settings.db_name)} FROM PUBLIC")
        await admin.execute(f"GRANT CONNECT ON DATABASE {_quote(settings.db_name)} TO {_quote(app)}")
    finally:
        await admin.close()
    # The public schema belongs to the database owner (PostgreSQL 15 default is pg_database_owner).


def alembic_config(definition: ServiceDefinition) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("registry_common") / "migrations"))
    locations = [str(resources.files("registry_common") / "migrations" / "versions")]
    if definition.migrations_dir is not None and definition.migrations_dir.is_dir():
        locations.append(str(definition.migrations_dir))
    config.set_main_option("version_locations", " ".join(locations))
    config.set_main_option("path_separator", "space")
    targets: list[MetaData] = [chassis_metadata]
    if definition.metadata is not None:
        targets.append(definition.metadata)
    config.attributes["target_metadata"] = targets
    return config


def migration_checker(definition: ServiceDefinition) -> Any:
    """A function of a (sync) connection telling whether every revision of the service, chassis branch
    included, is applied. Alembic stores only the heads, so the applied set is their ancestry."""
    script = ScriptDirectory.from_config(alembic_config(definition))
    every_revision = {r.revision for r in script.walk_revisions()}

    def at_head(connection: Connection) -> bool:
        heads = MigrationContext.configure(connection).get_current_heads()
        applied = {r.revision for r in script.revision_map.iterate_revisions(heads, "base")} if heads else set()
        return applied == every_revision

    return at_head


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "heads")


async def migrate(settings: RegistrySettings, definition: ServiceDefinition) -> None:
    """Upgrade to every head as the owner, then grant the app role what it may do."""
    app = _quote(f"{settings.service}_app")
    engine = make_engine(settings.owner_database_url, pool_size=0, application_name="migrate")
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727271)")  # one migrator at a time
            await conn.run_sync(_upgrade, alembic_config(definition))
            await conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {app}")
            await conn.exec_driver_sql(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {app}"
            )
            await conn.exec_driver_sql(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app}")
            await conn.exec_driver_sql(f"REVOKE INSERT, UPDATE, DELETE ON alembic_version FROM {app}")
            append_only = (
                await conn.exec_driver_sql(
                    "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                    f"WHERE t.tgname = '{APPEND_ONLY_TRIGGER}'"
                )
            ).scalars()
            for table in append_only:
                await conn.exec_driver_sql(f"REVOKE UPDATE, DELETE, TRUNCATE ON {_quote(table)} FROM {app}")
    finally:
        await engine.dispose()


async def run_as_owner(settings: RegistrySettings, work: Any) -> None:
    """Run ``work(conn, settings)`` in one transaction as the service's owner role."""
    engine = make_engine(settings.owner_database_url, pool_size=0, application_name="provision")
    try:
        async with engine.begin() as conn:
            await work(conn, settings)
    finally:
        await engine.dispose()


async def initialise_clock(settings: RegistrySettings, offset_us: int) -> None:
    """Give a new database its first programme clock (version 1). Never moves an existing clock."""

    async def insert_clock(conn: AsyncConnection, _settings: RegistrySettings) -> None:
        await conn.execute(
            text("INSERT INTO programme_clock (id, offset_us, version) VALUES (1, :offset, 1) "
                 "ON CONFLICT (id) DO NOTHING"),
            {"offset": offset_us},
        )

    await run_as_owner(settings, insert_clock)


def initial_offset_us(settings: RegistrySettings) -> int:
    start = settings.programme_start
    if start is None:
        return 0
    return int((start - datetime.now(UTC)).total_seconds() * 1_000_000)


async def provision_definitions(definitions: list[ServiceDefinition], **overrides: object) -> None:
    """Roles, databases, migrations and the initial clock for each service; then the broker topology.
    One offset is computed for the whole run so every service starts on the same programme time."""
    from registry_common.messaging.topology import declare_all

    offset: int | None = None
    for definition in definitions:
        settings = definition.load_settings(**overrides)
        if settings.environment is Environment.PRODUCTION and settings.admin_database_url == DEFAULT_ADMIN_URL:
            raise UnsafeConfiguration("REGISTRY_ADMIN_DATABASE_URL must be set to provision in production")
        await ensure_roles_and_database(settings)
        await migrate(settings, definition)
        offset = initial_offset_us(settings) if offset is None else offset
        await initialise_clock(settings, offset)
        if definition.provision_hook is not None:
            await run_as_owner(settings, definition.provision_hook)
    await declare_all(load_settings("gateway", **overrides), definitions)


async def provision(services: list[str], **overrides: object) -> None:
    await provision_definitions([load_definition(s) for s in services], **overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("services", nargs="*", help=f"any of: {', '.join(SERVICES)}")
    parser.add_argument("--all", action="store_true", help="every domain service")
    args = parser.parse_args()
    services = list(SERVICES) if args.all else args.services
    unknown = set(services) - set(SERVICES)
    if not services or unknown:
        parser.error(f"name services ({', '.join(SERVICES)}) or pass --all; unknown: {sorted(unknown)}")
    asyncio.run(provision(services))
    print(f"provisioned: {', '.join(services)}")


if __name__ == "__main__":
    main()
