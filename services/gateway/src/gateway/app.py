"""The gateway application. Issue 2: health of the whole system at ``GET /api/v1/health``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from gateway.upstreams import Upstream, upstreams_from_environment
from registry_common.api import install_request_context
from registry_common.errors import install_error_handlers
from registry_common.settings import RegistrySettings, load_settings


async def _probe(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    try:
        answer = await client.get(f"{url}/ready", timeout=3.0)
        body = answer.json()
        return {"status": body.get("status", "unknown"), "clock": body.get("clock"),
                "checks": body.get("checks")}
    except (httpx.HTTPError, ValueError) as exc:
        return {"status": "unreachable", "error": type(exc).__name__}


async def system_health(client: httpx.AsyncClient, upstreams: list[Upstream]) -> dict[str, Any]:
    probes = [(u, kind, url) for u in upstreams for kind, url in (("api", u.api_url), ("worker", u.worker_url))]
    answers = await asyncio.gather(*(_probe(client, url) for _, _, url in probes))
    processes: dict[str, dict[str, Any]] = {}
    for (upstream, kind, _), answer in zip(probes, answers, strict=True):
        processes.setdefault(upstream.service, {})[kind] = answer
    ready = all(a["status"] == "ready" for a in answers)
    return {"status": "ready" if ready else "degraded", "gateway": "ready", "services": processes}


def create_app(settings: RegistrySettings | None = None, upstreams: list[Upstream] | None = None) -> FastAPI:
    settings = settings or load_settings("gateway")
    targets = upstreams if upstreams is not None else upstreams_from_environment()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with httpx.AsyncClient() as client:
            app.state.client = client
            yield

    app = FastAPI(title="Registro — API", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    install_request_context(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "alive", "service": "gateway", "process": "api"}

    @app.get("/ready", tags=["health"])
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/api/v1/health", tags=["health"])
    async def api_health(request: Request, response: Response) -> dict[str, Any]:
        report = await system_health(request.app.state.client, targets)
        response.status_code = 200 if report["status"] == "ready" else 503
        return report

    return app
