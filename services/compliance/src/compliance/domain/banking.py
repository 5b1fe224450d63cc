"""Banking between periods and the end of the programme as pure rules (seed function h), free of I/O.

- **Banking**: units not used stay in their accounts for the next period, up to ``share`` of each
  account's holdings at the period's close (default 100 %: everything is banked); above it the excess is
  cancelled, oldest vintage first, lowest serials first.
- **End of the programme**: after the final period's evaluation every remaining participant unit of the
  programme's vintages is cancelled.

Both only *preview* here: the exact serial blocks per account, which a published preview lists and the
cancellation, after the notice and a second person's approval, then moves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal


@dataclass(frozen=True)
class HeldBlock:
    account_id: str
    unit_type: str
    vintage: int
    start: int
    end: int  # inclusive

    @property
    def quantity(self) -> int:
        return self.end - self.start + 1


def banked_limit(holdings: int, share: Decimal) -> int:
    return int((Decimal(holdings) * share).to_integral_value(rounding=ROUND_FLOOR))


def banking_excess(blocks: Iterable[HeldBlock], share: Decimal) -> list[HeldBlock]:
    """Per account, what is above ``share`` of its holdings: oldest vintage first, lowest serials first."""
    if not Decimal(0) <= share <= Decimal(1):
        raise ValueError("the banking share is between 0 and 1")
    by_account: dict[str, list[HeldBlock]] = defaultdict(list)
    for block in blocks:
        by_account[block.account_id].append(block)
    taken: list[HeldBlock] = []
    for account_id in sorted(by_account):
        held = sorted(by_account[account_id], key=lambda b: (b.vintage, b.start))
        excess = sum(b.quantity for b in held) - banked_limit(sum(b.quantity for b in held), share)
        for block in held:
            if excess <= 0:
                break
            count = min(excess, block.quantity)
            taken.append(HeldBlock(account_id, block.unit_type, block.vintage, block.start, block.start + count - 1))
            excess -= count
    return taken


def programme_units(blocks: Iterable[HeldBlock], vintages: Iterable[int]) -> list[HeldBlock]:
    """Every block of the programme's vintages, per account."""
    wanted = set(vintages)
    return sorted((b for b in blocks if b.vintage in wanted), key=lambda b: (b.account_id, b.vintage, b.start))


def per_account(blocks: Iterable[HeldBlock]) -> dict[str, list[HeldBlock]]:
    grouped: dict[str, list[HeldBlock]] = defaultdict(list)
    for block in blocks:
        grouped[block.account_id].append(block)
    return dict(sorted(grouped.items()))
