"""API fuzzing (``make fuzz``): schemathesis over every operation of the gateway's merged OpenAPI document,
against a registry of its own (fresh databases, every process separate, on loopback), once per role
(anonymous, authority, authority-readonly, administrator, installation, verifier, intermediary).

The participants are real users representing real accounts (so their requests reach the services'
checks, not only the gateway's), the others carry tokens minted like the tests'. For every request:

- no answer is a 5xx (``not_a_server_error``),
- no answer contradicts the schema (the documented response's body and content type),
- a refused write (4xx to POST, PUT, PATCH or DELETE) changed nothing in the owning service: every
  table's row count and content hash (read models fed by other services' events, outbox, inbox and
  idempotency records aside) and its audit log are the same after as before,
- a successful write wrote exactly one audit row in the owning service; routes that wrote another
  number are listed by name (not hidden), and a successful write that wrote none fails the run.

It prints the requests made per role and every finding; the exit status is 0 only without findings.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import Counter, defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from gateway.routes_table import ROUTES
from registry_common.auth import TokenCodec, generate_keypair
from registry_common.settings import SERVICES
from registry_common.testing.private_system import private_system
from registry_common.testing.registry_client import Party, RegistryClient

T = TypeVar("T")
STOP = threading.Event()  # set on SIGTERM: the run ends at the next request and cleans up
ROLES = ("anonymous", "authority", "authority-readonly", "administrator", "installation", "verifier",
         "intermediary")
WRITES = {"POST", "PUT", "PATCH", "DELETE"}
# Tables whose rows change without a request to the service: infrastructure and read models of other
# services' events (``known_*``), and idempotency records (a refused request may keep its answer).
NOT_STATE = {"outbox", "inbox", "consumer_retries", "dead_letters", "idempotency_keys", "alembic_version",
             "programme_clock", "programme_clock_history", "journal_seals", "journal_checkpoints",
             "delivery_attempts"}
# Tables the workers also write on their own (notifications recorded from events, their deliveries retried):
# only what a request may change is compared.
PART_OF_STATE = {"notifications": "SELECT id, read_at FROM notifications WHERE read_at IS NOT NULL"}
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]
# Refused requests that record something by design, and what: shown apart, not findings.
RECORDED_REFUSALS = {
    ("POST", "/api/v1/auth/token"): ({"audit_log", "users"}, "a failed sign-in is recorded (its audit row; the "
                                     "user's failed_sign_ins counts towards the lockout)"),
}
# The spreadsheet uploads (allocation tables) are bytes like any file.
schemathesis.serializer.alias("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                              "application/octet-stream")


class Background:
    """An event loop in a thread, for the database and system work the synchronous fuzzing needs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 300) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class Findings:
    requests: Counter[str] = field(default_factory=Counter)  # per role
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    audit_rows: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    operations: int = 0
    skipped: list[str] = field(default_factory=list)
    by_design: Counter[str] = field(default_factory=Counter)
    noops: Counter[str] = field(default_factory=Counter)

    def fail(self, text: str) -> None:
        self.failures.append(text)
        print(f"  FINDING {text[:600]}", flush=True)


class State:
    """Each service's database, read through a small pool: fingerprints of its tables and its audit log."""

    def __init__(self, pools: dict[str, asyncpg.Pool], tables: dict[str, list[str]]):
        self.pools, self.tables = pools, tables

    @classmethod
    async def open(cls, dsn_of: dict[str, str]) -> State:
        pools, tables = {}, {}
        for service, dsn in dsn_of.items():
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            names = [r["table_name"] for r in await pool.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                "AND table_type = 'BASE TABLE' ORDER BY 1")]
            pools[service] = pool
            tables[service] = [n for n in names if n not in NOT_STATE and not n.startswith("known_")]
        return cls(pools, tables)

    async def fingerprint(self, service: str) -> dict[str, tuple[int, int]]:
        sql = " UNION ALL ".join(
            f"SELECT '{t}' AS t, count(*) AS n, coalesce(sum(hashtext(x::text)::bigint), 0) AS h "
            f"FROM ({PART_OF_STATE.get(t, f'SELECT * FROM {chr(34)}{t}{chr(34)}')}) x"
            for t in self.tables[service])
        return {r["t"]: (r["n"], r["h"]) for r in await self.pools[service].fetch(sql)}

    async def audit_rows(self, service: str) -> int:
        return int(await self.pools[service].fetchval("SELECT count(*) FROM audit_log"))

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()


@dataclass
class Fuzzer:
    gateway: str
    worker_urls: list[str]
    schema: Any
    headers: dict[str, dict[str, str]]  # role -> headers
    hints: dict[str, dict[str, str]]  # role -> path parameters of its own resources
    state: State
    background: Background
    findings: Findings
    deadline: float
    session: requests.Session = field(default_factory=requests.Session)

    def owner(self, path: str) -> str | None:
        route = ROUTES.match(path)
        return route.service if route is not None and route.service in SERVICES else None

    async def _quiet(self) -> None:
        """Until no outbox row is due at any worker (the effects of a success have been published), then a
        moment for the consumers; bounded."""
        async with httpx.AsyncClient(timeout=5) as http:
            end, empty = time.monotonic() + 15, 0
            while time.monotonic() < end and empty < 2:  # twice empty, 0.4 s apart: nothing in flight
                backlog = 0
                for url in self.worker_urls:
                    try:
                        ready = (await http.get(f"{url}/ready")).json()
                        backlog += int(ready["checks"].get("outbox", {}).get("backlog", 0))
                    except (httpx.HTTPError, ValueError, KeyError):
                        backlog += 1
                empty = empty + 1 if backlog == 0 else 0
                await asyncio.sleep(0.4 if backlog == 0 else 0.1)

    def one(self, role: str, case: Any) -> None:
        method, path = case.method.upper(), case.operation.path
        service = self.owner(case.formatted_path) or self.owner(path)
        write = method in WRITES and service is not None
        before = audit_before = None
        if write:
            before = self.background.run(self.state.fingerprint(service))
            audit_before = self.background.run(self.state.audit_rows(service))
        try:
            response = case.call(base_url=self.gateway, session=self.session, headers=self.headers[role],
                                 timeout=30)
        except requests.RequestException as exc:
            self.findings.fail(f"{role} {method} {case.formatted_path}: no answer ({exc})")
            return
        self.findings.requests[role] += 1
        self.findings.statuses[(role, response.status_code // 100)] += 1
        try:
            case.validate_response(response, checks=CHECKS)
        except (AssertionError, BaseExceptionGroup) as exc:  # schemathesis' failures (grouped)
            parts = exc.exceptions if isinstance(exc, BaseExceptionGroup) else (exc,)
            said = " | ".join(" ".join(str(p).split())[:300] for p in parts)
            self.findings.fail(f"{role} {method} {path} -> {response.status_code}: {said}\n"
                               f"    {case.as_curl_command(headers=self.headers[role])}")
        if not write:
            return
        assert service is not None and before is not None and audit_before is not None
        if response.status_code >= 400:
            after = self.background.run(self.state.fingerprint(service))
            audit_after = self.background.run(self.state.audit_rows(service))
            changed = sorted(t for t in set(before) | set(after) if before.get(t) != after.get(t))
            allowed, why = RECORDED_REFUSALS.get((method, path), (set(), ""))
            if (changed or audit_after != audit_before) and why and set(changed) <= allowed:
                self.findings.by_design[f"{method} {path} refused with {response.status_code}: {why}"] += 1
            elif changed or audit_after != audit_before:
                self.findings.fail(f"{role} {method} {path} refused with {response.status_code} but changed "
                                   f"{service}: tables {changed}, audit rows {audit_before} -> {audit_after}")
        elif 200 <= response.status_code < 300:
            self.background.run(self._quiet())
            written = self.background.run(self.state.audit_rows(service)) - audit_before
            after = self.background.run(self.state.fingerprint(service))
            changed = sorted(t for t in set(before) | set(after) if t != "audit_log" and before.get(t) != after.get(t))
            if changed or written:
                self.findings.audit_rows[f"{method} {path}"][written] += 1
            else:  # a repeat answered as before (an idempotent no-op): nothing changed, nothing to record
                self.findings.noops[f"{method} {path}"] += 1

    def operation(self, operation: Any, examples: int, roles: tuple[str, ...] = ROLES) -> None:
        path = operation.path
        for role in roles:
            if time.monotonic() > self.deadline or STOP.is_set():
                return
            hints = {k: v for k, v in self.hints.get(role, {}).items()
                     if any(p.name == k for p in operation.path_parameters)}
            strategies = [operation.as_strategy(GenerationMode.POSITIVE)]
            if hints:
                strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=hints))
            strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
            for number, strategy in enumerate(strategies):
                negative = number == len(strategies) - 1
                cases: list[Any] = []

                @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                          suppress_health_check=list(HealthCheck), derandomize=False, verbosity=Verbosity.quiet)
                @given(case=strategy)
                def collect(case: Any) -> None:
                    cases.append(case)  # noqa: B023 (consumed right below)

                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        collect()
                except Exception as exc:  # noqa: BLE001 (a strategy the schema cannot satisfy: say so)
                    if not (negative and type(exc).__name__ == "Unsatisfiable"):  # nothing to negate: fine
                        self.findings.skipped.append(f"{operation.method.upper()} {path} ({type(exc).__name__})")
                    continue
                for case in cases[:examples]:
                    if time.monotonic() > self.deadline or STOP.is_set():
                        return
                    self.one(role, case)


def environment(keys: tuple[Path, Path], admin: str, amqp: str) -> dict[str, str]:
    admin = re.sub(r"^postgresql\+\w+://", "postgresql://", admin)
    host_port = re.search(r"@([^/:]+):(\d+)", admin)
    assert host_port, admin
    private, public = keys
    prefix = f"fuzz{secrets.token_hex(3)}"
    return {
        "REGISTRY_ENVIRONMENT": "test", "REGISTRY_ADMIN_DATABASE_URL": admin,
        "REGISTRY_DATABASE_HOST": host_port.group(1), "REGISTRY_DATABASE_PORT": host_port.group(2),
        "REGISTRY_DATABASE_PREFIX": prefix, "REGISTRY_AMQP_URL": amqp, "REGISTRY_NAMESPACE": prefix,
        "REGISTRY_JWT_PUBLIC_KEY_FILE": str(public), "REGISTRY_JWT_PRIVATE_KEY_FILE": str(private),
        "REGISTRY_CLOCK_CONTROL": "true", "REGISTRY_CLOCK_START": "2020-01-01T00:00:00-06:00",
        "REGISTRY_LOG_JSON": "true", "REGISTRY_BOOTSTRAP_ADMIN_PASSWORD": f"first-{secrets.token_urlsafe(12)}",
        "REGISTRY_LOGIN_SLOWDOWN_BASE_SECONDS": "0.01", "REGISTRY_LOGIN_LOCK_MINUTES": "0.01",
        "REGISTRY_AUTO_EVALUATE": "false", "REGISTRY_JOURNAL_CHECKPOINT_KEY": secrets.token_urlsafe(32),
    }


@dataclass
class Options:
    budget: float = 480.0  # seconds of fuzzing (setup aside)
    examples: int = 4  # per operation, role and generation mode
    only: str | None = None  # a regular expression on "METHOD /path"
    roles: tuple[str, ...] = ROLES
    admin_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"


async def _people(plan: Any, own: dict[str, str], codec: TokenCodec
                  ) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    server = own["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    mint = lambda user, *roles: {"Authorization": "Bearer " + codec.issue(  # noqa: E731
        user_id=user, username=user, roles=roles, lifetime=timedelta(hours=1))}
    async with RegistryClient.open(plan.gateway_url, admin_password=own["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"],
                                   authority_token=mint("authority-1", "authority")["Authorization"][7:],
                                   transfers_dsn=f"{server}/{own['REGISTRY_DATABASE_PREFIX']}transfers") as registry:
        installation: Party = await registry.party("installation", "installation")
        verifier: Party = await registry.party("verifier", "verifier")
        intermediary: Party = await registry.party("intermediary", "intermediary")
        await registry.fund(installation, 50)
        headers = {
            "anonymous": {}, "authority": mint("authority-1", "authority"),
            "authority-readonly": mint("authority-ro-1", "authority-readonly"),
            "administrator": dict(registry.admin),
            "installation": {"Authorization": installation.headers["Authorization"]},
            "verifier": {"Authorization": verifier.headers["Authorization"]},
            "intermediary": {"Authorization": intermediary.headers["Authorization"]},
        }
        hints = {role: {"account_id": party.account_id, "user_id": party.user_id}
                 for role, party in (("installation", installation), ("verifier", verifier),
                                     ("intermediary", intermediary))}
        # Resources of their own for the generated requests to reach (and some to succeed on): transfers
        # awaiting acceptance (the sender may cancel, the receiver accept or reject) and a subscription.
        transfers = []
        for _ in range(3):
            answer = await registry.transfer(installation, intermediary, 1)
            if answer.status_code == 201:
                transfers.append(answer.json()["id"])
                await registry.reaches(transfers[-1], installation, {"awaiting_acceptance", "failed"}, within=60)
        hook = await registry.call("POST", "/api/v1/webhook-subscriptions", installation.headers, {
            "account_id": installation.account_id, "url": "https://localhost:9/hook/fuzz"})
        if transfers:
            hints["installation"]["transfer_id"] = transfers[0]
            hints["intermediary"]["transfer_id"] = transfers[-1]
        if hook.status_code == 201:
            hints["installation"]["subscription_id"] = hook.json()["id"]
        for role in ("authority", "authority-readonly", "administrator"):
            hints[role] = {**hints["installation"], "transfer_id": transfers[1] if len(transfers) > 1 else ""}
            hints[role] = {k: v for k, v in hints[role].items() if v}
    return headers, hints


def fuzz(options: Options) -> int:
    findings = Findings()
    background = Background()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        base = Path(scratch)
        keys = (base / "keys" / "jwt_private.pem", base / "keys" / "jwt_public.pem")
        generate_keypair(*keys)
        codec = TokenCodec(public_key_file=keys[1], private_key_file=keys[0], issuer="registro-mx",
                           audience="registro-mx")
        env = environment(keys, options.admin_dsn, options.amqp_url)
        system = private_system(env, base / "system", "z", {}, ready_within=180)
        plan, own = background.run(system.__aenter__())
        state: State | None = None
        try:
            headers, hints = background.run(_people(plan, own, codec))
            server = own["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
            state = background.run(State.open({s: f"{server}/{own['REGISTRY_DATABASE_PREFIX']}{s}" for s in SERVICES}))
            document = requests.get(f"{plan.gateway_url}/openapi.json", timeout=30).json()
            schema = schemathesis.openapi.from_dict(document)
            operations = [result.ok() for result in schema.get_all_operations()]
            if options.only:
                operations = [o for o in operations if re.search(options.only, f"{o.method.upper()} {o.path}")]
            print(f"fuzz: {len(operations)} operations in the gateway's document, {len(options.roles)} roles, "
                  f"{options.examples} examples each per generation mode; set up in "
                  f"{time.monotonic() - started:.0f} s", flush=True)
            fuzzer = Fuzzer(plan.gateway_url, [plan.worker_url(s) for s in SERVICES], schema, headers, hints, state,
                            background, findings, deadline=time.monotonic() + options.budget)
            for n, operation in enumerate(operations, 1):
                if time.monotonic() > fuzzer.deadline or STOP.is_set():
                    findings.skipped.append(f"{len(operations) - n + 1} operations: the time budget ran out")
                    break
                fuzzer.operation(operation, options.examples, options.roles)
                findings.operations += 1
                if n % 20 == 0:
                    print(f"  {n}/{len(operations)} operations, {sum(findings.requests.values())} requests, "
                          f"{time.monotonic() - started:.0f} s", flush=True)
        except Exception:  # noqa: BLE001 (the run failed: say where)
            traceback.print_exc()
            findings.fail("the run did not complete")
        finally:
            if state is not None:
                background.run(state.close())
            background.run(system.__aexit__(None, None, None))
            background.close()
    if STOP.is_set():
        findings.fail("stopped by a signal before the end")
    return report(findings, time.monotonic() - started)


def report(findings: Findings, seconds: float) -> int:
    print(f"\nfuzz: {findings.operations} operations, {sum(findings.requests.values())} requests in {seconds:.0f} s",
          flush=True)
    print("Requests per role (answers by class):")
    for role in ROLES:
        classes = ", ".join(f"{c}xx {findings.statuses[(role, c)]}" for c in (2, 3, 4, 5)
                            if findings.statuses[(role, c)])
        print(f"  {role:<20} {findings.requests[role]:>6}   {classes}")
    print("Audit rows written by successful writes, per route:")
    none_written = []
    for route, counts in sorted(findings.audit_rows.items()):
        mark = "" if set(counts) == {1} else "   <- not exactly one"
        print(f"  {route:<70} {dict(sorted(counts.items()))}{mark}")
        if 0 in counts:
            none_written.append(route)
    for route in none_written:
        findings.fail(f"{route}: a successful write wrote no audit row")
    if findings.noops:
        print("Successful writes that changed nothing (repeats answered as before; no audit row needed): "
              + ", ".join(f"{route} x{n}" for route, n in sorted(findings.noops.items())))
    if findings.by_design:
        print("Refused, and recorded by design (not findings):")
        for what, n in sorted(findings.by_design.items()):
            print(f"  {n:>5} x {what}")
    if findings.skipped:
        print(f"Not generated ({len(findings.skipped)}): " + "; ".join(findings.skipped[:30]))
    print(f"\nfuzz: {'PASSED' if not findings.failures else f'FAILED with {len(findings.failures)} findings'}",
          flush=True)
    for failure in findings.failures[:60]:
        print(f"  - {failure[:1000]}")
    return 0 if not findings.failures else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(fuzz(Options()))
