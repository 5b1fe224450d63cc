"""Accounts' own settings (same ``REGISTRY_`` prefix and rules as the chassis)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from registry_common.settings import Environment, RegistrySettings, UnsafeConfiguration


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

    # Journal tamper evidence (accounts/journal_seal.py)
    journal_seal_batch_size: int = Field(default=5000, ge=1, description="journal rows sealed per transaction")
    journal_seal_settle_seconds: float = Field(default=30, ge=0,
                                               description="after this, only ids above the sealed floor are scanned")
    journal_seal_full_sweep_seconds: float = Field(default=300, gt=0,
                                                   description="full scan for rows of long transactions")
    journal_seal_grace_seconds: float = Field(default=60, ge=0, description="verify: older unsealed rows are a warning")
    journal_checkpoint_interval_seconds: float = Field(default=60, ge=0)
    journal_checkpoint_dir: Path | None = Field(default=None, description="default: var/checkpoints/<database>/")
    journal_checkpoint_key: SecretStr | None = Field(default=None, repr=False)

    @model_validator(mode="after")
    def _checkpoint_key_in_production(self) -> AccountsSettings:
        if self.environment is Environment.PRODUCTION and self.journal_checkpoint_key is None:
            raise UnsafeConfiguration("REGISTRY_JOURNAL_CHECKPOINT_KEY must be set in production")
        return self
