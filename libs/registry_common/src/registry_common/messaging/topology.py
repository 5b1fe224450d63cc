"""Broker topology: exchange and queue names (with the run's namespace) and their declaration.

Exchanges: ``registry.events`` (topic), ``registry.commands`` (direct), ``registry.dlx`` (direct).
Each service consumes from one quorum queue ``<service>.main``, bound to the routing keys it handles;
a message the runner cannot even decode is rejected to ``<service>.main.dlq`` through the DLX.
Handler failures never use the broker's dead-lettering: they are retried and dead-lettered in the
service's database (``consumer_retries``, ``dead_letters``), where operators list and replay them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

if TYPE_CHECKING:
    from registry_common.service import ServiceDefinition
    from registry_common.settings import RegistrySettings

EVENTS, COMMANDS, DLX = "events", "commands", "dlx"
_EXCHANGE_TYPES = {EVENTS: aio_pika.ExchangeType.TOPIC, COMMANDS: aio_pika.ExchangeType.DIRECT,
                   DLX: aio_pika.ExchangeType.DIRECT}


def exchange_name(namespace: str, logical: str) -> str:
    return f"{namespace}registry.{logical}"


def queue_name(namespace: str, service: str, purpose: str = "main") -> str:
    return f"{namespace}{service}.{purpose}"


async def declare_exchanges(channel: AbstractChannel, namespace: str) -> dict[str, AbstractExchange]:
    return {
        logical: await channel.declare_exchange(exchange_name(namespace, logical), kind, durable=True)
        for logical, kind in _EXCHANGE_TYPES.items()
    }


async def declare_service_queue(
    channel: AbstractChannel, namespace: str, service: str, routing_keys: Iterable[str],
) -> AbstractQueue:
    """Declare ``<service>.main`` (quorum) and its DLQ, bound to every routing key it handles:
    events on the topic exchange, commands owned by this service on the direct exchange."""
    exchanges = await declare_exchanges(channel, namespace)
    name = queue_name(namespace, service)
    dlq = await channel.declare_queue(f"{name}.dlq", durable=True, arguments={"x-queue-type": "quorum"})
    await dlq.bind(exchanges[DLX], routing_key=name)
    queue = await channel.declare_queue(
        name,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": exchange_name(namespace, DLX),
            "x-dead-letter-routing-key": name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )
    for key in routing_keys:
        kind = COMMANDS if key.split(".", 1)[0] == service and _is_command(key) else EVENTS
        await queue.bind(exchanges[kind], routing_key=key)
    return queue


def _is_command(routing_key: str) -> bool:
    from registry_contracts import CATALOGUE

    model = CATALOGUE.get(routing_key)
    return model is not None and model.KIND == "command"


async def declare_all(settings: RegistrySettings, definitions: Iterable[ServiceDefinition]) -> None:
    """Declare every service's queue before any process starts, so no early message is unroutable."""
    from registry_common.messaging.consumer import routing_keys_of

    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        for definition in definitions:
            await declare_service_queue(
                channel, settings.namespace, definition.name, routing_keys_of(definition)
            )
    finally:
        await connection.close()


async def delete_namespace(amqp_url: str, namespace: str, services: Iterable[str]) -> None:
    """Remove a test run's exchanges and queues."""
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        for service in services:
            name = queue_name(namespace, service)
            for queue in (name, f"{name}.dlq"):
                await channel.queue_delete(queue)
        for logical in _EXCHANGE_TYPES:
            await channel.exchange_delete(exchange_name(namespace, logical))
    finally:
        await connection.close()
