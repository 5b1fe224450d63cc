"""The CLI's HTTP side: one client for the gateway, the stored sign-in, and problem+json turned into errors.

Only the public API is used (``--url`` / ``REGISTRY_URL``, default ``http://127.0.0.1:8000``). The
sign-in (access and refresh token) is kept per registry URL in one JSON file, mode 0600, in a folder of
mode 0700: ``REGISTRY_CLI_CREDENTIALS`` if set, else ``$XDG_CONFIG_HOME/registry-cli/credentials.json``
(``~/.config`` when ``XDG_CONFIG_HOME`` is unset). An expired access token is renewed with the refresh
token (which the registry rotates at every use) before a request, and once more on a 401
``auth.token_expired`` or ``auth.token_invalid`` (the signing keys were rotated: deploy/OPERATIONS.md).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"

# Exit codes (README, "The operator CLI").
EXIT_OK = 0
EXIT_FAILED = 1  # the registry refused, or a check found a problem
EXIT_USAGE = 2  # bad arguments (typer/click's own code)
EXIT_UNREACHABLE = 3  # no answer from the registry, or a timeout while waiting
EXIT_SIGNED_OUT = 4  # not signed in, or the sign-in ran out


# A 401 with one of these codes is answered by renewing the sign-in once: an access token that ran out, or
# one signed with a key that has since been rotated (refresh tokens are kept by accounts, not signed).
RENEWABLE = frozenset({"auth.token_expired", "auth.token_invalid"})


class CliError(Exception):
    """Ends the command with ``exit_code`` after printing ``message`` (and the problem, if any)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, problem: dict[str, Any] | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.problem = problem or {}
        self.status = status


def problem_message(status: int, problem: dict[str, Any]) -> str:
    """``detail`` (or ``title``) with the stable ``code``, as the registry worded it."""
    text = problem.get("detail") or problem.get("title") or f"HTTP {status}"
    code = problem.get("code")
    return f"{text} [{code}]" if code else str(text)


def error_from_response(response: httpx.Response) -> CliError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {"detail": str(body)}
    if not body.get("detail") and not body.get("title"):
        body.setdefault("detail", response.text[:500] or response.reason_phrase)
    code = EXIT_SIGNED_OUT if response.status_code == 401 else EXIT_FAILED
    return CliError(problem_message(response.status_code, body), code, problem=body, status=response.status_code)


# The stored sign-in ---------------------------------------------------------------------------------------
def credentials_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if explicit := env.get("REGISTRY_CLI_CREDENTIALS"):
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "registry-cli" / "credentials.json"


@dataclass
class CredentialStore:
    """``{registry url: {username, access_token, refresh_token, access_expires_at, refresh_expires_at}}``."""

    path: Path

    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise CliError(f"{self.path} is not valid JSON; remove it and sign in again") from exc
        return data if isinstance(data, dict) else {}

    def get(self, url: str) -> dict[str, Any] | None:
        return self.load().get(url)

    def put(self, url: str, entry: dict[str, Any] | None) -> None:
        data = self.load()
        if entry is None:
            data.pop(url, None)
        else:
            data[url] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        os.chmod(temporary, 0o600)  # whatever the umask
        os.replace(temporary, self.path)


def tokens_entry(username: str, tokens: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    return {"username": username, "access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"],
            "access_expires_at": now + float(tokens.get("expires_in", 0)),
            "refresh_expires_at": now + float(tokens.get("refresh_expires_in", 0))}


# The client -----------------------------------------------------------------------------------------------
@dataclass
class Registry:
    url: str
    store: CredentialStore
    language: str | None = None
    timeout: float = 30.0
    transport: httpx.BaseTransport | None = None  # tests may pass an in-process transport
    _http: httpx.Client | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            headers = {"User-Agent": "registry-cli/0.1"}
            if self.language:
                headers["Accept-Language"] = self.language
            self._http = httpx.Client(base_url=self.url, timeout=self.timeout, headers=headers,
                                      transport=self.transport)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CliError(f"{self.url} did not answer in time ({type(exc).__name__})", EXIT_UNREACHABLE) from exc
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the registry at {self.url}: {exc}", EXIT_UNREACHABLE) from exc

    # Sign-in ---------------------------------------------------------------------------------------------
    def sign_in(self, username: str, password: str) -> dict[str, Any]:
        answer = self._send("POST", "/api/v1/auth/token", json={"username": username, "password": password})
        if answer.status_code != 200:
            error = error_from_response(answer)
            error.exit_code = EXIT_FAILED
            raise error
        entry = tokens_entry(username, answer.json())
        self.store.put(self.url, entry)
        return entry

    def sign_out(self) -> bool:
        had = self.store.get(self.url) is not None
        self.store.put(self.url, None)
        return had

    def _refresh(self, entry: dict[str, Any]) -> dict[str, Any]:
        if entry.get("refresh_expires_at", 0) <= time.time():
            raise CliError(f"the sign-in to {self.url} has run out: run `registry login`", EXIT_SIGNED_OUT)
        answer = self._send("POST", "/api/v1/auth/refresh", json={"refresh_token": entry["refresh_token"]})
        if answer.status_code != 200:
            self.store.put(self.url, None)
            raise CliError(f"the sign-in to {self.url} could not be renewed "
                           f"({problem_message(answer.status_code, _json(answer))}): run `registry login`",
                           EXIT_SIGNED_OUT)
        fresh = tokens_entry(entry.get("username", ""), answer.json())
        self.store.put(self.url, fresh)
        return fresh

    def _access_token(self) -> str:
        entry = self.store.get(self.url)
        if entry is None:
            raise CliError(f"not signed in to {self.url}: run `registry login`", EXIT_SIGNED_OUT)
        if entry.get("access_expires_at", 0) - 10 <= time.time():
            entry = self._refresh(entry)
        return str(entry["access_token"])

    # Requests --------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), public: bool = False,
                **kwargs: Any) -> httpx.Response:
        """Send with the stored token; a status outside ``ok`` raises :class:`CliError` with the problem."""
        headers = dict(kwargs.pop("headers", None) or {})
        for attempt in (1, 2):
            if not public:
                headers["Authorization"] = f"Bearer {self._access_token()}"
            answer = self._send(method, path, headers=headers, **kwargs)
            if (answer.status_code == 401 and attempt == 1 and not public
                    and _json(answer).get("code") in RENEWABLE
                    and not callable(kwargs.get("content"))):
                entry = self.store.get(self.url)
                if entry is not None:
                    self._refresh(entry)
                    continue
            break
        if answer.status_code not in ok:
            raise error_from_response(answer)
        return answer

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs).json()

    def post(self, path: str, *, idempotent: bool = False, **kwargs: Any) -> httpx.Response:
        """POST; ``idempotent`` adds a fresh ``Idempotency-Key`` (routes that create or move units need one)."""
        headers = dict(kwargs.pop("headers", None) or {})
        if idempotent:
            headers.setdefault("Idempotency-Key", str(uuid4()))
        return self.request("POST", path, headers=headers, **kwargs)

    def upload(self, path: str, data: bytes, *, content_type: str, params: dict[str, Any],
               progress: Callable[[int], None], chunk_size: int = 64 * 1024) -> httpx.Response:
        """POST ``data`` as the body in chunks, calling ``progress(bytes_sent)`` as each chunk goes out.
        Not retried (the body is a stream): an expired token is renewed before sending."""
        token = self._access_token()

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(data), chunk_size):
                piece = data[start:start + chunk_size]
                yield piece
                progress(len(piece))

        headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type,
                   "Content-Length": str(len(data))}
        return self._send("POST", path, content=chunks(), params=params, headers=headers)


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
