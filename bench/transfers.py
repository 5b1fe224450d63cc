"""Transfers end to end through the gateway, with the whole system as ``make up`` runs it (issue 6).

Timed: many clients at once, each in a loop: ``POST /api/v1/transfers`` (its own Idempotency-Key, the
sender's own token), follow the transfer until it is ``awaiting_acceptance`` (``GET`` with the version
the client has in ``If-None-Match`` and ``Prefer: wait=5``, which the API answers when the transfer
changes; no polling), ``POST .../accept`` with the receiver's token and ``Prefer: wait=5`` (answered once
the transfer has moved on: completed), following it further if it is not completed yet. A transfer's end-to-end
time runs from the POST's answer until COMPLETED is seen; the rate counts the transfers seen COMPLETED
inside the measurement window (3 x BENCH_SECONDS, after a warm-up). The CPU each process of the system
spent per completed transfer in that window is printed and kept in the figure's notes.

Set-up, untimed: every API and worker and the gateway started by the launcher (supervisord) on free
ports, with databases ``bench_<epoch hex>_xfer_<service>`` provisioned like ``make up`` does and a broker
namespace of the same name; the development profile's settings (authentication on, default windows, pools
and relay); the notifications worker pointed at a local SMTP sink. Parties are created through the
gateway as a person would (the administrator creates each user and account, approves it and links the
user; each user signs in), and the authority funds the senders. Afterwards: every transfer final, the
reconciliation and the ledger audit clean, every balance what the completed transfers say. Everything is
stopped and dropped at the end.

If a goal is missed, the transfers and accounts workers, their APIs and the gateway are profiled with
py-spy for 10 s under the same load: collapsed stacks, a flame graph (SVG) per process and a summary go
to ``bench/results/transfers-profile-<time>/``.

Last, the same loop with only ``LIGHT_CLIENTS`` clients for BENCH_SECONDS (no goal):
``transfers.light_load_p50_ms`` / ``_p99_ms``, the time a transfer takes when it does not queue behind
the others' work; under the 64 clients most of a transfer's time is that queue (Little's law: 64 / rate).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

from bench.harness import RESULTS_FILE, BenchError, Context, Figure
from bench.system import drop_system
from registry_common.ports import free_port

CLIENTS = 64
LIGHT_CLIENTS = 4  # then a few clients: how long a transfer takes when it does not queue behind others
WINDOW_FACTOR = 3  # the measurement window is 3 x BENCH_SECONDS (30 s by default)
WARMUP_SECONDS = 5.0
WAIT_SECONDS = 5  # each look: Prefer: wait=5 with If-None-Match (answered at the transfer's next change)
STEP_TIMEOUT = 30.0  # the longest a client waits for one state
FUNDS = 1_000_000  # each sender's allowances; a transfer moves 1
PARTY_CONCURRENCY = 4  # parties created at once during set-up (each signs in: argon2, CPU-bound)
READY_TIMEOUT = 120.0
PROFILE_SECONDS = 10
PROFILED = ("transfers-worker", "accounts-worker", "transfers-api", "accounts-api", "gateway", "notifications-worker")
PROFILE_RATE = 200  # samples a second
GOAL_PER_S, GOAL_P99_MS, GOAL_RATIO = 200.0, 500.0, 0.08
BASELINE = "baseline.pg_ledger_txn_per_s"
# This module's databases are bench_<epoch seconds, hex>_xfer_<service> (a pattern no other module's
# clean-up matches); a leftover is one older than any run can last, so a run beside ours is left alone.
DATABASE_LEFTOVER = r"^bench_([0-9a-f]{8})_xfer_(accounts|issuance|transfers|compliance|auctions|notifications)$"
RUN_DIR_PREFIX = "bench-transfers-"
LEFTOVER_AFTER_SECONDS = 30 * 60
PROFILE_ROOT = RESULTS_FILE.parent


# The system ----------------------------------------------------------------------------------------
@dataclass
class System:
    plan: Any  # registry_common.launcher.SystemPlan
    env: dict[str, str]
    authority_token: str
    smtp: SmtpSink


class SmtpSink:
    """A local SMTP server that only counts what it receives (the notifications worker's outlet)."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received = 0
        self._lock = threading.Lock()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd's hook)
        with self._lock:
            self.received += 1
        return "250 OK"

    def start(self) -> int:
        self.controller.start()
        return self.port

    def stop(self) -> None:
        self.controller.stop()


async def drop_leftovers(ctx: Context) -> None:
    """Systems, databases and broker namespaces an interrupted run left behind (older than
    LEFTOVER_AFTER_SECONDS)."""
    from registry_common.launcher import SystemPlan, stop, supervisord_pid
    from registry_common.messaging.topology import delete_namespace
    from registry_common.settings import SERVICES

    now = time.time()
    for run_dir in Path(tempfile.gettempdir()).glob(f"{RUN_DIR_PREFIX}*/system"):
        plan = SystemPlan(run_dir=run_dir)
        if now - run_dir.stat().st_mtime > LEFTOVER_AFTER_SECONDS and supervisord_pid(plan) is not None:
            await asyncio.to_thread(stop, plan)
            print(f"stopped a leftover system in {run_dir}", flush=True)
    prefixes: set[str] = set()
    admin = await ctx.admin_connection()
    try:
        for (name,) in await admin.fetch("SELECT datname FROM pg_database WHERE datname ~ $1", DATABASE_LEFTOVER):
            started = re.match(DATABASE_LEFTOVER, name)
            if started is not None and now - int(started.group(1), 16) > LEFTOVER_AFTER_SECONDS:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                prefixes.add(name.removesuffix(started.group(2)))
                print(f"dropped leftover database {name}", flush=True)
    finally:
        await admin.close()
    for prefix in sorted(prefixes):
        await delete_namespace(ctx.amqp_url, prefix, SERVICES)


@asynccontextmanager
async def running_system(ctx: Context, workdir: Path) -> AsyncIterator[System]:
    """Provision, start every process under the launcher and wait until all are ready; afterwards stop
    them, drop the databases and the broker namespace."""
    from registry_common.auth import TokenCodec, generate_keypair
    from registry_common.launcher import SystemPlan, start, stop, wait_ready
    from registry_common.provision import provision
    from registry_common.settings import SERVICES

    prefix = f"bench_{int(time.time()):08x}_xfer_"  # see DATABASE_LEFTOVER
    server = urlsplit(ctx.admin_dsn)
    private_key, public_key = workdir / "jwt_private.pem", workdir / "jwt_public.pem"
    generate_keypair(private_key, public_key)
    smtp = SmtpSink()
    env = {  # what `make up` gives every process (launcher.development_plan), on this run's own names
        "REGISTRY_ENVIRONMENT": "development", "REGISTRY_CLOCK_CONTROL": "true",
        "REGISTRY_ADMIN_DATABASE_URL": ctx.admin_dsn, "REGISTRY_DATABASE_HOST": server.hostname or "127.0.0.1",
        "REGISTRY_DATABASE_PORT": str(server.port or 5432), "REGISTRY_DATABASE_PREFIX": prefix,
        "REGISTRY_AMQP_URL": ctx.amqp_url, "REGISTRY_NAMESPACE": prefix,
        "REGISTRY_JWT_PUBLIC_KEY_FILE": str(public_key), "REGISTRY_JWT_PRIVATE_KEY_FILE": str(private_key),
        "REGISTRY_BOOTSTRAP_ADMIN_PASSWORD": f"bench-{secrets.token_urlsafe(12)}",
        "REGISTRY_JOURNAL_CHECKPOINT_DIR": str(workdir / "checkpoints"),
        "REGISTRY_SMTP_HOST": "127.0.0.1", "REGISTRY_SMTP_PORT": str(smtp.start()),
    }
    plan = SystemPlan(run_dir=workdir / "system", gateway_port=free_port(),
                      api_ports={s: free_port() for s in SERVICES}, worker_ports={s: free_port() for s in SERVICES},
                      env=env)
    plan.run_dir.mkdir(parents=True)
    try:
        await provision(list(SERVICES), **{k.removeprefix("REGISTRY_").lower(): v for k, v in env.items()})
        start(plan)
        try:
            await wait_ready(plan, timeout=READY_TIMEOUT)
        except TimeoutError as exc:
            raise BenchError(f"{exc}\n{log_tails(plan)}") from exc
        codec = TokenCodec(public_key_file=public_key, private_key_file=private_key, issuer="registro-mx",
                           audience="registro-mx")
        token = codec.issue(user_id="bench-authority", username="bench-authority", roles=["authority"],
                            lifetime=timedelta(hours=1))
        yield System(plan, env, token, smtp)
    except BaseException:
        print(errors_in_logs(plan), file=sys.stderr, flush=True)
        raise
    finally:
        await asyncio.to_thread(stop, plan)
        smtp.stop()
        await drop_system(ctx, prefix)


def errors_in_logs(plan: Any, limit: int = 10) -> str:
    """The last errors each process logged (JSON lines at level error or critical), for a failed run."""
    found = []
    for log in sorted(plan.log_dir.glob("*.log")):
        errors = [line for line in log.read_text(errors="replace").splitlines()
                  if '"level": "error"' in line or '"level": "critical"' in line]
        if errors:
            found += [f"--- {log.name}: {len(errors)} errors, the last:", *(e[:3000] for e in errors[-limit:])]
    return "\n".join(found) or "no process logged an error"


def log_tails(plan: Any, lines: int = 15) -> str:
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                     for log in sorted(plan.log_dir.glob("*.log")))


# The load --------------------------------------------------------------------------------------------
@dataclass
class Client:
    sender: Any  # registry_common.testing.registry_client.Party
    receiver: Any
    completed: int = 0


class Gateway:
    """The clients' requests, straight on the lean transport (no httpx client: its per-request URL, header,
    cookie and hook handling cost the load generator, which shares the two cores it measures, ~1 ms a
    request). An idle connection is dropped after 4 s: the gateway (uvicorn) closes keep-alive connections
    idle for 5 s."""

    def __init__(self, gateway_url: str):
        import httpx

        from registry_common.http_transport import LeanHTTPTransport

        self.base = httpx.URL(gateway_url)
        self.transport = LeanHTTPTransport(max_connections=2 * CLIENTS, keepalive_expiry=4.0)
        self.timeouts = httpx.Timeout(30.0).as_dict()

    async def __call__(self, method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
        import httpx

        content = None if body is None else json.dumps(body).encode()
        if content is not None:
            headers = {**headers, "Content-Type": "application/json"}
        request = httpx.Request(method, self.base.join(path), headers=headers, content=content,
                                extensions={"timeout": self.timeouts})
        answer = await self.transport.handle_async_request(request)
        try:
            await answer.aread()
        finally:
            await answer.aclose()
        return answer

    async def __aenter__(self) -> Gateway:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.transport.aclose()


@dataclass
class Load:
    """CLIENTS clients in a loop; each finished transfer's (POST answered, COMPLETED seen) times."""

    gateway: Gateway
    clients: list[Client]
    samples: list[tuple[float, float]] = field(default_factory=list)
    looks: int = 0  # GETs of a transfer, all clients together
    stopping: bool = False

    async def look(self, transfer_id: str, tag: str, who: Any, wanted: str) -> str:
        """Follow the transfer (bounded) from the version ``tag`` until it is ``wanted``; a final state other
        than it is an error. Returns the version seen."""
        deadline = time.monotonic() + STEP_TIMEOUT
        path = f"/api/v1/transfers/{transfer_id}"
        while time.monotonic() < deadline:
            answer = await self.gateway("GET", path, {**who.headers, "If-None-Match": tag,
                                                      "Prefer": f"wait={WAIT_SECONDS}"})
            self.looks += 1
            if answer.status_code == 304:
                continue
            if answer.status_code != 200:
                raise BenchError(f"GET transfer {transfer_id}: {answer.status_code} {answer.text[:500]}")
            tag, state = answer.headers["etag"], json.loads(answer.content)["state"]
            if state == wanted:
                return str(tag)
            if state in ("completed", "reversed", "failed"):
                raise BenchError(f"transfer {transfer_id} ended {state}, not {wanted}: {answer.text[:1000]}")
        raise BenchError(f"transfer {transfer_id} not {wanted} after {STEP_TIMEOUT:.0f} s")

    async def one(self, client: Client) -> None:
        sender, receiver = client.sender, client.receiver
        answer = await self.gateway("POST", "/api/v1/transfers", {**sender.headers, "Idempotency-Key": str(uuid4())}, {
            "sender_account_id": sender.account_id, "receiver_account_id": receiver.account_id,
            "unit_type": "allowance", "quantity": 1})
        posted = time.perf_counter()
        if answer.status_code != 201:
            raise BenchError(f"POST /api/v1/transfers: {answer.status_code} {answer.text[:500]}")
        transfer_id = json.loads(answer.content)["id"]
        await self.look(transfer_id, answer.headers["etag"], receiver, "awaiting_acceptance")
        accepted = await self.gateway("POST", f"/api/v1/transfers/{transfer_id}/accept",
                                      {**receiver.headers, "Prefer": f"wait={WAIT_SECONDS}"})
        if accepted.status_code != 200:
            raise BenchError(f"accept {transfer_id}: {accepted.status_code} {accepted.text[:500]}")
        if json.loads(accepted.content)["state"] != "completed":
            await self.look(transfer_id, accepted.headers["etag"], sender, "completed")
        self.samples.append((posted, time.perf_counter()))
        client.completed += 1

    async def loop(self, client: Client) -> None:
        while not self.stopping:
            await self.one(client)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[list[asyncio.Task[None]]]:
        """The clients run inside the block; on leaving, each finishes its transfer in hand."""
        self.stopping = False
        tasks = [asyncio.create_task(self.loop(c), name=f"client-{n}") for n, c in enumerate(self.clients)]
        try:
            yield tasks
        finally:
            self.stopping = True
            results = await asyncio.gather(*tasks, return_exceptions=True)
        if failures := [r for r in results if isinstance(r, BaseException)]:
            raise failures[0]


async def window(tasks: list[asyncio.Task[None]], seconds: float) -> None:
    """Let the clients run for ``seconds``; if one fails meanwhile, stop at once with its error."""
    done, _ = await asyncio.wait(tasks, timeout=seconds, return_when=asyncio.FIRST_EXCEPTION)
    if done:
        raise next(iter(done)).exception() or BenchError("a client stopped early")


@dataclass(frozen=True)
class Measured:
    per_s: float
    p50_ms: float
    p99_ms: float
    count: int
    seconds: float
    looks_per_transfer: float


def measured(samples: list[tuple[float, float]], start: float, end: float, looks: int) -> Measured:
    inside = [done - posted for posted, done in samples if start <= done <= end]
    if len(inside) < 2:
        raise BenchError(f"only {len(inside)} transfers completed in the {end - start:.1f} s window")
    cuts = statistics.quantiles(inside, n=100, method="inclusive")
    return Measured(len(inside) / (end - start), cuts[49] * 1e3, cuts[98] * 1e3, len(inside), end - start,
                    looks / len(inside))


# Set-up and checks ------------------------------------------------------------------------------------
async def make_clients(registry: Any) -> list[Client]:
    gate = asyncio.Semaphore(PARTY_CONCURRENCY)

    async def party(kind: str, role: str) -> Any:
        async with gate:
            return await registry.party(kind, role)

    async def client() -> Client:
        sender, receiver = await asyncio.gather(party("installation", "installation"),
                                                party("intermediary", "intermediary"))
        async with gate:
            await registry.fund(sender, FUNDS)
        return Client(sender, receiver)

    return list(await asyncio.gather(*(client() for _ in range(CLIENTS))))


async def check_after(registry: Any, clients: list[Client]) -> None:
    """Every transfer final and matching its hold, the ledger audit clean, balances as completed."""
    report = await registry.all_final(within=READY_TIMEOUT)
    if not report["ok"]:
        raise BenchError(f"reconciliation after the run: {report['problems'][:20]}")
    audit = await registry.ledger_audit()
    if not audit["ok"]:
        raise BenchError(f"ledger audit after the run: {audit['discrepancies'][:20]}")
    balances = await asyncio.gather(*(registry.balance(p) for c in clients for p in (c.sender, c.receiver)))
    expected = [b for c in clients for b in (FUNDS - c.completed, c.completed)]
    if balances != expected:
        raise BenchError(f"balances after the run differ from the completed transfers: {balances} != {expected}")


async def baseline_rate(ctx: Context) -> float:
    """``baseline.pg_ledger_txn_per_s`` of this run: the figure bench.baseline recorded earlier, or
    measured now if it has not run."""
    if BASELINE not in ctx.figures:
        from bench import baseline

        print(f"  {BASELINE} not measured in this run yet: measuring it now", flush=True)
        await baseline.run(ctx)
    return ctx.figures[BASELINE].value


# Where the CPU goes ----------------------------------------------------------------------------------
def process_pids(plan: Any) -> dict[str, int]:
    """Every process of the system by its launcher name (gateway, <service>-api, <service>-worker)."""
    from registry_common.launcher import process_pid

    return {process.name: process_pid(plan, process.name) for process in plan.processes()}


SERVERS = {"postgres": "postgresql", "beam.smp": "rabbitmq"}  # process name -> how the breakdown names it
IDLE = "idle (all cores)"


def _cpu_of(pid: int | str) -> tuple[str, float]:
    """A process's name and the user + system CPU seconds it has used so far (/proc/<pid>/stat)."""
    head, _, tail = Path(f"/proc/{pid}/stat").read_text().rpartition(")")
    fields = tail.split()
    return head.partition("(")[2], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds each process of the system has used so far, and the servers it shares the machine with
    (every PostgreSQL process, summed: its backends live as long as the pools; RabbitMQ's Erlang VM)."""
    used = {name: _cpu_of(pid)[1] for name, pid in pids.items()}
    for server in SERVERS.values():
        used[server] = 0.0
    idle, iowait = Path("/proc/stat").read_text().split("\n", 1)[0].split()[4:6]  # the machine's, all cores
    used[IDLE] = (int(idle) + int(iowait)) / os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm, seconds = _cpu_of(entry.name)
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            if comm in SERVERS:
                used[SERVERS[comm]] += seconds
    return used


def cpu_per_transfer(before: dict[str, float], after: dict[str, float], transfers: int) -> dict[str, float]:
    """Milliseconds of CPU per completed transfer, by process, highest first."""
    per = {name: (after[name] - before[name]) / transfers * 1e3 for name in before}
    return dict(sorted(per.items(), key=lambda item: -item[1]))


def describe_cpu(per: dict[str, float], client_ms: float, top: int = 20) -> str:
    per = dict(per)
    servers = {name: per.pop(name) for name in (*SERVERS.values(), IDLE)}
    busiest = ", ".join(f"{name} {ms:.1f}" for name, ms in list(per.items())[:top])
    return (f"CPU per completed transfer: {sum(per.values()):.1f} ms in the system's processes ({busiest}, ...), "
            + ", ".join(f"{ms:.1f} ms in {name}" for name, ms in servers.items() if name != IDLE)
            + f", {client_ms:.1f} ms in the benchmark's clients; the machine idle {servers[IDLE]:.1f} ms per transfer")


def py_spy() -> str | None:
    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


async def profile(plan: Any, load: Load, cpu_note: str) -> Path | None:
    """Under the same load, py-spy each of PROFILED for PROFILE_SECONDS (samples of threads holding the
    GIL): collapsed stacks (<process>.txt), a flame graph (<process>.svg) and summary.txt."""
    spy = py_spy()
    if spy is None:
        print("  py-spy is not installed (.venv/bin/pip install py-spy==0.4.3): no profile", flush=True)
        return None
    folder = PROFILE_ROOT / f"transfers-profile-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    folder.mkdir(parents=True)
    pids = await asyncio.to_thread(process_pids, plan)
    async with load.running() as tasks:
        await window(tasks, 1.0)
        spies = {name: await asyncio.create_subprocess_exec(
            spy, "record", "--pid", str(pids[name]), "--duration", str(PROFILE_SECONDS), "--rate", str(PROFILE_RATE),
            "--gil", "--format", "raw", "--output", str(folder / f"{name}.txt"),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE) for name in PROFILED}
        await window(tasks, PROFILE_SECONDS + 2)
        errors = {name: (await p.communicate())[1].decode(errors="replace") for name, p in spies.items()}
    lines = [f"py-spy {PROFILE_SECONDS} s at {PROFILE_RATE} Hz, threads holding the GIL, under {CLIENTS} clients.",
             cpu_note]
    for name in PROFILED:
        raw = folder / f"{name}.txt"
        if not raw.exists():
            lines.append(f"\n== {name}: no profile ({errors[name].strip()[-300:]})")
            continue
        stacks = collapsed(raw.read_text())
        lines.append(summarise(name, stacks))
        (folder / f"{name}.svg").write_text(flame_svg(name, stacks))
    (folder / "summary.txt").write_text("\n".join(lines) + "\n")
    return folder


def collapsed(raw: str) -> dict[tuple[str, ...], int]:
    """py-spy's raw output (``frame;frame;... count``) as stacks of frames without line numbers."""
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[tuple(re.sub(r":\d+\)$", ")", f) for f in stack.split(";"))] += int(count)
    return dict(stacks)


def summarise(name: str, stacks: dict[tuple[str, ...], int], top: int = 25) -> str:
    """Self and inclusive shares of the samples per function."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, samples in stacks.items():
        own[frames[-1]] += samples
        for frame in set(frames):
            inclusive[frame] += samples
    total = sum(stacks.values())
    if total == 0:
        return f"\n== {name}: no samples"

    def table(counter: collections.Counter[str]) -> list[str]:
        return [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in counter.most_common(top)]

    return "\n".join([f"\n== {name}: {total} samples", " self:", *table(own), " inclusive:", *table(inclusive)])


def flame_svg(name: str, stacks: dict[tuple[str, ...], int], width: int = 1600, row: int = 16) -> str:
    """An icicle flame graph (root on top, width = share of samples; hover a frame for its name)."""
    tree: dict[str, Any] = {"n": 0, "kids": {}}
    for frames, samples in stacks.items():
        node = tree
        node["n"] += samples
        for frame in frames:
            node = node["kids"].setdefault(frame, {"n": 0, "kids": {}})
            node["n"] += samples
    total = max(tree["n"], 1)
    boxes: list[str] = []

    def draw(node: dict[str, Any], x: float, depth: int) -> None:
        for frame, kid in sorted(node["kids"].items()):
            w = kid["n"] / total * width
            if w >= 0.5:
                label = escape(frame[: int(w / 6.5)]) if w > 40 else ""
                hue = 10 + zlib.crc32(frame.rpartition("(")[2].encode()) % 40  # by file: one colour per module
                boxes.append(
                    f'<g><title>{escape(frame)} ({kid["n"]} samples, {100 * kid["n"] / total:.1f}%)</title>'
                    f'<rect x="{x:.1f}" y="{depth * row + 24}" width="{w:.1f}" height="{row - 1}" '
                    f'fill="hsl({hue},80%,60%)"/><text x="{x + 2:.1f}" y="{depth * row + 36}" font-size="11">'
                    f'{label}</text></g>')
                draw(kid, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    depth = max((len(f) for f in stacks), default=1)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{depth * row + 40}" '
            f'font-family="monospace"><text x="4" y="16" font-size="13">{escape(name)}: {total} samples</text>'
            + "".join(boxes) + "</svg>\n")


# The module ------------------------------------------------------------------------------------------
async def run(ctx: Context) -> None:
    from registry_common.testing.registry_client import RegistryClient

    seconds = ctx.seconds * WINDOW_FACTOR
    baseline_per_s = await baseline_rate(ctx)
    await ctx.ensure_connections(130, "bench.transfers")
    await drop_leftovers(ctx)
    with tempfile.TemporaryDirectory(prefix=RUN_DIR_PREFIX) as tmp:
        async with running_system(ctx, Path(tmp)) as system:
            transfers_dsn = f"{ctx.admin_dsn.rsplit('/', 1)[0]}/{system.env['REGISTRY_DATABASE_PREFIX']}transfers"
            async with RegistryClient.open(system.plan.gateway_url,
                                           admin_password=system.env["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"],
                                           authority_token=system.authority_token, transfers_dsn=transfers_dsn,
                                           connections=2 * CLIENTS) as registry:
                started = time.perf_counter()
                clients = await make_clients(registry)
                print(f"  {2 * CLIENTS} parties created and {CLIENTS} senders funded through the gateway in "
                      f"{time.perf_counter() - started:.1f} s", flush=True)
                async with Gateway(system.plan.gateway_url) as gateway:
                    load = Load(gateway, clients)
                    pids = await asyncio.to_thread(process_pids, system.plan)
                    async with load.running() as tasks:
                        await window(tasks, WARMUP_SECONDS)
                        start, cpu_before, client_before = time.perf_counter(), cpu_seconds(pids), time.process_time()
                        looks_before = load.looks
                        await window(tasks, seconds)
                        end, cpu_after, client_after = time.perf_counter(), cpu_seconds(pids), time.process_time()
                        looks = load.looks - looks_before
                    result = measured(load.samples, start, end, looks)
                    cpu_note = describe_cpu(cpu_per_transfer(cpu_before, cpu_after, result.count),
                                            (client_after - client_before) / result.count * 1e3)
                    print(f"  {cpu_note}", flush=True)
                    await check_after(registry, clients)
                    record(ctx, result, baseline_per_s, cpu_note, system.smtp.received)
                    if result.per_s < GOAL_PER_S or result.p99_ms > GOAL_P99_MS or \
                            result.per_s / baseline_per_s < GOAL_RATIO:
                        if (folder := await profile(system.plan, load, cpu_note)) is not None:
                            print(f"  a goal was missed: py-spy profiles of {', '.join(PROFILED)} under the same "
                                  f"load in {folder}/ (summary.txt, <process>.svg flame graphs, <process>.txt "
                                  "stacks)", flush=True)
                        await check_after(registry, clients)
                    light = await light_load(gateway, clients[:LIGHT_CLIENTS], seconds / WINDOW_FACTOR)
                    await check_after(registry, clients)
                    record_light(ctx, light)


async def light_load(gateway: Gateway, clients: list[Client], seconds: float) -> Measured:
    """The same loop with only a few clients: the machine is far from busy, so a transfer's time is its own
    path (requests, saga hops, relays) rather than its wait behind the others' work."""
    load = Load(gateway, clients)
    async with load.running() as tasks:
        await window(tasks, WARMUP_SECONDS / 2)
        start, looks_before = time.perf_counter(), load.looks
        await window(tasks, seconds)
        end, looks = time.perf_counter(), load.looks - looks_before
    return measured(load.samples, start, end, looks)


def record_light(ctx: Context, light: Measured) -> None:
    how = (f"{LIGHT_CLIENTS} clients instead of {CLIENTS}, the same loop; {light.count:,} transfers completed in "
           f"{light.seconds:.1f} s ({light.per_s:.1f}/s)")
    ctx.record(Figure("transfers.light_load_p50_ms", light.p50_ms, "ms", higher_is_better=False,
                      notes=f"median time from the POST's answer until COMPLETED is seen; {how}"))
    ctx.record(Figure("transfers.light_load_p99_ms", light.p99_ms, "ms", higher_is_better=False,
                      notes=f"99th percentile of the same times; {how}"))


def record(ctx: Context, result: Measured, baseline_per_s: float, cpu_note: str, mails: int) -> None:
    notifications = (f"the notifications worker sent {mails:,} e-mails to a local SMTP sink meanwhile" if mails else
                     "notifications sent nothing yet (issue 7): provisional figures")
    how = (f"{CLIENTS} clients, each: POST /api/v1/transfers (own Idempotency-Key), GET with the version it has "
           f"(If-None-Match, Prefer: wait={WAIT_SECONDS}: answered at the next change) until awaiting_acceptance, "
           f"POST accept (Prefer: wait={WAIT_SECONDS}: answered once completed); through the "
           "gateway, every process under the launcher as make up runs it (development profile, authentication "
           f"on); {result.count:,} transfers completed in {result.seconds:.1f} s after a {WARMUP_SECONDS:.0f} s "
           f"warm-up, {result.looks_per_transfer:.1f} GETs each; {notifications}; {cpu_note}")
    ctx.record(Figure("transfers.e2e_per_s", result.per_s, "xfer/s", goal=GOAL_PER_S,
                      notes=f"transfers from the POST's answer until COMPLETED is seen; {how}"))
    ctx.record(Figure("transfers.e2e_p50_ms", result.p50_ms, "ms", higher_is_better=False,
                      notes="median time from the POST's answer until COMPLETED is seen, same run"))
    ctx.record(Figure("transfers.e2e_p99_ms", result.p99_ms, "ms", goal=GOAL_P99_MS, higher_is_better=False,
                      notes="99th percentile of the same times"))
    ctx.record(Figure("transfers.ratio_to_baseline", result.per_s / baseline_per_s, "x", goal=GOAL_RATIO,
                      notes=f"transfers.e2e_per_s / {BASELINE} measured in this run ({baseline_per_s:,.0f} txn/s)"))
