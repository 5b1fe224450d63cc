"""The browser front end: the authority dashboard and the participant portal, in Spanish and English.

Static files only (``static/``: HTML, CSS, JavaScript modules, ``i18n/{es,en}.json``), served at ``/ui/``
without sign-in (``routes_table.in_ui_area``). They hold no data: the pages sign in through
``POST /api/v1/auth/token`` and call the same public API as any other client, so every rule (roles,
representation rights, four eyes) is the API's, never the page's.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

STATIC = Path(__file__).with_name("static")
PREFIX = "/ui"
# Only the page's own files run: no inline script, no other origin; the API is same-origin.
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-cache",
}


class UiFiles(StaticFiles):
    """Static files with the security headers above on every answer (including 404s)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await super().__call__(scope, receive, with_headers)


def install_ui(app: FastAPI) -> None:
    """Mounts the front end at ``/ui/`` (``/ui`` redirects there). Call before the catch-all route."""

    @app.get(PREFIX, include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=308)

    # check_dir=False: an install without the static files (package data missing) still starts the gateway;
    # /ui/ then answers 404.
    app.mount(PREFIX, UiFiles(directory=STATIC, html=True, check_dir=False), name="ui")
