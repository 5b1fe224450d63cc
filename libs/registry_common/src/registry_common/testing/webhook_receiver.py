"""An HTTPS webhook receiver for tests (a real server in a thread, with certificates from the test's own
CA): endpoints ``/hook/{name}`` verify the Standard Webhooks signature with their subscription's secret and
answer by their mode: ok, fail_twice (500 for the first two requests of each webhook-id), fail (503)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import trustme
import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class Receiver:
    """Endpoints ``/hook/{name}``; each verifies the signature with its subscription's secret and answers
    by its mode: ok, fail_twice (500 for the first two requests of each webhook-id), fail (always 503)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.modes: dict[str, str] = {}
        self.secrets: dict[str, str] = {}
        self.raw: list[tuple[str, str]] = []  # (endpoint, webhook-id) of every request
        self.accepted: list[tuple[str, str, dict[str, Any]]] = []  # verified and answered 2xx
        self.bad_signatures = 0
        self.app = Starlette(routes=[Route("/hook/{name}", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> JSONResponse:
        name, body = request.path_params["name"], (await request.body()).decode()
        webhook_id = request.headers.get("webhook-id", "")
        with self.lock:
            self.raw.append((name, webhook_id))
            tries = sum(1 for r in self.raw if r == (name, webhook_id))
            mode, secret = self.modes.get(name, "ok"), self.secrets.get(name)
        try:
            payload = Webhook(secret or "whsec_AAAA").verify(body, dict(request.headers))
        except WebhookVerificationError:
            with self.lock:
                self.bad_signatures += 1
            return JSONResponse({"error": "bad signature"}, status_code=400)
        if mode == "fail" or (mode == "fail_twice" and tries <= 2):
            return JSONResponse({"error": "down"}, status_code=503 if mode == "fail" else 500)
        with self.lock:
            self.accepted.append((name, webhook_id, payload))
        return JSONResponse({"ok": True})

    def distinct(self, name: str) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {wid: payload for n, wid, payload in self.accepted if n == name}

    def raw_count(self, name: str) -> int:
        with self.lock:
            return sum(1 for n, _ in self.raw if n == name)


@contextmanager
def https_receiver(ca: trustme.CA, directory: Path) -> Iterator[tuple[Receiver, str]]:
    """A running receiver and its base URL (``https://localhost:<port>``), stopped at the end."""
    pem = directory / "server.pem"
    ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = Receiver()
    server = uvicorn.Server(uvicorn.Config(app.app, host="127.0.0.1", port=port, ssl_certfile=str(pem),
                                           ssl_keyfile=str(pem), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_sync(lambda: server.started, "the HTTPS receiver to start")
        yield app, f"https://localhost:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_for_sync(predicate: Any, what: str, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.05)
