"""The idempotent consumer runner.

For every delivery: decode the envelope, then in ONE transaction claim ``inbox(consumer, message_id)``
and run the handler; ack only after the commit. A duplicate (same ``message_id``) claims nothing and
changes nothing. A failing handler rolls back entirely; the failure is recorded in
``consumer_retries`` (growing delays) and the delivery acked; the retry sweeper runs it again when due,
and after ``consumer_max_attempts`` it moves to ``dead_letters`` with its error, in the same transaction.
Operators list dead letters and replay them (``/api/v1/{service}/dead-letters``).

Under load, deliveries that arrive while a transaction is running are applied together: one transaction,
one inbox claim for all of them, each handler in turn, their outgoing messages in one insert, one commit,
then each acked (``consumer_batch_size``;
1 = one at a time; a delivery with nothing waiting beside it is applied alone). If any handler of a batch
fails, or the batch meets a deadlock, nothing of it stays and each of its messages is applied alone, as
above: a batch changes the cost, never the outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue
from prometheus_client import Counter
from pydantic import ValidationError
from sqlalchemy import bindparam, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from registry_common.context import causation_id_var, correlation_id_var
from registry_common.db import is_connection_error
from registry_common.faults import fault_point
from registry_common.messaging.envelope import Envelope
from registry_common.messaging.outbox import Outbox, insert_rows
from registry_common.tables import consumer_retries, dead_letters, inbox
from registry_contracts import Message

if TYPE_CHECKING:
    from registry_common.clock import ProgrammeClock
    from registry_common.service import ServiceDefinition
    from registry_common.settings import RegistrySettings

log = logging.getLogger("registry.consumer")
HANDLED = Counter("registry_messages_handled_total", "Messages applied", ["consumer", "type"])
DUPLICATES = Counter("registry_messages_duplicate_total", "Duplicate deliveries ignored", ["consumer"])
FAILURES = Counter("registry_message_failures_total", "Handler failures", ["consumer", "type"])
DEAD = Counter("registry_dead_letters_total", "Messages moved to dead_letters", ["consumer"])
BATCHED = Counter("registry_messages_batched_total", "Messages applied in a batch of several", ["consumer"])
RETRY_CHANNEL = "registry_retries"
CLAIM = (
    pg_insert(inbox)
    .values(consumer=bindparam("consumer"), message_id=bindparam("message_id"),
            message_type=bindparam("message_type"))
    .on_conflict_do_nothing(index_elements=["consumer", "message_id"])
    .returning(inbox.c.message_id)
)
"""Claim a message for a consumer (built once: every delivery runs it)."""
CLAIM_MANY = text(
    "INSERT INTO inbox (consumer, message_id, message_type) "
    "SELECT * FROM unnest(CAST(:consumers AS text[]), CAST(:message_ids AS uuid[]), CAST(:message_types AS text[])) "
    "ON CONFLICT (consumer, message_id) DO NOTHING RETURNING message_id")
"""Claim a batch's messages in one statement; returns those claimed now (not seen before)."""


@dataclass(frozen=True)
class HandlerContext:
    """What a handler gets besides its connection and message."""

    envelope: Envelope
    outbox: Outbox
    clock: ProgrammeClock
    settings: RegistrySettings
    # In a batch, the outbox rows of every handler are written together at its end (one statement).
    batch_rows: list[dict[str, Any]] | None = None

    async def publish(self, conn: AsyncConnection, message: Message) -> Envelope:
        """Write a message caused by this one (same correlation, causation = this message)."""
        return (await self.publish_many(conn, [message]))[0]

    async def publish_many(self, conn: AsyncConnection, messages: list[Message]) -> list[Envelope]:
        if self.batch_rows is not None:
            return self.outbox.wrap(messages, self.batch_rows, correlation_id=self.envelope.correlation_id,
                                    causation_id=self.envelope.message_id)
        return await self.outbox.add_many(
            conn, messages, correlation_id=self.envelope.correlation_id, causation_id=self.envelope.message_id
        )


Handler = Callable[[AsyncConnection, Any, HandlerContext], Awaitable[None]]


def chassis_subscriptions() -> dict[type[Message], Handler]:
    from registry_common.clock import on_programme_clock_moved
    from registry_contracts.issuance import ProgrammeClockMoved

    return {ProgrammeClockMoved: on_programme_clock_moved}


def all_subscriptions(definition: ServiceDefinition) -> dict[str, tuple[type[Message], Handler]]:
    merged = {**chassis_subscriptions(), **definition.subscriptions}
    return {model.routing_key(): (model, handler) for model, handler in merged.items()}


def routing_keys_of(definition: ServiceDefinition) -> list[str]:
    return sorted(all_subscriptions(definition))


class PermanentError(Exception):
    """A message that can never succeed: dead-lettered at once, without retries."""




class ConsumerRunner:
    def __init__(
        self, *, consumer: str, engine: AsyncEngine, subscriptions: Mapping[str, tuple[type[Message], Handler]],
        outbox: Outbox, clock: ProgrammeClock, settings: RegistrySettings,
    ):
        self.consumer = consumer
        self.engine = engine
        self.subscriptions = subscriptions
        self.outbox = outbox
        self.clock = clock
        self.settings = settings
        self.attached = False
        self.batch_size = settings.consumer_batch_size
        self._waiting: list[tuple[Envelope, asyncio.Future[bool]]] = []
        self._applying = False
        self._batches: asyncio.Task[None] | None = None  # the running batch loop (kept: tasks are weakly held)

    # Broker side ---------------------------------------------------------------------------------
    async def attach(self, queue: AbstractQueue) -> None:
        await queue.consume(self.on_delivery)
        self.attached = True

    async def on_delivery(self, message: AbstractIncomingMessage) -> None:
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError:
            log.error("undecodable message %s rejected to the DLQ", message.message_id)
            await message.reject(requeue=False)
            return
        if await self._applied_in_batch(envelope):
            fault_point("after_commit_before_ack")
            await message.ack()
            return
        failures = 0
        while True:
            try:
                await self.apply(envelope)
                break
            except Exception as exc:
                if not is_connection_error(exc) and failures > 50:
                    await message.nack(requeue=True)
                    return
                # Nothing was recorded (the database is unreachable): keep the delivery, try again.
                failures += 1
                log.warning("could not handle or record %s: %r", envelope.message_id, exc)
                await asyncio.sleep(min(0.2 * 2**failures, 10.0))
        fault_point("after_commit_before_ack")
        await message.ack()

    # Batches ------------------------------------------------------------------------------------
    async def _applied_in_batch(self, envelope: Envelope) -> bool:
        """Queue the delivery for the next batch and wait: True once a batch applied it (or found it a
        duplicate) and committed; False when it is to be applied alone (nothing else was waiting with it,
        or its batch was rolled back)."""
        if self.batch_size == 1:
            return False
        applied: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((envelope, applied))
        if not self._applying:
            self._applying = True
            self._batches = asyncio.get_running_loop().create_task(self._apply_waiting(),
                                                                   name=f"{self.consumer}-batches")
        return await applied

    async def _apply_waiting(self) -> None:
        """Apply what is waiting, a batch at a time, until nothing is."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:self.batch_size], self._waiting[self.batch_size:]
                applied = False
                if len(batch) > 1:
                    try:
                        await self.apply_batch([envelope for envelope, _ in batch])
                        applied = True
                        BATCHED.labels(self.consumer).inc(len(batch))
                    except Exception as exc:
                        log.info("a batch of %d was rolled back, each is applied alone: %r", len(batch), exc)
                for _, outcome in batch:
                    if not outcome.done():
                        outcome.set_result(applied)
        finally:
            self._applying = False

    async def apply_batch(self, envelopes: list[Envelope]) -> None:
        """Apply ``envelopes`` in one transaction (each exactly once, duplicates skipped); raises, with
        nothing applied, if any of them fails."""
        routed = []
        for envelope in envelopes:
            route = self.subscriptions.get(envelope.routing_key)
            if route is None:
                raise PermanentError(f"no handler for {envelope.routing_key} in {self.consumer}")
            routed.append((envelope, route[1], route[0].model_validate(envelope.payload)))
        async with self.engine.begin() as conn:
            claimed = set((await conn.execute(CLAIM_MANY, {
                "consumers": [self.consumer] * len(envelopes), "message_ids": [e.message_id for e in envelopes],
                "message_types": [e.routing_key for e in envelopes]})).scalars())
            outgoing: list[dict[str, Any]] = []
            applied, duplicates = [], 0
            for envelope, handler, payload in routed:
                if envelope.message_id not in claimed:
                    duplicates += 1
                    continue
                claimed.discard(envelope.message_id)  # the same message twice in one batch: applied once
                correlation_id_var.set(envelope.correlation_id)
                causation_id_var.set(envelope.message_id)
                await handler(conn, payload, HandlerContext(envelope, self.outbox, self.clock, self.settings,
                                                            batch_rows=outgoing))
                applied.append(envelope.routing_key)
            await insert_rows(conn, outgoing)
        DUPLICATES.labels(self.consumer).inc(duplicates)
        for routing_key in applied:
            HANDLED.labels(self.consumer, routing_key).inc()

    # Database side -------------------------------------------------------------------------------
    async def apply(self, envelope: Envelope, *, from_retry: bool = False) -> str:
        """Apply one message exactly once. Returns ``applied``, ``duplicate``, ``failed``, ``dead``
        or ``skipped`` (a retry someone else already took)."""
        route = self.subscriptions.get(envelope.routing_key)
        correlation_id_var.set(envelope.correlation_id)
        causation_id_var.set(envelope.message_id)
        try:
            if route is None:
                raise PermanentError(f"no handler for {envelope.routing_key} in {self.consumer}")
            model, handler = route
            payload = model.model_validate(envelope.payload)
            async with self.engine.begin() as conn:
                if from_retry and not await self._take_retry(conn, envelope):
                    return "skipped"
                claimed = (
                    await conn.execute(CLAIM, {"consumer": self.consumer, "message_id": envelope.message_id,
                                               "message_type": envelope.routing_key})
                ).first()
                if claimed is None:
                    DUPLICATES.labels(self.consumer).inc()
                    return "duplicate"
                await handler(conn, payload, HandlerContext(envelope, self.outbox, self.clock, self.settings))
            HANDLED.labels(self.consumer, envelope.routing_key).inc()
            return "applied"
        except Exception as exc:
            if is_connection_error(exc):
                raise
            FAILURES.labels(self.consumer, envelope.routing_key).inc()
            log.warning("handler failed for %s (%s): %r", envelope.message_id, envelope.routing_key, exc)
            return await self._record_failure(envelope, exc, permanent=isinstance(exc, (PermanentError,
                                                                                          ValidationError)))

    async def _take_retry(self, conn: AsyncConnection, envelope: Envelope) -> bool:
        taken = await conn.execute(
            delete(consumer_retries)
            .where(consumer_retries.c.consumer == self.consumer,
                   consumer_retries.c.message_id == envelope.message_id)
            .returning(consumer_retries.c.message_id)
        )
        return taken.first() is not None

    def backoff(self, attempts: int) -> timedelta:
        seconds = self.settings.consumer_retry_base_seconds * 2 ** (attempts - 1)
        return timedelta(seconds=min(seconds, self.settings.consumer_retry_max_seconds))

    async def _record_failure(self, envelope: Envelope, exc: Exception, *, permanent: bool) -> str:
        error = f"{type(exc).__name__}: {exc}"[:4000]
        key = (consumer_retries.c.consumer == self.consumer) & (consumer_retries.c.message_id == envelope.message_id)
        async with self.engine.begin() as conn:
            previous = (
                await conn.execute(select(consumer_retries.c.attempts).where(key).with_for_update())
            ).scalar()
            attempts = (previous or 0) + 1
            if permanent or attempts >= self.settings.consumer_max_attempts:
                await conn.execute(delete(consumer_retries).where(key))
                await conn.execute(
                    insert(dead_letters).values(
                        consumer=self.consumer, message_id=envelope.message_id,
                        message_type=envelope.routing_key, envelope=envelope.model_dump(mode="json"),
                        attempts=attempts, error=error,
                    )
                )
                DEAD.labels(self.consumer).inc()
                log.error("message %s dead after %d attempts: %s", envelope.message_id, attempts, error)
                return "dead"
            next_at = func.now() + self.backoff(attempts)
            await conn.execute(
                pg_insert(consumer_retries)
                .values(consumer=self.consumer, message_id=envelope.message_id,
                        envelope=envelope.model_dump(mode="json"), attempts=attempts,
                        next_attempt_at=next_at, last_error=error)
                .on_conflict_do_update(
                    index_elements=["consumer", "message_id"],
                    set_={"attempts": attempts, "next_attempt_at": next_at, "last_error": error},
                )
            )
            return "failed"

    # Retries -------------------------------------------------------------------------------------
    async def retry_due(self, limit: int = 100) -> int:
        async with self.engine.connect() as conn:
            due = (
                await conn.execute(
                    select(consumer_retries.c.envelope)
                    .where(consumer_retries.c.consumer == self.consumer,
                           consumer_retries.c.next_attempt_at <= func.now())
                    .order_by(consumer_retries.c.next_attempt_at)
                    .limit(limit)
                )
            ).scalars().all()
        for raw in due:
            await self.apply(Envelope.model_validate(raw), from_retry=True)
        return len(due)

    async def next_retry_in(self) -> float | None:
        async with self.engine.connect() as conn:
            seconds = (
                await conn.execute(
                    select(func.extract("epoch", func.min(consumer_retries.c.next_attempt_at) - func.now()))
                    .where(consumer_retries.c.consumer == self.consumer)
                )
            ).scalar()
        return None if seconds is None else max(float(seconds), 0.0)

    async def run_retries(self, dsn: str, poll_seconds: float) -> None:
        """Run due retries; sleep until the next one is due or a new one (or a replay) is written."""
        wake = asyncio.Event()
        listener = None
        while True:
            try:
                if listener is None or listener.is_closed():
                    listener = await asyncpg.connect(dsn)
                    await listener.add_listener(RETRY_CHANNEL, lambda *_a: wake.set())
                wake.clear()
                await self.retry_due()
                wait = await self.next_retry_in()
                timeout = poll_seconds if wait is None else min(wait, poll_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("retry sweeper: %r", exc)
                listener = None
                timeout = poll_seconds
            try:
                await asyncio.wait_for(wake.wait(), timeout=max(timeout, 0.01))
            except TimeoutError:
                pass


async def replay_dead_letter(conn: AsyncConnection, dead_letter_id: int, *, actor: str) -> dict[str, Any]:
    """Put a dead letter back in line: it runs again at once, with a fresh count of attempts."""
    from registry_common.errors import RegistryError

    row = (
        await conn.execute(select(dead_letters).where(dead_letters.c.id == dead_letter_id).with_for_update())
    ).mappings().first()
    if row is None:
        raise RegistryError("dead_letter.not_found")
    if row["state"] != "dead":
        raise RegistryError("dead_letter.not_replayable", state=row["state"])
    await conn.execute(
        update(dead_letters).where(dead_letters.c.id == dead_letter_id)
        .values(state="replayed", replayed_at=func.now(), replayed_by=actor)
    )
    await conn.execute(
        pg_insert(consumer_retries)
        .values(consumer=row["consumer"], message_id=row["message_id"], envelope=row["envelope"],
                attempts=0, next_attempt_at=func.now(), last_error="replay requested by " + actor)
        .on_conflict_do_nothing()
    )
    return dict(row)

