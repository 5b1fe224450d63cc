"""A whole registry of a test module's own: its databases (``<run prefix><name>_<service>``) and broker
names, provisioned, every API and worker started by the launcher on ephemeral ports, and everything
stopped and dropped at the end. For tests that need a programme clock, settings or a programme of their
own (the session's shared system has one clock that only moves forward)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from registry_common.launcher import SystemPlan, start, stop, wait_ready
from registry_common.ports import free_ports
from registry_common.settings import SERVICES
from registry_common.testing.fixtures import check_connection_limit, drop_databases


def log_tails(plan: SystemPlan, lines: int = 20) -> str:
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                     for log in sorted(plan.log_dir.glob("*.log")))


@asynccontextmanager
async def private_system(registry_env: dict[str, str], run_dir: Path, name: str, env: dict[str, str] | None = None,
                         *, ready_within: float = 120.0) -> AsyncIterator[tuple[SystemPlan, dict[str, str]]]:
    """Yields the running plan and its environment (``REGISTRY_*``, as its processes see it)."""
    from registry_common.messaging.topology import delete_namespace
    from registry_common.provision import provision

    prefix = f"{registry_env['REGISTRY_DATABASE_PREFIX']}{name}_"
    own = {**registry_env, "REGISTRY_DATABASE_PREFIX": prefix, "REGISTRY_NAMESPACE": prefix,
           "REGISTRY_JOURNAL_CHECKPOINT_DIR": str(run_dir / "checkpoints"), **(env or {})}
    await check_connection_limit(own["REGISTRY_ADMIN_DATABASE_URL"])
    try:
        await provision(list(SERVICES), **{k.removeprefix("REGISTRY_").lower(): v for k, v in own.items()})
        ports = free_ports(1 + 2 * len(SERVICES))
        plan = SystemPlan(
            run_dir=run_dir, gateway_port=ports[0],
            api_ports=dict(zip(SERVICES, ports[1:1 + len(SERVICES)], strict=True)),
            worker_ports=dict(zip(SERVICES, ports[1 + len(SERVICES):], strict=True)),
            env=own,
        )
        start(plan)
        try:
            try:
                await wait_ready(plan, timeout=ready_within)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n{log_tails(plan)}") from exc
            yield plan, own
        finally:
            stop(plan)
    finally:
        await drop_databases(own["REGISTRY_ADMIN_DATABASE_URL"], [f"{prefix}{s}" for s in SERVICES])
        await delete_namespace(own["REGISTRY_AMQP_URL"], prefix, SERVICES)
