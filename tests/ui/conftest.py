"""The dashboard and portal in a real browser: Debian's Chromium (``/usr/bin/chromium``, never a browser
downloaded by ``playwright install``) driven by Playwright, against the system the launcher starts as
``make up`` does.

The system is the one the system tests use (``tests/system/conftest.py``): when this session also runs
system tests, their running system is reused (one set of processes on the run's databases); run alone,
``tests/ui`` starts it with the same fixture. Screenshots go to ``var/ui-screenshots/`` (ignored by git).
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "var" / "ui-screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
AXE = Path(__file__).with_name("axe") / "axe.min.js"
AXE_SHA256 = "e9e5863c33a874f09bc01acd9234b7e3c871479f5eef8802fa582544465e6d01"  # axe-core 4.11.0
SYSTEM_CONFTEST = ROOT / "tests" / "system" / "conftest.py"


def _system_conftest() -> Any:
    """tests/system/conftest.py as a module: the same object pytest imports (importlib mode names it
    ``tests.system.conftest`` and takes it from ``sys.modules`` when already there)."""
    name = "tests.system.conftest"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, SYSTEM_CONFTEST)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


_shared = _system_conftest()
mailbox = _shared.mailbox  # only instantiated when tests/ui starts its own system
webhook_ca = _shared.webhook_ca
ui_own_system = pytest.fixture(scope="session", name="ui_own_system")(_shared.system._get_wrapped_function())


@pytest.fixture(scope="session")
def system(request: pytest.FixtureRequest) -> Any:
    """The system tests' running system when this session collected system tests (session-scoped there,
    so the same processes serve both); otherwise tests/ui's own, started by the same fixture code.

    pytest has no public way to ask another directory's fixture for its value: this reads the fixture
    manager (pytest 9, pinned): the cached value when the system tests already started it, else that
    fixture set up through a not-yet-run system test's request (so they share it afterwards)."""
    system_dir = SYSTEM_CONFTEST.parent
    for item in request.session.items:
        if Path(str(item.path)).parent != system_dir or "system" not in getattr(item, "fixturenames", ()):
            continue
        definitions = request._fixturemanager.getfixturedefs("system", item) or ()
        if definitions and definitions[-1].cached_result is not None:
            value, _key, failure = definitions[-1].cached_result
            if failure is not None:
                pytest.fail("the system tests' system did not start")
            return value
        pending = getattr(item, "_request", None)
        if pending:
            return pending.getfixturevalue("system")
    return request.getfixturevalue("ui_own_system")


# The browser ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    """Playwright's async API, on the tests' own event loop (its sync API would run a second loop in the
    same thread, which the asynchronous fixtures cannot share)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does it)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                                    args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


class Console:
    """What the page printed as errors, and its failed script loads: a page that breaks its own CSP or
    throws shows up here."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def unexpected(self) -> list[str]:
        # Refusals the test provokes on purpose are answered by the API (401/403/404/409/422) and logged by
        # the browser as failed resource loads; everything else is a fault of the page.
        return [e for e in self.errors if not re.search(r"status of (401|403|404|409|422)", e)]


@pytest.fixture
async def browser_page(system: Any, browser: Any, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Console]]:
    context = await browser.new_context(base_url=system.gateway_url, viewport={"width": 1280, "height": 900},
                                        locale="es-MX", timezone_id="America/Mexico_City")
    context.set_default_timeout(30_000)
    page = await context.new_page()
    console = Console()
    console.watch(page)
    yield page, console
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        await screenshot(page, f"FAILED-{request.node.name}")
    await context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


async def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


def axe_source() -> str:
    data = AXE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == AXE_SHA256, "tests/ui/axe/axe.min.js is not the vendored 4.11.0"
    return data.decode()


async def _serious_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.evaluate(axe_source())  # evaluated by the driver: not subject to the page's CSP
    result = await page.evaluate("async () => await window.axe.run(document, {resultTypes: ['violations']})")
    assert result["testEngine"]["version"] == "4.11.0" and result["passes"], "axe-core did not run its rules"
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.fixture
def shoot() -> Any:
    """``shoot(page, name)``: a full-page screenshot into var/ui-screenshots/."""
    return screenshot


@pytest.fixture
def axe() -> Any:
    """``axe(page)``: axe-core's serious and critical violations on the page as it is now."""
    return _serious_violations
