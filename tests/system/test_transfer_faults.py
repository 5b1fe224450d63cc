"""The transfer saga under faults, every process separate (issue 6, "It must show"): with a 5-second
acceptance window and a 0.2-second sweep, bursts of sagas (the client accepts, rejects, cancels or lets
the window pass) run while

- the transfers worker, then the accounts worker, are killed with SIGKILL (the launcher starts them
  again), and
- the system's RabbitMQ node, owned by this module, is stopped and started again (meanwhile the
  workers are not ready and the API still takes requests: the outbox keeps their messages).

Afterwards, within bounded waits (120 s): every transfer is final with the outcome its client's
answers promise, the reconciliation is clean, the ledger audit is clean, and every balance adds up.

The module runs its own system (own databases, name prefix, ports and broker node), so the faults
touch nothing else.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry_common.launcher import SystemPlan, process_pid, start, stop, wait_ready
from registry_common.ports import free_ports
from registry_common.settings import SERVICES
from registry_common.testing.fixtures import check_connection_limit, drop_databases, wait_for
from registry_common.testing.private_system import log_tails
from registry_common.testing.rabbit_node import RabbitNode, rabbit_node
from registry_common.testing.rabbit_node import available as rabbit_node_available
from registry_common.testing.registry_client import FINAL_STATES, Party, RegistryClient

pytestmark = [pytest.mark.system, pytest.mark.integration]

WINDOW_SECONDS = 5
BOUND = 120.0  # the longest any wait for the system may take
WAVE = 20  # sagas launched at a time; three waves make a burst of 60
PAIRS = 8  # sender/receiver pairs per burst; sagas take them in turn
FUNDS = 1_000  # each sender's units: far more than its sagas ask, so no hold is refused
PAST_REQUESTED = {"awaiting_acceptance", "reversing", *FINAL_STATES}  # a slow client may miss the window


# The system of this module --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rabbit(run_prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    """A RabbitMQ node of this module's own: stopped and its directory removed at the end."""
    if (why := rabbit_node_available()) is not None:
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    with rabbit_node(tmp_path_factory.mktemp("rabbit"), name=f"{run_prefix}faults") as node:
        yield node


@pytest.fixture(scope="module")
async def fault_env(registry_env: dict[str, str], run_prefix: str, rabbit: RabbitNode
                    ) -> AsyncIterator[dict[str, str]]:
    """This module's databases (``<run prefix>f_<service>``) and topology on its own node; dropped at
    the end."""
    prefix = f"{run_prefix}f_"
    env = {**registry_env, "REGISTRY_DATABASE_PREFIX": prefix, "REGISTRY_NAMESPACE": prefix,
           "REGISTRY_AMQP_URL": rabbit.url}
    from registry_common.provision import provision

    await check_connection_limit(env["REGISTRY_ADMIN_DATABASE_URL"])
    try:
        await provision(list(SERVICES), **{k.removeprefix("REGISTRY_").lower(): v for k, v in env.items()})
        yield env
    finally:
        await drop_databases(env["REGISTRY_ADMIN_DATABASE_URL"], [f"{prefix}{s}" for s in SERVICES])


@pytest.fixture(scope="module")
async def fault_system(fault_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
                       ) -> AsyncIterator[SystemPlan]:
    run_dir: Path = tmp_path_factory.mktemp("fault-system")
    ports = free_ports(1 + 2 * len(SERVICES))
    plan = SystemPlan(
        run_dir=run_dir,
        gateway_port=ports[0],
        api_ports=dict(zip(SERVICES, ports[1:7], strict=True)),
        worker_ports=dict(zip(SERVICES, ports[7:13], strict=True)),
        env={**fault_env, "REGISTRY_ACCEPTANCE_WINDOW_SECONDS": str(WINDOW_SECONDS),
             "REGISTRY_SWEEP_INTERVAL_SECONDS": "0.2", "REGISTRY_JOURNAL_CHECKPOINT_DIR": str(run_dir / "checkpoints")},
    )
    start(plan)
    try:
        await wait_ready(plan, timeout=BOUND)
    except TimeoutError as exc:
        stop(plan)
        pytest.fail(f"{exc}\n{log_tails(plan)}")
    yield plan
    stop(plan)


@pytest.fixture(scope="module")
async def registry(fault_system: SystemPlan, fault_env: dict[str, str], token_for: Any
                   ) -> AsyncIterator[RegistryClient]:
    async with RegistryClient.of(
        fault_system.gateway_url, fault_env,
        authority_token=token_for("authority-1", "authority", lifetime=timedelta(hours=1)),
    ) as client:
        yield client


# A burst of sagas ----------------------------------------------------------------------------------
class Intent(StrEnum):
    """What the client does once its transfer awaits acceptance."""

    ACCEPT = "accept"  # the receiver accepts
    REJECT = "reject"  # the receiver rejects
    CANCEL = "cancel"  # the sender cancels
    EXPIRE = "expire"  # nobody acts: the window passes


@dataclass
class Saga:
    intent: Intent
    sender: Party
    receiver: Party
    quantity: int
    transfer_id: str | None = None  # set once the POST answered 201
    acted: int | None = None  # the status of the accept, reject or cancel
    final: dict[str, Any] | None = None

    def promised(self) -> tuple[str, str | None]:
        """The final state and reason the client's answers promise."""
        if self.acted == 200:
            return {Intent.ACCEPT: ("completed", None), Intent.REJECT: ("reversed", "rejected"),
                    Intent.CANCEL: ("reversed", "cancelled")}[self.intent]
        return "reversed", "expired"  # nobody acted in time: the sweeper reversed it


class Burst:
    """Sagas launched in waves, each a client of its own running concurrently with the others."""

    def __init__(self, registry: RegistryClient, pairs: list[tuple[Party, Party]]):
        self.registry = registry
        self.pairs = pairs
        self.sagas: list[Saga] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.awaiting_seen: set[int] = set()

    def launch(self, count: int) -> range:
        """Start ``count`` more sagas; returns their numbers."""
        numbers = range(len(self.sagas), len(self.sagas) + count)
        intents = list(Intent)
        for n in numbers:
            sender, receiver = self.pairs[n % len(self.pairs)]
            saga = Saga(intents[n % len(intents)], sender, receiver, quantity=1 + n % 7)
            self.sagas.append(saga)
            self.tasks.append(asyncio.create_task(self._run(n, saga), name=f"saga-{n}"))
        return numbers

    def failure(self) -> BaseException | None:
        return next((t.exception() for t in self.tasks if t.done() and not t.cancelled() and t.exception()), None)

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait (bounded) until ``condition()``; a saga failing meanwhile fails the wait at once."""
        await wait_for(lambda: self.failure() is not None or condition(), timeout=BOUND, interval=0.1, what=what)
        if (error := self.failure()) is not None:
            raise error

    def seen_awaiting(self, numbers: range) -> int:
        return len(self.awaiting_seen.intersection(numbers))

    def requested(self, numbers: range) -> int:
        return sum(1 for n in numbers if self.sagas[n].transfer_id is not None)

    async def _run(self, n: int, saga: Saga) -> None:
        answer = await self.registry.transfer(saga.sender, saga.receiver, saga.quantity)
        assert answer.status_code == 201, answer.text
        saga.transfer_id = answer.json()["id"]
        current = await self.registry.reaches(saga.transfer_id, saga.sender, PAST_REQUESTED, within=BOUND)
        if current["state"] == "awaiting_acceptance":
            self.awaiting_seen.add(n)
            if saga.intent is not Intent.EXPIRE:
                actor = saga.sender if saga.intent is Intent.CANCEL else saga.receiver
                acted = await self.registry.act(saga.transfer_id, saga.intent.value, actor)
                assert acted.status_code in (200, 409), acted.text  # 409: the window closed first
                saga.acted = acted.status_code
        saga.final = await self.registry.reaches(saga.transfer_id, saga.sender, FINAL_STATES, within=BOUND)

    async def finish(self) -> list[Saga]:
        """Wait for every saga (each of its waits bounded); the first failure fails the burst."""
        await asyncio.gather(*self.tasks)
        return self.sagas

    async def stop(self) -> None:
        """Cancel whatever still runs (after a failure) and wait until it has stopped."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def make_pairs(registry: RegistryClient, how_many: int) -> list[tuple[Party, Party]]:
    async def pair() -> tuple[Party, Party]:
        sender, receiver = await asyncio.gather(registry.party(), registry.party("intermediary", "intermediary"))
        await registry.fund(sender, FUNDS)
        return sender, receiver

    return list(await asyncio.gather(*(pair() for _ in range(how_many))))


async def check_the_books(registry: RegistryClient, sagas: list[Saga], pairs: list[tuple[Party, Party]]) -> None:
    """Every saga ended as its answers promised; every transfer is final and matches its hold; the
    ledger's audit is clean; each party holds what its completed transfers say."""
    outcomes = [(s.final["state"], s.final["reason"]) if s.final else None for s in sagas]
    broken = [(s.intent, s.acted, s.transfer_id, got, s.promised())
              for s, got in zip(sagas, outcomes, strict=True) if got != s.promised()]
    assert not broken, broken
    assert any(state == "completed" for state, _ in filter(None, outcomes)), outcomes

    report = await registry.all_final(within=BOUND)
    assert report["ok"], report["problems"]
    audit = await registry.ledger_audit()
    assert audit["ok"], audit["discrepancies"]

    expected: dict[str, int] = {}
    for sender, receiver in pairs:
        expected[sender.account_id], expected[receiver.account_id] = FUNDS, 0
    for saga in sagas:
        if saga.final and saga.final["state"] == "completed":
            expected[saga.sender.account_id] -= saga.quantity
            expected[saga.receiver.account_id] += saga.quantity
    parties = [p for pair in pairs for p in pair]
    balances = await asyncio.gather(*(registry.balance(p) for p in parties))
    assert {p.account_id: b for p, b in zip(parties, balances, strict=True)} == expected


# Faults ---------------------------------------------------------------------------------------------
async def pid_of(plan: SystemPlan, process: str) -> int:
    return await asyncio.to_thread(process_pid, plan, process)


async def sigkill(plan: SystemPlan, process: str) -> int:
    pid = await pid_of(plan, process)
    assert pid > 0, f"{process} is not running"
    os.kill(pid, signal.SIGKILL)
    return pid


async def restarted(plan: SystemPlan, process: str, killed: int) -> int:
    async def new_pid() -> int | None:
        pid = await pid_of(plan, process)
        return pid if pid not in (0, killed) else None

    return await wait_for(new_pid, timeout=BOUND, interval=0.2, what=f"the launcher to start {process} again")


async def readiness(http: httpx.AsyncClient, plan: SystemPlan, service: str) -> tuple[int, dict[str, Any]]:
    answer = await http.get(f"{plan.worker_url(service)}/ready")
    return answer.status_code, answer.json()


async def test_sigkill_of_the_transfers_worker_then_the_accounts_worker_mid_burst(
    fault_system: SystemPlan, registry: RegistryClient,
) -> None:
    pairs = await make_pairs(registry, PAIRS)
    burst = Burst(registry, pairs)
    try:
        first = burst.launch(WAVE)
        await burst.until(lambda: burst.seen_awaiting(first) >= 5, "the first sagas to be held")

        killed = await sigkill(fault_system, "transfers-worker")
        second = burst.launch(WAVE)  # requested while the saga's worker is down
        await restarted(fault_system, "transfers-worker", killed)
        await burst.until(lambda: burst.seen_awaiting(second) >= 5, "the restarted transfers worker to carry on")

        killed = await sigkill(fault_system, "accounts-worker")
        burst.launch(WAVE)  # held only once the ledger's worker is back
        await restarted(fault_system, "accounts-worker", killed)
        sagas = await burst.finish()
    finally:
        await burst.stop()
    await check_the_books(registry, sagas, pairs)


async def test_a_restart_of_the_broker_mid_burst(
    fault_system: SystemPlan, rabbit: RabbitNode, registry: RegistryClient,
) -> None:
    pairs = await make_pairs(registry, PAIRS)
    burst = Burst(registry, pairs)
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            first = burst.launch(WAVE)
            await burst.until(lambda: burst.seen_awaiting(first) >= 5, "the first sagas to be held")

            await asyncio.to_thread(rabbit.stop)

            async def workers_not_ready() -> bool:
                answers = await asyncio.gather(*(readiness(http, fault_system, s) for s in ("transfers", "accounts")))
                return all(status == 503 and body["checks"]["broker"] == "disconnected" for status, body in answers)

            await wait_for(workers_not_ready, timeout=BOUND, interval=0.2,
                           what="the workers to report the broker gone and be not ready")
            second = burst.launch(WAVE)  # the API still takes requests: the outbox keeps their messages
            await burst.until(lambda: burst.requested(second) == WAVE,
                              "the API to answer every request while the broker is down")

            async def kept_in_the_outbox() -> int | None:
                status, body = await readiness(http, fault_system, "transfers")
                backlog = int(body["checks"]["outbox"]["backlog"])
                return backlog if status == 503 and backlog >= WAVE else None

            await wait_for(kept_in_the_outbox, timeout=BOUND, what="the hold commands to wait in the outbox")

            await asyncio.to_thread(rabbit.start)
            await wait_ready(fault_system, timeout=BOUND)
            burst.launch(WAVE)
            sagas = await burst.finish()
        finally:
            await asyncio.to_thread(rabbit.start)  # whatever failed, leave the node running for the others
            await burst.stop()
    await check_the_books(registry, sagas, pairs)
