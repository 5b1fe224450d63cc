"""A small run of ``make fuzz`` (fuzz/run.py): schemathesis over the gateway's OpenAPI document with every
role's token and none (three roles: anonymous, the authority, an installation), one example per operation,
role and generation mode, within a short budget, against
a registry of its own. It must find nothing: no 5xx, no answer that contradicts the schema, no refused
write that changed anything, no successful write without its audit row."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from registry_common.settings import REPO_ROOT

pytestmark = [pytest.mark.system, pytest.mark.integration]
BUDGET_SECONDS = 60
ROLES = "anonymous,authority,installation"


def test_a_short_fuzz_run_finds_nothing(admin_database_url: str, amqp_url: str) -> None:
    env = {**os.environ, "REGISTRY_ADMIN_DATABASE_URL": admin_database_url, "REGISTRY_AMQP_URL": amqp_url}
    command = [sys.executable, "-m", "fuzz", "--budget", str(BUDGET_SECONDS), "--examples", "1", "--roles", ROLES]
    run = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "Requests per role" in output, output[-3000:]
    per_role = {line.split()[0]: int(line.split()[1]) for line in output.splitlines()
                if line.startswith("  ") and len(line.split()) >= 2 and line.split()[1].isdigit()}
    for role in ("anonymous", "authority", "installation"):
        assert per_role.get(role, 0) > 0, output[-3000:]
