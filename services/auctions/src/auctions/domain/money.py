"""Money as the API speaks it (decimal strings, whole cents, a currency) and as the auction computes it
(integer cents). Pure."""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal, InvalidOperation

from auctions.domain.rules import AuctionRefusal

_AMOUNT = re.compile(r"^-?\d{1,12}(\.\d{1,2})?$")
_SHARE = re.compile(r"^\d(\.\d{1,6})?$")
CURRENCY = re.compile(r"^[A-Z]{3}$")


def parse_cents(value: object, *, field: str, code: str = "auction.invalid_price") -> int:
    """``"16.68"`` → 1668. Refuses anything but a plain decimal in whole cents (no exponent, no third
    decimal, no sign other than a leading minus, which the caller then refuses as not positive)."""
    text = str(value).strip() if isinstance(value, (str, int)) and not isinstance(value, bool) else None
    if text is None or not _AMOUNT.match(text):
        raise AuctionRefusal(code, field=field, value=str(value))
    return int(Decimal(text) * 100)


def format_cents(cents: int | None) -> str | None:
    if cents is None:
        return None
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    return f"{sign}{cents // 100}.{cents % 100:02d}"


def parse_share(value: object, *, field: str = "purchase_limit_share") -> Decimal:
    """A share of the lot, ``0 < share ≤ 1``, e.g. ``"0.25"``."""
    text = str(value).strip() if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""
    try:
        share = Decimal(text) if _SHARE.match(text) else None
    except InvalidOperation:
        share = None
    if share is None or not (Decimal(0) < share <= Decimal(1)):
        raise AuctionRefusal("auction.invalid_purchase_limit", field=field, value=str(value))
    return share


def share_of(quantity: int, share: Decimal, lot_size: int) -> int:
    """The units a share of the lot allows one bidder, rounded down to whole lots."""
    units = int((Decimal(quantity) * share).to_integral_value(rounding=ROUND_DOWN))
    return units - units % lot_size


def ratio(numerator: int, denominator: int) -> str:
    """A ratio with two decimals, rounded down (bid-to-cover)."""
    if denominator <= 0:
        return "0.00"
    hundredths = numerator * 100 // denominator
    return f"{hundredths // 100}.{hundredths % 100:02d}"
