"""A RabbitMQ node owned by one test run, for broker restarts without touching the shared broker.

It is the Debian package's own server started a second time with its own node name, ports, data and
log directories, pid file, configuration and an empty plugin list (about 6 s to start as root)::

    with rabbit_node(tmp_path / "rabbit", name="t65a1b2c3_abc123_faults") as node:
        node.url            # amqp://guest:guest@127.0.0.1:<port>/  (guest works on localhost only)
        node.stop()         # a graceful stop; the data directory stays
        node.start()        # the same node again, with its durable queues and messages

On leaving the block the node is stopped (killed if it does not stop) and its directory removed, also
when the block fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from registry_common.ports import free_port

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
SERVER = RABBITMQ_BIN / "rabbitmq-server"
CTL = RABBITMQ_BIN / "rabbitmqctl"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class RabbitNodeError(RuntimeError):
    """The node did not start or stop; the message carries the end of its output."""


def available() -> str | None:
    """None if a test-owned node can be started here, else why not."""
    if not SERVER.exists() or not CTL.exists():
        return f"{SERVER} is not installed (apt-get install rabbitmq-server)"
    if os.geteuid() != 0:
        return "a test-owned RabbitMQ node is started as root (the server's scripts need it)"
    return None


@dataclass
class RabbitNode:
    """One node: ``name`` (without host), its AMQP and distribution ports, and its directory."""

    name: str
    base_dir: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    _server: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def node(self) -> str:
        return f"{self.name}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "rabbit.pid"

    @property
    def output(self) -> Path:
        return self.base_dir / "server.out"

    def environment(self) -> dict[str, str]:
        config, env_file, plugins = (self.base_dir / n for n in ("rabbitmq.conf", "rabbitmq-env.conf", "plugins"))
        # Our own configuration: the machine's /etc/rabbitmq files name the shared node and its port.
        config.write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users.guest = true\n")
        env_file.write_text("")
        plugins.write_text("[].\n")
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base_dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base_dir / "log"),
            "RABBITMQ_PID_FILE": str(self.pid_file),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_CONF_ENV_FILE": str(env_file),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def start(self) -> None:
        """Start the node and wait (bounded) until RabbitMQ runs on it."""
        if self.running:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.pid_file.unlink(missing_ok=True)
        env = self.environment()
        with self.output.open("ab") as sink:
            self._server = subprocess.Popen([str(SERVER)], env=env, stdout=sink, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        waited = self._ctl("wait", str(self.pid_file), "--timeout", str(int(START_TIMEOUT)), timeout=START_TIMEOUT + 5)
        if waited.returncode != 0 or not self.running:
            self.kill()
            raise RabbitNodeError(f"node {self.node} did not start: {waited.stdout}{waited.stderr}\n{self._tail()}")

    def stop(self) -> None:
        """Stop the node gracefully (its data stays); kill it if it does not stop in time."""
        if not self.running:
            return
        stopped = self._ctl("stop", str(self.pid_file), timeout=STOP_TIMEOUT)
        if stopped.returncode != 0:
            self.kill()
            return
        assert self._server is not None
        try:
            self._server.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
        self._server = None

    def kill(self) -> None:
        """SIGKILL the node's whole process group (the server script, the Erlang VM and its helpers)."""
        if self._server is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self._server.pid, signal.SIGKILL)
        with suppress(subprocess.TimeoutExpired):
            self._server.wait(timeout=STOP_TIMEOUT)
        self._server = None

    def _ctl(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([str(CTL), "-n", self.node, *args], capture_output=True, text=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, 1, str(exc.stdout or ""), f"timed out after {timeout}s")

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no output)"


@contextmanager
def rabbit_node(base_dir: Path, *, name: str) -> Iterator[RabbitNode]:
    """A started node in ``base_dir``; stopped and its directory removed on leaving, even on failure."""
    node = RabbitNode(name=name, base_dir=base_dir)
    try:
        node.start()
        yield node
    finally:
        try:
            node.stop()
        finally:
            node.kill()
            shutil.rmtree(base_dir, ignore_errors=True)
