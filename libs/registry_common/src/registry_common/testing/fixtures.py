"""pytest plugin: real servers for every test run, isolated per run.

Server URLs come from ``TEST_DATABASE_URL`` (an administrator URL) and ``TEST_AMQP_URL``; where they
are unset and a Docker engine answers, testcontainers starts the servers; otherwise the tests that need
them are skipped locally and **fail when ``CI`` is set**.

Each run gets a unique name prefix ``t<epoch hex>_<random>_`` used for its databases and for every
exchange and queue; everything is removed at the end, and leftovers of runs older than 6 hours
(crashed runs) are removed at the start.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import pytest

from registry_common.auth import TokenCodec, generate_keypair
from registry_common.db import asyncpg_dsn
from registry_common.settings import SERVICES, RegistrySettings

RUN_PREFIX = re.compile(r"^t([0-9a-f]{8})_[0-9a-f]{6}_")
LEFTOVER_AGE = timedelta(hours=6)


def docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


def unavailable(what: str, env: str) -> NoReturn:
    message = f"{what} unavailable: set {env} or run a Docker engine"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def admin_database_url() -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield asyncpg_dsn(url)
        return
    if not docker_available():
        unavailable("PostgreSQL", "TEST_DATABASE_URL")
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer("postgres:15", driver=None) as pg:
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    if url := os.environ.get("TEST_AMQP_URL"):
        yield url
        return
    if not docker_available():
        unavailable("RabbitMQ", "TEST_AMQP_URL")
    from testcontainers.community.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13") as rmq:
        yield f"amqp://guest:guest@{rmq.get_container_host_ip()}:{rmq.get_exposed_port(5672)}/"


@pytest.fixture(scope="session")
def run_prefix() -> str:
    """``t<epoch seconds, hex>_<random>_``: unique, and tells how old a leftover is."""
    return f"t{int(time.time()):08x}_{secrets.token_hex(3)}_"


def is_stale(name: str, now: float | None = None) -> bool:
    match = RUN_PREFIX.match(name)
    if match is None:
        return False
    return (now or time.time()) - int(match.group(1), 16) > LEFTOVER_AGE.total_seconds()


async def drop_databases(admin_url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _stale_databases(admin_url: str) -> list[str]:
    conn = await asyncpg.connect(admin_url)
    try:
        names = [r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")]
    finally:
        await conn.close()
    return [n for n in names if is_stale(n)]


def _stale_broker_names() -> tuple[list[str], list[str]]:
    if shutil.which("rabbitmqctl") is None:
        return [], []

    def listing(kind: str) -> list[str]:
        out = subprocess.run(["rabbitmqctl", "-q", kind, "name"], capture_output=True, text=True, check=False)
        return [n.strip() for n in out.stdout.splitlines() if is_stale(n.strip())]

    return listing("list_queues"), listing("list_exchanges")


async def _delete_broker_names(amqp: str, queues: list[str], exchanges: list[str]) -> None:
    import aio_pika

    connection = await aio_pika.connect(amqp)
    try:
        channel = await connection.channel()
        for queue in queues:
            await channel.queue_delete(queue)
        for exchange in exchanges:
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def clean_leftovers(admin_database_url: str, amqp_url: str) -> None:
    """Remove what crashed runs older than 6 hours left behind."""
    await drop_databases(admin_database_url, await _stale_databases(admin_database_url))
    queues, exchanges = await asyncio.to_thread(_stale_broker_names)
    if queues or exchanges:
        await _delete_broker_names(amqp_url, queues, exchanges)


@pytest.fixture(scope="session")
def jwt_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    private, public = folder / "jwt_private.pem", folder / "jwt_public.pem"
    generate_keypair(private, public)
    return private, public


@pytest.fixture(scope="session")
def token_for(jwt_keys: tuple[Path, Path]) -> Callable[..., str]:
    """Mint a token for a made-up user: ``token_for("u1", "authority")``."""
    private, public = jwt_keys
    codec = TokenCodec(public_key_file=public, private_key_file=private, issuer="registro-mx",
                       audience="registro-mx")

    def mint(user_id: str, *roles: str, lifetime: timedelta = timedelta(minutes=15)) -> str:
        return codec.issue(user_id=user_id, username=user_id, roles=roles, lifetime=lifetime)

    return mint


@pytest.fixture(scope="session")
def registry_env(
    admin_database_url: str, amqp_url: str, run_prefix: str, jwt_keys: tuple[Path, Path],
    clean_leftovers: None,
) -> dict[str, str]:
    """The ``REGISTRY_*`` environment of this test run: its databases, namespace, keys, clock control."""
    private, public = jwt_keys
    host_port = re.search(r"@([^/:]+):(\d+)", admin_database_url)
    assert host_port, admin_database_url
    return {
        "REGISTRY_ENVIRONMENT": "test",
        "REGISTRY_ADMIN_DATABASE_URL": admin_database_url,
        "REGISTRY_DATABASE_HOST": host_port.group(1),
        "REGISTRY_DATABASE_PORT": host_port.group(2),
        "REGISTRY_DATABASE_PREFIX": run_prefix,
        "REGISTRY_AMQP_URL": amqp_url,
        "REGISTRY_NAMESPACE": run_prefix,
        "REGISTRY_JWT_PUBLIC_KEY_FILE": str(public),
        "REGISTRY_JWT_PRIVATE_KEY_FILE": str(private),
        "REGISTRY_CLOCK_CONTROL": "true",
        "REGISTRY_CLOCK_START": "2020-01-01T00:00:00-06:00",
        "REGISTRY_LOG_JSON": "true",
        "REGISTRY_BOOTSTRAP_ADMIN_PASSWORD": f"first-{secrets.token_urlsafe(12)}",
        "REGISTRY_LOGIN_SLOWDOWN_BASE_SECONDS": "0.01",
    }


def settings_from_env(env: dict[str, str], service: str, **overrides: Any) -> RegistrySettings:
    """Settings as a process started with ``env`` would read them (without touching os.environ)."""
    from registry_common.service import load_definition

    values = {k.removeprefix("REGISTRY_").lower(): v for k, v in env.items() if k.startswith("REGISTRY_")}
    values.update(service=service, **overrides)
    settings_class = load_definition(service).settings_class if service in SERVICES else RegistrySettings
    return settings_class.model_validate(values)


@pytest.fixture(scope="session")
async def provisioned_services(registry_env: dict[str, str]) -> AsyncIterator[dict[str, str]]:
    """Every domain service's database created and migrated for this run, its topology declared;
    everything dropped at the end."""
    from registry_common.messaging.topology import delete_namespace
    from registry_common.provision import provision

    overrides = {k.removeprefix("REGISTRY_").lower(): v for k, v in registry_env.items()}
    await check_connection_limit(registry_env["REGISTRY_ADMIN_DATABASE_URL"])
    await provision(list(SERVICES), **overrides)
    yield registry_env
    await drop_databases(registry_env["REGISTRY_ADMIN_DATABASE_URL"],
                         [f"{registry_env['REGISTRY_DATABASE_PREFIX']}{s}" for s in SERVICES])
    await delete_namespace(registry_env["REGISTRY_AMQP_URL"], registry_env["REGISTRY_NAMESPACE"], SERVICES)


async def check_connection_limit(admin_url: str, needed: int = 200) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        limit = int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()
    if limit < needed:
        pytest.fail(f"PostgreSQL allows {limit} connections; the tests need {needed}. "
                    "Run `bash scripts/infra.sh` (sets max_connections = 300) and restart PostgreSQL.")


async def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.05,  # noqa: ASYNC109
                   what: str = "condition") -> Any:
    """Wait (bounded) until ``predicate()`` (sync or async) returns something truthy; return it.
    An exception counts as "not yet" (a process restarting refuses connections) and is reported."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if asyncio.iscoroutine(last):
                last = await last
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")
