"""The gateway application: the single public entry point.

- ``GET /api/v1/health``: health of every process (public).
- Everything in the route table (:mod:`gateway.routes_table`) is forwarded to its service after the
  token (and the route's roles) are checked here; anything else is answered 404 and never forwarded.
- ``GET /openapi.json`` (one merged document) and ``GET /docs`` (Swagger UI on it).
- ``GET /api/v1/approvals`` and ``GET /api/v1/dead-letters``: every service's, merged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

import gateway.errors  # noqa: F401  (registers the gateway's error codes)
from gateway.merged import install_merged_views
from gateway.openapi import TITLE, VERSION, OpenAPICatalogue
from gateway.proxy import forward
from gateway.routes_table import ROUTES, RouteTable
from gateway.security import authenticate, authorize, on_registry_error
from gateway.ui import install_ui
from gateway.upstreams import Upstream, upstreams_from_environment
from registry_common.api import NO_NATIVE_TELEMETRY, install_request_context
from registry_common.auth import codec_from_settings
from registry_common.errors import RegistryError, install_error_handlers, problem_response
from registry_common.http_transport import LeanHTTPTransport
from registry_common.settings import RegistrySettings, load_settings

UPSTREAM_TIMEOUT = httpx.Timeout(10.0)
# Idle upstream connections are dropped before uvicorn's own 5 s keep-alive closes them, so a request
# is never written to a connection the upstream is closing.
# Every connection is kept alive between requests (under load, a pool keeping fewer than it opens would
# close and reopen connections all the time).
UPSTREAM_LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=200, keepalive_expiry=4.0)
FORWARDED_METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]


def upstream_transport(api_url: str) -> httpx.AsyncBaseTransport:
    """The pool of connections to one upstream: the lean HTTP/1.1 transport for plain http:// (the
    registry's own processes), httpx's own otherwise; same limits either way."""
    if api_url.startswith("http://"):
        return LeanHTTPTransport(max_connections=UPSTREAM_LIMITS.max_connections or 200,
                                 keepalive_expiry=UPSTREAM_LIMITS.keepalive_expiry or 4.0)
    return httpx.AsyncHTTPTransport(limits=UPSTREAM_LIMITS, trust_env=False)


async def _probe(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        answer = await client.get(f"{url}/ready", timeout=3.0)
        body = answer.json()
        return {"status": body.get("status", "unknown"), "clock": body.get("clock"),
                "checks": body.get("checks")}
    except (httpx.HTTPError, ValueError) as exc:
        return {"status": "unreachable", "error": type(exc).__name__}


async def system_health(client: httpx.AsyncClient, upstreams: list[Upstream]) -> dict[str, Any]:
    probes = [(u, kind, url) for u in upstreams
              for kind, url in (("api", u.api_url), ("worker", u.worker_url))]
    answers = await asyncio.gather(*(_probe(client, url) for _, _, url in probes))
    processes: dict[str, dict[str, Any]] = {}
    for (upstream, kind, _), answer in zip(probes, answers, strict=True):
        processes.setdefault(upstream.service, {})[kind] = answer
    ready = all(a["status"] == "ready" for a in answers)
    return {"status": "ready" if ready else "degraded", "gateway": "ready", "services": processes}


def create_app(
    settings: RegistrySettings | None = None,
    upstreams: list[Upstream] | None = None,
    *,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
    routes: RouteTable | None = None,
) -> FastAPI:
    """``transports`` replaces the network transport of a service's upstream client (tests wire real
    in-process apps with :class:`httpx.ASGITransport`); ``routes`` replaces the allow-list."""
    settings = settings or load_settings("gateway")
    targets = upstreams if upstreams is not None else upstreams_from_environment()
    table = routes or ROUTES
    transports = dict(transports or {})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        codec = codec_from_settings(settings)
        if not settings.public_key_path.is_file():
            raise RuntimeError(f"the token public key {settings.public_key_path} is missing "
                               "(REGISTRY_JWT_PUBLIC_KEY_FILE): the gateway cannot verify tokens")
        app.state.token_codec = codec
        async with AsyncExitStack() as stack:
            app.state.client = await stack.enter_async_context(httpx.AsyncClient(trust_env=False))
            clients: dict[str, httpx.AsyncClient] = {}
            pools: dict[str, httpx.AsyncBaseTransport] = {}
            for upstream in targets:
                pool = transports.get(upstream.service) or upstream_transport(upstream.api_url)
                clients[upstream.service] = await stack.enter_async_context(httpx.AsyncClient(
                    base_url=upstream.api_url, timeout=UPSTREAM_TIMEOUT, transport=pool, trust_env=False,
                    follow_redirects=False,
                ))
                pools[upstream.service] = pool
            app.state.clients = clients
            app.state.transports = pools  # forwarding goes straight on them (proxy.exchange)
            app.state.openapi = OpenAPICatalogue(clients, table, lambda: gateway_document(app))
            yield

    app = FastAPI(title=TITLE, version=VERSION, lifespan=lifespan, openapi_url=None, docs_url=None,
                  redoc_url=None, telemetry=NO_NATIVE_TELEMETRY)
    app.state.settings = settings
    app.state.route_table = table
    install_error_handlers(app)
    app.add_exception_handler(RegistryError, on_registry_error)
    install_request_context(app)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "alive", "service": "gateway", "process": "api"}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/api/v1/health", tags=["health"], operation_id="gateway-system-health",
             summary="Health of every API and worker process")
    async def api_health(request: Request, response: Response) -> dict[str, Any]:
        report = await system_health(request.app.state.client, targets)
        response.status_code = 200 if report["status"] == "ready" else 503
        return report

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(await request.app.state.openapi.document())

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{TITLE} — documentación",
                                   oauth2_redirect_url="/docs/oauth2-redirect",
                                   swagger_ui_parameters={"persistAuthorization": True})

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def docs_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    install_merged_views(app)
    install_ui(app)  # the dashboard and portal's static files at /ui/ (before the catch-all)
    own_paths = {route.path for route in app.routes if hasattr(route, "path")}

    async def entry(request: Request) -> Response:
        path = request.url.path
        if path in own_paths:  # the gateway's own route, with another method
            return problem_response(request, "request.method_not_allowed")
        route = table.match(path)
        if route is None:
            return problem_response(request, "request.not_found")
        if not route.public:
            authorize(authenticate(request), route.roles)
        client = request.app.state.clients.get(route.service)
        if client is None:
            raise RegistryError("gateway.upstream_unavailable", service=route.service)
        return await forward(request, client, route.service, request.app.state.transports.get(route.service))

    # A plain Starlette route, last: it takes the request as it is, so FastAPI's per-request dependency
    # solving (parameters, a response object, an exit stack) has nothing to do for every forwarded call.
    app.router.routes.append(Route("/{path:path}", entry, methods=list(FORWARDED_METHODS), include_in_schema=False))
    return app


def gateway_document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of the gateway's own routes (built once)."""
    document = getattr(app.state, "gateway_openapi", None)
    if document is None:
        document = get_openapi(title=TITLE, version=VERSION, routes=app.routes)
        app.state.gateway_openapi = document
    return document
