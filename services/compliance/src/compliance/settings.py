"""Compliance's own settings (``REGISTRY_`` prefix, like the chassis): the rules of comparable systems as
configuration, defaulting to the pilot's."""

from __future__ import annotations

from decimal import Decimal

from pydantic import Field

from registry_common.settings import RegistrySettings


class ComplianceSettings(RegistrySettings):
    auto_evaluate: bool = Field(default=True, description="evaluate each period when its surrender deadline passes")
    offset_limit_share: Decimal = Field(default=Decimal("0.08"), ge=0, le=1,
                                        description="offset credits count up to this share of the obligation")
    penalty_enabled: bool = Field(default=False, description="carry missing units, plus the extra, to the next period")
    penalty_extra_per_missing: int = Field(default=3, ge=0, description="California–Québec: 3 extra per missing unit")
    intermediate_share: Decimal = Field(
        default=Decimal("0"), ge=0, le=1,
        description="multi-year periods: share of each intermediate year's attested emissions surrendered by 1 "
                    "November of the year after it (California: 0.30); 0 = off")
    evaluate_interval_seconds: float = Field(default=1.0, gt=0)
    banking_share: Decimal = Field(default=Decimal("1"), ge=0, le=1,
                                   description="share of each account's holdings banked to the next period")
    cancellation_notice_seconds: float = Field(default=14 * 86400, ge=0,
                                               description="a cancellation preview is published this long first")
    approval_ttl_hours: float = Field(default=72, gt=0)
