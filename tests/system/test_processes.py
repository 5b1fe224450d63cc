"""The chassis's promises shown with every process separate: the programme clock reaches every process;
a worker that dies after commit and before ack gets the redelivery and applies nothing new; a worker
killed with SIGKILL loses nothing; production refuses clock control."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from typing import Any

import asyncpg
import httpx
import pytest

from registry_common.launcher import SystemPlan, process_pid
from registry_common.settings import SERVICES
from registry_common.testing.fixtures import wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration]


def process_urls(plan: SystemPlan) -> dict[str, str]:
    urls = {f"{s}-api": plan.api_url(s) for s in SERVICES}
    urls.update({f"{s}-worker": plan.worker_url(s) for s in SERVICES})
    return urls


async def clocks(http: httpx.AsyncClient, plan: SystemPlan) -> dict[str, Any]:
    answers = await asyncio.gather(*(http.get(f"{url}/health") for url in process_urls(plan).values()),
                                   return_exceptions=True)
    return {name: (a.json()["clock"] if isinstance(a, httpx.Response) else None)
            for name, a in zip(process_urls(plan), answers, strict=True)}


async def move_clock(http: httpx.AsyncClient, plan: SystemPlan, headers: dict[str, str],
                     seconds: float) -> dict[str, Any]:
    answer = await http.put(f"{plan.api_url('issuance')}/api/v1/programme/clock",
                            json={"advance_seconds": seconds, "reason": "system test"}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def all_at_version(http: httpx.AsyncClient, plan: SystemPlan, version: int) -> dict[str, Any] | None:
    seen = await clocks(http, plan)
    if all(c is not None and c["version"] >= version for c in seen.values()):
        return seen
    return None


async def admin_query(settings_env: dict[str, str], service: str, sql: str, *args: Any) -> Any:
    dsn = settings_env["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{dsn}/{settings_env['REGISTRY_DATABASE_PREFIX']}{service}")
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def metric(http: httpx.AsyncClient, url: str, name: str) -> float:
    text = (await http.get(f"{url}/metrics")).text
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(values)


async def test_moving_the_clock_in_one_process_is_seen_by_every_other(system, http, bearer):
    authority = bearer("authority-1", "authority")
    before = await clocks(http, system)
    moved = await move_clock(http, system, authority, 30 * 86400)
    seen = await wait_for(lambda: all_at_version(http, system, moved["version"]), timeout=30,
                          what="every process to hear of the clock move")
    offsets = {round(c["offset_seconds"], 3) for c in seen.values()}
    assert offsets == {round(moved["offset_seconds"], 3)}, seen
    assert moved["offset_seconds"] - before["accounts-api"]["offset_seconds"] == pytest.approx(30 * 86400, abs=1)

    backwards = await http.put(f"{system.api_url('issuance')}/api/v1/programme/clock",
                               json={"programme_now": "2019-01-01T00:00:00Z"},
                               headers={**authority, "Accept-Language": "en"})
    assert backwards.status_code == 409 and backwards.json()["code"] == "clock.backwards"
    participant = await http.put(f"{system.api_url('issuance')}/api/v1/programme/clock",
                                 json={"advance_seconds": 1}, headers=bearer("inst-1", "installation"))
    assert participant.status_code == 403
    assert (await clocks(http, system))["accounts-worker"]["version"] == moved["version"]


async def test_worker_dying_after_commit_before_ack_gets_the_redelivery_and_applies_nothing_new(
    system, http, bearer, provisioned_services,
):
    # The pid first: the fault fires at the worker's next ack, which may be of a message still on its way
    # from an earlier test rather than of this clock move.
    pid_before = process_pid(system, "transfers-worker")
    fired = system.arm_fault("transfers-worker", "after_commit_before_ack")
    moved = await move_clock(http, system, bearer("authority-1", "authority"), 3600)

    await wait_for(fired.exists, timeout=30, what="the worker to reach the fault point")
    await wait_for(lambda: process_pid(system, "transfers-worker") not in (0, pid_before), timeout=90,
                   what="the launcher to restart the worker")
    worker = system.worker_url("transfers")
    await wait_for(lambda: metric(http, worker, "registry_messages_duplicate_total"), timeout=30,
                   what="the redelivered message to be seen as a duplicate")
    # Nothing applied again: the redelivered message was a duplicate (above) and the clock move is recorded
    # once (below), whichever message the worker died acking.
    history = await admin_query(provisioned_services, "transfers",
                                "SELECT count(*) FROM programme_clock_history WHERE version = $1", moved["version"])
    assert history == 1
    await wait_for(lambda: all_at_version(http, system, moved["version"]), timeout=30, what="every process")


async def test_worker_killed_with_sigkill_loses_nothing(system, http, bearer, provisioned_services):
    pid = process_pid(system, "compliance-worker")
    os.kill(pid, signal.SIGKILL)
    moved = await move_clock(http, system, bearer("admin-1", "administrator"), 60)  # while it is down
    await wait_for(lambda: process_pid(system, "compliance-worker") not in (0, pid), timeout=90,
                   what="the launcher to restart the worker")
    await wait_for(lambda: all_at_version(http, system, moved["version"]), timeout=30,
                   what="the restarted worker to catch up")
    history = await admin_query(provisioned_services, "compliance",
                                "SELECT count(*) FROM programme_clock_history WHERE version = $1", moved["version"])
    assert history == 1


@pytest.mark.parametrize("module", ["issuance.api", "accounts.worker"])
def test_production_with_clock_control_refuses_to_start(module: str, tmp_path):
    env = {
        "PATH": os.environ["PATH"],
        "REGISTRY_ENVIRONMENT": "production",
        "REGISTRY_CLOCK_CONTROL": "true",
        "REGISTRY_DATABASE_URL": "postgresql+asyncpg://x_app:secret@db.example/registry_x",
        "REGISTRY_ADMIN_DATABASE_URL": "postgresql://admin:secret@db.example/postgres",
        "REGISTRY_AMQP_URL": "amqp://registry:secret@mq.example/",
        "REGISTRY_JWT_PUBLIC_KEY_FILE": str(tmp_path / "public.pem"),
    }
    result = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "REGISTRY_CLOCK_CONTROL must be false in production" in result.stderr
    env["REGISTRY_CLOCK_CONTROL"] = "false"
    env["REGISTRY_FAULTS"] = "after_commit_before_ack=exit"
    result = subprocess.run([sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "REGISTRY_FAULTS must be empty in production" in result.stderr

