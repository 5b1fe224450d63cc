"""Transfers' own settings (``REGISTRY_`` prefix, like the chassis)."""

from __future__ import annotations

from pydantic import Field

from registry_common.settings import RegistrySettings


class TransfersSettings(RegistrySettings):
    acceptance_window_seconds: float = Field(default=24 * 3600, gt=0, description="receiver must accept within")
    sender_approval_window_seconds: float = Field(default=24 * 3600, gt=0)
    reminder_hours: str = Field(default="12,2", description="reminders this many hours before the deadline")
    sweep_interval_seconds: float = Field(default=1.0, gt=0)
    stuck_after_seconds: float = Field(default=300, gt=0, description="reconciliation: not final after this")
