"""Proportional non-onerous allocation (seed 003), in integer arithmetic on hundredths of MWh.

``share_i = floor(B × c_i / C_national)`` for the eligible participants, 0 for the others; the
remainder ``B − Σ share_i`` stays in the authority's account and is reported. Consumptions are parsed
from text or numbers with :class:`decimal.Decimal` and must have at most two decimals: never a float.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

HUNDRED = Decimal(100)


class ConsumptionError(ValueError):
    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


def parse_hundredths(value: object) -> int:
    """MWh with at most two decimals → hundredths of MWh (an int). Codes: ``not_a_number``,
    ``negative``, ``too_many_decimals``."""
    if isinstance(value, bool) or value is None:
        raise ConsumptionError("not_a_number")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))  # the shortest text that round-trips: what the cell shows
    elif isinstance(value, (str, Decimal)):
        text = str(value).strip().replace(",", "") if isinstance(value, str) else value
        try:
            number = Decimal(text)
        except InvalidOperation as exc:
            raise ConsumptionError("not_a_number") from exc
    else:
        raise ConsumptionError("not_a_number")
    if not number.is_finite():
        raise ConsumptionError("not_a_number")
    if number < 0:
        raise ConsumptionError("negative")
    scaled = number * HUNDRED
    if scaled != scaled.to_integral_value():
        raise ConsumptionError("too_many_decimals")
    return int(scaled)


def format_hundredths(value: int) -> str:
    return f"{value // 100}.{value % 100:02d}"


@dataclass(frozen=True)
class Participant:
    id: str
    consumption: int  # hundredths of MWh
    eligible: bool


@dataclass(frozen=True)
class ProportionalResult:
    shares: dict[str, int]
    allocated: int
    remainder: int
    eligible_consumption: int  # hundredths of MWh


def proportional_shares(budget: int, national: int, participants: Sequence[Participant]) -> ProportionalResult:
    """``budget`` units shared by ``national`` (hundredths of MWh): each eligible participant gets
    ``budget * consumption // national``. The eligible consumption may not exceed the national one."""
    if budget < 0:
        raise ValueError("budget must not be negative")
    if national <= 0:
        raise ValueError("national consumption must be positive")
    eligible = sum(p.consumption for p in participants if p.eligible)
    if eligible > national:
        raise ValueError("eligible consumption exceeds the national consumption")
    shares = {p.id: (budget * p.consumption // national if p.eligible else 0) for p in participants}
    allocated = sum(shares.values())
    return ProportionalResult(shares=shares, allocated=allocated, remainder=budget - allocated,
                              eligible_consumption=eligible)


def remainder_bounds(budget: int, national: int, eligible: int, participants: int) -> tuple[int, int]:
    """For any split of ``eligible`` among ``participants`` eligible participants, the remainder lies in
    this closed interval (each floor loses less than one unit)."""
    exact_floor = budget * eligible // national  # Σ floors ≤ floor(Σ) ≤ Σ floors + participants − 1
    low = budget - exact_floor
    return low, low + participants - 1
