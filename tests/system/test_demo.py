"""`make demo`'s short version: the same program (``python -m registry_demo``, as the Makefile runs it) with
four installations (``DEMO_INSTALLATIONS=20`` for the whole population) against a registry of this module's
own (the pilot's programme, the programme clock at the start of 2020, moved by nobody else): the population
seeded through the gateway with its passwords written 0600, the three periods driven to the end of the
programme, and the ledger audit, the journal verification and the transfer reconciliation clean (exit code
0). A second run on the same system is refused (the clock has moved on) without changing anything."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry_common.testing.private_system import private_system

pytestmark = [pytest.mark.system, pytest.mark.integration]
INSTALLATIONS = int(os.environ.get("DEMO_INSTALLATIONS", "4"))  # 20 for the whole of `make demo`
DEMO_TIMEOUT = 240.0 + 20 * INSTALLATIONS


@pytest.fixture(scope="module")
async def demo_system(registry_env, tmp_path_factory, mailbox) -> AsyncIterator[tuple[Any, dict[str, str], Path]]:
    env = {"REGISTRY_SMTP_HOST": mailbox.host, "REGISTRY_SMTP_PORT": str(mailbox.port),
           "REGISTRY_AUTO_EVALUATE": "true", "REGISTRY_EVALUATE_INTERVAL_SECONDS": "0.2",
           "REGISTRY_SWEEP_INTERVAL_SECONDS": "0.2", "REGISTRY_DELIVERY_POLL_SECONDS": "0.5",
           # banking above 95 % of what an account holds is cancelled after a period (the default, 1, never is);
           # the notice before a cancellation runs is the default 14 days of programme time
           "REGISTRY_BANKING_SHARE": "0.95"}
    run_dir = tmp_path_factory.mktemp("demo-system")
    async with private_system(registry_env, run_dir, "d", env) as (plan, own):
        yield plan, own, run_dir


async def run_demo(gateway_url: str, password_file: Path, secrets_dir: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "registry_demo", "--url", gateway_url, "--installations", str(INSTALLATIONS),
        "--admin-password-file", str(password_file), "--secrets-dir", str(secrets_dir), "--timeout", "60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**{k: v for k, v in os.environ.items() if k != "REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"},
             "COLUMNS": "160", "NO_COLOR": "1"})
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=DEMO_TIMEOUT)
    except TimeoutError:
        process.kill()
        output, _ = await process.communicate()
        raise AssertionError(f"the demo did not finish in {DEMO_TIMEOUT:.0f} s:\n"
                             f"{output.decode(errors='replace')[-6000:]}") from None
    return int(process.returncode or 0), output.decode(errors="replace")


async def test_the_pilot_end_to_end_then_a_second_run_is_refused(demo_system) -> None:
    plan, own, run_dir = demo_system
    password_file = run_dir / "bootstrap_admin_password"
    password_file.write_text(own["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"] + "\n")
    secrets_dir = run_dir / "secrets" / "demo"

    code, output = await run_demo(plan.gateway_url, password_file, secrets_dir)
    (run_dir / "demo-output.txt").write_text(output)  # kept with the run's logs
    assert code == 0, output[-8000:]
    for shown in ("ledger audit: clean", "journal: verified", "transfer reconciliation: clean",
                  "cleared at MXN 17.10", "ran by itself at the deadline", "expired",
                  "Banking: allowances above the banking limit: approved by",
                  "End of the programme: what is left is cancelled: approved by",
                  "The pilot ran end to end and every check is clean"):
        assert shown in output, (shown, output[-8000:])

    # The population: 2 authority users, an administrator, the enforcement office, 4 installations,
    # 2 intermediaries, 2 verifiers; one password file each, only the owner may read it.
    listing = json.loads((secrets_dir / "population.json").read_text())
    users = listing["users"]
    assert len(users) == 8 + INSTALLATIONS
    roles = sorted(role for user in users for role in user["roles"])
    assert roles.count("authority") == 2 and roles.count("installation") == INSTALLATIONS
    assert roles.count("verifier") == 2
    assert roles.count("intermediary") == 2 and roles.count("authority-readonly") == 1
    assert stat.S_IMODE(secrets_dir.stat().st_mode) == 0o700
    for user in users:
        path = secrets_dir / user["password_file"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE((secrets_dir / "population.json").stat().st_mode) == 0o600

    # Each generated password signs its user in; the enforcement office reads the result of the programme.
    async with httpx.AsyncClient(base_url=plan.gateway_url, timeout=30) as http:
        tokens = {}
        for user in users:
            signed = await http.post("/api/v1/auth/token", json={
                "username": user["username"], "password": (secrets_dir / user["password_file"]).read_text().strip()})
            assert signed.status_code == 200, (user["username"], signed.text)
            tokens[user["username"]] = {"Authorization": f"Bearer {signed.json()['access_token']}"}
        office = tokens["profepa.inspeccion"]
        expected = {"2020": (INSTALLATIONS - 2, 2), "2021": (INSTALLATIONS - 1, 1), "2022": (INSTALLATIONS - 1, 1)}
        for period, (compliant, non_compliant) in expected.items():
            report = (await http.get(f"/api/v1/compliance/periods/{period}/report", headers=office)).json()
            assert (report["summary"]["compliant"], report["summary"]["non_compliant"]) == \
                (compliant, non_compliant), (period, report["summary"])
        cancelled = (await http.get("/api/v1/accounts/SYS-CANCEL/holdings", headers=office)).json()["total"]
        assert cancelled > 0
        # The end of the programme left no participant any allowance of its vintages.
        for user in users:
            if user["account_id"]:
                held = (await http.get(f"/api/v1/accounts/{user['account_id']}/holdings", headers=office)).json()
                assert held["total"] == 0, (user["username"], held)
        audit = (await http.get("/api/v1/ledger/audit", headers=office)).json()
        assert audit["ok"], audit["discrepancies"]
        clock_before = (await http.get("/api/v1/programme/clock", headers=tokens["admin.registro"])).json()

        # Run again on the same system: refused at once, nothing created, the clock where it was.
        again, second_output = await run_demo(plan.gateway_url, password_file, run_dir / "again")
        assert again == 1 and "freshly started registry" in second_output, second_output[-3000:]
        assert not (run_dir / "again").exists()
        clock_after = (await http.get("/api/v1/programme/clock", headers=tokens["admin.registro"])).json()
        assert clock_after["version"] == clock_before["version"]
