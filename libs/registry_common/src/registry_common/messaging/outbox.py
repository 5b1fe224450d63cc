"""Transactional outbox: messages are written in the transaction of the state change that causes them, and
a relay in the worker publishes them (publisher confirms, ``mandatory``), a batch at a time with the
confirms awaited together, woken by ``pg_notify`` from the committing transaction (polling only as a
fallback). At least once: consumers deduplicate on ``message_id``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from uuid import UUID

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection
from prometheus_client import Counter
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from registry_common.context import causation_id_var, correlation_id_var
from registry_common.faults import fault_point
from registry_common.messaging.envelope import Envelope
from registry_common.messaging.topology import COMMANDS, EVENTS, declare_exchanges
from registry_common.tables import outbox
from registry_contracts import Message

log = logging.getLogger("registry.outbox")
PUBLISHED = Counter("registry_outbox_published_total", "Outbox rows published and confirmed")
PUBLISH_FAILURES = Counter("registry_outbox_publish_failures_total", "Outbox publish attempts that failed")
NOTIFY_CHANNEL = "registry_outbox"
MARK_PUBLISHED = update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True))).values(
    published_at=func.now())


class Outbox:
    """Writes outgoing messages of one producer into the caller's transaction."""

    def __init__(self, producer: str):
        self.producer = producer

    async def add(
        self, conn: AsyncConnection, message: Message, *, correlation_id: str | None = None,
        causation_id: UUID | None = None,
    ) -> Envelope:
        return (await self.add_many(conn, [message], correlation_id=correlation_id, causation_id=causation_id))[0]

    async def add_many(
        self, conn: AsyncConnection, messages: list[Message], *, correlation_id: str | None = None,
        causation_id: UUID | None = None,
    ) -> list[Envelope]:
        """Several messages in one round trip (a batch's results)."""
        rows: list[dict[str, Any]] = []
        envelopes = self.wrap(messages, rows, correlation_id=correlation_id, causation_id=causation_id)
        await insert_rows(conn, rows)
        return envelopes

    def wrap(
        self, messages: list[Message], rows: list[dict[str, Any]], *, correlation_id: str | None = None,
        causation_id: UUID | None = None,
    ) -> list[Envelope]:
        """The messages' envelopes, their outbox rows appended to ``rows`` (for :func:`insert_rows`)."""
        envelopes = [
            Envelope.wrap(message, producer=self.producer, correlation_id=correlation_id or correlation_id_var.get(),
                          causation_id=causation_id or causation_id_var.get())
            for message in messages
        ]
        rows.extend({"message_id": e.message_id, "exchange": EVENTS if m.KIND == "event" else COMMANDS,
                     "routing_key": e.routing_key, "envelope": e.model_dump(mode="json")}
                    for e, m in zip(envelopes, messages, strict=True))
        return envelopes


async def insert_rows(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Outbox rows (from :meth:`Outbox.wrap`) in one statement, in their order."""
    if rows:
        await conn.execute(insert(outbox), rows)


class Publisher:
    """Publishes envelopes on one confirming channel. An unroutable command is an error
    (``mandatory``): its owner's queue must exist. An event nobody subscribes to yet is not: events are
    facts, and provisioning declares every consumer's queue before any process starts."""

    def __init__(self, connection: AbstractRobustConnection, namespace: str):
        self.connection = connection
        self.namespace = namespace
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}

    async def _ready(self) -> None:
        if self._channel is None or self._channel.is_closed:
            self._channel = await self.connection.channel(publisher_confirms=True, on_return_raises=True)
            self._exchanges = await declare_exchanges(self._channel, self.namespace)

    async def publish(self, exchange: str, routing_key: str, envelope: dict[str, Any]) -> None:
        """``envelope``: an :class:`Envelope` as ``model_dump(mode="json")`` wrote it into the outbox; it
        travels as that JSON (not parsed into the model and dumped again)."""
        await self._ready()
        correlation_id = envelope["correlation_id"]
        message = aio_pika.Message(
            body=json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode(),
            message_id=str(envelope["message_id"]),
            type=f"{envelope['type']}.v{envelope['version']}",
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            correlation_id=correlation_id,
            app_id=envelope["producer"],
            headers={"x-correlation-id": correlation_id},
        )
        await self._exchanges[exchange].publish(message, routing_key=routing_key, mandatory=exchange != EVENTS,
                                                timeout=10)


class OutboxRelay:
    """Moves committed outbox rows to the broker. Several relays may run: rows are claimed with
    ``FOR UPDATE SKIP LOCKED``; a row is marked only after its confirm arrived."""

    def __init__(self, engine: AsyncEngine, publisher: Publisher, *, dsn: str, batch_size: int,
                 poll_seconds: float):
        self.engine = engine
        self.publisher = publisher
        self.dsn = dsn
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self._wake = asyncio.Event()
        self.last_success = time.monotonic()
        self._due = (  # built once: every round runs it
            select(outbox.c.id, outbox.c.exchange, outbox.c.routing_key, outbox.c.envelope)
            .where(outbox.c.published_at.is_(None), outbox.c.available_at <= func.now())
            .order_by(outbox.c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were confirmed."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(self._due)).all()
            if not rows:
                return 0
            results = await asyncio.gather(
                *(self.publisher.publish(r.exchange, r.routing_key, r.envelope) for r in rows),
                return_exceptions=True,
            )
            fault_point("relay_after_publish_before_mark")
            confirmed = [r.id for r, result in zip(rows, results, strict=True) if result is None]
            failed = [(r.id, result) for r, result in zip(rows, results, strict=True) if result is not None]
            if confirmed:
                await conn.execute(MARK_PUBLISHED, {"ids": confirmed})
            for row_id, error in failed:
                await conn.execute(
                    update(outbox).where(outbox.c.id == row_id)
                    .values(attempts=outbox.c.attempts + 1, last_error=repr(error)[:2000])
                )
        PUBLISHED.inc(len(confirmed))
        if failed:
            PUBLISH_FAILURES.inc(len(failed))
            log.warning("outbox publish failed for %d of %d rows: %r", len(failed), len(rows), failed[0][1])
            raise RelayIncomplete(failed[0][1])
        self.last_success = time.monotonic()
        return len(confirmed)

    async def run(self) -> None:
        """Relay forever: drain on every notification, and at least every ``poll_seconds``."""
        listener = asyncio.create_task(self._listen(), name="outbox-listen")
        failures = 0
        try:
            while True:
                try:
                    while await self.relay_once() == self.batch_size:
                        pass
                    failures = 0
                except Exception as exc:  # broker or database gone: back off, then try again
                    failures += 1
                    delay = min(0.1 * 2**failures, 5.0)
                    log.warning("outbox relay: %r; retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_seconds)
                except TimeoutError:
                    pass
        finally:
            listener.cancel()

    async def _listen(self) -> None:
        """LISTEN for commits that wrote outbox rows; reconnect when the connection is lost."""
        while True:
            try:
                conn = await asyncpg.connect(self.dsn)
                try:
                    lost = asyncio.Event()
                    conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                    await conn.add_listener(NOTIFY_CHANNEL, lambda *_a: self._wake.set())
                    self._wake.set()  # catch up on anything committed while not listening
                    await lost.wait()
                finally:
                    if not conn.is_closed():
                        await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox listener lost: %r", exc)
            await asyncio.sleep(self.poll_seconds)


class RelayIncomplete(Exception):
    """Some rows of a batch were not confirmed; they stay unpublished and are retried."""


async def outbox_backlog(conn: AsyncConnection) -> tuple[int, float]:
    """Unpublished rows due now, and the age in seconds of the oldest of them."""
    row = (
        await conn.execute(
            select(func.count(), func.coalesce(func.extract("epoch", func.now() - func.min(outbox.c.available_at)), 0))
            .where(outbox.c.published_at.is_(None), outbox.c.available_at <= func.now())
        )
    ).one()
    return int(row[0]), float(row[1])
