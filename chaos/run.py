"""The load-and-fault run (``make chaos``): a whole registry of its own on loopback (its own databases,
a RabbitMQ node of its own, an SMTP mailbox and an HTTPS webhook receiver), many simulated participants
transferring (accept, reject, cancel, or letting a 4-second acceptance window pass), surrendering and
reporting while the programme clock moves into the reporting window of period 2020 and past its
surrender deadline, and meanwhile every API and worker process is SIGKILLed at random moments
(supervisord starts it again) and the broker node is restarted.

Afterwards it waits (bounded) for quiet and checks, printing each verdict and the counts of every
operation and fault: the ledger audit is clean, the journal verifies, every transfer is final, the
transfer-hold reconciliation is clean, no ledger effect was applied twice (journal rows per movement,
one hold movement and at most one settle-or-release per hold, a completed surrender's movement once, a
refused one's never), every (event, recipient, channel) notification is recorded once and every one
said delivered arrived (raw repeats at the receivers counted apart), the compliance evaluation of 2020
completed and every surrender is decided. Exit status 0 only when all hold.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import random
import re
import secrets
import signal
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import trustme
from aiosmtpd.controller import Controller

from registry_common.auth import TokenCodec, generate_keypair
from registry_common.launcher import SystemPlan, process_pid, wait_ready
from registry_common.settings import SERVICES
from registry_common.testing.private_system import free_ports, private_system
from registry_common.testing.rabbit_node import RabbitNode, rabbit_node
from registry_common.testing.rabbit_node import available as rabbit_node_available
from registry_common.testing.registry_client import Party, RegistryClient
from registry_common.testing.webhook_receiver import Receiver, https_receiver

ZONE = ZoneInfo("America/Mexico_City")
WINDOW_SECONDS = 4  # the acceptance window (programme seconds)
CALL_BOUND = 90.0  # the longest one operation keeps retrying through faults
QUIET_BOUND = 180.0  # the longest the end waits for quiet
FINISH_BOUND = 120.0  # the longest the participants may take to finish what they began
FUNDS = 300  # each installation's allowances of vintage 2020
AUTHORITY_EMAIL = "autoridad-chaos@semarnat.example.mx"
PAST_REQUESTED = {"awaiting_acceptance", "reversing", "completed", "reversed", "failed"}
FINAL = {"completed", "reversed", "failed"}
REPORTING_WINDOW = datetime(2021, 9, 10, 12, tzinfo=ZONE)  # reporting of period 2020 is open
PAST_DEADLINE = datetime(2021, 11, 2, 9, tzinfo=ZONE)  # the surrender deadline of 2020 has passed


class ChaosError(Exception):
    """The run could not go on (setup failed, an operation got no answer within its bound)."""


@dataclass
class Config:
    seconds: float = 150.0
    seed: int | None = None
    installations: int = 10
    intermediaries: int = 4


# Receivers ------------------------------------------------------------------------------------------
class Mailbox:
    """An SMTP server (aiosmtpd, in a thread): every message it receives, parsed, in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[email.message.EmailMessage] = []
        self.host, self.port = "127.0.0.1", free_ports(1)[0]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook)
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(parsed)
        return "250 OK"

    def message_ids(self) -> Counter[str]:
        with self.lock:
            return Counter(str(m["Message-ID"] or "").strip().strip("<>") for m in self.messages)


# The participants' side -----------------------------------------------------------------------------
@dataclass
class Tally:
    counts: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # 500s: shown apart (a 502/503 is a fault's doing)

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] += n


class Client:
    """Requests through the gateway that carry on through faults: a transport error or a 5xx is tried
    again (with the same Idempotency-Key) until an answer below 500 comes, within ``CALL_BOUND``."""

    def __init__(self, http: httpx.AsyncClient, gateway: str, tally: Tally):
        self.http, self.gateway, self.tally = http, gateway, tally

    async def call(self, method: str, path: str, headers: dict[str, str], body: Any = None, *,
                   key: str | None = None, params: dict[str, Any] | None = None) -> httpx.Response:
        extra = {"Idempotency-Key": key} if key else {}
        deadline = time.monotonic() + CALL_BOUND
        attempt = 0
        while True:
            attempt += 1
            try:
                answer = await self.http.request(method, f"{self.gateway}{path}", json=body, params=params,
                                                 headers={**headers, **extra})
            except httpx.TransportError as exc:
                self.tally.add(f"http: {type(exc).__name__} (tried again)")
            else:
                if answer.status_code < 500:
                    return answer
                self.tally.add(f"http: {answer.status_code} (tried again)")
                if answer.status_code == 500:
                    self.tally.server_errors.append(f"{method} {path}: {answer.text[:300]}")
            if time.monotonic() > deadline:
                raise ChaosError(f"{method} {path}: no answer below 500 within {CALL_BOUND:.0f}s")
            await asyncio.sleep(min(0.25 * attempt, 2.0))

    async def until(self, what: str, check: Callable[[], Awaitable[Any]], *, bound: float = CALL_BOUND,
                    interval: float = 0.3) -> Any:
        deadline = time.monotonic() + bound
        while True:
            got = await check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise ChaosError(f"timed out after {bound:.0f}s waiting for {what}")
            await asyncio.sleep(interval)


@dataclass
class World:
    config: Config
    plan: SystemPlan
    env: dict[str, str]
    node: RabbitNode
    client: Client
    registry: RegistryClient
    mailbox: Mailbox
    hooks: Receiver
    rng: random.Random
    tally: Tally
    installations: list[Party] = field(default_factory=list)
    delivery: dict[str, str] = field(default_factory=dict)  # installation -> its delivery account
    intermediaries: list[Party] = field(default_factory=list)
    verifier: Party | None = None
    transfer_ids: list[str] = field(default_factory=list)
    surrender_ids: list[str] = field(default_factory=list)
    phase: str = "2020"  # 2020 | window | past_deadline
    problems: list[str] = field(default_factory=list)  # what went wrong during the load (failed verdicts)
    stop_load: asyncio.Event = field(default_factory=asyncio.Event)

    def dsn(self, service: str) -> str:
        server = self.env["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
        return f"{server}/{self.env['REGISTRY_DATABASE_PREFIX']}{service}"

    @property
    def authority(self) -> dict[str, str]:
        return self.registry.authority


# Setup ----------------------------------------------------------------------------------------------
async def issue_2020(world: World, party: Party, quantity: int) -> None:
    authority = world.authority
    await world.client.call("POST", "/api/v1/ledger/movements", authority, {
        "kind": "issuance", "to_account_id": "SYS-CAP", "unit_type": "allowance", "vintage": 2020,
        "quantity": quantity}, key=str(uuid4()))
    moved = await world.client.call("POST", "/api/v1/ledger/movements", authority, {
        "kind": "allocation", "from_account_id": "SYS-CAP", "to_account_id": party.account_id,
        "unit_type": "allowance", "vintage": 2020, "quantity": quantity}, key=str(uuid4()))
    if moved.status_code != 201:
        raise ChaosError(f"allocation to {party.account_id}: {moved.status_code} {moved.text}")


async def knows(world: World, service: str, account_id: str) -> None:
    conn = await asyncpg.connect(world.dsn(service))
    try:
        await world.client.until(f"{service} to learn of {account_id}", lambda: conn.fetchval(
            "SELECT count(*) FROM known_representatives WHERE account_id = $1", account_id), bound=60)
    finally:
        await conn.close()


async def set_up_parties(world: World) -> None:
    registry = world.registry
    world.installations = list(await asyncio.gather(*(registry.party("installation", "installation")
                                                      for _ in range(world.config.installations))))
    world.intermediaries = list(await asyncio.gather(*(registry.party("intermediary", "intermediary")
                                                       for _ in range(world.config.intermediaries))))
    world.verifier = await registry.party("verifier", "verifier")
    for party in [*world.installations, world.verifier]:
        await knows(world, "compliance", party.account_id)
    for party in world.installations:
        account = (await world.client.call("GET", f"/api/v1/accounts/{party.account_id}", world.authority)).json()
        world.delivery[party.account_id] = account["paired_account_id"]
        await issue_2020(world, party, FUNDS)
    # Webhook endpoints for the first four installations: two answer at once, two fail twice per message.
    for n, party in enumerate(world.installations[:4]):
        name = f"inst{n}"
        answer = await world.client.call("POST", "/api/v1/webhook-subscriptions", party.headers, {
            "account_id": party.account_id, "url": f"{world.env['CHAOS_HOOKS_BASE']}/hook/{name}"})
        if answer.status_code != 201:
            raise ChaosError(f"webhook subscription: {answer.status_code} {answer.text}")
        with world.hooks.lock:
            world.hooks.secrets[name] = answer.json()["secret"]
            world.hooks.modes[name] = "ok" if n < 2 else "fail_twice"
    world.tally.add("setup: parties", len(world.installations) + len(world.intermediaries) + 1)
    world.tally.add("setup: webhook subscriptions", 4)


# Operations -----------------------------------------------------------------------------------------
async def transfer_state(world: World, transfer_id: str, who: Party) -> dict[str, Any]:
    answer = await world.client.call("GET", f"/api/v1/transfers/{transfer_id}", who.headers)
    if answer.status_code != 200:
        raise ChaosError(f"GET transfer {transfer_id}: {answer.status_code} {answer.text}")
    return answer.json()


async def saga(world: World, sender: Party, receiver: Party) -> None:
    intent = world.rng.choice(["accept", "reject", "cancel", "expire"])
    quantity = world.rng.randint(1, 12 if sender in world.installations else 3)
    answer = await world.client.call("POST", "/api/v1/transfers", sender.headers, {
        "sender_account_id": sender.account_id, "receiver_account_id": receiver.account_id,
        "unit_type": "allowance", "quantity": quantity}, key=str(uuid4()))
    if answer.status_code not in (200, 201, 202):
        world.tally.add(f"transfer: refused at request ({answer.status_code} {answer.json().get('code')})")
        await asyncio.sleep(2.0)  # an intermediary with nothing to send waits for units to come in
        return
    transfer_id = answer.json()["id"]
    world.transfer_ids.append(transfer_id)
    world.tally.add("transfer: requested")

    async def past_requested() -> dict[str, Any] | None:
        current = await transfer_state(world, transfer_id, sender)
        return current if current["state"] in PAST_REQUESTED else None

    current = await world.client.until(f"transfer {transfer_id} to be held", past_requested)
    if current["state"] == "awaiting_acceptance" and intent != "expire":
        actor = sender if intent == "cancel" else receiver
        acted = await world.client.call("POST", f"/api/v1/transfers/{transfer_id}/{intent}", actor.headers)
        world.tally.add(f"transfer: {intent} answered {acted.status_code}")
    elif current["state"] == "awaiting_acceptance":
        world.tally.add("transfer: left to expire")

    async def final() -> dict[str, Any] | None:
        current = await transfer_state(world, transfer_id, sender)
        return current if current["state"] in FINAL else None

    done = await world.client.until(f"transfer {transfer_id} to be final", final, bound=CALL_BOUND * 2)
    world.tally.add(f"transfer: ended {done['state']}{' (' + done['reason'] + ')' if done.get('reason') else ''}")


async def surrender(world: World, party: Party) -> None:
    answer = await world.client.call("POST", "/api/v1/surrenders", party.headers, {
        "central_account_id": party.account_id, "unit_type": "allowance",
        "quantity": world.rng.randint(1, 8)}, key=str(uuid4()))
    if answer.status_code != 202:
        world.tally.add(f"surrender: refused at request ({answer.status_code} {answer.json().get('code')})")
        return
    surrender_id = answer.json()["id"]
    world.surrender_ids.append(surrender_id)
    world.tally.add("surrender: requested")

    async def decided() -> dict[str, Any] | None:
        row = await world.client.call("GET", f"/api/v1/surrenders/{surrender_id}", party.headers)
        return row.json() if row.status_code == 200 and row.json()["state"] != "requested" else None

    done = await world.client.until(f"surrender {surrender_id} to be decided", decided, bound=CALL_BOUND * 2)
    world.tally.add(f"surrender: {done['state']}")


async def participant(world: World, me: Party, installation: bool) -> None:
    others = [p for p in [*world.installations, *world.intermediaries] if p is not me]
    while not world.stop_load.is_set():
        try:
            if installation and world.phase != "past_deadline" and world.rng.random() < 0.2:
                await surrender(world, me)
            else:
                await saga(world, me, world.rng.choice(others))
        except ChaosError as exc:
            # A participant stops waiting (the faults may hold an operation up for long on a busy machine)
            # and carries on; whether the operation ended, and ended right, is checked at the end.
            world.tally.add(f"participant: stopped waiting ({str(exc).split(' waiting for ')[-1].split(' ')[0]})")
        await asyncio.sleep(world.rng.uniform(0.05, 0.6))


async def report_and_attest(world: World, party: Party, n: int) -> None:
    assert world.verifier is not None
    answer = await world.client.call("POST", "/api/v1/emission-reports", party.headers, {
        "installation_account_id": party.account_id, "period": "2020", "emissions": 50 + 10 * n,
        "rene_reference": f"RENE-2020-chaos-{n}", "verifier_account_id": world.verifier.account_id})
    world.tally.add(f"report: submitted answered {answer.status_code}")
    listed = await world.client.call("GET", "/api/v1/emission-reports", party.headers,
                                     params={"installation_account_id": party.account_id})
    for report in listed.json()["items"]:
        if report["state"] == "submitted":
            attested = await world.client.call("POST", f"/api/v1/emission-reports/{report['id']}/attestation",
                                               world.verifier.headers, {"decision": "attest"})
            world.tally.add(f"report: attestation answered {attested.status_code}")


async def move_clock(world: World, when: datetime, phase: str) -> None:
    deadline = time.monotonic() + CALL_BOUND
    while True:
        moved = await world.client.call("PUT", "/api/v1/programme/clock", world.authority,
                                        {"programme_now": when.isoformat(), "reason": f"chaos: {phase}"})
        if moved.status_code in (200, 409):  # 409 clock.backwards: a repeat after a lost answer
            break
        # Seen once: a 404 while the issuance API was down (another process on its freed ephemeral port?).
        world.tally.add(f"clock: move answered {moved.status_code} (tried again)")
        if time.monotonic() > deadline:
            raise ChaosError(f"clock move: {moved.status_code} {moved.text}")
        await asyncio.sleep(1.0)
    if moved.status_code == 200:
        version = int(moved.json()["version"])
        urls = [world.plan.api_url(s) for s in SERVICES] + [world.plan.worker_url(s) for s in SERVICES]

        async def everyone() -> bool:
            for url in urls:
                try:
                    if int((await world.client.http.get(f"{url}/health")).json()["clock"]["version"]) < version:
                        return False
                except (httpx.HTTPError, ValueError, KeyError):
                    return False  # a process being restarted: it reads the clock when it starts
            return True

        try:
            await world.client.until(f"every process to see the clock at {phase}", everyone, bound=CALL_BOUND)
        except ChaosError as exc:  # a finding, shown with the verdicts; the programme goes on
            world.problems.append(str(exc))
    world.phase = phase
    world.tally.add(f"clock: moved to {phase}")


async def programme(world: World) -> None:
    """The programme's calendar during the load: the reporting window at 40%, past the deadline at 75%."""
    seconds = world.config.seconds
    await asyncio.sleep(seconds * 0.4)
    await move_clock(world, REPORTING_WINDOW, "window")
    reporting = world.installations[: max(1, len(world.installations) - 2)]  # the last two never report
    await asyncio.gather(*(report_and_attest(world, p, n) for n, p in enumerate(reporting)))
    await asyncio.sleep(max(0.0, seconds * 0.35 - 1))
    await move_clock(world, PAST_DEADLINE, "past_deadline")


# Faults ---------------------------------------------------------------------------------------------
def process_names() -> list[str]:
    return [f"{s}-{kind}" for s in SERVICES for kind in ("api", "worker")] + ["gateway"]


async def sigkill(world: World, name: str) -> None:
    pid = await asyncio.to_thread(process_pid, world.plan, name)
    if pid <= 0:
        world.tally.add("fault: SIGKILL skipped (process was restarting)")
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    world.tally.add(f"fault: SIGKILL {name}")


async def faults(world: World) -> None:
    """Every API and worker process (and the gateway) killed once at a random moment, some twice, and the
    broker node stopped and started again twice."""
    seconds = world.config.seconds
    start = time.monotonic()
    names = process_names()
    kills = [(world.rng.uniform(0.05, 0.9) * seconds, n) for n in names]
    kills += [(world.rng.uniform(0.05, 0.9) * seconds, world.rng.choice(names)) for _ in range(len(names) // 2)]
    broker = [(0.3 * seconds, "broker"), (0.62 * seconds, "broker")]
    for at, what in sorted(kills + broker):
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        if what == "broker":
            await asyncio.to_thread(world.node.stop)
            world.tally.add("fault: broker node stopped")
            await asyncio.sleep(world.rng.uniform(2, 6))
            await asyncio.to_thread(world.node.start)
            world.tally.add("fault: broker node started again")
        else:
            await sigkill(world, what)


# The end --------------------------------------------------------------------------------------------
@dataclass
class Verdicts:
    lines: list[tuple[bool, str, str]] = field(default_factory=list)

    def check(self, ok: bool, what: str, detail: Any = "") -> None:
        self.lines.append((bool(ok), what, str(detail)[:1500]))
        print(f"  [{'ok' if ok else 'FAILED'}] {what}{': ' + str(detail)[:1500] if detail not in ('', None) else ''}",
              flush=True)

    @property
    def ok(self) -> bool:
        return all(ok for ok, _, _ in self.lines)


async def quiet(world: World) -> dict[str, Any]:
    """Wait (bounded) until every process is ready, every transfer final, every surrender decided, the
    evaluation of 2020 completed, no outbox row due and no notification pending."""
    deadline = time.monotonic() + QUIET_BOUND
    await wait_ready(world.plan, timeout=QUIET_BOUND)
    client = world.client

    async def all_final() -> dict[str, Any] | None:
        report = (await client.call("GET", "/api/v1/transfers/reconciliation", world.authority)).json()
        return report if report["final"] == report["transfers"] else None

    async def count_in(service: str, sql: str) -> int:
        conn = await asyncpg.connect(world.dsn(service))
        try:
            return int(await conn.fetchval(sql))
        finally:
            await conn.close()

    async def surrenders_decided() -> bool:
        return await count_in("compliance", "SELECT count(*) FROM surrenders WHERE state = 'requested'") == 0

    async def evaluated() -> bool:
        answer = await client.call("GET", "/api/v1/compliance/periods/2020/evaluations", world.authority)
        return answer.status_code == 200 and answer.json()["state"] == "completed"

    async def outboxes_empty() -> bool:
        for service in SERVICES:
            ready = (await client.http.get(f"{world.plan.worker_url(service)}/ready")).json()
            if int(ready["checks"].get("outbox", {}).get("backlog", 0)):
                return False
        return True

    async def nothing_pending() -> bool:
        return await count_in("notifications", "SELECT count(*) FROM notifications WHERE state = 'pending'") == 0

    left = lambda: max(5.0, deadline - time.monotonic())  # noqa: E731
    report = await client.until("every transfer to be final", all_final, bound=left(), interval=0.5)
    await client.until("every surrender to be decided", surrenders_decided, bound=left(), interval=0.5)
    await client.until("the evaluation of 2020 to complete", evaluated, bound=left(), interval=0.5)
    await client.until("every outbox to be empty", outboxes_empty, bound=left(), interval=0.5)
    await client.until("every notification to be delivered or given up", nothing_pending, bound=left(), interval=0.5)
    return report


async def verify(world: World, verdicts: Verdicts) -> None:
    client = world.client
    try:
        await quiet(world)
        verdicts.check(True, "quiet: every process ready, transfers final, surrenders decided, outboxes empty")
    except Exception as exc:  # noqa: BLE001 (the checks below still run and say what is wrong)
        verdicts.check(False, "quiet within the bound", exc)

    audit = (await client.call("GET", "/api/v1/ledger/audit", world.authority)).json()
    verdicts.check(audit["ok"], "the ledger audit is clean", audit.get("discrepancies") or "")

    async def journal_verified() -> dict[str, Any] | None:
        answer = (await client.call("GET", "/api/v1/ledger/journal/verify", world.authority)).json()
        return answer if answer["ok"] else None

    try:
        journal = await client.until("the journal to verify", journal_verified, bound=60, interval=1)
        verdicts.check(True, "the journal verifies (hashes, chain, signed checkpoints)",
                       f"{journal['sealed']} rows sealed, {journal['unsealed']} not yet, "
                       f"{journal['checkpoints_checked']} checkpoints checked")
    except ChaosError:
        journal = (await client.call("GET", "/api/v1/ledger/journal/verify", world.authority)).json()
        verdicts.check(False, "the journal verifies", journal.get("discrepancies_by_code") or journal)

    reconciliation = (await client.call("GET", "/api/v1/transfers/reconciliation", world.authority)).json()
    verdicts.check(reconciliation["final"] == reconciliation["transfers"], "every transfer is final",
                   f"{reconciliation['final']} of {reconciliation['transfers']}")
    verdicts.check(reconciliation["ok"], "the transfer-hold reconciliation is clean",
                   reconciliation.get("problems") or "")

    accounts = await asyncpg.connect(world.dsn("accounts"))
    transfers = await asyncpg.connect(world.dsn("transfers"))
    compliance = await asyncpg.connect(world.dsn("compliance"))
    notifications = await asyncpg.connect(world.dsn("notifications"))
    try:
        known = set(world.transfer_ids)
        stored = {str(r["id"]) for r in await transfers.fetch("SELECT id FROM transfers")}
        verdicts.check(known <= stored, "every transfer a participant was answered for is stored",
                       sorted(known - stored)[:10] or "")
        twice = await accounts.fetch(
            "SELECT movement_id, vintage, origin, count(*) AS n FROM journal GROUP BY 1, 2, 3 HAVING count(*) > 1")
        verdicts.check(not twice, "every movement's journal rows written once (per vintage and origin)",
                       [dict(r) for r in twice[:10]] or "")
        per_hold = await accounts.fetch("""
            SELECT h.transfer_id, h.state,
                   count(DISTINCT j.movement_id) FILTER (WHERE j.kind = 'transfer_hold') AS held,
                   count(DISTINCT j.movement_id) FILTER (WHERE j.kind = 'transfer_settle') AS settled,
                   count(DISTINCT j.movement_id) FILTER (WHERE j.kind = 'transfer_release') AS released
              FROM holds h LEFT JOIN journal j ON j.hold_id = h.id GROUP BY h.id, h.transfer_id, h.state""")
        wrong = [dict(r) for r in per_hold
                 if r["held"] != 1 or r["settled"] + r["released"] != (r["state"] != "held")
                 or (r["state"] == "settled") != (r["settled"] == 1)
                 or (r["state"] == "released") != (r["released"] == 1)]
        verdicts.check(not wrong, f"every hold taken once and settled or released once ({len(per_hold)} holds)",
                       wrong[:10] or "")
        still_held = [dict(r) for r in per_hold if r["state"] == "held"]
        verdicts.check(not still_held, "no hold is left open", still_held[:10] or "")
        outcomes = {str(r["id"]): r["state"] for r in await transfers.fetch("SELECT id, state FROM transfers")}
        holds = {str(r["transfer_id"]): r["state"] for r in per_hold}
        mismatched = [(tid, state, holds.get(tid)) for tid, state in outcomes.items()
                      if (state == "completed" and holds.get(tid) != "settled")
                      or (state == "reversed" and holds.get(tid) != "released")
                      or (state == "failed" and holds.get(tid) not in (None, "released"))]
        verdicts.check(not mismatched, "each completed transfer's hold settled, each reversed one's released",
                       mismatched[:10] or "")

        surrenders = await compliance.fetch("SELECT id, state FROM surrenders")
        moved = Counter(str(r["movement_id"]) for r in await accounts.fetch(
            "SELECT DISTINCT movement_id, vintage, origin FROM journal WHERE kind = 'surrender'"))
        movement_ids = {str(r["movement_id"]) for r in await accounts.fetch(
            "SELECT DISTINCT movement_id FROM journal WHERE kind = 'surrender'")}
        bad = [(str(r["id"]), r["state"]) for r in surrenders
               if (r["state"] == "completed") != (str(r["id"]) in movement_ids)]
        verdicts.check(not bad, f"each completed surrender moved once, each refused one never ({len(surrenders)})",
                       bad[:10] or "")
        verdicts.check(all(n >= 1 for n in moved.values()), "surrender movements counted", "")
        requested = [str(r["id"]) for r in surrenders if r["state"] == "requested"]
        verdicts.check(not requested, "every surrender decided", requested[:10] or "")

        repeated = await notifications.fetch("""
            SELECT event_id, recipient, channel, count(*) AS n FROM notifications GROUP BY 1, 2, 3
            HAVING count(*) > 1""")
        rows = await notifications.fetch("SELECT channel, state, stable_id, recipient FROM notifications")
        by_channel = Counter((r["channel"], r["state"]) for r in rows)
        verdicts.check(not repeated, f"every (event, recipient, channel) notification recorded once ({len(rows)} rows)",
                       [dict(r) for r in repeated[:10]] or dict(by_channel))
        arrived = world.mailbox.message_ids()
        lost_mail = [r["stable_id"] for r in rows if r["channel"] == "email" and r["state"] == "delivered"
                     and arrived[r["stable_id"].strip("<>")] == 0]
        verdicts.check(not lost_mail, "every e-mail said delivered arrived at the mailbox", lost_mail[:10] or "")
        with world.hooks.lock:
            hook_raw = Counter(wid for _, wid in world.hooks.raw)
            hook_accepted = Counter(wid for _, wid, _ in world.hooks.accepted)
        lost_hooks = [r["stable_id"] for r in rows if r["channel"] == "webhook" and r["state"] == "delivered"
                      and hook_accepted[r["stable_id"]] == 0]
        verdicts.check(not lost_hooks, "every webhook said delivered arrived (signature verified)",
                       lost_hooks[:10] or "")
        pending = [r["stable_id"] for r in rows if r["state"] == "pending"]
        verdicts.check(not pending, "no notification still pending", pending[:10] or "")
        world.tally.add("notifications: rows recorded", len(rows))
        for (channel, state), n in sorted(by_channel.items()):
            world.tally.add(f"notifications: {channel} {state}", n)
        world.tally.add("receivers: e-mails arrived (raw)", sum(arrived.values()))
        world.tally.add("receivers: e-mails arrived (distinct Message-ID)", len(arrived))
        world.tally.add("receivers: e-mail repeats (same Message-ID again)", sum(n - 1 for n in arrived.values()))
        world.tally.add("receivers: webhook requests (raw)", sum(hook_raw.values()))
        world.tally.add("receivers: webhooks accepted (distinct webhook-id)", len(hook_accepted))
        world.tally.add("receivers: webhook repeats after acceptance",
                        sum(n - 1 for n in hook_accepted.values()))
        world.tally.add("receivers: webhook requests refused by the receiver (fail_twice)",
                        sum(hook_raw.values()) - sum(hook_accepted.values()))
        world.tally.add("journal: rows", int(await accounts.fetchval("SELECT count(*) FROM journal")))
        world.tally.add("transfers: stored", len(stored))
    finally:
        for conn in (accounts, transfers, compliance, notifications):
            await conn.close()

    evaluation = await client.call("GET", "/api/v1/compliance/periods/2020/evaluations", world.authority)
    verdicts.check(evaluation.status_code == 200 and evaluation.json()["state"] == "completed",
                   "the evaluation of 2020 completed", evaluation.json().get("state", evaluation.text[:200]))
    verdicts.check(not world.tally.server_errors, "no 500 answered during the run",
                   world.tally.server_errors[:5] or "")
    verdicts.check(not world.problems, "every process saw each move of the programme clock in time",
                   world.problems or "")


def print_tally(tally: Tally) -> None:
    print("\nOperations, faults and receivers:", flush=True)
    for what, n in sorted(tally.counts.items()):
        print(f"  {what:<72} {n:>7}", flush=True)


# The run --------------------------------------------------------------------------------------------
def environment(base: Path, codec_keys: tuple[Path, Path], node: RabbitNode, mailbox: Mailbox, ca_file: Path,
                hooks_base: str) -> dict[str, str]:
    admin = os.environ.get("REGISTRY_ADMIN_DATABASE_URL") or os.environ.get(
        "TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = re.sub(r"^postgresql\+\w+://", "postgresql://", admin)
    host_port = re.search(r"@([^/:]+):(\d+)", admin)
    if host_port is None:
        raise ChaosError(f"cannot read host and port of {admin}")
    private, public = codec_keys
    return {
        "REGISTRY_ENVIRONMENT": "test",
        "REGISTRY_ADMIN_DATABASE_URL": admin,
        "REGISTRY_DATABASE_HOST": host_port.group(1),
        "REGISTRY_DATABASE_PORT": host_port.group(2),
        "REGISTRY_DATABASE_PREFIX": f"chaos{secrets.token_hex(3)}",
        "REGISTRY_AMQP_URL": node.url,
        "REGISTRY_JWT_PUBLIC_KEY_FILE": str(public),
        "REGISTRY_JWT_PRIVATE_KEY_FILE": str(private),
        "REGISTRY_CLOCK_CONTROL": "true",
        "REGISTRY_CLOCK_START": "2020-01-01T00:00:00-06:00",
        "REGISTRY_LOG_JSON": "true",
        "REGISTRY_BOOTSTRAP_ADMIN_PASSWORD": f"first-{secrets.token_urlsafe(12)}",
        "REGISTRY_LOGIN_SLOWDOWN_BASE_SECONDS": "0.01",
        "REGISTRY_ACCEPTANCE_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "REGISTRY_SWEEP_INTERVAL_SECONDS": "0.3",
        "REGISTRY_JOURNAL_CHECKPOINT_KEY": secrets.token_urlsafe(32),
        "REGISTRY_JOURNAL_CHECKPOINT_INTERVAL_SECONDS": "2",
        "REGISTRY_AUTO_EVALUATE": "true",
        "REGISTRY_EVALUATE_INTERVAL_SECONDS": "0.5",
        "REGISTRY_AUTHORITY_EMAILS": AUTHORITY_EMAIL,
        "REGISTRY_SMTP_HOST": mailbox.host, "REGISTRY_SMTP_PORT": str(mailbox.port),
        "REGISTRY_WEBHOOK_CA_FILE": str(ca_file), "REGISTRY_DELIVERY_POLL_SECONDS": "0.3",
        "REGISTRY_DELIVERY_RETRY_BASE_SECONDS": "0.5", "REGISTRY_DELIVERY_RETRY_MAX_SECONDS": "2",
        "REGISTRY_DELIVERY_GIVE_UP_AFTER_SECONDS": "120", "REGISTRY_DELIVERY_LEASE_SECONDS": "3",
    }


async def load(world: World) -> None:
    """The participants and the programme for ``seconds``; then the participants finish what they began."""
    tasks = [asyncio.create_task(participant(world, p, True)) for p in world.installations]
    tasks += [asyncio.create_task(participant(world, p, False)) for p in world.intermediaries]
    calendar = asyncio.create_task(programme(world))
    try:
        await asyncio.sleep(world.config.seconds)
        world.stop_load.set()
        # What the participants began is followed to its end, within a bound; a participant still waiting
        # then is a finding (its operation never ended), not a reason to wait longer.
        done, pending = await asyncio.wait([calendar, *tasks], timeout=FINISH_BOUND)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        if pending:
            raise ChaosError(f"{len(pending)} participants' operations had not ended {FINISH_BOUND:.0f} s after "
                             "the load stopped")
    finally:
        for task in [calendar, *tasks]:
            task.cancel()
        await asyncio.gather(calendar, *tasks, return_exceptions=True)


async def main(config: Config) -> int:
    # A TERM (a time limit, a supervisor) stops the run like Ctrl-C: its system and broker node are stopped
    # and its databases dropped on the way out.
    current = asyncio.current_task()
    if current is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    print(f"chaos: {config.seconds:.0f} s of load and faults, seed {seed}", flush=True)
    if (why := rabbit_node_available()) is not None:
        print(f"chaos: cannot run: {why}", flush=True)
        return 2
    tally, verdicts = Tally(), Verdicts()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        base = Path(scratch)
        keys = (base / "keys" / "jwt_private.pem", base / "keys" / "jwt_public.pem")
        generate_keypair(*keys)
        codec = TokenCodec(public_key_file=keys[1], private_key_file=keys[0], issuer="registro-mx",
                           audience="registro-mx")
        ca = trustme.CA()
        ca_file = base / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        (base / "hooks").mkdir()
        mailbox = Mailbox()
        smtp = Controller(mailbox, hostname=mailbox.host, port=mailbox.port)
        smtp.start()
        try:
            with rabbit_node(base / "rabbit", name=f"chaos{secrets.token_hex(3)}") as node, \
                    https_receiver(ca, base / "hooks") as (hooks, hooks_base):
                env = environment(base, keys, node, mailbox, ca_file, hooks_base)
                extra = {k: v for k, v in env.items() if k.startswith("REGISTRY_")}
                print(f"chaos: databases {extra['REGISTRY_DATABASE_PREFIX']}x_*, broker node {node.node}, "
                      "starting the registry", flush=True)
                async with private_system(extra, base / "system", "x", {}, ready_within=180) as (plan, own), \
                        httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as http:
                    own = {**own, "CHAOS_HOOKS_BASE": hooks_base}
                    server = own["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
                    authority = codec.issue(user_id="authority-1", username="authority-1", roles=["authority"],
                                            lifetime=timedelta(hours=2))
                    async with RegistryClient.open(
                        plan.gateway_url, admin_password=own["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"],
                        authority_token=authority,
                        transfers_dsn=f"{server}/{own['REGISTRY_DATABASE_PREFIX']}transfers",
                    ) as registry:
                        world = World(config, plan, own, node, Client(http, plan.gateway_url, tally), registry,
                                      mailbox, hooks, random.Random(seed), tally)
                        await set_up_parties(world)
                        print(f"chaos: {len(world.installations)} installations, {len(world.intermediaries)} "
                              f"intermediaries and a verifier set up in {time.monotonic() - started:.0f} s; "
                              "load and faults begin", flush=True)
                        fault_task = asyncio.create_task(faults(world))
                        try:
                            await load(world)
                            await fault_task
                        except Exception as exc:  # noqa: BLE001 (reported as a failed verdict; the checks still run)
                            traceback.print_exc()
                            verdicts.check(False, "the load ran to its end", exc)
                        finally:
                            fault_task.cancel()
                            await asyncio.gather(fault_task, return_exceptions=True)
                            if not node.running:
                                await asyncio.to_thread(node.start)
                        print(f"chaos: load over after {time.monotonic() - started:.0f} s; waiting for quiet "
                              "and checking", flush=True)
                        await verify(world, verdicts)
        except Exception as exc:  # noqa: BLE001 (setup or teardown failed: say so and fail)
            traceback.print_exc()
            verdicts.check(False, "the run completed", exc)
        finally:
            smtp.stop()
    print_tally(tally)
    print(f"\nchaos: {'PASSED' if verdicts.ok and verdicts.lines else 'FAILED'} in {time.monotonic() - started:.0f} s "
          f"(seed {seed})", flush=True)
    return 0 if verdicts.ok and verdicts.lines else 1
