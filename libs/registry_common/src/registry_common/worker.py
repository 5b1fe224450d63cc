"""The worker process of a service: on one event loop, the consumer (inbox, ack after commit), the retry
sweeper, the outbox relay, the service's periodic tasks (sweepers comparing the programme clock with
stored dates) and a small HTTP server for ``/health``, ``/ready`` and ``/metrics`` on its own port.

Readiness means: database reachable and migrated, broker connected, consumer attached, and the oldest
unpublished outbox row younger than ``relay_ready_lag_seconds``.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import uvicorn
from fastapi import FastAPI
from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from registry_common.api import NO_NATIVE_TELEMETRY, database_readiness, install_request_context
from registry_common.auth import codec_from_settings
from registry_common.clock import ProgrammeClock
from registry_common.db import asyncpg_dsn, make_engine
from registry_common.errors import install_error_handlers
from registry_common.faults import configure_faults
from registry_common.logging import configure_logging
from registry_common.messaging.consumer import ConsumerRunner, all_subscriptions
from registry_common.messaging.outbox import Outbox, OutboxRelay, Publisher, outbox_backlog
from registry_common.messaging.topology import declare_service_queue
from registry_common.provision import migration_checker
from registry_common.routes import health_router
from registry_common.service import ServiceDefinition
from registry_common.settings import RegistrySettings
from registry_common.tables import consumer_retries, dead_letters

log = logging.getLogger("registry.worker")
OUTBOX_BACKLOG = Gauge("registry_outbox_backlog", "Unpublished outbox rows that are due")
OUTBOX_OLDEST = Gauge("registry_outbox_oldest_seconds", "Age of the oldest unpublished due outbox row")
DEAD_LETTERS = Gauge("registry_dead_letters_waiting", "Messages waiting in dead_letters")
RETRIES = Gauge("registry_consumer_retries", "Messages waiting for another attempt")


def update_outbox_gauges(backlog: int, oldest: float) -> None:
    OUTBOX_BACKLOG.set(backlog)
    OUTBOX_OLDEST.set(oldest)


@dataclass
class WorkerContext:
    """What the worker's periodic tasks get."""

    settings: RegistrySettings
    engine: AsyncEngine
    clock: ProgrammeClock
    outbox: Outbox


class Worker:
    def __init__(self, definition: ServiceDefinition, settings: RegistrySettings):
        self.definition = definition
        self.settings = settings
        self.engine = make_engine(settings.app_database_url, pool_size=settings.worker_pool_size,
                                  application_name=f"{settings.namespace}{definition.name}-worker")
        self.clock = ProgrammeClock(self.engine, settings.clock_refresh_seconds)
        self.outbox = Outbox(definition.name)
        self.connection: aio_pika.abc.AbstractRobustConnection | None = None
        self.consumer = ConsumerRunner(
            consumer=f"{definition.name}.main", engine=self.engine,
            subscriptions=all_subscriptions(definition), outbox=self.outbox, clock=self.clock,
            settings=settings,
        )
        self.relay: OutboxRelay | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self) -> None:
        await self.clock.refresh(force=True)
        self.connection = await aio_pika.connect_robust(
            self.settings.amqp_url,
            client_properties={"connection_name": f"{self.settings.namespace}{self.definition.name}-worker"},
        )
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        queue = await declare_service_queue(channel, self.settings.namespace, self.definition.name,
                                            sorted(all_subscriptions(self.definition)))
        await self.consumer.attach(queue)
        dsn = asyncpg_dsn(self.settings.app_database_url)
        self.relay = OutboxRelay(self.engine, Publisher(self.connection, self.settings.namespace), dsn=dsn,
                                 batch_size=self.settings.relay_batch_size,
                                 poll_seconds=self.settings.relay_poll_seconds)
        self._spawn("relay", self.relay.run())
        self._spawn("retries", self.consumer.run_retries(dsn, self.settings.relay_poll_seconds))
        self._spawn("clock", self._refresh_clock())
        context = WorkerContext(self.settings, self.engine, self.clock, self.outbox)
        for name, interval, task in self.definition.periodic_tasks:
            seconds = float(getattr(self.settings, interval)) if isinstance(interval, str) else interval
            self._spawn(name, self._every(seconds, name, task, context))
        log.info("worker started", extra={"queue": queue.name})

    def _spawn(self, name: str, coro: Any) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))

    async def _refresh_clock(self) -> None:
        while True:
            await asyncio.sleep(self.settings.clock_refresh_seconds)
            try:
                await self.clock.refresh(force=True)
            except Exception as exc:
                log.warning("clock refresh failed: %r", exc)

    async def _every(self, interval: float, name: str, task: Any, context: WorkerContext) -> None:
        while True:
            try:
                await self.clock.refresh()
                await task(context)
            except Exception:
                log.exception("periodic task %s failed", name)
            await asyncio.sleep(interval)

    async def readiness(self, app: FastAPI) -> tuple[bool, dict[str, Any]]:
        ok, checks = await database_readiness(app)
        broker = self.connection is not None and self.connection.connected.is_set()
        checks["broker"] = "connected" if broker else "disconnected"
        checks["consumer"] = "attached" if self.consumer.attached and broker else "detached"
        checks["tasks"] = {t.get_name(): ("failed" if t.done() else "running") for t in self.tasks}
        try:
            async with self.engine.connect() as conn:
                backlog, oldest = await outbox_backlog(conn)
            checks["outbox"] = {"backlog": backlog, "oldest_seconds": round(oldest, 3)}
            relay_ok = oldest <= self.settings.relay_ready_lag_seconds
        except Exception:
            relay_ok = False
        ok = ok and broker and self.consumer.attached and relay_ok and not any(t.done() for t in self.tasks)
        return ok, checks

    async def collect_metrics(self) -> None:
        async with self.engine.connect() as conn:
            update_outbox_gauges(*await outbox_backlog(conn))
            DEAD_LETTERS.set(
                (await conn.execute(select(func.count()).where(dead_letters.c.state == "dead"))).scalar_one()
            )
            RETRIES.set((await conn.execute(select(func.count()).select_from(consumer_retries))).scalar_one())

    def health_app(self) -> FastAPI:
        app = FastAPI(title=f"{self.definition.name} worker", openapi_url=None, telemetry=NO_NATIVE_TELEMETRY)
        app.state.settings = self.settings
        app.state.engine = self.engine
        app.state.clock = self.clock
        app.state.process_kind = "worker"
        app.state.started_at = datetime.now(UTC).isoformat()
        app.state.migrations_at_head = migration_checker(self.definition)
        app.state.token_codec = codec_from_settings(self.settings)
        app.state.collect_metrics = self.collect_metrics
        install_error_handlers(app)
        install_request_context(app)
        app.include_router(health_router(self.readiness))
        return app

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.connection is not None:
            await self.connection.close()
        await self.engine.dispose()


async def run_worker(definition: ServiceDefinition, settings: RegistrySettings) -> None:
    worker = Worker(definition, settings)
    server = uvicorn.Server(uvicorn.Config(worker.health_app(), host=settings.http_host,
                                           port=settings.worker_http_port, log_config=None, access_log=False,
                                           lifespan="off"))
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    http = asyncio.create_task(server.serve(), name="health-http")
    try:
        await worker.start()
        await stop.wait()
    finally:
        server.should_exit = True
        await worker.stop()
        await http


def main(definition: ServiceDefinition) -> None:
    """Entry point of ``python -m <service>.worker``."""
    import uvloop

    settings = definition.load_settings()
    configure_faults(settings.faults, settings.fault_marker_dir)
    configure_logging(service=definition.name, process="worker", level=settings.log_level,
                      json=settings.log_json)
    uvloop.run(run_worker(definition, settings))
