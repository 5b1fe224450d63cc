"""A probe service for the chassis's own tests: one message type, one table, a handler that records each
application and can be told to fail. It runs on exactly the chassis machinery the services use."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Column, DateTime, Identity, Integer, MetaData, Table, Uuid, func, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.messaging.consumer import HandlerContext
from registry_common.service import ServiceDefinition
from registry_contracts import Event


class ProbePing(Event):
    TYPE = "probe.ping"
    VERSION = 1
    n: int


probe_metadata = MetaData()
probe_effects = Table(
    "probe_effects",
    probe_metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("message_id", Uuid, nullable=False),
    Column("n", Integer, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


@dataclass
class ProbeBehaviour:
    """Switched by the tests: make the handler fail, and see when it was attempted."""

    failing: bool = False
    failing_numbers: set[int] = field(default_factory=set)  # fail only the pings with these numbers
    attempts: list[float] = field(default_factory=list)


BEHAVIOUR = ProbeBehaviour()


async def on_probe_ping(conn: AsyncConnection, message: ProbePing, ctx: HandlerContext) -> None:
    BEHAVIOUR.attempts.append(time.monotonic())
    if BEHAVIOUR.failing or message.n in BEHAVIOUR.failing_numbers:
        raise RuntimeError(f"probe told to fail (n={message.n})")
    await conn.execute(insert(probe_effects).values(message_id=ctx.envelope.message_id, n=message.n))


PROBE = ServiceDefinition(name="probe", metadata=probe_metadata, subscriptions={ProbePing: on_probe_ping})
