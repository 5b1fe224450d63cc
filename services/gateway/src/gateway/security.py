"""Token verification and role checks at the gateway.

The gateway verifies the bearer token of every non-public request with the chassis's
:class:`~registry_common.auth.TokenCodec` and checks a route's roles; it forwards the original
``Authorization`` header unchanged (services verify it again) and never adds identity headers.
"""

from __future__ import annotations

import re

from fastapi import Request
from fastapi.responses import JSONResponse

from registry_common.auth import Principal, TokenCodec, bearer_token
from registry_common.context import actor_var
from registry_common.errors import RegistryError, problem_response

IDENTITY_HEADER = re.compile(
    r"^(x-.*(user|role|principal|identity|actor|group|subject|e-?mail|authenticated).*|remote-user)$",
    re.IGNORECASE,
)
"""Headers that look like an identity asserted by a proxy. Never forwarded, whatever the allow-list."""


def authenticate(request: Request) -> Principal:
    """The verified principal of ``request``; raises ``auth.required``, ``auth.token_invalid`` or
    ``auth.token_expired``."""
    codec: TokenCodec = request.app.state.token_codec
    principal = codec.verify(bearer_token(request))
    request.state.principal = principal
    actor_var.set(principal.user_id)
    return principal


def authorize(principal: Principal, roles: tuple[str, ...] | None) -> None:
    if roles is not None and not principal.has_any(roles):
        raise RegistryError("auth.forbidden", required=", ".join(sorted(roles)))


async def require_principal(request: Request) -> Principal:
    """FastAPI dependency for the gateway's own authenticated routes."""
    return authenticate(request)


def auth_problem(request: Request, exc: RegistryError) -> JSONResponse:
    """The problem+json for an authentication or authorisation failure, with ``WWW-Authenticate`` on
    401 (RFC 6750)."""
    response = problem_response(request, exc.code, status=exc.status, field=exc.field, **exc.params)
    if exc.status == 401:
        error = "" if exc.code == "auth.required" else ', error="invalid_token"'
        response.headers["WWW-Authenticate"] = f'Bearer realm="registro"{error}'
    return response


async def on_registry_error(request: Request, exc: Exception) -> JSONResponse:
    """The gateway's handler for :class:`RegistryError`: the chassis's rendering plus WWW-Authenticate."""
    assert isinstance(exc, RegistryError)
    return auth_problem(request, exc)
