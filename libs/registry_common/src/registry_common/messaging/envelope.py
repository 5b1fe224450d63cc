"""The envelope every message travels in (JSON body; key fields mirrored in AMQP properties)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict

from registry_contracts import Message


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    message_id: UUID  # fixed when the outbox row is written: the dedupe key
    type: str  # "<owner>.<snake_name>"
    version: int
    kind: Literal["event", "command"]
    producer: str
    occurred_at: AwareDatetime  # real UTC
    correlation_id: str  # the business flow, e.g. the transfer id
    causation_id: UUID | None = None  # the message that caused this one
    payload: dict[str, Any]

    @property
    def routing_key(self) -> str:
        return f"{self.type}.v{self.version}"

    @classmethod
    def wrap(
        cls, message: Message, *, producer: str, correlation_id: str | None = None,
        causation_id: UUID | None = None,
    ) -> Envelope:
        message_id = uuid4()
        return cls(
            message_id=message_id,
            type=message.TYPE,
            version=message.VERSION,
            kind=message.KIND,
            producer=producer,
            occurred_at=datetime.now(UTC),
            correlation_id=correlation_id or str(message_id),
            causation_id=causation_id,
            payload=message.model_dump(mode="json"),
        )
