"""Accounts' own settings (same ``REGISTRY_`` prefix and rules as the chassis)."""

from __future__ import annotations

from pydantic import Field

from registry_common.settings import RegistrySettings


class AccountsSettings(RegistrySettings):
    access_token_minutes: float = Field(default=15, gt=0)
    refresh_token_hours: float = Field(default=12, gt=0)
    login_max_failures: int = Field(default=10, ge=1, description="consecutive failures before a lock")
    login_lock_minutes: float = Field(default=15, gt=0)
    login_slowdown_base_seconds: float = Field(default=0.25, ge=0, description="delay after a failure, doubling")
    login_slowdown_max_seconds: float = Field(default=3.0, ge=0)
    reserves: str = Field(default="price_containment,new_entrants",
                          description="named reserves, comma-separated: one system account SYS-RES-<NAME> each")
    bootstrap_admin_username: str = "admin"
    bootstrap_admin_password: str | None = Field(default=None, repr=False)
