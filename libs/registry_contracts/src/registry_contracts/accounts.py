"""Events owned by accounts. Consumers keep read models of users (e-mail, language, roles)."""

from __future__ import annotations

from uuid import UUID

from registry_contracts.base import Event


class UserRegistered(Event):
    TYPE = "accounts.user_registered"
    VERSION = 1
    user_id: UUID
    username: str
    display_name: str
    email: str
    language: str
    roles: list[str]
    active: bool = True


class UserUpdated(Event):
    """The user's current state after any change (details, roles, reactivation)."""

    TYPE = "accounts.user_updated"
    VERSION = 1
    user_id: UUID
    username: str
    display_name: str
    email: str
    language: str
    roles: list[str]
    active: bool


class UserDeactivated(Event):
    TYPE = "accounts.user_deactivated"
    VERSION = 1
    user_id: UUID
    username: str
    reason: str | None = None
