"""The allow-list: which public paths the gateway forwards, to which service, and who may call them.

A path not covered by a :class:`Route` is answered 404 by the gateway and never forwarded. Prefixes
match whole segments (``/api/v1/users`` covers ``/api/v1/users/42`` but not ``/api/v1/usersx``) and
the longest prefix wins. Routes needing no sign-in are an explicit, closed list (architecture, "Routes
every service shares"): token and refresh, and everything under ``/api/v1/public/``; the table refuses
any other public route.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from registry_common.auth import OVERSIGHT_ROLES
from registry_common.settings import SERVICES

PUBLIC_AREA = "/api/v1/public"
"""Everything under this prefix is public (a path no route covers still gets 404)."""

PUBLIC_ROUTE_PREFIXES = frozenset({"/api/v1/auth/token", "/api/v1/auth/refresh"})
"""Forwarded routes allowed to be public besides :data:`PUBLIC_AREA`."""

GATEWAY_PUBLIC_PATHS = frozenset(
    {"/health", "/ready", "/api/v1/health", "/openapi.json", "/docs", "/docs/oauth2-redirect"}
)
"""The gateway's own routes that need no sign-in (exact paths)."""

UI_AREA = "ui"
"""The browser front end (:mod:`gateway.ui`): ``/ui`` and every canonical path under ``/ui/`` is public.
It serves static files only; the pages sign in through ``/api/v1/auth/token`` like any other client."""

OVERSIGHT = tuple(sorted(OVERSIGHT_ROLES))


@dataclass(frozen=True)
class Route:
    prefix: str
    service: str
    public: bool = False
    roles: tuple[str, ...] | None = None
    """When set, the principal must hold one of these roles (checked at the gateway)."""

    def __post_init__(self) -> None:
        if not self.prefix.startswith("/api/v1/") or self.prefix.endswith("/") or "//" in self.prefix:
            raise ValueError(f"route prefix {self.prefix!r} must be /api/v1/... without a trailing slash")
        if any(part in {".", ".."} or "{" in part for part in self.prefix.split("/")):
            raise ValueError(f"route prefix {self.prefix!r} must be literal segments")
        if self.roles is not None:
            object.__setattr__(self, "roles", tuple(self.roles))
            if not self.roles:
                raise ValueError(f"route {self.prefix!r}: roles=() would admit nobody; use None")
        if self.public and self.roles:
            raise ValueError(f"route {self.prefix!r} cannot be public and role-restricted")


def in_public_area(path: str) -> bool:
    return path == PUBLIC_AREA or path.startswith(PUBLIC_AREA + "/")


def in_ui_area(path: str) -> bool:
    """``/ui``, ``/ui/`` or a canonical path below it (whole first segment: ``/uix`` is not; dot or empty
    segments never are)."""
    parts = segments(path)
    return parts is not None and parts[0] == UI_AREA


def segments(path: str) -> list[str] | None:
    """The path's segments, or None when the path is not in canonical form (empty, ``.`` or ``..``
    segments, no leading slash): such a path is never routed, so no upstream normalisation can move it
    from one route (or service, or role check) to another. One trailing slash is tolerated."""
    if not path.startswith("/"):
        return None
    parts = path[1:].split("/")
    if len(parts) > 1 and parts[-1] == "":
        parts = parts[:-1]
    if any(p in {"", ".", ".."} for p in parts):
        return None
    return parts


class RouteTable:
    def __init__(self, routes: Iterable[Route]):
        self.routes: tuple[Route, ...] = tuple(routes)
        self._by_segments: dict[tuple[str, ...], Route] = {}
        for route in self.routes:
            key = tuple(route.prefix[1:].split("/"))
            if key in self._by_segments:
                raise ValueError(f"route prefix {route.prefix!r} appears twice")
            allowed_public = route.prefix in PUBLIC_ROUTE_PREFIXES or in_public_area(route.prefix)
            if route.public and not allowed_public:
                raise ValueError(f"route {route.prefix!r} may not be public: the public list is closed")
            if in_public_area(route.prefix) and not route.public:
                raise ValueError(f"route {route.prefix!r} lies in {PUBLIC_AREA} and must be public")
            self._by_segments[key] = route
        self._longest = max((len(k) for k in self._by_segments), default=0)

    def match(self, path: str) -> Route | None:
        """The route with the longest prefix covering ``path`` on whole segments, or None."""
        parts = segments(path)
        if parts is None:
            return None
        for length in range(min(len(parts), self._longest), 0, -1):
            route = self._by_segments.get(tuple(parts[:length]))
            if route is not None:
                return route
        return None

    def is_public(self, path: str) -> bool:
        """Whether ``path`` needs no token: the gateway's public paths, the front end's static files, public
        routes, the public area."""
        if path in GATEWAY_PUBLIC_PATHS or in_public_area(path) or in_ui_area(path):
            return True
        route = self.match(path)
        return route is not None and route.public

    def services(self) -> list[str]:
        """The services some route leads to, in the order of ``SERVICES``."""
        used = {r.service for r in self.routes}
        return [s for s in SERVICES if s in used]


def default_routes() -> list[Route]:
    routes = [
        Route("/api/v1/auth/token", "accounts", public=True),
        Route("/api/v1/auth/refresh", "accounts", public=True),
        # Authenticated here; the accounts service makes the fine-grained role checks.
        Route("/api/v1/users", "accounts"),
        Route("/api/v1/programme", "issuance"),
        # Issuance: periods and cap generation, allocation tables, offset projects (writes: authority, checked there).
        Route("/api/v1/periods", "issuance", roles=OVERSIGHT),
        Route("/api/v1/allocation-tables", "issuance", roles=OVERSIGHT),
        Route("/api/v1/offset-projects", "issuance", roles=OVERSIGHT),
        # The unit ledger (accounts): holds, movements, freeze, audit; the history of one unit.
        Route("/api/v1/ledger", "accounts"),
        Route("/api/v1/units", "accounts", roles=OVERSIGHT),
        Route("/api/v1/transfers", "transfers"),
        # Auctions: the authority schedules, clears and approves, administrators qualify bidders and confirm
        # payments, installations and intermediaries apply and bid (each checked there); the published
        # summary of approved results needs no sign-in.
        Route("/api/v1/auctions", "auctions"),
        Route("/api/v1/public/auctions", "auctions", public=True),
        # Compliance: reports and attestation, surrender, evaluation and compliance reports (compliance checks
        # who may do what: representatives their installation, verifiers what they are asked to verify).
        Route("/api/v1/emission-reports", "compliance"),
        Route("/api/v1/surrenders", "compliance"),
        Route("/api/v1/compliance", "compliance"),
        Route("/api/v1/public/compliance", "compliance", public=True),  # each period's summary, once published
        # The current user's inbox and preferences; webhook subscriptions (notifications checks who may).
        Route("/api/v1/notifications", "notifications"),
        Route("/api/v1/webhook-subscriptions", "notifications"),
        # Accounts, their holders and representatives: every role reads what it may (participants their
        # own accounts); the accounts service checks who may change what, account by account.
        Route("/api/v1/accounts", "accounts"),
        Route("/api/v1/account-holders", "accounts"),
    ]
    for service in SERVICES:
        routes += [
            Route(f"/api/v1/{service}/audit-log", service, roles=OVERSIGHT),
            Route(f"/api/v1/{service}/approvals", service),
            Route(f"/api/v1/{service}/dead-letters", service, roles=OVERSIGHT),
        ]
    return routes


ROUTES = RouteTable(default_routes())
