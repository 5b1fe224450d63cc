"""What the auctions service brings to the chassis: auction calendar, sealed bids, clearing and settlement.
Its business logic arrives with its issue; today it runs on the chassis alone."""

from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(name="auctions")
