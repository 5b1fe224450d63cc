"""docker-compose.yml, the image it builds and the PostgreSQL init script, checked by reading them.

These machines have no Docker engine, so the file is parsed and cross-checked against the repository:
every process exists with its image, environment, health check and start-up order; every Dockerfile
and every COPY source exists; every `python -m` module can be found by this interpreter; each process
names its own database and role. Where the compose plugin answers, `docker compose config -q` runs too.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
INIT_DIR = ROOT / "deploy" / "postgres" / "init"
INIT_SCRIPT = INIT_DIR / "01-roles-and-databases.sh"

DOMAIN_SERVICES = ("accounts", "issuance", "transfers", "compliance", "auctions", "notifications")
INFRASTRUCTURE = ("postgres", "rabbitmq")
API_PORT, WORKER_PORT = 8000, 8100
MIGRATE, MIGRATE_MODULE = "migrate", "registry_common.provision"

# compose service name -> (the registry service it belongs to, the module `python -m` runs)
PROCESSES: dict[str, tuple[str, str]] = {
    **{f"{svc}-api": (svc, f"{svc}.api") for svc in DOMAIN_SERVICES},
    **{f"{svc}-worker": (svc, f"{svc}.worker") for svc in DOMAIN_SERVICES},
    "gateway": ("gateway", "gateway.api"),
}
DOMAIN_PROCESSES = [name for name, (svc, _) in PROCESSES.items() if svc != "gateway"]


# Reading the files ------------------------------------------------------------------------------
@functools.cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def service(name: str) -> dict:
    services = compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name!r}"
    return services[name]


_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")


def with_defaults(value: object) -> str:
    """Interpolate as compose would in an empty environment: ${VAR:-default} -> default."""
    return _VARIABLE.sub(lambda match: match["default"] or "", str(value))


def environment(name: str) -> dict[str, str]:
    env = service(name).get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: with_defaults(value) for key, value in env.items()}


def argv(command: str | list[str] | None) -> list[str]:
    if command is None:
        return []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def depends_on(name: str) -> dict[str, str]:
    """Dependency -> condition (the short list form means service_started)."""
    deps = service(name).get("depends_on") or {}
    if isinstance(deps, list):
        return {dep: "service_started" for dep in deps}
    return {dep: (spec or {}).get("condition", "service_started") for dep, spec in deps.items()}


def expected_dependencies(name: str) -> dict[str, str]:
    expected = {infra: "service_healthy" for infra in INFRASTRUCTURE}
    if name == MIGRATE:  # databases, migrations and the broker topology, before anything else
        return expected
    if name == "gateway":  # the gateway routes to every API, so it starts after all of them
        expected |= {f"{svc}-api": "service_healthy" for svc in DOMAIN_SERVICES}
    else:
        expected[MIGRATE] = "service_completed_successfully"
    return expected


def published_ports(name: str) -> set[tuple[int, int]]:
    """(host port, container port) pairs, from "8000:8000", "127.0.0.1:8000:8000/tcp" or the long form."""
    pairs = set()
    for port in service(name).get("ports") or []:
        if isinstance(port, dict):
            if port.get("published"):
                pairs.add((int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        if len(parts) >= 2:
            pairs.add((int(parts[-2]), int(parts[-1])))
    return pairs


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def builds() -> dict[tuple[Path, Path], list[str]]:
    """(context, Dockerfile) -> the compose services built from it."""
    found: dict[tuple[Path, Path], list[str]] = {}
    for name, spec in compose()["services"].items():
        build = spec.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        context = (ROOT / build.get("context", ".")).resolve()
        dockerfile = (context / build.get("dockerfile", "Dockerfile")).resolve()
        found.setdefault((context, dockerfile), []).append(name)
    return found


def runnable_spec(module: str):
    """What `python -m module` would run: the module itself, or a package's __main__."""
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # a parent package is missing
        return None
    if spec is not None and spec.submodule_search_locations is not None:
        return importlib.util.find_spec(f"{module}.__main__")
    return spec


# The processes ----------------------------------------------------------------------------------
def test_compose_covers_every_service_package():
    packages = {path.parent.name for path in (ROOT / "services").glob("*/pyproject.toml")}
    assert packages == {*DOMAIN_SERVICES, "gateway"}, (
        "services/ and this test's list of services disagree; add the new service's processes "
        "to docker-compose.yml, the Dockerfile and this test"
    )


def test_compose_runs_exactly_the_launchers_processes():
    """The same processes as `make up` (and deploy/k8s, tests/deploy/test_k8s.py), each with its module: every
    container built from our image is one of them, or `migrate`."""
    from registry_common.launcher import SystemPlan

    planned = {p.name: p.module for p in SystemPlan(run_dir=ROOT / "var" / "nonexistent").processes()}
    assert {name: module for name, (_, module) in PROCESSES.items()} == planned
    running = {name for name, spec in compose()["services"].items() if "build" in spec} - {MIGRATE}
    assert running == set(planned), f"compose runs {sorted(running)}, the launcher {sorted(planned)}"


def test_accounts_api_and_worker_share_the_journal_checkpoints():
    """The worker writes the signed checkpoints, the API reads them (GET /api/v1/ledger/journal/verify)."""
    directories = set()
    for name in ("accounts-api", "accounts-worker"):
        directory = environment(name)["REGISTRY_JOURNAL_CHECKPOINT_DIR"]
        mounts = {target: source for source, target, *_ in (str(v).split(":") for v in service(name)["volumes"])}
        assert mounts.get(directory) in (compose().get("volumes") or {}), f"{name}: {directory} is not a volume"
        directories.add((directory, mounts[directory]))
    assert len(directories) == 1, f"accounts API and worker must share one checkpoint volume: {directories}"


@pytest.mark.parametrize("name", [*PROCESSES, MIGRATE])
def test_process_is_a_service_with_image_environment_and_command(name):
    spec = service(name)
    module = PROCESSES[name][1] if name in PROCESSES else MIGRATE_MODULE

    assert "build" in spec or "image" in spec, f"{name}: neither build nor image"
    assert spec.get("environment"), f"{name}: no environment"
    command = argv(spec.get("command"))
    assert command[:3] == ["python", "-m", module], f"{name}: command {command} should run {module}"
    if name == MIGRATE:
        assert "--all" in command, "migrate must provision and migrate every service's database"
    else:
        assert spec.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


@pytest.mark.parametrize("name", [*PROCESSES, MIGRATE])
def test_process_starts_after_what_it_needs(name):
    actual = depends_on(name)
    for dependency, condition in expected_dependencies(name).items():
        assert actual.get(dependency) == condition, (
            f"{name} must depend on {dependency} with condition {condition}, has {actual.get(dependency)}"
        )


def test_every_dependency_is_a_service():
    services = compose()["services"]
    dangling = {
        (name, dependency)
        for name in services
        for dependency in depends_on(name)
        if dependency not in services
    }
    assert not dangling, f"depends_on names services that do not exist: {sorted(dangling)}"


@pytest.mark.parametrize("name", list(PROCESSES))
def test_healthcheck_probes_readiness_on_the_process_port_with_python(name):
    env = environment(name)
    port_variable = "REGISTRY_WORKER_HTTP_PORT" if name.endswith("-worker") else "REGISTRY_HTTP_PORT"
    listens_on = int(env[port_variable])
    assert listens_on == (WORKER_PORT if name.endswith("-worker") else API_PORT)

    probe = " ".join(argv(service(name)["healthcheck"]["test"]))
    assert "python" in probe and "curl" not in probe and "wget" not in probe, (
        f"{name}: the slim image has python, not curl or wget: {probe}"
    )
    assert re.search(rf"//(127\.0\.0\.1|localhost):{listens_on}/ready\b", probe), (
        f"{name}: healthcheck should GET /ready on port {listens_on} ({port_variable}): {probe}"
    )


# Environment: each process names its own database, role and secrets ------------------------------
@pytest.mark.parametrize("name", DOMAIN_PROCESSES)
def test_environment_names_its_own_database_and_role(name):
    svc = PROCESSES[name][0]
    env = environment(name)

    url = urlsplit(env["REGISTRY_DATABASE_URL"])
    assert url.scheme == "postgresql+asyncpg"
    assert url.username == f"{svc}_app", f"{name} must connect as {svc}_app, not {url.username}"
    assert url.path == f"/registry_{svc}", f"{name} must use registry_{svc}, not {url.path.lstrip('/')}"
    assert url.hostname == env["REGISTRY_DATABASE_HOST"] == "postgres"
    assert url.password == environment("postgres")["DB_ROLE_PASSWORD"], (
        f"{name}: the password differs from the one the init script gives {svc}_app"
    )
    if "REGISTRY_MIGRATION_DATABASE_URL" in env:
        owner = urlsplit(env["REGISTRY_MIGRATION_DATABASE_URL"])
        assert (owner.username, owner.path) == (f"{svc}_owner", f"/registry_{svc}")
    assert env.get("REGISTRY_SERVICE", svc) == svc

    values = " ".join(env.values())
    for other in set(DOMAIN_SERVICES) - {svc}:
        for foreign in (f"registry_{other}", f"{other}_app", f"{other}_owner"):
            assert foreign not in values, f"{name}'s environment mentions {foreign} (copy-paste?)"


@pytest.mark.parametrize("name", list(PROCESSES))
def test_key_files_are_mounted_secrets_and_only_accounts_signs(name):
    spec, env = service(name), environment(name)
    declared = compose().get("secrets") or {}
    mounted = {}
    for entry in spec.get("secrets") or []:
        source = entry if isinstance(entry, str) else entry["source"]
        target = source if isinstance(entry, str) else entry.get("target", source)
        mounted[f"/run/secrets/{target}"] = source

    key_files = {
        key: path for key, path in env.items() if key.startswith("REGISTRY_JWT_") and key.endswith("_FILE")
    }
    assert "REGISTRY_JWT_PUBLIC_KEY_FILE" in key_files, f"{name}: tokens are verified everywhere"
    assert ("REGISTRY_JWT_PRIVATE_KEY_FILE" in key_files) == (PROCESSES[name][0] == "accounts"), (
        f"{name}: only accounts holds the signing key"
    )
    for key, path in key_files.items():
        assert path in mounted, f"{name}: {key}={path} but no secret is mounted there"
        assert "file" in declared.get(mounted[path], {}), f"secret {mounted[path]!r} has no file"


def test_amqp_account_is_the_one_rabbitmq_creates():
    broker = environment("rabbitmq")
    for name in [*PROCESSES, MIGRATE]:
        url = urlsplit(environment(name)["REGISTRY_AMQP_URL"])
        assert (url.hostname, url.port) == ("rabbitmq", 5672), name
        account = (broker["RABBITMQ_DEFAULT_USER"], broker["RABBITMQ_DEFAULT_PASS"])
        assert (url.username, url.password) == account, f"{name}: not the account RabbitMQ creates"


def test_gateway_is_published_and_routes_to_every_api_and_worker():
    env = environment("gateway")
    assert (API_PORT, API_PORT) in published_ports("gateway"), f"gateway must publish host port {API_PORT}"
    assert "REGISTRY_DATABASE_URL" not in env, "the gateway owns no database"

    for svc in DOMAIN_SERVICES:
        assert env.get(f"REGISTRY_GATEWAY_UPSTREAM_{svc.upper()}") == f"http://{svc}-api:{API_PORT}"
        assert env.get(f"REGISTRY_GATEWAY_WORKER_{svc.upper()}") == f"http://{svc}-worker:{WORKER_PORT}"


# Infrastructure ---------------------------------------------------------------------------------
def test_postgres_allows_300_connections_and_runs_the_init_script():
    spec = service("postgres")
    assert spec["image"].startswith("postgres:15")
    assert "max_connections=300" in argv(spec.get("command")), "pool sizes need max_connections=300"
    assert "pg_isready" in " ".join(argv(spec["healthcheck"]["test"]))
    mounts = [volume.split(":") for volume in spec.get("volumes", []) if isinstance(volume, str)]
    assert any(
        (ROOT / source).resolve() == INIT_DIR and target == "/docker-entrypoint-initdb.d"
        for source, target, *_ in mounts
    ), "deploy/postgres/init must be mounted at /docker-entrypoint-initdb.d"


def test_rabbitmq_is_3_13_with_a_health_check():
    spec = service("rabbitmq")
    assert spec["image"].startswith("rabbitmq:3.13")
    assert argv(spec["healthcheck"]["test"])[-3:] == ["rabbitmq-diagnostics", "-q", "ping"]


def test_init_script_creates_roles_and_databases_for_every_service():
    assert os.access(INIT_SCRIPT, os.X_OK), f"{INIT_SCRIPT} must be executable (else it is sourced)"
    text = INIT_SCRIPT.read_text()
    assert text.startswith("#!/usr/bin/env bash") or text.startswith("#!/bin/bash")
    listed = re.search(r"^SERVICES=\(([^)]*)\)", text, re.MULTILINE)
    assert listed and tuple(listed[1].split()) == DOMAIN_SERVICES

    bash = shutil.which("bash")
    if bash is not None:
        syntax = subprocess.run([bash, "-n", str(INIT_SCRIPT)], capture_output=True, text=True)
        assert syntax.returncode == 0, syntax.stderr


# The image --------------------------------------------------------------------------------------
def test_every_dockerfile_and_copy_source_exists():
    assert builds(), "no service in docker-compose.yml has a build"
    missing = []
    for (context, dockerfile), users in builds().items():
        if not dockerfile.is_file():
            missing.append(f"{dockerfile} (built by {', '.join(users)})")
            continue
        for keyword, arguments in dockerfile_instructions(dockerfile):
            if keyword not in ("COPY", "ADD"):
                continue
            words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
            flags = [word for word in words if word.startswith("--")]
            if any(flag.startswith("--from") for flag in flags):
                continue
            sources = [word for word in words if not word.startswith("--")][:-1]
            for source in sources:
                if re.match(r"^(https?|git)://", source):
                    continue
                matches = [path.resolve() for path in context.glob(source.lstrip("/"))]
                if not matches or not all(path.is_relative_to(context) for path in matches):
                    missing.append(f"{dockerfile.relative_to(ROOT)}: {keyword} {source} (context {context})")
    assert not missing, "missing:\n" + "\n".join(missing)


def test_image_runs_as_a_non_root_user():
    for _, dockerfile in builds():
        users = [
            arguments.split(":")[0]
            for keyword, arguments in dockerfile_instructions(dockerfile)
            if keyword == "USER"
        ]
        assert users and users[-1] not in ("root", "0"), f"{dockerfile}: the last USER must not be root"


@pytest.mark.parametrize("module", sorted({module for _, module in PROCESSES.values()} | {MIGRATE_MODULE}))
def test_command_module_can_be_found(module):
    assert runnable_spec(module) is not None, (
        f"`python -m {module}` would fail: not found by {sys.executable} "
        "(are the workspace packages installed in this interpreter?)"
    )


# Where the compose plugin answers ---------------------------------------------------------------
def compose_plugin_answers() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        version = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return version.returncode == 0


def test_docker_compose_config_accepts_the_file():
    # `docker compose config` needs the compose plugin, not a Docker engine. Without the plugin this
    # is skipped, in CI too: the parsing tests above are what runs on these machines.
    if not compose_plugin_answers():
        pytest.skip("`docker compose version` does not answer (no compose plugin); checked by parsing only")
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
