"""Auctions' own settings (``REGISTRY_`` prefix, like the chassis)."""

from __future__ import annotations

from pydantic import Field

from registry_common.settings import RegistrySettings


class AuctionsSettings(RegistrySettings):
    auctions_from_period: int = Field(
        default=2, ge=1, description="auctions are allowed from this period of the programme on (1-based): the "
                                     "bidding window may not open before it starts")
    auction_advance_vintages: int = Field(
        default=0, ge=0, description="future vintages an auction may offer: at most this many years after the "
                                     "vintage of the period the window opens in (0: current and earlier only)")
    auction_default_lot_size: int = Field(default=1000, ge=1, description="bid quantities are multiples of it")
    reserves: str = Field(default="price_containment,new_entrants",
                          description="named reserves (same setting as accounts): SYS-RES-<NAME> each")
    approval_ttl_hours: float = Field(default=168, gt=0)
    sweep_interval_seconds: float = Field(default=1.0, gt=0,
                                          description="forfeits unpaid awards after the payment deadline")
