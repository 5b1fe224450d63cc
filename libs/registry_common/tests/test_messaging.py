"""Outbox, relay and idempotent consumer against the real PostgreSQL and RabbitMQ, with real faults:
a broker connection closed by ``rabbitmqctl``, a database backend killed by ``pg_terminate_backend``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.ext.asyncio import AsyncEngine

from registry_common.api import create_app
from registry_common.clock import ProgrammeClock
from registry_common.db import make_engine
from registry_common.messaging.consumer import BATCHED, DUPLICATES, ConsumerRunner, all_subscriptions
from registry_common.messaging.envelope import Envelope
from registry_common.messaging.outbox import Outbox, OutboxRelay, Publisher
from registry_common.messaging.topology import declare_service_queue
from registry_common.settings import RegistrySettings
from registry_common.testing.fixtures import wait_for
from registry_common.testing.probe import BEHAVIOUR, PROBE, ProbePing
from registry_common.testing.servers import close_broker_connection, count, terminate_backends

pytestmark = pytest.mark.integration
OUTBOX = Outbox("probe")


class InterruptingPublisher(Publisher):
    """Publishes normally, but runs ``interrupt`` once, just before the ``at``-th publish: a fault that
    lands in the middle of a batch, by construction."""

    def __init__(self, connection: Any, namespace: str, *, at: int, interrupt: Callable[[], Any]):
        super().__init__(connection, namespace)
        self.calls = 0
        self.at = at
        self.interrupt = interrupt
        self.interrupted = False

    async def publish(self, exchange: str, routing_key: str, envelope: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls == self.at:
            self.interrupted = True
            result = self.interrupt()
            if asyncio.iscoroutine(result):
                await result
        await super().publish(exchange, routing_key, envelope)


@pytest.fixture
async def consumer(probe_settings: RegistrySettings, probe_db: AsyncEngine) -> AsyncIterator[ConsumerRunner]:
    """The probe's consumer, attached to its queue, with its retry sweeper running."""
    engine = make_engine(probe_settings.app_database_url, pool_size=5, application_name="probe-consumer")
    runner = ConsumerRunner(consumer="probe.main", engine=engine, subscriptions=all_subscriptions(PROBE),
                            outbox=OUTBOX, clock=ProgrammeClock(engine), settings=probe_settings)
    connection = await aio_pika.connect_robust(probe_settings.amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=50)
    queue = await declare_service_queue(channel, probe_settings.namespace, "probe", sorted(runner.subscriptions))
    await queue.purge()
    await runner.attach(queue)
    retries = asyncio.create_task(runner.run_retries(
        probe_settings.app_database_url.replace("+asyncpg", ""), 0.2))
    BEHAVIOUR.failing = False
    BEHAVIOUR.failing_numbers.clear()
    BEHAVIOUR.attempts.clear()
    yield runner
    retries.cancel()
    await connection.close()
    await engine.dispose()


async def relay_with(settings: RegistrySettings, publisher_factory: Callable[[Any], Publisher],
                     name: str) -> tuple[OutboxRelay, Any, AsyncEngine]:
    connection = await aio_pika.connect_robust(settings.amqp_url, client_properties={"connection_name": name})
    engine = make_engine(settings.app_database_url, pool_size=2, application_name=name)
    relay = OutboxRelay(engine, publisher_factory(connection), dsn=settings.app_database_url.replace("+asyncpg", ""),
                        batch_size=settings.relay_batch_size, poll_seconds=0.2)
    return relay, connection, engine


async def write_pings(engine: AsyncEngine, how_many: int) -> None:
    async with engine.begin() as conn:
        for n in range(how_many):
            await OUTBOX.add(conn, ProbePing(n=n))


async def exactly_once(engine: AsyncEngine, how_many: int) -> None:
    await wait_for(lambda: _applied(engine, how_many), timeout=60, what=f"{how_many} effects")
    assert await count(engine, "SELECT count(*) FROM probe_effects") == how_many
    assert await count(engine, "SELECT count(DISTINCT message_id) FROM probe_effects") == how_many
    assert await count(engine, "SELECT count(DISTINCT n) FROM probe_effects") == how_many
    assert await count(engine, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def _applied(engine: AsyncEngine, how_many: int) -> bool:
    return await count(engine, "SELECT count(*) FROM probe_effects") >= how_many


async def test_a_rolled_back_transaction_publishes_nothing(probe_settings, probe_db, consumer):
    class Abandon(Exception):
        pass

    with pytest.raises(Abandon):
        async with probe_db.begin() as conn:
            await OUTBOX.add(conn, ProbePing(n=1))
            raise Abandon
    relay, connection, engine = await relay_with(probe_settings, lambda c: Publisher(c, probe_settings.namespace),
                                                 f"{probe_settings.namespace}probe-relay-rollback")
    try:
        assert await relay.relay_once() == 0
        await write_pings(probe_db, 1)  # a committed one after it goes through, alone
        assert await relay.relay_once() == 1
        await exactly_once(probe_db, 1)
        assert await count(probe_db, "SELECT count(*) FROM outbox") == 1
    finally:
        await connection.close()
        await engine.dispose()


async def test_relay_broker_connection_closed_mid_batch_still_exactly_once(probe_settings, probe_db, consumer):
    name = f"{probe_settings.namespace}probe-relay-broker"
    await write_pings(probe_db, 400)
    holder: dict[str, InterruptingPublisher] = {}

    def factory(connection: Any) -> Publisher:
        holder["p"] = InterruptingPublisher(connection, probe_settings.namespace, at=120,
                                            interrupt=lambda: asyncio.to_thread(close_broker_connection, name))
        return holder["p"]

    relay, connection, engine = await relay_with(probe_settings, factory, name)
    task = asyncio.create_task(relay.run())
    try:
        await exactly_once(probe_db, 400)
        assert holder["p"].interrupted
        assert await count(probe_db, "SELECT count(*) FROM outbox WHERE attempts > 0") > 0  # the close hit
    finally:
        task.cancel()
        await connection.close()
        await engine.dispose()


async def test_relay_database_connection_killed_mid_batch_still_exactly_once(probe_settings, probe_db, consumer):
    name = f"{probe_settings.namespace}probe-relay-db"
    await write_pings(probe_db, 400)
    duplicates_before = DUPLICATES.labels("probe.main")._value.get()

    def factory(connection: Any) -> Publisher:
        return InterruptingPublisher(connection, probe_settings.namespace, at=120,
                                     interrupt=lambda: terminate_backends(probe_settings.admin_database_url, name))

    relay, connection, engine = await relay_with(probe_settings, factory, name)
    task = asyncio.create_task(relay.run())
    try:
        await exactly_once(probe_db, 400)
        # The killed batch was published but never marked: it went out again and the inbox dropped it.
        assert DUPLICATES.labels("probe.main")._value.get() > duplicates_before
    finally:
        task.cancel()
        await connection.close()
        await engine.dispose()


async def test_a_burst_is_applied_in_batches_and_a_failing_message_fails_only_itself(probe_settings, probe_db,
                                                                                     consumer):
    """60 pings at once: they are applied in batches (one transaction each); ping 13's handler fails, so its
    batch is rolled back and applied message by message: the 59 others exactly once, 13 waits for a retry."""
    BEHAVIOUR.failing_numbers.add(13)
    batched_before = BATCHED.labels("probe.main")._value.get()
    relay, connection, engine = await relay_with(probe_settings, lambda c: Publisher(c, probe_settings.namespace),
                                                 f"{probe_settings.namespace}probe-relay-burst")
    try:
        await write_pings(probe_db, 60)
        published = 0
        while published < 60 and (sent := await relay.relay_once()):
            published += sent
        assert published == 60
        await wait_for(lambda: _applied(probe_db, 59), timeout=60, what="59 effects")
        await wait_for(lambda: count(probe_db, "SELECT count(*) FROM consumer_retries"), what="13's failure recorded")
    finally:
        await connection.close()
        await engine.dispose()
    assert BATCHED.labels("probe.main")._value.get() > batched_before
    assert await count(probe_db, "SELECT count(*) FROM probe_effects") == 59
    assert await count(probe_db, "SELECT count(DISTINCT n) FROM probe_effects WHERE n <> 13") == 59
    assert await count(probe_db, "SELECT count(*) FROM inbox") == 59
    assert await count(probe_db, "SELECT attempts FROM consumer_retries") == 1


async def test_same_message_id_twice_through_the_broker_applies_once(probe_settings, probe_db, consumer):
    connection = await aio_pika.connect_robust(probe_settings.amqp_url)
    publisher = Publisher(connection, probe_settings.namespace)
    envelope = Envelope.wrap(ProbePing(n=7), producer="probe").model_dump(mode="json")
    duplicates_before = DUPLICATES.labels("probe.main")._value.get()
    try:
        await publisher.publish("events", "probe.ping.v1", envelope)
        await publisher.publish("events", "probe.ping.v1", envelope)
        await wait_for(lambda: DUPLICATES.labels("probe.main")._value.get() > duplicates_before,
                       what="the second delivery to be seen")
        assert await count(probe_db, "SELECT count(*) FROM probe_effects") == 1
        assert await count(probe_db, "SELECT count(*) FROM inbox") == 1
    finally:
        await connection.close()


async def test_failing_message_retried_with_growing_delays_then_dead_then_replayed(
    probe_settings, probe_db, consumer, token_for,
):
    BEHAVIOUR.failing = True
    relay, connection, engine = await relay_with(probe_settings, lambda c: Publisher(c, probe_settings.namespace),
                                                 f"{probe_settings.namespace}probe-relay-retry")
    await write_pings(probe_db, 1)
    await relay.relay_once()
    await wait_for(lambda: count(probe_db, "SELECT count(*) FROM dead_letters"), timeout=30, what="a dead letter")
    await connection.close()
    await engine.dispose()

    assert len(BEHAVIOUR.attempts) == probe_settings.consumer_max_attempts
    gaps = [b - a for a, b in zip(BEHAVIOUR.attempts, BEHAVIOUR.attempts[1:], strict=False)]
    expected = [probe_settings.consumer_retry_base_seconds * 2**i for i in range(len(gaps))]
    assert all(gap >= 0.9 * want for gap, want in zip(gaps, expected, strict=True)), (gaps, expected)
    assert gaps == sorted(gaps), gaps
    assert await count(probe_db, "SELECT count(*) FROM consumer_retries") == 0
    assert await count(probe_db, "SELECT count(*) FROM probe_effects") == 0

    app = create_app(PROBE, probe_settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://probe") as client:
        admin = {"Authorization": f"Bearer {token_for('admin-1', 'administrator')}"}
        listed = (await client.get("/api/v1/probe/dead-letters", headers=admin)).json()["items"]
        assert len(listed) == 1 and "probe told to fail" in listed[0]["error"]
        assert listed[0]["attempts"] == probe_settings.consumer_max_attempts
        dead_id = listed[0]["id"]

        reader = {"Authorization": f"Bearer {token_for('inst-1', 'installation')}"}
        refused = await client.post(f"/api/v1/probe/dead-letters/{dead_id}/replay", headers=reader)
        assert refused.status_code == 403

        BEHAVIOUR.failing = False
        replayed = await client.post(f"/api/v1/probe/dead-letters/{dead_id}/replay", headers=admin)
        assert replayed.status_code == 202, replayed.text
        await wait_for(lambda: count(probe_db, "SELECT count(*) FROM probe_effects"), what="the replay applied")

        again = await client.post(f"/api/v1/probe/dead-letters/{dead_id}/replay", headers=admin)
        assert again.status_code == 409 and again.json()["code"] == "dead_letter.not_replayable"
        audit = (await client.get("/api/v1/probe/audit-log", headers=admin)).json()["items"]
        assert [a["action"] for a in audit] == ["dead_letter.replayed"]
    assert await count(probe_db, "SELECT count(*) FROM probe_effects") == 1
