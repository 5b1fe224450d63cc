"""The demo's HTTP side: every person of the population signs in with its own user and password and talks to
the gateway through the operator CLI's client (:class:`registry_cli.client.Registry`: token renewal,
problem+json turned into errors), with the sign-in kept in memory instead of a file.

Waiting is on what the public API shows, bounded: a process hearing of a clock move (``GET /api/v1/health``
reports every process's clock version), a transfer or a run reaching its state, a service's read model
knowing a new account (the first request is answered with the code of an unknown account or representative
until it does, and is sent again).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import uuid4

import httpx
from registry_cli.client import EXIT_UNREACHABLE, CliError, CredentialStore, Registry

T = TypeVar("T")
POLL_SECONDS = 0.25


class DemoFailure(Exception):
    """Something the demo expected did not happen: the run ends with exit code 1."""


class MemoryStore(CredentialStore):
    """The CLI's credential store, kept in memory (the demo signs in as many people at once)."""

    def __init__(self) -> None:
        super().__init__(Path("(memory)"))
        self.entries: dict[str, dict[str, Any]] = {}

    def load(self) -> dict[str, dict[str, Any]]:
        return dict(self.entries)

    def put(self, url: str, entry: dict[str, Any] | None) -> None:
        if entry is None:
            self.entries.pop(url, None)
        else:
            self.entries[url] = entry


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = POLL_SECONDS) -> T:
    """Poll ``check`` until it returns something truthy; :class:`DemoFailure` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DemoFailure(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)


@dataclass
class Actor:
    """One person: a user of the registry with its roles, its password and (for participants) its account."""

    username: str
    display_name: str
    roles: list[str]
    password: str
    url: str
    email: str
    user_id: str = ""
    account_id: str = ""
    delivery_account_id: str = ""
    registry: Registry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.registry = Registry(self.url, MemoryStore(), language="en")

    def sign_in(self) -> None:
        self.registry.sign_in(self.username, self.password)

    def close(self) -> None:
        self.registry.close()

    def call(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
             ok: Iterable[int] = (200,), key: bool = False, retry: Iterable[str] = (),
             within: float = 60.0, content: bytes | None = None, headers: dict[str, str] | None = None,
             public: bool = False) -> httpx.Response:
        """One request as this person. ``key`` adds a fresh Idempotency-Key; a refusal whose code is in
        ``retry`` (a service that has not yet heard of a new account) is sent again until ``within``."""
        deadline = time.monotonic() + within
        retry_codes = frozenset(retry)
        attempts = 0
        while True:
            sent_headers = dict(headers or {})
            if key:
                sent_headers["Idempotency-Key"] = str(uuid4())
            kwargs: dict[str, Any] = {"params": params, "headers": sent_headers, "public": public}
            if content is not None:
                kwargs["content"] = content
            elif json is not None:
                kwargs["json"] = json
            try:
                return self.registry.request(method, path, ok=tuple(ok), **kwargs)
            except CliError as error:
                if resend_after(error, method, key, attempts):
                    attempts += 1
                    continue
                codes = {str(error.problem.get("code"))}
                codes |= {str(e.get("code")) for e in error.problem.get("errors") or [] if isinstance(e, dict)}
                if not retry_codes or not codes & retry_codes or time.monotonic() >= deadline:
                    raise
                time.sleep(POLL_SECONDS)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        kwargs.setdefault("ok", (200, 201, 202))
        answer = self.call("POST", path, json={} if body is None else body, **kwargs)
        return answer.json() if answer.content else None

    # What this person holds -------------------------------------------------------------------------------
    def holdings(self, account_id: str | None = None) -> dict[tuple[str, int], int]:
        """(unit type, vintage) → units in the account (its own central or trading account by default)."""
        answer = self.get(f"/api/v1/accounts/{account_id or self.account_id}/holdings")
        totals: dict[tuple[str, int], int] = {}
        for line in answer["by_type_and_vintage"]:
            slot = (line["unit_type"], int(line["vintage"]))
            totals[slot] = totals.get(slot, 0) + int(line["quantity"])
        return totals


def resend_after(error: CliError, method: str, keyed: bool, attempts: int) -> bool:
    """Whether a request that got no answer is sent again: a reused keep-alive connection the server had
    just closed ("disconnected without sending a response": the request was never read) once, whatever the
    method; any other connection failure up to three times for a GET or a request with an Idempotency-Key."""
    if error.exit_code != EXIT_UNREACHABLE or attempts >= 3:
        return False
    if isinstance(error.__cause__, httpx.RemoteProtocolError) and attempts == 0:
        return True
    return method == "GET" or keyed


def wait_for_clock(anyone: Actor, version: int, timeout: float = 60.0) -> None:
    """Every API and worker (as the gateway's public health report shows them) has heard of clock ``version``."""

    def everyone() -> bool:
        report = anyone.registry.request("GET", "/api/v1/health", public=True, ok=(200, 503)).json()
        versions = [(probe.get("clock") or {}).get("version") for processes in report.get("services", {}).values()
                    for probe in processes.values()]
        return bool(versions) and all(isinstance(v, int) and v >= version for v in versions)

    wait_until(everyone, timeout, f"every process to hear of programme clock version {version}")


def programme_now(keeper: Actor) -> datetime:
    return datetime.fromisoformat(keeper.get("/api/v1/programme/clock")["programme_now"])
