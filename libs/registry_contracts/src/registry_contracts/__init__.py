"""The message catalogue: versioned Pydantic models only, no behaviour.

Routing key ``<owner>.<snake_name>.v<major>``; the producer owns an event, the handling service a
command. Additive optional fields keep the version; anything else is a new class with a new version.
"""

from registry_contracts import (  # noqa: F401  (every module registers its messages)
    accounts,
    auctions,
    compliance,
    issuance,
    transfers,
)
from registry_contracts.base import CATALOGUE, Command, Event, Message, message_class

__all__ = ["CATALOGUE", "Command", "Event", "Message", "message_class"]
