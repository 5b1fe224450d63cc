"""System tests: every API and worker as its own process, started by the launcher ``make up`` uses, on
ephemeral ports, with this run's databases, name prefix, keys and clock control."""

from __future__ import annotations

import email
import email.policy
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from aiosmtpd.controller import Controller

from registry_common.launcher import SystemPlan, start, stop, wait_ready
from registry_common.ports import free_ports
from registry_common.settings import SERVICES
from registry_common.testing.private_system import log_tails


class Mailbox:
    """A real SMTP server (aiosmtpd, in a thread): every message it receives, parsed, in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[email.message.EmailMessage] = []
        self.host, self.port = "127.0.0.1", free_ports(1)[0]

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        parsed = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(parsed)
        return "250 OK"

    def received(self) -> list[email.message.EmailMessage]:
        with self.lock:
            return list(self.messages)

    def to(self, address: str) -> list[email.message.EmailMessage]:
        """The messages received for ``address``, in arrival order."""
        return [m for m in self.received() if m["To"] == address]


@pytest.fixture(scope="session")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    controller = Controller(box, hostname=box.host, port=box.port)
    controller.start()
    yield box
    controller.stop()


@pytest.fixture(scope="session")
def webhook_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    """The test's own CA (trustme): webhook receivers in the tests present certificates it issued, and the
    notifications worker trusts it through REGISTRY_WEBHOOK_CA_FILE."""
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("webhook-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


@pytest.fixture(scope="session")
async def system(provisioned_services: dict[str, str], tmp_path_factory: pytest.TempPathFactory,
                 mailbox: Mailbox, webhook_ca: tuple[trustme.CA, Path]) -> AsyncIterator[SystemPlan]:
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
             "REGISTRY_SWEEP_INTERVAL_SECONDS": "0.2",
             # The shared clock only moves forward and passes other tests' period deadlines: compliance is
             # evaluated by the clock in test_compliance.py's own system, and on command here.
             "REGISTRY_AUTO_EVALUATE": "false",
             "REGISTRY_SMTP_HOST": mailbox.host, "REGISTRY_SMTP_PORT": str(mailbox.port),
             "REGISTRY_WEBHOOK_CA_FILE": str(webhook_ca[1]), "REGISTRY_DELIVERY_POLL_SECONDS": "0.2",
             "REGISTRY_DELIVERY_RETRY_BASE_SECONDS": "0.5", "REGISTRY_DELIVERY_RETRY_MAX_SECONDS": "2",
             "REGISTRY_DELIVERY_GIVE_UP_AFTER_SECONDS": "8", "REGISTRY_DELIVERY_LEASE_SECONDS": "3"},
        fault_dir=run_dir / "faults",
        extra_workers={"accounts": [ports[13]]},  # two ledger workers compete for the same commands
    )
    start(plan)
    try:
        await wait_ready(plan, timeout=120)
    except TimeoutError as exc:
        stop(plan)
        pytest.fail(f"{exc}\n{log_tails(plan, lines=15)}")
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
