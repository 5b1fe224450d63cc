"""Views across every service: ``GET /api/v1/approvals`` and ``GET /api/v1/dead-letters``.

The gateway asks every service's own route concurrently, with the caller's token, and merges the
answers. A service that cannot answer is listed in ``missing_services``; one that refuses the caller is
listed in ``forbidden_services``. When no service answers at all, the refusal (or 503) is returned.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import httpx
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from gateway.proxy import outgoing_headers, send
from gateway.routes_table import OVERSIGHT
from gateway.security import authorize, require_principal
from registry_common.auth import Principal
from registry_common.errors import RegistryError

log = logging.getLogger("registry.gateway")
_OLDEST = datetime.min.replace(tzinfo=UTC)


class MergedItems(BaseModel):
    items: list[dict[str, Any]] = Field(
        description="every service's items, each with `service`, newest first")
    missing_services: list[str] = Field(description="services that could not answer")
    forbidden_services: list[str] = Field(default_factory=list,
                                          description="services that refused the caller")
    next_cursors: dict[str, int] = Field(default_factory=dict,
                                         description="per service, the cursor of its next page (if any)")


def _when(item: dict[str, Any], key: str) -> datetime:
    value = item.get(key)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    return _OLDEST


async def fan_out(request: Request, clients: Mapping[str, httpx.AsyncClient], suffix: str,
                  params: dict[str, Any], sort_key: str) -> Response:
    headers = outgoing_headers(request)
    for name in ("if-none-match", "if-match", "content-type", "idempotency-key"):
        headers.pop(name, None)
    services = list(clients)
    query = {k: v for k, v in params.items() if v is not None}

    async def ask(service: str) -> httpx.Response | RegistryError:
        try:
            return await send(clients[service], service, "GET", f"/api/v1/{service}/{suffix}", headers,
                              params=query)
        except RegistryError as exc:
            return exc

    answers = await asyncio.gather(*(ask(s) for s in services))
    items: list[dict[str, Any]] = []
    missing: list[str] = []
    forbidden: list[str] = []
    refusal: httpx.Response | None = None
    cursors: dict[str, int] = {}
    for service, answer in zip(services, answers, strict=True):
        if isinstance(answer, RegistryError):
            missing.append(service)
            continue
        if answer.status_code in (401, 403):
            forbidden.append(service)
            refusal = refusal or answer
            continue
        try:
            body = answer.json() if answer.status_code == 200 else None
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("items"), list):
            log.warning("merged %s: %s answered %s", suffix, service, answer.status_code)
            missing.append(service)
            continue
        items.extend({**item, "service": service} for item in body["items"] if isinstance(item, dict))
        if isinstance(body.get("next_cursor"), int):
            cursors[service] = body["next_cursor"]
    answered = len(services) - len(missing) - len(forbidden)
    if answered == 0 and refusal is not None:
        # Nobody let the caller in: say so as the services said it.
        relayed = Response(refusal.content, status_code=refusal.status_code)
        for name in ("content-type", "content-language", "www-authenticate"):
            if name in refusal.headers:
                relayed.headers[name] = refusal.headers[name]
        return relayed
    if answered == 0 and services:
        raise RegistryError("service.unavailable")
    items.sort(key=lambda item: _when(item, sort_key), reverse=True)
    merged = MergedItems(items=items, missing_services=missing, forbidden_services=forbidden,
                         next_cursors=cursors)
    return JSONResponse(merged.model_dump(mode="json"))


_Limit = Annotated[int, Query(ge=1, le=500, description="at most this many items from each service")]
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    403: {"description": "The caller's role may not see this view."},
}


def install_merged_views(app: FastAPI) -> None:
    """Adds the views to ``app`` itself (not through an included router), so the gateway knows its own
    paths and documents them."""

    @app.get("/api/v1/approvals", response_model=MergedItems, operation_id="gateway-list-approvals",
             summary="Approvals of every service (four eyes)", tags=["gateway"])
    async def list_approvals(
        request: Request, _who: Annotated[Principal, Depends(require_principal)], limit: _Limit = 100,
        state: Literal["pending", "approved", "rejected", "expired"] | None = None,
    ) -> Response:
        return await fan_out(request, request.app.state.clients, "approvals",
                             {"state": state, "limit": limit}, "requested_at")

    @app.get("/api/v1/dead-letters", response_model=MergedItems, responses=_AUTH_RESPONSES,
             operation_id="gateway-list-dead-letters", summary="Dead letters of every service",
             tags=["gateway"])
    async def list_dead_letters(
        request: Request, who: Annotated[Principal, Depends(require_principal)], limit: _Limit = 100,
        state: Literal["dead", "replayed"] | None = "dead",
    ) -> Response:
        authorize(who, OVERSIGHT)
        return await fan_out(request, request.app.state.clients, "dead-letters",
                             {"state": state, "limit": limit}, "dead_at")
