"""The operator CLI (``registry``, the console script) as a subprocess against every process of the system,
through the gateway only: sign-in kept in a 0600 file, the programme clock, an allocation table imported
with its progress, approved by a second authority user and run with its progress, approvals, dead letters
listed and replayed, the ledger audit, the journal verification and the transfer reconciliation.

Steps the CLI does not offer (opening accounts, periods, cap generation) go through the API with tokens
the test mints, as in test_issuance.py."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import secrets
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import aio_pika
import asyncpg
import httpx
import pytest
from openpyxl import Workbook

from registry_common.messaging.topology import queue_name
from registry_common.testing.fixtures import wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration]
PASSWORD = "correct-horse-battery-staple"
ZONE = ZoneInfo("America/Mexico_City")
REGISTRY = Path(sys.executable).with_name("registry")  # the console script `make venv` installs


@dataclass
class Operator:
    """One person at a terminal: their own credentials file."""

    username: str
    credentials: Path
    gateway: str

    async def run(self, *argv: str, stdin: str | None = None, seconds: float = 180) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env |= {"REGISTRY_URL": self.gateway, "REGISTRY_CLI_CREDENTIALS": str(self.credentials),
                "REGISTRY_LANGUAGE": "en", "COLUMNS": "200"}
        return await asyncio.to_thread(subprocess.run, [str(REGISTRY), *argv], input=stdin, env=env,
                                       capture_output=True, text=True, timeout=seconds)

    async def json(self, *argv: str) -> Any:
        done = await self.run("--json", *argv)
        assert done.returncode == 0, (argv, done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    async def login(self) -> None:
        done = await self.run("login", "--username", self.username, "--password-stdin", stdin=PASSWORD + "\n")
        assert done.returncode == 0, done.stderr


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def xlsx(rows: list[list[Any]]) -> bytes:
    book = Workbook()
    for row in rows:
        book.active.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
async def people(system, provisioned_services, tmp_path_factory) -> dict[str, Operator]:
    """The bootstrap administrator and two real authority users (four eyes needs two people)."""
    home = tmp_path_factory.mktemp("cli")
    assert REGISTRY.is_file(), f"{REGISTRY} is missing: the registry-cli package is not installed (make venv)"
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as http:
        signed_in = await http.post("/api/v1/auth/token", json={
            "username": "admin", "password": provisioned_services["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"]})
        assert signed_in.status_code == 200, signed_in.text
        admin_token = signed_in.json()["access_token"]
        people = {"admin": Operator("admin", home / "admin" / "registry-cli" / "credentials.json", system.gateway_url)}
        for who in ("ana", "beto"):
            username = f"{who}-{uuid4().hex[:8]}"
            created = await http.post("/api/v1/users", headers=auth(admin_token), json={
                "username": username, "display_name": who.title(), "email": f"{username}@example.mx",
                "language": "es", "roles": ["authority"], "password": PASSWORD})
            assert created.status_code == 201, created.text
            people[who] = Operator(username, home / who / "credentials.json", system.gateway_url)
    return people


@pytest.fixture
async def issuance_db(provisioned_services: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    conn = await asyncpg.connect(f"{base}/{provisioned_services['REGISTRY_DATABASE_PREFIX']}issuance")
    yield conn
    await conn.close()


async def test_login_keeps_the_tokens_private_and_refuses_a_wrong_password(people, provisioned_services):
    admin = people["admin"]
    wrong = await admin.run("login", "-u", "admin", "--password-stdin", stdin="not-the-password\n")
    assert wrong.returncode == 1 and "[auth." in wrong.stderr, (wrong.stdout, wrong.stderr)
    assert not admin.credentials.exists()

    password = provisioned_services["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"]
    done = await admin.run("login", "-u", "admin", "--password-stdin", stdin=password + "\n")
    assert done.returncode == 0, done.stderr
    assert "Signed in" in done.stdout and "access_token" not in done.stdout
    assert stat.S_IMODE(admin.credentials.stat().st_mode) == 0o600
    stored = json.loads(admin.credentials.read_text())[admin.gateway]
    assert stored["username"] == "admin" and stored["access_token"] not in done.stdout + done.stderr
    assert (await admin.json("whoami"))["username"] == "admin"

    out = await admin.run("logout")
    assert out.returncode == 0
    signed_out = await admin.run("audit")
    assert signed_out.returncode == 4 and "registry login" in signed_out.stderr
    again = await admin.run("login", "-u", "admin", "--password-stdin", stdin=password + "\n")
    assert again.returncode == 0, again.stderr


async def test_clock_show_set_advance_and_never_backwards(people):
    ana = people["ana"]
    await ana.login()
    before = await ana.json("clock", "show")
    now = datetime.fromisoformat(before["programme_now"])

    target = (now + timedelta(hours=1)).astimezone(ZONE).replace(microsecond=0)
    moved = await ana.json("clock", "set", target.isoformat(), "--reason", "cli system test")
    assert moved["version"] == before["version"] + 1
    assert datetime.fromisoformat(moved["programme_now"]) >= target

    advanced = await ana.json("clock", "advance", "30m")
    assert advanced["version"] == moved["version"] + 1
    assert datetime.fromisoformat(advanced["programme_now"]) >= target + timedelta(minutes=30)

    backwards = await ana.run("clock", "set", now.isoformat())
    assert backwards.returncode == 1 and "[clock.backwards]" in backwards.stderr, backwards.stderr
    shown = await ana.run("clock", "show")
    assert shown.returncode == 0 and "programme_now" in shown.stdout and str(advanced["version"]) in shown.stdout


async def test_allocation_import_approval_and_run_with_progress(system, people, bearer, issuance_db, tmp_path):
    ana, beto = people["ana"], people["beto"]
    await ana.login()
    await beto.login()
    tag = secrets.token_hex(3)
    setup_a, setup_b = bearer(f"setup-a-{tag}", "authority"), bearer(f"setup-b-{tag}", "authority")
    admin = bearer(f"setup-admin-{tag}", "administrator")
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=10) as http:
        # A period far enough ahead that the clock never runs it by itself, with its cap (four eyes).
        clock = (await http.get("/api/v1/programme/clock", headers=setup_a)).json()
        allocation_on = (datetime.fromisoformat(clock["programme_now"]).astimezone(ZONE) + timedelta(days=300)).date()
        vintage = random.randint(3000, 9000)
        period = await http.post("/api/v1/periods", headers=setup_a, json={
            "vintage": vintage, "code": f"C{vintage}", "starts_on": str(allocation_on - timedelta(days=100)),
            "ends_on": str(allocation_on + timedelta(days=30)), "allocation_on": str(allocation_on),
            "reporting_opens_on": str(allocation_on + timedelta(days=60)),
            "reporting_closes_on": str(allocation_on + timedelta(days=80)),
            "surrender_deadline_on": str(allocation_on + timedelta(days=100))})
        assert period.status_code == 201, period.text
        code = period.json()["code"]
        asked = await http.post(f"/api/v1/periods/{code}/cap-generations", json={"cap": 1000, "reserves": {}},
                                headers={**setup_a, "Idempotency-Key": str(uuid4())})
        assert asked.status_code == 202, asked.text
        approved = await http.post(f"/api/v1/issuance/approvals/{asked.json()['approval_id']}/approve",
                                   json={"payload_hash": asked.json()["payload_hash"]}, headers=setup_b)
        assert approved.status_code == 200, approved.text
        installations = []
        for n in range(2):
            letters = "".join(random.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
            opened = await http.post("/api/v1/accounts", headers=admin, json={
                "kind": "installation", "name": f"Planta CLI {n}",
                "holder": {"name": f"Grupo {letters}", "tax_id": f"{letters}010101{secrets.randbelow(90) + 10}1",
                           "address": "Av. Reforma 1, CDMX", "contacts": [{"name": "Ana", "email": "a@example.mx"}]}})
            assert opened.status_code == 201, opened.text
            account = opened.json()["id"]
            assert (await http.post(f"/api/v1/accounts/{account}/approve", json={}, headers=admin)).status_code == 200
            installations.append(account)

        async def cap_generated() -> bool:
            items = (await http.get(f"/api/v1/periods/{code}/cap-generations", headers=setup_a)).json()["items"]
            return any(g["state"] == "generated" for g in items)

        await wait_for(cap_generated, timeout=60, what="cap generated")

        async def known() -> bool:
            return await issuance_db.fetchval("SELECT count(*) FROM known_accounts WHERE id = ANY($1) AND "
                                              "state = 'active'", installations) == 2

        await wait_for(known, timeout=60, what="issuance learns the installations")

        # A bad table: every bad row listed, exit 1, nothing submitted.
        bad = tmp_path / "bad.xlsx"
        bad.write_bytes(xlsx([["installation_account_id", "period", "quantity"], ["NOPE-1", code, 5],
                              [installations[0], code, -3]]))
        refused = await ana.run("allocation", "import", str(bad), "--period", code, "--submit")
        assert refused.returncode == 1, (refused.stdout, refused.stderr)
        assert "[allocation.invalid_table]" in refused.stderr
        assert "unknown_installation" in refused.stdout and "negative" in refused.stdout

        # The good table: uploaded with a progress bar, validated, submitted for four eyes.
        good = tmp_path / "allocation.xlsx"
        good.write_bytes(xlsx([["installation_account_id", "period", "quantity"], [installations[0], code, 300],
                               [installations[1], code, 200]]))
        imported = await ana.run("allocation", "import", str(good), "--period", code, "--submit", "--note", "cli")
        assert imported.returncode == 0, (imported.stdout, imported.stderr)
        assert "uploading allocation.xlsx" in imported.stderr or "validated allocation.xlsx" in imported.stderr
        assert f"{good.stat().st_size / 1000:.1f}" in imported.stderr  # the bar's byte count (kB)
        tables = await ana.json("allocation", "list")
        table = next(t for t in tables if t["filename"] == "allocation.xlsx" and t["period"] == code)
        assert table["state"] == "awaiting_approval" and table["total"] == 500
        approval_id = table["approval_id"]

        # Approvals: the merged list and one service's; self-approval refused; the second person approves.
        merged = await beto.json("approvals", "list")
        assert any(a["id"] == approval_id and a["service"] == "issuance" for a in merged["items"])
        listed = await beto.json("approvals", "list", "--service", "issuance")
        assert any(a["id"] == approval_id for a in listed["items"])
        shown = await beto.json("approvals", "show", "issuance", approval_id)
        assert shown["payload"]["sha256"] == table["sha256"] and shown["payload"]["total"] == 500
        unconfirmed = await beto.run("approvals", "approve", "issuance", approval_id)
        assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
        mine = await ana.run("approvals", "approve", "issuance", approval_id, "--yes")
        assert mine.returncode == 1 and "[approval.self_approval]" in mine.stderr, mine.stderr
        yes = await beto.run("approvals", "approve", "issuance", approval_id, "--yes", "--reason", "checked")
        assert yes.returncode == 0, (yes.stdout, yes.stderr)
        assert (await beto.json("approvals", "show", "issuance", approval_id))["state"] == "approved"

        # Run on command and follow it to the end with the progress bar.
        ran = await ana.run("allocation", "run", table["id"])
        assert ran.returncode == 0, (ran.stdout, ran.stderr)
        assert "2/2" in ran.stderr and "completed" in ran.stdout
        done = await ana.json("allocation", "show", table["id"], "--lines")
        assert done["table"]["state"] == "completed"
        assert {line["state"] for line in done["dry_run"]["lines"]} == {"delivered"}
        again = await ana.json("allocation", "run", table["id"], "--no-wait")
        assert again["started"] is False
        for account, quantity in zip(installations, (300, 200), strict=True):
            holdings = (await http.get(f"/api/v1/accounts/{account}/holdings", headers=setup_a)).json()
            assert sum(e["quantity"] for e in holdings["by_type_and_vintage"] if e["vintage"] == vintage) == quantity

    # The checks, clean, as people and as machines.
    for argv, marker in ((["audit"], "ledger audit: clean"), (["journal", "verify"], "journal: verified"),
                         (["reconciliation"], "reconciliation: clean")):
        human = await ana.run(*argv)
        assert human.returncode == 0 and marker in human.stdout, (argv, human.stdout, human.stderr)
        assert (await ana.json(*argv))["ok"] is True


async def test_dead_letters_listed_and_replayed(system, people, provisioned_services):
    """A user_registered event whose payload breaks its contract dies at once in notifications' consumer;
    the administrator lists it with its error and replays it: it runs again (and, still broken, dies again:
    a new dead letter for the same message)."""
    admin, ana = people["admin"], people["ana"]
    await admin.run("login", "-u", "admin", "--password-stdin",
                    stdin=provisioned_services["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"] + "\n")
    await ana.login()
    message_id = str(uuid4())
    envelope = {"message_id": message_id, "type": "accounts.user_registered", "version": 1, "kind": "event",
                "producer": "accounts", "occurred_at": datetime.now(UTC).isoformat(), "correlation_id": message_id,
                "payload": {"user_id": "not-a-user"}}
    connection = await aio_pika.connect(provisioned_services["REGISTRY_AMQP_URL"])
    async with connection:
        channel = await connection.channel()
        # Straight into notifications' queue (the default exchange), so no other service gets it.
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(envelope).encode(), message_id=message_id, content_type="application/json",
                             type="accounts.user_registered.v1"),
            routing_key=queue_name(provisioned_services["REGISTRY_NAMESPACE"], "notifications"))

    async def dead(state: str = "dead") -> list[dict[str, Any]]:
        listed = await admin.json("dead-letters", "list", "--service", "notifications", "--state", state)
        return [d for d in listed["items"] if str(d["message_id"]) == message_id]

    [letter] = await wait_for(dead, timeout=60, what="the broken message dead-lettered")
    assert letter["message_type"] == "accounts.user_registered.v1" and "ValidationError" in letter["error"]
    merged = await admin.json("dead-letters", "list")
    assert {d["service"] for d in merged["items"] if str(d["message_id"]) == message_id} == {"notifications"}
    table = await admin.run("dead-letters", "list")
    assert table.returncode == 0 and "accounts.user_registered.v1" in table.stdout

    refused = await ana.run("dead-letters", "replay", "notifications", str(letter["id"]), "--yes")
    assert refused.returncode == 1 and "[auth.forbidden]" in refused.stderr, refused.stderr
    replayed = await admin.run("dead-letters", "replay", "notifications", str(letter["id"]), "--yes")
    assert replayed.returncode == 0 and message_id in replayed.stdout, replayed.stderr
    assert [d["id"] for d in await dead("replayed")] == [letter["id"]]

    async def died_again() -> list[dict[str, Any]]:
        return [d for d in await dead() if d["id"] != letter["id"]]

    await wait_for(died_again, timeout=60, what="the replayed message ran again")
    twice = await admin.run("dead-letters", "replay", "notifications", str(letter["id"]), "--yes")
    assert twice.returncode == 1 and "[dead_letter.not_replayable]" in twice.stderr


async def test_evaluation_run_and_show_on_a_registry_of_its_own(registry_env, tmp_path_factory):
    """On a registry of this test's own (its clock moves past the pilot's first surrender deadline, which the
    shared system must never do), with the automatic evaluation off so the CLI is what starts it: refused
    before the deadline, run and followed to completion after it, and a re-run answers the same one."""
    from registry_common.testing.private_system import private_system

    run_dir = tmp_path_factory.mktemp("cli-evaluation")
    settings = {"REGISTRY_AUTO_EVALUATE": "false", "REGISTRY_EVALUATE_INTERVAL_SECONDS": "0.2"}
    async with private_system(registry_env, run_dir, "cli", settings) as (plan, own):
        admin = Operator("admin", run_dir / "admin.json", plan.gateway_url)
        done = await admin.run("login", "-u", "admin", "--password-stdin",
                               stdin=own["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"] + "\n")
        assert done.returncode == 0, done.stderr
        async with httpx.AsyncClient(base_url=plan.gateway_url, timeout=10) as http:
            token = json.loads(admin.credentials.read_text())[plan.gateway_url]["access_token"]
            username = f"eva-{uuid4().hex[:8]}"
            created = await http.post("/api/v1/users", headers=auth(token), json={
                "username": username, "display_name": "Eva", "email": f"{username}@example.mx", "language": "es",
                "roles": ["authority"], "password": PASSWORD})
            assert created.status_code == 201, created.text
        authority = Operator(username, run_dir / "authority.json", plan.gateway_url)
        await authority.login()

        early = await authority.run("evaluation", "run", "2020")
        assert early.returncode == 1 and "[compliance.period_not_due]" in early.stderr, early.stderr
        none = await authority.run("evaluation", "show", "2020")
        assert none.returncode == 1 and "[compliance.evaluation_not_found]" in none.stderr, none.stderr

        moved = await authority.json("clock", "set", "2021-11-02T09:00:00-06:00", "--reason", "past the deadline")

        async def compliance_sees_it() -> bool:
            async with httpx.AsyncClient(timeout=5) as http:
                for url in (plan.api_url("compliance"), plan.worker_url("compliance")):
                    if (await http.get(f"{url}/health")).json()["clock"]["version"] < moved["version"]:
                        return False
            return True

        await wait_for(compliance_sees_it, timeout=60, what="compliance on the new programme time")
        ran = await authority.run("evaluation", "run", "2020")
        assert ran.returncode == 0, (ran.stdout, ran.stderr)
        assert "completed" in ran.stdout and "evaluating 2020" in ran.stderr
        shown = await authority.json("evaluation", "show", "2020")
        assert shown["state"] == "completed" and shown["trigger"] == "command"
        again = await authority.json("evaluation", "run", "2020")
        assert again["id"] == shown["id"] and again["state"] == "completed"
