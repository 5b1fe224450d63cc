"""Issuance's own settings (same ``REGISTRY_`` prefix and rules as the chassis)."""

from __future__ import annotations

from pydantic import Field

from registry_common.settings import RegistrySettings


class IssuanceSettings(RegistrySettings):
    programme_timezone: str = Field(default="America/Mexico_City",
                                    description="programme dates are local to this zone and stored in UTC")
    programme: str | None = Field(
        default=None,
        description="the periods provisioning creates: 'pilot' (2020, 2021, 2022, the last final), 'none', or a "
                    "JSON list of periods (see issuance.domain.periods.PeriodSpec); default: 'pilot' except in "
                    "production, where the authority defines the programme")
    reserves: str = Field(default="price_containment,new_entrants",
                          description="named reserves (same setting as accounts): SYS-RES-<NAME> each")
    allocation_max_rows: int = Field(default=20_000, ge=1, description="data rows an allocation file may have")
    allocation_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="size of an uploaded file")
    allocation_max_uncompressed_bytes: int = Field(default=100 * 1024 * 1024, ge=1,
                                                   description="total uncompressed size of the .xlsx's parts")
    allocation_batch_lines: int = Field(default=1000, ge=1, le=1000, description="lines per move_units_batch")
    approval_ttl_hours: float = Field(default=168, gt=0)
