"""Identity rules, free of I/O: who may sign in, when a user is locked, how long a failure is slowed,
what a valid user name and password look like."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
MIN_PASSWORD_LENGTH = 12


class SignInOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    WRONG_PASSWORD = "wrong_password"
    UNKNOWN_USER = "unknown_user"
    LOCKED = "locked"
    DEACTIVATED = "deactivated"


@dataclass(frozen=True)
class LoginPolicy:
    max_failures: int
    lock_for: timedelta
    slowdown_base_seconds: float
    slowdown_max_seconds: float

    def is_locked(self, locked_until: datetime | None, now: datetime) -> bool:
        return locked_until is not None and now < locked_until

    def after_failure(self, failures_before: int, now: datetime) -> tuple[int, datetime | None]:
        """The failure count after one more wrong password, and the lock it brings, if any."""
        failures = failures_before + 1
        return failures, (now + self.lock_for if failures >= self.max_failures else None)

    def slowdown(self, failures: int) -> float:
        """Seconds to hold a failed answer: doubling with each consecutive failure, capped."""
        if failures <= 0 or self.slowdown_base_seconds == 0:
            return 0.0
        return min(self.slowdown_base_seconds * 2 ** (failures - 1), self.slowdown_max_seconds)


def password_problem(password: str, username: str) -> str | None:
    """Why a new password is not acceptable, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return "too_short"
    if username.lower() in password.lower():
        return "contains_username"
    if len(set(password)) < 6:
        return "too_simple"
    return None
