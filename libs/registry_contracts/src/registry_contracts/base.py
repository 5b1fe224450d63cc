"""Base classes of the catalogue. Every concrete message registers itself under its routing key."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

CATALOGUE: dict[str, type[Message]] = {}


class Message(BaseModel):
    """A message's payload. Tolerant reader: unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    TYPE: ClassVar[str]  # "<owner>.<snake_name>"
    VERSION: ClassVar[int] = 1
    KIND: ClassVar[Literal["event", "command"]]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "TYPE" in cls.__dict__:
            key = cls.routing_key()
            if key in CATALOGUE and CATALOGUE[key] is not cls:
                raise TypeError(f"message {key} is defined twice")
            CATALOGUE[key] = cls

    @classmethod
    def routing_key(cls) -> str:
        return f"{cls.TYPE}.v{cls.VERSION}"

    @classmethod
    def owner(cls) -> str:
        return cls.TYPE.split(".", 1)[0]


class Event(Message):
    """A past-tense fact; many consumers, owned by its producer."""

    KIND: ClassVar[Literal["event", "command"]] = "event"


class Command(Message):
    """An imperative request to exactly one owning service, answered by an event."""

    KIND: ClassVar[Literal["event", "command"]] = "command"


def message_class(routing_key: str) -> type[Message]:
    return CATALOGUE[routing_key]
