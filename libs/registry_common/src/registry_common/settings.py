"""Settings: one pattern for every process, read from the environment (prefix ``REGISTRY_``).

Every value has a documented localhost default that works on a development machine. Outside the
``development`` and ``test`` environments those defaults are refused: a production process must be told
where its database and broker are, and may not run with clock control or fault points enabled.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import AwareDatetime, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES: tuple[str, ...] = ("accounts", "issuance", "transfers", "compliance", "auctions", "notifications")
"""The six domain services. Each owns one database; the gateway owns none."""

REPO_ROOT = Path(__file__).resolve().parents[4]
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Environment(StrEnum):
    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class UnsafeConfiguration(ValueError):
    """A configuration that must not run in the environment it names."""


class RegistrySettings(BaseSettings):
    """The chassis settings. Services subclass it to add their own (same prefix, same rules)."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", env_ignore_empty=True, extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    service: str = Field(default="", description="which service this process belongs to")

    # Databases. The process runs as <service>_app; migrations run as <service>_owner.
    database_url: str | None = Field(default=None, description="default: <service>_app on 127.0.0.1")
    migration_database_url: str | None = Field(default=None, description="default: <service>_owner")
    database_prefix: str = Field(default="registry_", description="databases are <prefix><service>")
    database_host: str = "127.0.0.1"
    database_port: int = 5432
    admin_database_url: str = DEFAULT_ADMIN_URL
    api_pool_size: int = 5
    worker_pool_size: int = 10

    # Broker. ``namespace`` prefixes every exchange and queue name (test runs use a unique one).
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    namespace: str = ""
    prefetch: int = 20

    # Consumers: attempts before a message goes to dead_letters, and the back-off between them.
    consumer_max_attempts: int = 5
    consumer_retry_base_seconds: float = 1.0
    consumer_retry_max_seconds: float = 300.0
    # Deliveries that arrive while a transaction runs are applied together in the next one, at most this
    # many (1 = each in its own transaction); a batch that fails is applied again message by message.
    consumer_batch_size: int = Field(default=20, ge=1, le=500)

    # Outbox relay.
    relay_batch_size: int = 500
    relay_poll_seconds: float = 1.0
    relay_ready_lag_seconds: float = 30.0

    # Where other services' APIs are, for pre-checks and reconciliations (never for truth).
    accounts_api_url: str = "http://127.0.0.1:8001"

    # HTTP.
    http_host: str = "127.0.0.1"
    http_port: int = 8000
    worker_http_port: int = 0
    log_level: str = "INFO"
    log_json: bool = True

    # Identity: tokens are signed by accounts with the private key, verified everywhere with the public.
    jwt_public_key_file: Path | None = None
    jwt_private_key_file: Path | None = None
    jwt_issuer: str = "registro-mx"
    jwt_audience: str = "registro-mx"

    # The programme clock.
    clock_control: bool = False
    clock_start: AwareDatetime | None = None
    clock_refresh_seconds: float = 0.5
    programme_timezone: str = "America/Mexico_City"

    # Named fault points, e.g. "after_commit_before_ack=exit" (refused in production).
    faults: str = ""
    fault_marker_dir: Path | None = None

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Self:
        if self.environment is not Environment.PRODUCTION:
            return self
        problems = []
        if self.clock_control:
            problems.append("REGISTRY_CLOCK_CONTROL must be false in production")
        if self.faults:
            problems.append("REGISTRY_FAULTS must be empty in production")
        if self.service and self.service != "gateway" and not self.database_url:
            problems.append("REGISTRY_DATABASE_URL must be set in production")
        if "guest:guest@" in self.amqp_url:
            problems.append("REGISTRY_AMQP_URL must not use the guest account in production")
        if self.jwt_public_key_file is None:
            problems.append("REGISTRY_JWT_PUBLIC_KEY_FILE must be set in production")
        if problems:
            raise UnsafeConfiguration("; ".join(problems))
        return self

    # Derived values -----------------------------------------------------------------------------
    @property
    def db_name(self) -> str:
        return f"{self.database_prefix}{self.service}"

    def role_url(self, role: str) -> str:
        return (
            f"postgresql+asyncpg://{role}@{self.database_host}:{self.database_port}/{self.db_name}"
        )

    @property
    def app_database_url(self) -> str:
        return self.database_url or self.role_url(f"{self.service}_app")

    @property
    def owner_database_url(self) -> str:
        return self.migration_database_url or self.role_url(f"{self.service}_owner")

    @property
    def public_key_path(self) -> Path:
        return self.jwt_public_key_file or REPO_ROOT / "var" / "secrets" / "jwt_public.pem"

    @property
    def private_key_path(self) -> Path:
        return self.jwt_private_key_file or REPO_ROOT / "var" / "secrets" / "jwt_private.pem"

    @property
    def programme_start(self) -> datetime | None:
        """Where a fresh programme clock starts. Development defaults to the pilot, 1 Jan 2020."""
        if self.clock_start is not None:
            return self.clock_start
        if self.environment is Environment.DEVELOPMENT:
            return datetime.fromisoformat("2020-01-01T00:00:00-06:00")
        return None


def load_settings(service: str, **overrides: object) -> RegistrySettings:
    """Chassis settings for a process without a service definition (the gateway, tools)."""
    return RegistrySettings(service=service, **overrides)  # type: ignore[arg-type]
