"""Events owned by auctions (ARCHITECTURE.md: ``auction_scheduled``, ``auction_results_approved`` per
bidder, ``award_forfeited``)."""

from __future__ import annotations
