"""System tests: every API and worker as its own process, started by the launcher ``make up`` uses, on
ephemeral ports, with this run's databases, name prefix, keys and clock control."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from registry_common.launcher import SystemPlan, start, stop, wait_ready
from registry_common.settings import SERVICES


def free_ports(how_many: int) -> list[int]:
    sockets = [socket.socket() for _ in range(how_many)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def log_tails(plan: SystemPlan, lines: int = 15) -> str:
    out = []
    for log in sorted(plan.log_dir.glob("*.log")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        out.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(out)


@pytest.fixture(scope="session")
async def system(provisioned_services: dict[str, str], tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[SystemPlan]:
    run_dir: Path = tmp_path_factory.mktemp("system")
    ports = free_ports(2 + 2 * len(SERVICES))
    plan = SystemPlan(
        run_dir=run_dir,
        gateway_port=ports[0],
        api_ports=dict(zip(SERVICES, ports[1:7], strict=True)),
        worker_ports=dict(zip(SERVICES, ports[7:13], strict=True)),
        env={**provisioned_services, "REGISTRY_FAULTS": "after_commit_before_ack=exit",
             "REGISTRY_LOGIN_LOCK_MINUTES": "0.05", "REGISTRY_PREFETCH": "20",
             "REGISTRY_JOURNAL_CHECKPOINT_DIR": str(run_dir / "checkpoints"),
             "REGISTRY_JOURNAL_CHECKPOINT_KEY": secrets.token_urlsafe(32),
             "REGISTRY_JOURNAL_CHECKPOINT_INTERVAL_SECONDS": "1",
             "REGISTRY_SWEEP_INTERVAL_SECONDS": "0.2"},
        fault_dir=run_dir / "faults",
        extra_workers={"accounts": [ports[13]]},  # two ledger workers compete for the same commands
    )
    start(plan)
    try:
        await wait_ready(plan, timeout=120)
    except TimeoutError as exc:
        stop(plan)
        pytest.fail(f"{exc}\n{log_tails(plan)}")
    yield plan
    stop(plan)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest.fixture(scope="session")
def bearer(token_for: Callable[..., str]) -> Callable[..., dict[str, str]]:
    def headers(user_id: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token_for(user_id, *roles)}"}

    return headers
