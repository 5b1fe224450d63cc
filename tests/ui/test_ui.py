"""The authority dashboard and the participant portal in headless Chromium, against the running system:
sign in through the page, accept a pending transfer and see the balance change, approve an allocation as
the second person, the enforcement office changing nothing, the same pages in Spanish and English with no
serious or critical axe-core violation, one keyboard-only path, and a participant kept out of another
participant's accounts. The data each test needs is made through the public API first."""

from __future__ import annotations

import io
import json
import random
import re
import secrets
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from openpyxl import Workbook
from playwright.async_api import expect

from gateway.ui import STATIC
from registry_common.testing.fixtures import wait_for

pytestmark = [pytest.mark.system, pytest.mark.integration]
PASSWORD = "correct-horse-battery-staple"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ZONE = ZoneInfo("America/Mexico_City")
TEXT = {lang: json.loads((STATIC / "i18n" / f"{lang}.json").read_text()) for lang in ("es", "en")}


def rfc() -> str:
    letters = "".join(secrets.choice(string.ascii_uppercase) for _ in range(3))
    return f"{letters}200101{secrets.choice(string.ascii_uppercase)}{secrets.choice(string.digits)}" \
           f"{secrets.choice('0123456789A')}"


@dataclass
class Person:
    username: str
    user_id: str
    headers: dict[str, str]
    account_id: str | None = None


@dataclass
class World:
    sender: Person
    receiver: Person
    stranger: Person
    requester: Person
    approver: Person
    readonly: Person
    transfer_id: str
    table_id: str
    approval_id: str
    period: str


class Setup:
    def __init__(self, http: httpx.AsyncClient, gateway: str, admin: dict[str, str], minted: Any,
                 transfers_db: asyncpg.Connection, issuance_db: asyncpg.Connection,
                 compliance_db: asyncpg.Connection):
        self.http, self.gw, self.admin, self.minted = http, gateway, admin, minted
        self.transfers_db, self.issuance_db, self.compliance_db = transfers_db, issuance_db, compliance_db
        tag = secrets.token_hex(3)
        self.cap_a = {"Authorization": f"Bearer {minted(f'ui-authority-a-{tag}', 'authority')}"}
        self.cap_b = {"Authorization": f"Bearer {minted(f'ui-authority-b-{tag}', 'authority')}"}

    async def call(self, method: str, path: str, headers: dict[str, str], body: Any = None, *, key: bool = False,
                   expect_status: int | None = None, **extra: Any) -> httpx.Response:
        more = {"Idempotency-Key": str(uuid4())} if key else {}
        answer = await self.http.request(method, f"{self.gw}{path}", json=body, headers={**headers, **more}, **extra)
        if expect_status is not None:
            assert answer.status_code == expect_status, answer.text
        return answer

    async def person(self, role: str, name: str) -> Person:
        username = f"ui-{role.split('-')[0]}-{uuid4().hex[:8]}"
        user = (await self.call("POST", "/api/v1/users", self.admin, {
            "username": username, "display_name": name, "email": f"{username}@example.mx", "roles": [role],
            "password": PASSWORD}, expect_status=201)).json()
        tokens = (await self.call("POST", "/api/v1/auth/token", {}, {"username": username, "password": PASSWORD},
                                  expect_status=200)).json()
        return Person(username, user["id"], {"Authorization": f"Bearer {tokens['access_token']}",
                                             "Accept-Language": "en"})

    async def installation(self, who: Person) -> str:
        account = (await self.call("POST", "/api/v1/accounts", self.admin, {
            "kind": "installation", "name": f"Planta {who.username}", "holder": {
                "name": f"Empresa {who.username} S.A. de C.V.", "tax_id": rfc(), "address": "Av. Reforma 1, CDMX",
                "contacts": [{"name": "Contacto", "email": f"c-{who.username}@example.mx"}]}},
            expect_status=201)).json()
        await self.call("POST", f"/api/v1/accounts/{account['id']}/approve", self.admin, {}, expect_status=200)
        await self.call("POST", f"/api/v1/accounts/{account['id']}/representatives", self.admin,
                        {"user_id": who.user_id, "rights": ["initiate", "approve", "view"]})
        who.account_id = account["id"]
        await wait_for(lambda: self.transfers_db.fetchval(
            "SELECT count(*) FROM known_representatives WHERE account_id = $1", account["id"]),
            timeout=60, what="transfers to learn of the account and its representative")
        await wait_for(lambda: self.issuance_db.fetchval(
            "SELECT count(*) FROM known_accounts WHERE id = $1 AND state = 'active'", account["id"]),
            timeout=60, what="issuance to learn of the installation")
        await wait_for(lambda: self.compliance_db.fetchval(
            "SELECT count(*) FROM known_accounts WHERE installation_id = $1 AND kind = 'delivery'", account["id"]),
            timeout=60, what="compliance to learn of the installation's delivery account")
        await wait_for(lambda: self.compliance_db.fetchval(
            "SELECT count(*) FROM known_representatives WHERE account_id = $1", account["id"]),
            timeout=60, what="compliance to learn of the representative")
        return account["id"]

    async def fund(self, account_id: str, units: int) -> None:
        await self.call("POST", "/api/v1/ledger/movements", self.cap_a, {
            "kind": "issuance", "to_account_id": "SYS-CAP", "unit_type": "allowance", "vintage": 2021,
            "quantity": units}, key=True, expect_status=201)
        await self.call("POST", "/api/v1/ledger/movements", self.cap_a, {
            "kind": "allocation", "from_account_id": "SYS-CAP", "to_account_id": account_id,
            "unit_type": "allowance", "vintage": 2021, "quantity": units}, key=True, expect_status=201)

    async def pending_transfer(self, sender: Person, receiver: Person, quantity: int) -> str:
        answer = await self.call("POST", "/api/v1/transfers", sender.headers, {
            "sender_account_id": sender.account_id, "receiver_account_id": receiver.account_id,
            "unit_type": "allowance", "quantity": quantity}, key=True, expect_status=201)
        transfer_id = answer.json()["id"]

        async def awaiting() -> bool:
            state = (await self.call("GET", f"/api/v1/transfers/{transfer_id}", receiver.headers)).json()["state"]
            return state == "awaiting_acceptance"

        await wait_for(awaiting, timeout=60, what="the transfer to await acceptance")
        return transfer_id

    async def allocation_awaiting_approval(self, requester: Person, installation: str) -> tuple[str, str, str]:
        """A period with its cap, and an allocation table for ``installation`` submitted by ``requester``:
        its approval waits for a second authority user."""
        clock = (await self.call("GET", "/api/v1/programme/clock", self.cap_a, expect_status=200)).json()
        now = datetime.fromisoformat(clock["programme_now"])
        allocation_on = (now.astimezone(ZONE) + timedelta(days=300)).date()
        vintage = random.randint(3000, 9000)
        period = (await self.call("POST", "/api/v1/periods", self.cap_a, {
            "vintage": vintage, "code": f"U{vintage}", "starts_on": str(allocation_on - timedelta(days=100)),
            "ends_on": str(allocation_on + timedelta(days=30)), "allocation_on": str(allocation_on),
            "reporting_opens_on": str(allocation_on + timedelta(days=60)),
            "reporting_closes_on": str(allocation_on + timedelta(days=80)),
            "surrender_deadline_on": str(allocation_on + timedelta(days=100))})).json()
        code = period["code"]
        await wait_for(lambda: self.compliance_db.fetchval("SELECT count(*) FROM known_periods WHERE period = $1",
                                                           code), timeout=60, what="compliance to learn of the period")
        asked = (await self.call("POST", f"/api/v1/periods/{code}/cap-generations", self.cap_a,
                                 {"cap": 1000, "reserves": {}}, key=True, expect_status=202)).json()
        await self.call("POST", f"/api/v1/issuance/approvals/{asked['approval_id']}/approve", self.cap_b,
                        {"payload_hash": asked["payload_hash"]}, expect_status=200)

        async def generated() -> bool:
            items = (await self.call("GET", f"/api/v1/periods/{code}/cap-generations", self.cap_a)).json()["items"]
            return any(g["id"] == asked["generation_id"] and g["state"] == "generated" for g in items)

        await wait_for(generated, timeout=60, what="the cap to be generated")
        book = Workbook()
        for row in (["installation_account_id", "period", "quantity"], [installation, code, 50]):
            book.active.append(row)
        data = io.BytesIO()
        book.save(data)
        uploaded = await self.call("POST", "/api/v1/allocation-tables", {**requester.headers, "Content-Type": XLSX},
                                   content=data.getvalue(), expect_status=201)
        table_id = uploaded.json()["id"]
        submitted = await self.call("POST", f"/api/v1/allocation-tables/{table_id}/submit", requester.headers, {},
                                    key=True, expect_status=202)
        return table_id, submitted.json()["approval_id"], code


@pytest.fixture(scope="module")
async def world(system, provisioned_services, token_for) -> AsyncIterator[World]:
    base = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
    prefix = provisioned_services["REGISTRY_DATABASE_PREFIX"]
    transfers_db = await asyncpg.connect(f"{base}/{prefix}transfers")
    issuance_db = await asyncpg.connect(f"{base}/{prefix}issuance")
    compliance_db = await asyncpg.connect(f"{base}/{prefix}compliance")
    async with httpx.AsyncClient(timeout=30) as http:
        signed_in = await http.post(f"{system.gateway_url}/api/v1/auth/token", json={
            "username": "admin", "password": provisioned_services["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"]})
        admin = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
        setup = Setup(http, system.gateway_url, admin, token_for, transfers_db, issuance_db, compliance_db)
        sender = await setup.person("installation", "Ana Remitente")
        receiver = await setup.person("installation", "Bruno Receptor")
        stranger = await setup.person("installation", "Carla Ajena")
        requester = await setup.person("authority", "Diana Autoridad")
        approver = await setup.person("authority", "Emilio Autoridad")
        readonly = await setup.person("authority-readonly", "Fernanda Inspección")
        for person in (sender, receiver, stranger):
            await setup.installation(person)
        await setup.fund(sender.account_id, 100)
        transfer_id = await setup.pending_transfer(sender, receiver, 30)
        table_id, approval_id, period = await setup.allocation_awaiting_approval(requester, receiver.account_id)
        yield World(sender, receiver, stranger, requester, approver, readonly, transfer_id, table_id, approval_id,
                    period)
    for db in (transfers_db, issuance_db, compliance_db):
        await db.close()


# Page helpers --------------------------------------------------------------------------------------
async def choose_language(page: Any, lang: str) -> None:
    if await page.locator("#language").input_value() != lang:
        await page.select_option("#language", lang)
    await expect(page.locator("html")).to_have_attribute("lang", lang)
    await expect(page.locator("#language")).to_have_value(lang)


async def open_sign_in(page: Any) -> None:
    """The sign-in page, once its script handles the form and the language chooser."""
    await page.goto("/ui/")
    await expect(page.locator("body")).to_have_attribute("data-ready", "signin")


async def sign_in(page: Any, who: Person, lang: str = "es") -> None:
    await open_sign_in(page)
    await expect(page.get_by_role("heading", level=1)).to_have_text(re.compile(
        f"^({re.escape(TEXT['es']['signin.title'])}|{re.escape(TEXT['en']['signin.title'])})$"))
    await choose_language(page, lang)
    await expect(page.get_by_role("heading", level=1)).to_have_text(TEXT[lang]["signin.title"])
    await page.get_by_label(TEXT[lang]["signin.username"]).fill(who.username)
    await page.get_by_label(TEXT[lang]["signin.password"]).fill(PASSWORD)
    await page.get_by_role("button", name=TEXT[lang]["signin.submit"]).click()


async def sign_out(page: Any, lang: str) -> None:
    await page.get_by_role("button", name=TEXT[lang]["common.sign_out"]).click()
    await expect(page).to_have_url(re.compile(r"/ui/index\.html$"))


async def ready(page: Any, title_key: str, lang: str) -> None:
    """The page (portal or dashboard, from ``title_key``) has loaded every section: its script marks the body
    with its own name last, so the sign-in page it came from never passes for it."""
    await expect(page.locator("body")).to_have_attribute("data-ready", title_key.split(".")[0], timeout=60_000)
    await expect(page.get_by_role("heading", level=1)).to_have_text(TEXT[lang][title_key])
    await expect(page.locator("html")).to_have_attribute("lang", lang)


async def no_serious_violations(axe: Any, page: Any, what: str) -> None:
    found = await axe(page)
    assert found == [], f"{what}: {json.dumps(found, indent=1)}"


async def api(system: Any, method: str, path: str, who: Person | None, lang: str = "en", **extra: Any
              ) -> httpx.Response:
    headers = {**(who.headers if who else {}), "Accept-Language": lang, **extra.pop("headers", {})}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, f"{system.gateway_url}{path}", headers=headers, **extra)


# The tests -----------------------------------------------------------------------------------------
async def test_an_installation_user_accepts_a_pending_transfer_and_sees_the_balance_change(
        browser_page, world, system, shoot):
    page, console = browser_page
    receiver, sender = world.receiver, world.sender
    await sign_in(page, receiver, "es")
    await expect(page).to_have_url(re.compile(r"/ui/portal\.html$"))
    await ready(page, "portal.title", "es")
    total = page.get_by_test_id(f"total-{receiver.account_id}")
    await expect(total).to_have_text("0")
    incoming = page.locator("#incoming-body")
    await expect(incoming.get_by_role("row").filter(has_text=world.transfer_id[:8])).to_have_count(1)
    await expect(incoming).to_contain_text(sender.account_id)
    # Time left on the programme clock (not the browser's): the window has just opened.
    await expect(page.get_by_test_id(f"left-{world.transfer_id}")).to_have_text(
        re.compile(r"^(\d+ d \d+ h|\d+ h \d+ min|\d+ min)$"))
    await shoot(page, "portal-es-transfer-pending")

    await page.get_by_role("button", name=f"{TEXT['es']['action.accept']}: 30 {TEXT['es']['unit.allowance']} de "
                                          f"{sender.account_id}").click()
    await expect(total).to_have_text("30", timeout=60_000)  # settled by the saga, then read from the ledger
    await expect(page.get_by_test_id(f"qty-{receiver.account_id}-allowance-2021")).to_have_text("30")
    await expect(incoming).to_contain_text(TEXT["es"]["portal.nothing_to_accept"])
    row = page.locator("#transfers-body").get_by_role("row").filter(has_text=world.transfer_id[:8])
    await expect(row).to_contain_text(TEXT["es"]["state.completed"])
    await shoot(page, "portal-es-transfer-accepted")
    settled = (await api(system, "GET", f"/api/v1/transfers/{world.transfer_id}", receiver)).json()
    assert settled["state"] == "completed"
    holdings = (await api(system, "GET", f"/api/v1/accounts/{receiver.account_id}/holdings", receiver)).json()
    assert holdings["total"] == 30
    assert console.unexpected() == []


async def test_the_authority_approves_an_allocation_as_the_second_person(browser_page, world, system, shoot):
    page, console = browser_page
    short = world.approval_id[:8]
    approve_name = re.compile(rf"^{TEXT['en']['action.approve']}: .*{short}\)$")
    approvals = page.locator("#approvals-body")

    # The requester sees the request as their own: no approve button on it.
    await sign_in(page, world.requester, "en")
    await expect(page).to_have_url(re.compile(r"/ui/dashboard\.html$"))
    await ready(page, "dashboard.title", "en")
    await expect(approvals.get_by_role("row").filter(has_text=short)).to_contain_text(
        TEXT["en"]["dashboard.own_request"])
    await expect(page.get_by_role("button", name=approve_name)).to_have_count(0)
    await sign_out(page, "en")

    # The enforcement office sees the same list and has nothing to press; the API refuses it anyway.
    await sign_in(page, world.readonly, "en")
    await ready(page, "dashboard.title", "en")
    await expect(page.get_by_text(TEXT["en"]["dashboard.read_only"])).to_be_visible()
    await expect(approvals.get_by_role("row").filter(has_text=short)).to_have_count(1)
    await expect(approvals.get_by_role("button")).to_have_count(0)
    await expect(page.locator("#dead-letters-body").get_by_role("button")).to_have_count(0)
    await shoot(page, "dashboard-en-read-only")
    refused = await api(system, "POST", f"/api/v1/issuance/approvals/{world.approval_id}/approve", world.readonly,
                        json={})
    assert refused.status_code == 403, refused.text
    await sign_out(page, "en")

    # The second authority user approves it.
    await sign_in(page, world.approver, "en")
    await ready(page, "dashboard.title", "en")
    await shoot(page, "dashboard-en-approval-pending")
    await page.get_by_role("button", name=approve_name).click()
    message = page.locator("#approvals-message")
    await expect(message).to_contain_text("Approved: ")
    await expect(message).to_contain_text(short)
    await expect(approvals.get_by_role("row").filter(has_text=short)).to_have_count(0)
    await shoot(page, "dashboard-en-approval-done")
    table = (await api(system, "GET", f"/api/v1/allocation-tables/{world.table_id}", world.approver)).json()
    assert table["state"] == "approved", table
    assert console.unexpected() == []


@pytest.mark.parametrize("lang", ["es", "en"])
async def test_every_page_in_each_language_with_no_serious_accessibility_violation(
        browser_page, world, system, lang, shoot, axe):
    page, console = browser_page
    other = "en" if lang == "es" else "es"
    await open_sign_in(page)
    await choose_language(page, lang)
    await expect(page).to_have_title(TEXT[lang]["signin.page_title"])
    await no_serious_violations(axe, page, f"sign-in ({lang})")
    await shoot(page, f"signin-{lang}")

    # A refusal is shown in the user's language, as the API wrote it for that language.
    await page.get_by_label(TEXT[lang]["signin.username"]).fill(f"nobody-{uuid4().hex[:8]}")
    await page.get_by_label(TEXT[lang]["signin.password"]).fill("wrong")
    await page.get_by_role("button", name=TEXT[lang]["signin.submit"]).click()
    answers = {code: (await api(system, "POST", "/api/v1/auth/token", None, code,
                                json={"username": "nobody-x", "password": "wrong"})).json()
               for code in (lang, other)}
    assert answers[lang]["title"] != answers[other]["title"]
    message = page.locator("#signin-message")
    await expect(message).to_contain_text(answers[lang]["title"], timeout=30_000)
    await expect(message).not_to_contain_text(answers[other]["title"])
    await no_serious_violations(axe, page, f"sign-in refused ({lang})")

    await sign_in(page, world.sender, lang)
    await ready(page, "portal.title", lang)
    await expect(page).to_have_title(TEXT[lang]["portal.page_title"])
    for key in ("portal.holdings", "portal.incoming", "portal.transfers", "portal.new_transfer", "portal.surrender",
                "portal.compliance", "portal.notifications", "portal.webhooks"):
        await expect(page.get_by_role("navigation").get_by_role("link", name=TEXT[lang][key])).to_be_visible()
    show = re.compile(re.escape(TEXT[lang]["portal.show_blocks"].split("(")[0]))
    await page.get_by_role("button", name=show).first.click()
    await no_serious_violations(axe, page, f"portal ({lang})")
    await shoot(page, f"portal-{lang}")
    # A form refused by the API: its problem in this language, the field it names marked invalid.
    form = page.get_by_role("region", name=TEXT[lang]["portal.new_transfer"])
    await form.get_by_label(TEXT[lang]["field.receiver_account"]).fill(world.sender.account_id)
    await form.get_by_label(TEXT[lang]["field.quantity"]).fill("1")
    await form.get_by_role("button", name=TEXT[lang]["portal.request_transfer"]).click()
    problem = (await api(system, "POST", "/api/v1/transfers", world.sender, lang, json={
        "sender_account_id": world.sender.account_id, "receiver_account_id": world.sender.account_id,
        "unit_type": "allowance", "quantity": 1}, headers={"Idempotency-Key": str(uuid4())})).json()
    assert problem["code"] == "transfer.same_account"
    await expect(page.locator("#transfer-form-message")).to_contain_text(problem["title"])
    await expect(page.locator("#tr-receiver")).to_have_attribute("aria-invalid", "true")
    await no_serious_violations(axe, page, f"portal with a refused form ({lang})")
    await sign_out(page, lang)

    await sign_in(page, world.approver, lang)
    await ready(page, "dashboard.title", lang)
    await expect(page).to_have_title(TEXT[lang]["dashboard.page_title"])
    for key in ("dashboard.supply", "dashboard.approvals", "dashboard.integrity"):
        await expect(page.get_by_role("heading", level=2, name=TEXT[lang][key])).to_be_visible()
    await expect(page.locator("#supply-body svg[role=img]").first).to_be_visible()
    await expect(page.locator("#audit-body")).to_contain_text(TEXT[lang]["dashboard.consistent"])
    await no_serious_violations(axe, page, f"dashboard ({lang})")
    await shoot(page, f"dashboard-{lang}")
    assert console.unexpected() == []


async def focus_on(page: Any, test: str, limit: int = 150) -> None:
    """Presses Tab until ``test`` (a JS expression over ``el``, the focused element) holds, at most ``limit``
    times."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if await page.evaluate(f"(() => {{ const el = document.activeElement; return Boolean({test}); }})()"):
            return
    raise AssertionError(f"never focused: {test}")


async def focused(page: Any, expression: str) -> Any:
    return await page.evaluate(f"(() => {{ const el = document.activeElement; return {expression}; }})()")


async def focus_ring(page: Any) -> str:
    return await focused(page, "`${getComputedStyle(el).outlineStyle} ${getComputedStyle(el).outlineWidth}`")


async def test_keyboard_only_sign_in_language_and_serial_blocks(browser_page, world, shoot):
    page, console = browser_page
    await open_sign_in(page)
    await page.keyboard.press("Tab")
    assert await focused(page, "el.classList.contains('skip')")
    await page.keyboard.press("Enter")
    assert await focused(page, "el.id") == "main"
    await focus_on(page, "el.id === 'username'")
    assert (await focus_ring(page)).startswith("solid")
    await page.keyboard.type(world.sender.username)
    await page.keyboard.press("Tab")
    assert await focused(page, "el.id") == "password"
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(r"/ui/portal\.html$"))
    await ready(page, "portal.title", "es")

    # The language, by keyboard: remembered across the reload, the focus back on the chooser.
    await focus_on(page, "el.id === 'language'")
    ring = await focus_ring(page)
    assert ring.startswith("solid") and not ring.endswith(" 0px"), ring
    await page.keyboard.press("ArrowDown")
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await ready(page, "portal.title", "en")
    assert await focused(page, "el.id") == "language"

    await focus_on(page, f"(el.getAttribute('aria-controls') || '').startsWith('blocks-{world.sender.account_id}-')")
    ring = await focus_ring(page)
    assert ring.startswith("solid") and not ring.endswith(" 0px"), ring
    controls = await focused(page, "el.getAttribute('aria-controls')")
    blocks = page.locator(f"[id='{controls}']")
    await expect(blocks).to_be_hidden()
    await page.keyboard.press("Enter")
    assert await focused(page, "el.getAttribute('aria-expanded')") == "true"
    await expect(blocks).to_be_visible()
    await expect(blocks.locator("li").first).to_contain_text("Serials")
    await shoot(page, "portal-en-keyboard-serial-blocks")
    assert console.unexpected() == []


async def test_a_participant_cannot_see_or_act_on_another_participants_accounts(browser_page, world, system, shoot):
    page, console = browser_page
    stranger, sender = world.stranger, world.sender
    await sign_in(page, stranger, "es")
    await ready(page, "portal.title", "es")
    for other in (sender.account_id, world.receiver.account_id):
        await expect(page.locator("main")).not_to_contain_text(other)
    offered = await page.locator("#tr-sender option").evaluate_all("options => options.map(o => o.value)")
    assert offered == [stranger.account_id]

    # Asking for another participant's account by address: the API refuses, the page shows no units.
    await page.goto(f"/ui/portal.html?account={sender.account_id}")
    await ready(page, "portal.title", "es")
    await expect(page.locator("#holdings-body").get_by_role("alert")).to_be_visible()
    await expect(page.get_by_test_id(f"total-{sender.account_id}")).to_have_count(0)
    await shoot(page, "portal-es-other-account-refused")

    # A tampered form offering the other's account as the sender: refused by the API, nothing moves.
    before = (await api(system, "GET", f"/api/v1/accounts/{sender.account_id}/holdings", sender)).json()["total"]
    await page.locator("#tr-sender").evaluate(
        "(select, id) => { select.append(new Option(id, id)); select.value = id; }", sender.account_id)
    form = page.get_by_role("region", name=TEXT["es"]["portal.new_transfer"])
    await form.get_by_label(TEXT["es"]["field.receiver_account"]).fill(stranger.account_id)
    await form.get_by_label(TEXT["es"]["field.quantity"]).fill("5")
    await form.get_by_role("button", name=TEXT["es"]["portal.request_transfer"]).click()
    await expect(page.locator("#transfer-form-message").get_by_role("alert")).to_contain_text("transfer.not_allowed")
    after = (await api(system, "GET", f"/api/v1/accounts/{sender.account_id}/holdings", sender)).json()["total"]
    assert after == before
    mine = (await api(system, "GET", "/api/v1/transfers", stranger)).json()["items"]
    assert all(stranger.account_id in (t["sender_account_id"], t["receiver_account_id"]) for t in mine)

    # The dashboard is not theirs: the page sends them back to the portal (the API refuses its reads).
    await page.goto("/ui/dashboard.html")
    await expect(page).to_have_url(re.compile(r"/ui/portal\.html$"))
    assert (await api(system, "GET", "/api/v1/approvals", stranger)).status_code == 403
    assert console.unexpected() == []


async def test_notifications_and_webhooks_of_my_accounts(browser_page, world, system, shoot):
    page, console = browser_page
    receiver = world.receiver
    await sign_in(page, receiver, "en")
    await ready(page, "portal.title", "en")
    inbox = page.get_by_role("region", name=TEXT["en"]["portal.notifications"])
    unread = (await api(system, "GET", "/api/v1/notifications", receiver, params={"unread": "true"})).json()
    assert unread["unread"] >= 1, unread  # the transfer proposed to the receiver's account, at least
    await expect(inbox).to_contain_text(TEXT["en"]["portal.unread"].format(count=unread["unread"]))
    await inbox.get_by_role("button", name=TEXT["en"]["action.mark_read"]).first.click()
    await expect(inbox).to_contain_text(TEXT["en"]["portal.unread"].format(count=unread["unread"] - 1))
    assert (await api(system, "GET", "/api/v1/notifications", receiver)).json()["unread"] == unread["unread"] - 1

    hooks = page.get_by_role("region", name=TEXT["en"]["portal.webhooks"])
    url = f"https://hooks.example.com/registry/{uuid4().hex[:8]}"
    await hooks.get_by_label(TEXT["en"]["field.url"]).fill(url)
    await hooks.get_by_label(TEXT["en"]["field.description"]).fill("ERP")
    await hooks.get_by_role("button", name=TEXT["en"]["portal.add_webhook"]).click()
    await expect(page.locator("#webhook-form-message")).to_contain_text("whsec_")  # the secret, shown this once
    row = hooks.get_by_role("row").filter(has_text=url)
    await expect(row).to_contain_text(TEXT["en"]["common.yes"])
    await shoot(page, "portal-en-webhook-added")
    await hooks.get_by_role("button", name=f"{TEXT['en']['action.disable']}: {url}").click()
    await expect(row).to_contain_text(TEXT["en"]["common.no"])
    listed = (await api(system, "GET", "/api/v1/webhook-subscriptions", receiver)).json()["items"]
    assert [(w["url"], w["active"]) for w in listed if w["url"] == url] == [(url, False)]
    assert console.unexpected() == []


async def test_surrender_to_my_delivery_account(browser_page, world, system, shoot):
    page, console = browser_page
    sender = world.sender
    before = (await api(system, "GET", f"/api/v1/accounts/{sender.account_id}/holdings", sender)).json()["total"]
    await sign_in(page, sender, "es")
    await ready(page, "portal.title", "es")
    total = page.get_by_test_id(f"total-{sender.account_id}")
    await expect(total).to_have_text(str(before))
    region = page.get_by_role("region", name=TEXT["es"]["portal.surrender"])
    await region.get_by_label(TEXT["es"]["field.quantity"]).fill("10")
    await region.get_by_role("button", name=TEXT["es"]["portal.surrender_submit"]).click()
    message = page.locator("#surrender-form-message")
    final = TEXT["es"]["portal.surrender_final"].split("{")[0]
    await expect(message).to_contain_text(final, timeout=60_000)
    await expect(message).to_contain_text(TEXT["es"]["surrender_state.completed"])
    await expect(total).to_have_text(str(before - 10))
    rows = page.locator("#surrender-body tbody").get_by_role("row")
    await expect(rows).to_have_count(1)
    await expect(rows).to_contain_text(TEXT["es"]["surrender_state.completed"])
    # The live compliance status and the projection to the deadline, as compliance answers them.
    status = page.get_by_test_id(f"compliance-status-{sender.account_id}")
    await expect(status).to_contain_text(TEXT["es"]["compliance_field.status"])
    live = (await api(system, "GET", f"/api/v1/compliance/installations/{sender.account_id}/status", sender)).json()
    await expect(status).to_contain_text(TEXT["es"][f"compliance_status.{live['status']}"])
    compliance = page.get_by_role("region", name=TEXT["es"]["portal.compliance"])
    await expect(compliance).to_contain_text(TEXT["es"]["projection.everything"])
    await shoot(page, "portal-es-surrender")
    listed = (await api(system, "GET", "/api/v1/surrenders", sender,
                        params={"central_account_id": sender.account_id})).json()["items"]
    assert [(s["quantity"], s["state"]) for s in listed] == [(10, "completed")]
    assert console.unexpected() == []


async def test_a_refused_token_is_renewed_once_and_a_tab_without_one_goes_to_sign_in(browser_page, world):
    page, console = browser_page
    await sign_in(page, world.receiver, "en")
    await ready(page, "portal.title", "en")
    await page.evaluate("sessionStorage.setItem('registry.access_token', 'not-a-token')")
    await page.reload()
    await ready(page, "portal.title", "en")  # the API refused the token; the refresh token renewed it
    await expect(page.get_by_test_id(f"total-{world.receiver.account_id}")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('registry.access_token')") not in (None, "not-a-token")
    await page.evaluate("sessionStorage.clear()")
    await page.goto("/ui/dashboard.html")
    await expect(page).to_have_url(re.compile(r"/ui/index\.html$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(TEXT["en"]["signin.title"])  # remembered
    assert console.unexpected() == []
