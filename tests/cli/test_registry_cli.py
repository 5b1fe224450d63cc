"""The operator CLI without a registry: argument handling (refused before any request, exit 2), the stored
sign-in (mode 0600, per registry URL, renewed with the refresh token), problem+json turned into messages
and exit codes. The CLI against a running system: tests/system/test_cli.py."""

from __future__ import annotations

import io
import json
import stat
import time
import zipfile
from pathlib import Path

import httpx
import pytest
import typer
from registry_cli import arguments
from registry_cli.client import (
    EXIT_FAILED,
    EXIT_SIGNED_OUT,
    EXIT_UNREACHABLE,
    CliError,
    CredentialStore,
    Registry,
    credentials_path,
    tokens_entry,
)
from registry_cli.main import app
from typer.testing import CliRunner

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers, so any request would exit 3


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("REGISTRY_CLI_CREDENTIALS", str(tmp_path / "cli" / "credentials.json"))
    monkeypatch.setenv("REGISTRY_URL", NOWHERE)
    return CliRunner()


def workbook(path: Path) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
    path.write_bytes(buffer.getvalue())
    return path


# Parsers ------------------------------------------------------------------------------------------------
def test_programme_time_needs_an_offset():
    assert arguments.programme_time("2021-10-01T00:00:00-06:00").utcoffset().total_seconds() == -6 * 3600
    assert arguments.programme_time("2021-10-01T06:00:00Z").isoformat() == "2021-10-01T06:00:00+00:00"
    for bad in ("2021-10-01T00:00:00", "yesterday", "", "2021-13-01T00:00:00Z"):
        with pytest.raises(typer.BadParameter):
            arguments.programme_time(bad)


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("90s", 90), ("15m", 900), ("12h", 43200),
                                               ("2d", 172800), ("1d12h", 129600), ("1h30m", 5400), ("0.5h", 1800)])
def test_durations(text, seconds):
    assert arguments.duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "  ", "0", "0s", "-5", "5x", "h", "1 day", "12h1d"])
def test_durations_refused(text):
    with pytest.raises(typer.BadParameter):
        arguments.duration_seconds(text)


def test_service_names():
    assert arguments.service_name("Issuance") == "issuance"
    for bad in ("gateway", "ledger", ""):
        with pytest.raises(typer.BadParameter):
            arguments.service_name(bad)


def test_allocation_parameters():
    assert arguments.allocation_parameters("table", "2021", None, None, None, "t.xlsx") == {
        "method": "table", "filename": "t.xlsx", "period": "2021"}
    proportional = arguments.allocation_parameters("proportional", "2021", 3_247_055, "277757746.24", "SYS-CAP",
                                                   "cel.xlsx")
    assert proportional == {"method": "proportional", "filename": "cel.xlsx", "period": "2021", "budget": 3_247_055,
                            "national_consumption_mwh": "277757746.24", "source_account_id": "SYS-CAP"}
    with pytest.raises(typer.BadParameter, match="--budget"):
        arguments.allocation_parameters("proportional", "2021", None, "1.00", None, "x.xlsx")
    with pytest.raises(typer.BadParameter, match="two decimals"):
        arguments.allocation_parameters("proportional", "2021", 10, "1.005", None, "x.xlsx")
    with pytest.raises(typer.BadParameter, match="proportional"):
        arguments.allocation_parameters("table", None, 10, None, None, "x.xlsx")
    with pytest.raises(typer.BadParameter, match="period code"):
        arguments.allocation_parameters("table", "20 21", None, None, None, "x.xlsx")


def test_workbook_checks(tmp_path: Path):
    good = workbook(tmp_path / "good.xlsx")
    assert arguments.read_workbook(good) == good.read_bytes()
    (tmp_path / "empty.xlsx").write_bytes(b"")
    (tmp_path / "table.csv").write_text("installation_account_id,period,quantity\n")
    for bad, reason in (("missing.xlsx", "not a file"), ("empty.xlsx", "empty"), ("table.csv", "not an .xlsx")):
        with pytest.raises(typer.BadParameter, match=reason):
            arguments.read_workbook(tmp_path / bad)


def test_allocation_progress_counts_what_the_run_sends():
    dry = {"lines": [{"state": "delivered"}, {"state": "refused"}, {"state": "sent"}, {"state": "planned"},
                     {"state": "withheld"}, {"state": "nothing_due"}]}
    assert arguments.allocation_progress(dry) == (2, 4, 1)
    assert arguments.allocation_progress({"lines": []}) == (0, 0, 0)


# The command line refuses before sending anything ----------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["clock", "set", "2021-10-01T00:00:00"],
    ["clock", "set", "tomorrow"],
    ["clock", "advance", "-1h"],
    ["approvals", "approve", "ledger", "0b7d"],
    ["approvals", "list", "--state", "maybe"],
    ["approvals", "reject", "issuance", "0b7d"],  # --reason is required
    ["dead-letters", "replay", "gateway", "1"],
    ["dead-letters", "replay", "issuance", "zero"],
    ["dead-letters", "list", "--state", "all"],
    ["evaluation", "run", "20 21"],
    ["allocation", "import", "missing.xlsx"],
    ["allocation", "import", "--method", "auction", "missing.xlsx"],
    ["--lang", "fr", "audit"],
    ["login"],  # no terminal: the user name is needed
    ["nonsense"],
])
def test_bad_arguments_exit_2_without_a_request(runner: CliRunner, argv):
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)


def test_proportional_import_needs_its_parameters(runner: CliRunner, tmp_path: Path):
    book = workbook(tmp_path / "cel.xlsx")
    result = runner.invoke(app, ["allocation", "import", str(book), "--method", "proportional", "--period", "2021"])
    assert result.exit_code == 2
    assert "--budget" in result.stderr and "--national-consumption-mwh" in result.stderr


def test_not_signed_in_exits_4_before_any_request(runner: CliRunner):
    for argv in (["audit"], ["--json", "journal", "verify"], ["dead-letters", "list"], ["clock", "show"]):
        result = runner.invoke(app, argv)
        assert result.exit_code == EXIT_SIGNED_OUT, (argv, result.stdout, result.stderr)
        assert "registry login" in result.stderr


def test_unreachable_registry_exits_3(runner: CliRunner):
    result = runner.invoke(app, ["health"])
    assert result.exit_code == EXIT_UNREACHABLE
    assert "cannot reach the registry" in result.stderr


def test_json_errors_are_one_document_on_stderr(runner: CliRunner):
    result = runner.invoke(app, ["audit", "--json"])
    assert result.exit_code == EXIT_SIGNED_OUT and result.stdout == ""
    assert json.loads(result.stderr)["exit_code"] == EXIT_SIGNED_OUT


def test_approve_without_a_terminal_needs_yes(tmp_path: Path):
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET", "nothing may be decided without --yes"
        return httpx.Response(200, json={"items": [{"id": "a1", "action": "issuance.allocate", "state": "pending",
                                                    "payload_hash": "h", "payload": {}}]})

    from registry_cli import main

    registry = signed_in(tmp_path, answer)
    with pytest.raises(CliError, match="--yes"):
        approval = main.find_approval(registry, "issuance", "a1")
        main.confirm(f"Approve {approval['action']}?", yes=False)


# The stored sign-in ---------------------------------------------------------------------------------------
def test_credentials_path_follows_xdg():
    assert credentials_path({"REGISTRY_CLI_CREDENTIALS": "/x/c.json"}) == Path("/x/c.json")
    assert credentials_path({"XDG_CONFIG_HOME": "/cfg", "HOME": "/h"}) == Path("/cfg/registry-cli/credentials.json")
    assert credentials_path({"HOME": "/h"}) == Path("/h/.config/registry-cli/credentials.json")


def test_credentials_file_is_private_and_per_url(tmp_path: Path):
    store = CredentialStore(tmp_path / "conf" / "registry-cli" / "credentials.json")
    store.put("http://a", tokens_entry("ana", {"access_token": "A", "refresh_token": "R", "expires_in": 900,
                                               "refresh_expires_in": 43200}))
    store.put("http://b", tokens_entry("bea", {"access_token": "B", "refresh_token": "S", "expires_in": 900,
                                               "refresh_expires_in": 43200}))
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.get("http://a")["username"] == "ana" and store.get("http://b")["access_token"] == "B"
    store.put("http://a", None)
    assert store.get("http://a") is None and store.get("http://b") is not None
    assert not list(store.path.parent.glob(".*.tmp"))


def signed_in(tmp_path: Path, handler, *, access_expires_in: float = 900) -> Registry:
    store = CredentialStore(tmp_path / "credentials.json")
    store.put("http://registry", {"username": "ana", "access_token": "old-access", "refresh_token": "old-refresh",
                                  "access_expires_at": time.time() + access_expires_in,
                                  "refresh_expires_at": time.time() + 3600})
    return Registry("http://registry/", store, transport=httpx.MockTransport(handler))


def test_expired_access_token_is_renewed_with_the_refresh_token(tmp_path: Path):
    seen: list[tuple[str, str | None]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers.get("authorization")))
        if request.url.path == "/api/v1/auth/refresh":
            assert json.loads(request.content) == {"refresh_token": "old-refresh"}
            return httpx.Response(200, json={"access_token": "new-access", "refresh_token": "new-refresh",
                                             "token_type": "bearer", "expires_in": 900, "refresh_expires_in": 43200})
        return httpx.Response(200, json={"ok": True, "supply": [], "discrepancies": []})

    registry = signed_in(tmp_path, answer, access_expires_in=-1)
    assert registry.get("/api/v1/ledger/audit")["ok"] is True
    assert seen == [("/api/v1/auth/refresh", None), ("/api/v1/ledger/audit", "Bearer new-access")]
    assert registry.store.get("http://registry")["refresh_token"] == "new-refresh"  # rotated and kept


def test_a_refused_refresh_forgets_the_sign_in(tmp_path: Path):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"code": "auth.refresh_invalid", "detail": "Sesión no válida."})

    registry = signed_in(tmp_path, answer, access_expires_in=-1)
    with pytest.raises(CliError) as refused:
        registry.get("/api/v1/ledger/audit")
    assert refused.value.exit_code == EXIT_SIGNED_OUT and "registry login" in refused.value.message
    assert registry.store.get("http://registry") is None


def test_problem_json_becomes_the_message_and_exit_1(tmp_path: Path):
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["idempotency-key"]
        return httpx.Response(409, headers={"content-type": "application/problem+json"}, json={
            "type": "about:blank", "title": "Conflicto", "status": 409, "code": "allocation.wrong_state",
            "detail": "La tabla está en estado validated: no se puede run."})

    registry = signed_in(tmp_path, answer)
    with pytest.raises(CliError) as refused:
        registry.post("/api/v1/allocation-tables/x/run", idempotent=True, json={}, ok=(200, 202))
    error = refused.value
    assert error.exit_code == EXIT_FAILED and error.status == 409
    assert error.message == "La tabla está en estado validated: no se puede run. [allocation.wrong_state]"


def test_codes_in_brackets_are_printed_as_they_are(capsys: pytest.CaptureFixture[str]):
    from registry_cli.output import Output

    Output(as_json=False).error(CliError("Usuario o contraseña incorrectos. [auth.invalid_credentials]"))
    Output(as_json=False).table("[t]", ["code"], [["[ledger.supply_mismatch]"]])
    captured = capsys.readouterr()
    assert "[auth.invalid_credentials]" in captured.err
    assert "[ledger.supply_mismatch]" in captured.out and "[t]" in captured.out


def test_a_token_signed_with_a_rotated_key_is_renewed_once(tmp_path: Path):
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.path} {request.headers.get('authorization')}")
        if request.url.path == "/api/v1/auth/refresh":
            return httpx.Response(200, json={"access_token": "new-key", "refresh_token": "r2", "token_type": "bearer",
                                             "expires_in": 900, "refresh_expires_in": 43200})
        if request.headers["authorization"] == "Bearer old-access":
            return httpx.Response(401, json={"code": "auth.token_invalid", "detail": "Token no válido."})
        return httpx.Response(200, json={"ok": True})

    registry = signed_in(tmp_path, answer)
    assert registry.get("/api/v1/ledger/audit") == {"ok": True}
    assert seen == ["/api/v1/ledger/audit Bearer old-access", "/api/v1/auth/refresh None",
                    "/api/v1/ledger/audit Bearer new-key"]
