"""What a service tells the chassis about itself. The chassis builds the API and worker processes from it;
the service brings only its tables, routes, message handlers, approval actions and periodic tasks."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.settings import RegistrySettings

if TYPE_CHECKING:
    from registry_common.worker import WorkerContext
    from registry_contracts import Message

PeriodicTask = Callable[["WorkerContext"], Awaitable[Any]]
# A periodic task's interval: seconds, or the name of a setting holding them (e.g. a sub-second sweep in tests).
Interval = float | str


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    metadata: MetaData | None = None  # the service's own tables (the chassis adds its own)
    migrations_dir: Path | None = None  # the service's alembic revisions (depending on "chassis")
    routers: Sequence[APIRouter] = ()
    subscriptions: Mapping[type[Message], Callable[..., Awaitable[None]]] = field(default_factory=dict)
    periodic_tasks: Sequence[tuple[str, Interval, PeriodicTask]] = ()  # (name, interval, task)
    settings_class: type[RegistrySettings] = RegistrySettings  # a subclass adds the service's settings
    # Run by provisioning after the migrations, as the owner, in one transaction (e.g. first users).
    provision_hook: Callable[[AsyncConnection, Any], Awaitable[None]] | None = None
    # Extra resources of the API process (e.g. an HTTP client for pre-checks), opened in its lifespan.
    api_lifespan: Callable[[Any], AbstractAsyncContextManager[None]] | None = None

    def load_settings(self, **overrides: Any) -> RegistrySettings:
        """This service's settings from the environment (never at import time)."""
        return self.settings_class(service=self.name, **overrides)


def load_definition(service: str) -> ServiceDefinition:
    """Each service package exposes ``<service>.definition.DEFINITION``."""
    module = importlib.import_module(f"{service}.definition")
    definition: ServiceDefinition = module.DEFINITION
    return definition
