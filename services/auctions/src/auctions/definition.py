"""What the auctions service brings to the chassis: sealed-bid, single-round, uniform-price auctions with
reserve price and purchase limits, consigned and approved with four eyes and settled in the ledger."""

from pathlib import Path

from auctions.api_auctions import public_router, router
from auctions.service import SUBSCRIPTIONS, sweep
from auctions.settings import AuctionsSettings
from auctions.tables import metadata
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="auctions",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[router, public_router],
    subscriptions=SUBSCRIPTIONS,
    periodic_tasks=[("sweeper", "sweep_interval_seconds", sweep)],
    settings_class=AuctionsSettings,
)
