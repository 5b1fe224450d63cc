"""registry_common.settings.RegistrySettings: development defaults, and the configurations production
refuses (the refusal is an UnsafeConfiguration, surfaced by pydantic as a ValidationError)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from registry_common.settings import (
    SERVICES,
    Environment,
    RegistrySettings,
    UnsafeConfiguration,
    load_settings,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's REGISTRY_* variables must not leak into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("REGISTRY_"):
            monkeypatch.delenv(name)


def production(**overrides: Any) -> dict[str, Any]:
    """A complete, acceptable production configuration, with ``overrides`` applied."""
    values: dict[str, Any] = {
        "environment": "production",
        "service": "accounts",
        "database_url": "postgresql+asyncpg://accounts_app:pw@db.internal:5432/registry_accounts",
        "amqp_url": "amqps://registry:pw@mq.internal:5671/",
        "jwt_public_key_file": Path("/etc/registry/jwt_public.pem"),
        "admin_database_url": "postgresql://admin:pw@db.internal:5432/postgres",
    }
    values.update(overrides)
    return values


def refusal(**overrides: Any) -> str:
    """Build a production configuration that must be refused; return the refusal's message."""
    with pytest.raises(ValidationError) as caught:
        RegistrySettings(**production(**overrides))
    errors = caught.value.errors()
    assert len(errors) == 1, errors
    cause = errors[0].get("ctx", {}).get("error")
    assert isinstance(cause, UnsafeConfiguration), errors
    return str(cause)


# Development ------------------------------------------------------------------------------------
def test_development_is_the_default() -> None:
    settings = RegistrySettings(service="accounts")
    assert settings.environment is Environment.DEVELOPMENT
    assert settings.clock_control is False
    assert settings.faults == ""


@pytest.mark.parametrize("service", SERVICES)
def test_development_derives_urls_per_service(service: str) -> None:
    settings = RegistrySettings(service=service)
    assert settings.db_name == f"registry_{service}"
    assert settings.app_database_url == (
        f"postgresql+asyncpg://{service}_app@127.0.0.1:5432/registry_{service}"
    )
    assert settings.owner_database_url == (
        f"postgresql+asyncpg://{service}_owner@127.0.0.1:5432/registry_{service}"
    )


def test_prefix_host_and_port_feed_the_derived_urls() -> None:
    settings = RegistrySettings(service="transfers", database_prefix="t0abc_", database_host="db",
                                database_port=6543)
    assert settings.db_name == "t0abc_transfers"
    assert settings.app_database_url == "postgresql+asyncpg://transfers_app@db:6543/t0abc_transfers"
    assert settings.owner_database_url == "postgresql+asyncpg://transfers_owner@db:6543/t0abc_transfers"


def test_explicit_urls_win_over_derived_ones() -> None:
    settings = RegistrySettings(service="issuance", database_url="postgresql+asyncpg://a@h/x",
                                migration_database_url="postgresql+asyncpg://o@h/x")
    assert settings.app_database_url == "postgresql+asyncpg://a@h/x"
    assert settings.owner_database_url == "postgresql+asyncpg://o@h/x"


def test_values_are_read_from_registry_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_DATABASE_PREFIX", "envprefix_")
    monkeypatch.setenv("REGISTRY_CONSUMER_MAX_ATTEMPTS", "9")
    monkeypatch.setenv("REGISTRY_CLOCK_CONTROL", "true")
    settings = load_settings("compliance")
    assert settings.service == "compliance"
    assert settings.db_name == "envprefix_compliance"
    assert settings.consumer_max_attempts == 9
    assert settings.clock_control is True


def test_empty_environment_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_DATABASE_PREFIX", "")
    assert RegistrySettings(service="auctions").db_name == "registry_auctions"


def test_development_and_test_allow_clock_control_and_faults() -> None:
    for environment in ("development", "test"):
        settings = RegistrySettings(environment=environment, service="issuance", clock_control=True,
                                    faults="after_commit_before_ack=raise")
        assert settings.clock_control is True
        assert settings.faults == "after_commit_before_ack=raise"


def test_key_paths_default_under_the_repository() -> None:
    settings = RegistrySettings(service="accounts")
    assert settings.public_key_path.parts[-3:] == ("var", "secrets", "jwt_public.pem")
    assert settings.private_key_path.parts[-3:] == ("var", "secrets", "jwt_private.pem")
    assert (settings.public_key_path.parents[2] / "libs" / "registry_common").is_dir()
    explicit = RegistrySettings(service="accounts", jwt_public_key_file=Path("/k/pub.pem"))
    assert explicit.public_key_path == Path("/k/pub.pem")


# programme_start ------------------------------------------------------------------------------------
def test_programme_start_defaults_to_the_pilot_in_development() -> None:
    start = RegistrySettings(service="issuance").programme_start
    assert start == datetime.fromisoformat("2020-01-01T00:00:00-06:00")
    assert start is not None and start.utcoffset() is not None
    assert start.utcoffset().total_seconds() == -6 * 3600  # type: ignore[union-attr]


def test_programme_start_has_no_default_outside_development() -> None:
    assert RegistrySettings(environment="test", service="issuance").programme_start is None
    assert RegistrySettings(**production(service="issuance")).programme_start is None


def test_programme_start_follows_clock_start() -> None:
    chosen = datetime.fromisoformat("2031-06-01T12:00:00+00:00")
    assert RegistrySettings(service="issuance", clock_start=chosen).programme_start == chosen
    assert RegistrySettings(environment="test", service="issuance",
                            clock_start=chosen).programme_start == chosen


def test_clock_start_must_carry_a_timezone() -> None:
    with pytest.raises(ValidationError):
        RegistrySettings(service="issuance", clock_start=datetime(2020, 1, 1))


# Production ---------------------------------------------------------------------------------------
def test_a_fully_specified_production_configuration_is_accepted() -> None:
    settings = RegistrySettings(**production())
    assert settings.environment is Environment.PRODUCTION
    assert settings.app_database_url == production()["database_url"]


def test_production_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in production().items():
        monkeypatch.setenv(f"REGISTRY_{key.upper()}", str(value))
    settings = RegistrySettings()
    assert settings.environment is Environment.PRODUCTION
    assert settings.jwt_public_key_file == Path("/etc/registry/jwt_public.pem")


def test_production_refuses_clock_control() -> None:
    assert "REGISTRY_CLOCK_CONTROL" in refusal(clock_control=True)


def test_production_refuses_faults() -> None:
    assert "REGISTRY_FAULTS" in refusal(faults="after_commit_before_ack=exit")


def test_production_refuses_a_missing_database_url() -> None:
    message = refusal(database_url=None)
    assert "REGISTRY_DATABASE_URL must be set" in message


def test_production_refuses_the_guest_broker_account() -> None:
    message = refusal(amqp_url="amqp://guest:guest@mq.internal:5672/")
    assert "REGISTRY_AMQP_URL" in message


def test_production_refuses_the_default_broker_url() -> None:
    values = production()
    del values["amqp_url"]
    with pytest.raises(ValidationError, match="REGISTRY_AMQP_URL"):
        RegistrySettings(**values)


def test_production_refuses_a_missing_public_key() -> None:
    assert "REGISTRY_JWT_PUBLIC_KEY_FILE" in refusal(jwt_public_key_file=None)


def test_production_lists_every_problem_at_once() -> None:
    message = refusal(clock_control=True, faults="after_commit_before_ack=raise", jwt_public_key_file=None)
    for variable in ("REGISTRY_CLOCK_CONTROL", "REGISTRY_FAULTS", "REGISTRY_JWT_PUBLIC_KEY_FILE"):
        assert variable in message
    assert "REGISTRY_AMQP_URL" not in message
    assert "REGISTRY_DATABASE_URL" not in message


def test_production_with_only_defaults_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        RegistrySettings(environment="production", service="accounts")
    text = str(caught.value)
    for variable in ("REGISTRY_DATABASE_URL", "REGISTRY_AMQP_URL", "REGISTRY_JWT_PUBLIC_KEY_FILE"):
        assert variable in text


def test_unsafe_configuration_is_a_value_error() -> None:
    assert issubclass(UnsafeConfiguration, ValueError)
