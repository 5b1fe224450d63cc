"""One launcher for the whole system: every API and worker as its own process under supervisord (pid
file, a log per process, restart on exit). ``make up`` uses it, and so do the system tests, with their
own ports, databases, name prefix and run directory.

    python -m registry_common.launcher up       # provision, start everything, wait until ready
    python -m registry_common.launcher down     # stop everything this run directory started
    python -m registry_common.launcher status
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from registry_common.auth import generate_keypair
from registry_common.ports import API_PORTS, GATEWAY_PORT, WORKER_PORTS
from registry_common.settings import REPO_ROOT, SERVICES


@dataclass
class Process:
    name: str
    module: str
    env: dict[str, str]


@dataclass
class SystemPlan:
    """Everything that differs between one running system and another on the same machine."""

    run_dir: Path
    gateway_port: int = GATEWAY_PORT
    api_ports: dict[str, int] = field(default_factory=lambda: dict(API_PORTS))
    worker_ports: dict[str, int] = field(default_factory=lambda: dict(WORKER_PORTS))
    env: dict[str, str] = field(default_factory=dict)  # REGISTRY_* shared by every process
    fault_dir: Path | None = None  # tests arm fault points per process under <fault_dir>/<process>/
    extra_workers: dict[str, list[int]] = field(default_factory=dict)  # service -> health ports of more workers

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "log"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "supervisord.conf"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "supervisord.pid"

    @property
    def socket(self) -> Path:
        return self.run_dir / "supervisor.sock"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    def api_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.api_ports[service]}"

    def worker_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.worker_ports[service]}"

    def processes(self) -> Iterator[Process]:
        for service in SERVICES:
            yield self._process(f"{service}-api", f"{service}.api",
                                REGISTRY_HTTP_PORT=str(self.api_ports[service]))
            yield self._process(f"{service}-worker", f"{service}.worker",
                                REGISTRY_WORKER_HTTP_PORT=str(self.worker_ports[service]))
            for number, port in enumerate(self.extra_workers.get(service, []), start=2):
                yield self._process(f"{service}-worker-{number}", f"{service}.worker",
                                    REGISTRY_WORKER_HTTP_PORT=str(port))
        upstreams = {f"REGISTRY_GATEWAY_UPSTREAM_{s.upper()}": self.api_url(s) for s in SERVICES}
        workers = {f"REGISTRY_GATEWAY_WORKER_{s.upper()}": self.worker_url(s) for s in SERVICES}
        yield self._process("gateway", "gateway.api", **upstreams, **workers,
                            REGISTRY_HTTP_PORT=str(self.gateway_port))

    def _process(self, name: str, module: str, **env: str) -> Process:
        env.setdefault("REGISTRY_ACCOUNTS_API_URL", self.api_url("accounts"))  # for pre-checks
        if self.fault_dir is not None:
            env["REGISTRY_FAULT_MARKER_DIR"] = str(self.fault_dir / name)
        return Process(name, module, {**self.env, **env})

    def arm_fault(self, process: str, point: str) -> Path:
        """Make ``point`` fire once in ``process`` (which must run with that fault in REGISTRY_FAULTS)."""
        assert self.fault_dir is not None, "this plan has no fault directory"
        armed = self.fault_dir / process / f"{point}.armed"
        armed.parent.mkdir(parents=True, exist_ok=True)
        armed.touch()
        return armed.with_suffix(".fired")


def _env_line(env: dict[str, str]) -> str:
    def quote(value: str) -> str:
        # supervisord splits with a non-POSIX shlex: no backslash escapes inside quotes, so a value with
        # double quotes (a JSON setting such as REGISTRY_PROGRAMME) goes in single quotes.
        if '"' in value and "'" not in value:
            return "'" + value.replace("%", "%%") + "'"
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'

    return ",".join(f"{k}={quote(v)}" for k, v in sorted(env.items()))


def write_config(plan: SystemPlan) -> Path:
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    sections = [
        f"[unix_http_server]\nfile={plan.socket}\nchmod=0700\n",
        f"[supervisord]\npidfile={plan.pid_file}\nlogfile={plan.log_dir / 'supervisord.log'}\n"
        f"childlogdir={plan.log_dir}\nloglevel=warn\n",
        "[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n",
        f"[supervisorctl]\nserverurl=unix://{plan.socket}\n",
    ]
    for process in plan.processes():
        sections.append(
            f"[program:{process.name}]\n"
            f"command={sys.executable} -m {process.module}\n"
            f"directory={REPO_ROOT}\n"
            f"environment={_env_line(process.env)}\n"
            # The gateway starts last and stops first, so no API waits on its keep-alive connections.
            f"priority={900 if process.name == 'gateway' else 500}\n"
            "autostart=true\nautorestart=true\nstartsecs=1\nstartretries=1000\n"
            "stopsignal=TERM\nstopwaitsecs=10\nstopasgroup=true\nkillasgroup=true\n"
            f"stdout_logfile={plan.log_dir / process.name}.log\nredirect_stderr=true\n"
            "stdout_logfile_maxbytes=20MB\nstdout_logfile_backups=3\n"
        )
    plan.config_path.write_text("\n".join(sections))
    return plan.config_path


def supervisord_pid(plan: SystemPlan) -> int | None:
    try:
        pid = int(plan.pid_file.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


def supervisorctl(plan: SystemPlan, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(plan.config_path), *args],
                          capture_output=True, text=True, check=False)


def start(plan: SystemPlan) -> None:
    """Start (or update) every process. Starting twice is harmless."""
    write_config(plan)
    if supervisord_pid(plan) is None:
        subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(plan.config_path)], check=True)
    else:
        supervisorctl(plan, "update")
        supervisorctl(plan, "start", "all")


def stop(plan: SystemPlan, timeout: float = 30.0) -> None:
    """Stop every process and supervisord itself; wait (bounded) until the pid is gone."""
    pid = supervisord_pid(plan)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while supervisord_pid(plan) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if supervisord_pid(plan) is not None:
        os.killpg(os.getpgid(pid), signal.SIGKILL)


def process_pid(plan: SystemPlan, name: str) -> int:
    answer = supervisorctl(plan, "pid", name)
    return int(answer.stdout.strip())


async def wait_ready(plan: SystemPlan, timeout: float = 120.0) -> dict:  # noqa: ASYNC109 (a bounded poll, its own deadline)
    """Wait until the gateway reports every process ready; raise with the last report on timeout."""
    deadline = time.monotonic() + timeout
    report: dict = {}
    async with httpx.AsyncClient(timeout=5.0) as client:
        while time.monotonic() < deadline:
            try:
                answer = await client.get(f"{plan.gateway_url}/api/v1/health")
                report = answer.json()
                if report.get("status") == "ready":
                    return report
            except (httpx.HTTPError, ValueError) as exc:
                report = {"error": repr(exc)}
            await asyncio.sleep(0.25)
    raise TimeoutError(f"the system did not become ready in {timeout:.0f}s: {report}")


def development_plan() -> SystemPlan:
    """The plan of ``make up``: default ports, the development profile, clock control on."""
    secrets = REPO_ROOT / "var" / "secrets"
    env = {k: v for k, v in os.environ.items() if k.startswith("REGISTRY_")}
    env.setdefault("REGISTRY_ENVIRONMENT", "development")
    env.setdefault("REGISTRY_CLOCK_CONTROL", "true")
    env.setdefault("REGISTRY_JWT_PUBLIC_KEY_FILE", str(secrets / "jwt_public.pem"))
    env.setdefault("REGISTRY_JWT_PRIVATE_KEY_FILE", str(secrets / "jwt_private.pem"))
    return SystemPlan(run_dir=REPO_ROOT / "var" / "run", env=env)


def ensure_keys(plan: SystemPlan) -> None:
    private = Path(plan.env["REGISTRY_JWT_PRIVATE_KEY_FILE"])
    public = Path(plan.env["REGISTRY_JWT_PUBLIC_KEY_FILE"])
    if not private.exists():
        generate_keypair(private, public)
        print(f"generated the token signing keys in {private.parent} (mode 0600)")


def bootstrap_admin_password() -> tuple[str, str]:
    """The first administrator's password: ``REGISTRY_BOOTSTRAP_ADMIN_PASSWORD``, or one generated once
    into ``var/secrets/bootstrap_admin_password`` (mode 0600). Returns it and where it came from."""
    if password := os.environ.get("REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"):
        return password, "REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"
    path = REPO_ROOT / "var" / "secrets" / "bootstrap_admin_password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(18))
    return path.read_text().strip(), str(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args()
    plan = development_plan()
    if args.command == "up":
        from registry_common.provision import provision

        ensure_keys(plan)
        password, source = bootstrap_admin_password()
        asyncio.run(provision(list(SERVICES), bootstrap_admin_password=password))
        start(plan)
        asyncio.run(wait_ready(plan))
        username = os.environ.get("REGISTRY_BOOTSTRAP_ADMIN_USERNAME", "admin")
        print(f"\nThe registry is running.\n  API and docs: {plan.gateway_url}/docs\n"
              f"  Health:       {plan.gateway_url}/api/v1/health\n"
              f"  Sign in:      user '{username}', password in {source}\n"
              f"                curl -s {plan.gateway_url}/api/v1/auth/token -H 'Content-Type: application/json' "
              f"-d '{{\"username\": \"{username}\", \"password\": \"'$(cat {source})'\"}}'\n"
              f"  Logs:         make logs ({plan.log_dir})\n  Stop:         make down")
    elif args.command == "down":
        stop(plan)
        print("stopped")
    else:
        if supervisord_pid(plan) is None:
            print("not running")
        else:
            print(supervisorctl(plan, "status").stdout)


if __name__ == "__main__":
    main()
