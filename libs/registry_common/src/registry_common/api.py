"""The API process of a service: ``create_app(definition, settings)`` builds everything in the lifespan
(engine, clock, token verifier); the API never touches the broker, it writes rows and outbox rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import uvicorn
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry_common.auth import codec_from_settings
from registry_common.clock import ProgrammeClock
from registry_common.context import correlation_id_var, request_id_var
from registry_common.db import make_engine
from registry_common.errors import install_error_handlers
from registry_common.faults import configure_faults
from registry_common.logging import configure_logging
from registry_common.messaging.outbox import Outbox, outbox_backlog
from registry_common.provision import migration_checker
from registry_common.routes import health_router, shared_router
from registry_common.service import ServiceDefinition
from registry_common.settings import RegistrySettings


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0] if route.tags else 'registry'}-{route.name}"


class RequestContextMiddleware:
    """Request and correlation ids on every HTTP request (``X-Request-ID`` and ``X-Correlation-ID`` taken
    from the request, or a new id), set in the context variables the logs, errors and audit rows read,
    the programme clock refreshed (at most every ``clock_refresh_seconds``), and both ids echoed on the
    response. A plain ASGI middleware: the request runs in the same task, without the extra task and
    memory streams of Starlette's ``BaseHTTPMiddleware``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = correlation_id = ""
        seen_request = seen_correlation = False
        for name, value in scope["headers"]:
            if name == b"x-request-id" and not seen_request:
                request_id, seen_request = value.decode("latin-1"), True
            elif name == b"x-correlation-id" and not seen_correlation:
                correlation_id, seen_correlation = value.decode("latin-1"), True
        request_id = request_id or str(uuid4())
        correlation_id = correlation_id or request_id
        request_id_var.set(request_id)
        correlation_id_var.set(correlation_id)
        app = scope.get("app")
        clock = getattr(app.state, "clock", None) if app is not None else None
        if clock is not None:
            await clock.refresh()
        echoed = ((b"x-request-id", request_id.encode("latin-1")),
                  (b"x-correlation-id", correlation_id.encode("latin-1")))

        async def send_with_ids(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ())
                           if k.lower() not in (b"x-request-id", b"x-correlation-id")]
                headers.extend(echoed)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_ids)


def install_request_context(app: FastAPI) -> None:
    """Request and correlation ids on every request, echoed on every response."""
    app.add_middleware(RequestContextMiddleware)



async def database_readiness(app: FastAPI) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    try:
        async with app.state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            at_head = await conn.run_sync(app.state.migrations_at_head)
            checks["database"] = "ok"
            checks["migrations"] = "at_head" if at_head else "behind"
    except Exception as exc:  # readiness reports, it does not raise
        checks["database"] = f"unreachable: {type(exc).__name__}"
    return all(v in ("ok", "at_head") for v in checks.values()) and "migrations" in checks, checks


NO_NATIVE_TELEMETRY: dict[str, Any] = {"tracing": False, "metrics": False, "logs": False}
"""Every FastAPI app of the registry is built with this: its metrics are Prometheus' (``/metrics``) and it
configures no OpenTelemetry provider, yet FastAPI's own telemetry asked the three global providers (and
so the environment) on every request to find that out: 11 % of the gateway's CPU under load."""


def create_app(definition: ServiceDefinition, settings: RegistrySettings | None = None) -> FastAPI:
    settings = settings or definition.load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.app_database_url, pool_size=settings.api_pool_size,
                             application_name=f"{settings.namespace}{definition.name}-api")
        app.state.engine = engine
        app.state.clock = ProgrammeClock(engine, settings.clock_refresh_seconds)
        if definition.api_lifespan is None:
            yield
        else:
            async with definition.api_lifespan(app):
                yield
        await engine.dispose()

    app = FastAPI(
        title=f"Registro — {definition.name}",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        telemetry=NO_NATIVE_TELEMETRY,
    )
    app.state.settings = settings
    app.state.definition = definition
    app.state.process_kind = "api"
    app.state.started_at = datetime.now(UTC).isoformat()
    app.state.outbox = Outbox(definition.name)
    app.state.token_codec = codec_from_settings(settings)
    app.state.migrations_at_head = migration_checker(definition)

    async def collect_metrics() -> None:
        from registry_common.worker import update_outbox_gauges

        async with app.state.engine.connect() as conn:
            update_outbox_gauges(*await outbox_backlog(conn))

    app.state.collect_metrics = collect_metrics
    install_error_handlers(app)
    install_request_context(app)
    app.include_router(health_router(database_readiness))
    app.include_router(shared_router(definition.name))
    for router in definition.routers:
        app.include_router(router)
    return app


def serve(definition: ServiceDefinition) -> None:
    """Entry point of ``python -m <service>.api``."""
    settings = definition.load_settings()
    configure_faults(settings.faults, settings.fault_marker_dir)
    configure_logging(service=definition.name, process="api", level=settings.log_level, json=settings.log_json)
    app = create_app(definition, settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, loop="uvloop", log_config=None,
                access_log=False, timeout_graceful_shutdown=5)

