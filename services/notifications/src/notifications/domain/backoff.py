"""Exponential back-off of deliveries: base, 2·base, 4·base, ... capped; given up after a deadline."""

from __future__ import annotations

from datetime import datetime, timedelta


def retry_delay(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the first)."""
    if attempt < 1:
        return 0.0
    return min(cap, base * 2 ** min(attempt - 1, 60))


def next_attempt(now: datetime, attempt: int, base: float, cap: float, give_up_at: datetime) -> datetime | None:
    """When to try again, or None to give up (the next try would fall after ``give_up_at``)."""
    when = now + timedelta(seconds=retry_delay(attempt, base, cap))
    return None if when > give_up_at else when


def schedule(attempts: int, base: float, cap: float) -> list[float]:
    """The delays after each of the first ``attempts`` failures (for documentation and tests)."""
    return [retry_delay(n, base, cap) for n in range(1, attempts + 1)]
