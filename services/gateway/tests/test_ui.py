"""The front end's static files at /ui/: public (no token), nothing else opened by the /ui prefix rule,
served with their security headers, and both language catalogues complete for every text the pages use."""

import json
import re
from pathlib import Path

from gateway.routes_table import ROUTES, in_ui_area
from gateway.ui import STATIC

PROBLEM = "application/problem+json"


def test_the_ui_prefix_is_public_on_whole_canonical_segments_only():
    for path in ("/ui", "/ui/", "/ui/index.html", "/ui/js/api.js", "/ui/i18n/en.json"):
        assert in_ui_area(path) and ROUTES.is_public(path), path
    for path in ("/uix", "/uix/index.html", "/ui/../api/v1/users", "/ui/./index.html", "/ui//index.html",
                 "ui/index.html", "/api/v1/ui", "/api/v1/users", "/UI/index.html", "/", ""):
        assert not in_ui_area(path), path
    assert not ROUTES.is_public("/ui/../api/v1/users") and not ROUTES.is_public("/uix")
    assert ROUTES.match("/ui/index.html") is None  # nothing under /ui is ever forwarded to a service


async def test_pages_are_served_without_a_token_with_security_headers(harness):
    for path, kind in (("/ui/", "text/html"), ("/ui/index.html", "text/html"), ("/ui/portal.html", "text/html"),
                       ("/ui/dashboard.html", "text/html"), ("/ui/js/api.js", "javascript"),
                       ("/ui/css/app.css", "text/css"), ("/ui/i18n/es.json", "application/json")):
        answer = await harness.client.get(path)
        assert answer.status_code == 200, (path, answer.text)
        assert kind in answer.headers["content-type"], (path, answer.headers["content-type"])
        assert "default-src 'self'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
    redirect = await harness.client.get("/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "/ui/"
    assert harness.calls("accounts") == []


async def test_the_prefix_serves_only_the_static_folder(harness):
    missing = await harness.client.get("/ui/__init__.py")  # the package's Python is not in static/
    assert missing.status_code == 404 and missing.headers["content-type"] == PROBLEM
    for path in ("/ui/%2e%2e/__init__.py", "/ui/..%2f__init__.py", "/ui/%2e%2e/%2e%2e/routes_table.py"):
        answer = await harness.client.get(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert "import" not in answer.text
    # The API is not reachable around its checks through the UI prefix.
    sneaky = await harness.client.get("/ui/%2e%2e/api/v1/users")
    assert sneaky.status_code == 404 and harness.calls("accounts") == []
    unauthenticated = await harness.client.get("/api/v1/users")
    assert unauthenticated.status_code == 401


def test_both_catalogues_hold_every_text_the_pages_use():
    es = json.loads((STATIC / "i18n" / "es.json").read_text())
    en = json.loads((STATIC / "i18n" / "en.json").read_text())
    assert set(es) == set(en)
    assert all(isinstance(v, str) and v.strip() for v in [*es.values(), *en.values()])
    for key in es:  # the same placeholders in both languages
        assert set(re.findall(r"\{(\w+)\}", es[key])) == set(re.findall(r"\{(\w+)\}", en[key])), key
    used: set[str] = set()
    for page in STATIC.glob("*.html"):
        used |= set(re.findall(r'data-i18n(?:-[a-z-]+)?="([a-z_.]+)"', page.read_text()))
    for script in (STATIC / "js").glob("*.js"):
        used |= set(re.findall(r'\bt\("([a-z_.]+)"', script.read_text()))
    assert used, "no text found: the scan is broken"
    assert sorted(used - set(es)) == []


def test_no_page_runs_inline_script_or_loads_another_origin():
    for page in Path(STATIC).glob("*.html"):
        text = page.read_text()
        assert re.findall(r"<script(?![^>]*\bsrc=)", text) == [], page.name
        assert " on" not in re.sub(r'"[^"]*"', '""', text).replace(" only", ""), page.name  # no onclick= etc.
        assert "http://" not in text and "https://" not in text.replace('placeholder="https://"', ""), page.name
