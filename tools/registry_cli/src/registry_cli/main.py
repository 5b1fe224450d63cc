"""registry: sign in, import an allocation table, approve, run an evaluation, replay dead letters, run
the ledger audit, the journal verification and the transfer reconciliation, move the programme clock.
Through the public API (the gateway) only.

Exit codes: 0 done; 1 the registry refused, or a check found a problem; 2 bad arguments; 3 the registry
did not answer (or a wait timed out); 4 not signed in.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from registry_cli import arguments
from registry_cli.client import (
    DEFAULT_URL,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    CredentialStore,
    Registry,
    credentials_path,
    error_from_response,
)
from registry_cli.output import Output

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
POLL_SECONDS = 0.5

app = typer.Typer(name="registry", help=__doc__, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None)
allocation_app = typer.Typer(help="Allocation tables: import an .xlsx, run it, watch it.", no_args_is_help=True)
approvals_app = typer.Typer(help="Four eyes: list, show, approve and reject approvals.", no_args_is_help=True)
evaluation_app = typer.Typer(help="Compliance evaluation of a period: run (or re-run) and show.",
                             no_args_is_help=True)
dead_letters_app = typer.Typer(help="Messages a consumer gave up on: list and replay.", no_args_is_help=True)
journal_app = typer.Typer(help="The ledger's journal.", no_args_is_help=True)
clock_app = typer.Typer(help="The programme clock (where the deployment allows moving it).", no_args_is_help=True)
app.add_typer(allocation_app, name="allocation")
app.add_typer(approvals_app, name="approvals")
app.add_typer(evaluation_app, name="evaluation")
app.add_typer(dead_letters_app, name="dead-letters")
app.add_typer(journal_app, name="journal")
app.add_typer(clock_app, name="clock")


# Shared state and options ---------------------------------------------------------------------------------
@dataclass
class State:
    url: str
    language: str | None
    as_json: bool
    credentials: Path
    registry: Registry | None = None

    def connect(self) -> Registry:
        if self.registry is None:
            self.registry = Registry(self.url, CredentialStore(self.credentials), language=self.language)
        return self.registry


JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document (for machines)")]
Service = Annotated[str, typer.Argument(parser=arguments.service_name, metavar="SERVICE",
                                        help=f"one of: {', '.join(arguments.SERVICES)}")]
ServiceFilter = Annotated[str | None, typer.Option("--service", "-s", parser=arguments.service_name,
                                                   help="only this service (default: every service)")]
Timeout = Annotated[float, typer.Option("--timeout", min=1, help="seconds to wait at most")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str, typer.Option("--url", envvar="REGISTRY_URL", help="the gateway")] = DEFAULT_URL,
    language: Annotated[str | None, typer.Option("--lang", envvar="REGISTRY_LANGUAGE",
                                                  help="es or en (the registry's messages)")] = None,
    as_json: JsonOpt = False,
) -> None:
    if language is not None and language not in ("es", "en"):
        raise typer.BadParameter("es or en", param_hint="--lang")
    ctx.obj = State(url=url, language=language, as_json=as_json, credentials=credentials_path())
    ctx.call_on_close(lambda: ctx.obj.registry.close() if ctx.obj.registry else None)


F = TypeVar("F", bound=Callable[..., Any])


def command(group: typer.Typer, name: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """A command whose :class:`CliError` is printed (problem+json ``detail`` and ``code``) and becomes its
    exit code."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def run(*args: Any, **kw: Any) -> Any:
            ctx: typer.Context = kw["ctx"]
            as_json = ctx.find_root().obj.as_json or bool(kw.get("as_json"))
            try:
                return function(*args, **kw)
            except CliError as error:
                Output(as_json).error(error)
                raise typer.Exit(error.exit_code) from None

        group.command(name, **kwargs)(run)
        return function

    return decorate


def setup(ctx: typer.Context, as_json: bool) -> tuple[Registry, Output]:
    state: State = ctx.find_root().obj
    return state.connect(), Output(state.as_json or as_json)


def confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CliError(f"{question} Not asked without a terminal: pass --yes", EXIT_USAGE)
    if not typer.confirm(question, default=False, err=True):
        raise CliError("not confirmed; nothing was done", EXIT_FAILED)


def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` every half second until it returns something truthy; time out with exit code 3."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise CliError(f"gave up waiting for {what} after {timeout:.0f}s", EXIT_UNREACHABLE)
        time.sleep(POLL_SECONDS)


# Sign-in --------------------------------------------------------------------------------------------------
@command(app)
def login(
    ctx: typer.Context,
    username: Annotated[str | None, typer.Option("--username", "-u", help="default: asked")] = None,
    password_file: Annotated[Path | None, typer.Option("--password-file", exists=True, dir_okay=False,
                                                       help="read the password from this file")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Sign in (POST /api/v1/auth/token); the tokens are kept in a file only you can read (mode 0600)."""
    registry, out = setup(ctx, as_json)
    if password_file is not None and password_stdin:
        raise typer.BadParameter("give --password-file or --password-stdin, not both")
    interactive = sys.stdin.isatty()
    if username is None:
        if not interactive:
            raise typer.BadParameter("--username is required without a terminal", param_hint="--username")
        username = typer.prompt("user")
    if password_file is not None:
        password = password_file.read_text().strip()
    elif password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif interactive:
        password = typer.prompt("password", hide_input=True)
    else:
        raise typer.BadParameter("without a terminal, give --password-file or --password-stdin")
    entry = registry.sign_in(username, password)
    if out.as_json:
        out.json({"url": registry.url, "username": username, "credentials": str(registry.store.path),
                  "access_expires_at": entry["access_expires_at"]})
    else:
        out.line(f"Signed in to {registry.url} as {username}; the tokens are in {registry.store.path} (mode 0600).")


@command(app)
def logout(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Forget the stored sign-in for this registry URL."""
    registry, out = setup(ctx, as_json)
    had = registry.sign_out()
    out.json({"url": registry.url, "signed_out": had}) if out.as_json else out.line(
        f"Signed out of {registry.url}." if had else f"Was not signed in to {registry.url}.")


@command(app)
def whoami(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The signed-in user (GET /api/v1/users/me)."""
    registry, out = setup(ctx, as_json)
    me = registry.get("/api/v1/users/me")
    out.json(me) if out.as_json else out.fields(None, me, ["username", "display_name", "roles", "email", "active"])


@command(app)
def health(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every API and worker process as the gateway sees it (GET /api/v1/health); exit 1 unless ready."""
    registry, out = setup(ctx, as_json)
    report = registry.request("GET", "/api/v1/health", public=True, ok=(200, 503)).json()
    if out.as_json:
        out.json(report)
    else:
        rows = []
        for service, processes in sorted(report.get("services", {}).items()):
            for kind, probe in sorted(processes.items()):
                rows.append((service, kind, probe.get("status"), (probe.get("clock") or {}).get("programme_now"),
                             probe.get("checks") or probe.get("error")))
        out.table(f"system: {report.get('status')}", ["service", "process", "status", "programme time", "checks"],
                  rows)
    if report.get("status") != "ready":
        raise typer.Exit(EXIT_FAILED)


# The programme clock --------------------------------------------------------------------------------------
def _show_clock(out: Output, clock: dict[str, Any], title: str) -> None:
    out.json(clock) if out.as_json else out.fields(title, clock, ["programme_now", "offset_seconds", "version"])


@command(clock_app, "show")
def clock_show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The programme time (GET /api/v1/programme/clock; 404 where clock control is off)."""
    registry, out = setup(ctx, as_json)
    _show_clock(out, registry.get("/api/v1/programme/clock"), "programme clock")


@command(clock_app, "set")
def clock_set(
    ctx: typer.Context,
    when: Annotated[str, typer.Argument(metavar="ISO-TIME", help="e.g. 2021-10-01T00:00:00-06:00")],
    reason: Annotated[str | None, typer.Option("--reason", help="kept in the audit log")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the programme clock forward to ISO-TIME (PUT /api/v1/programme/clock). Never backwards."""
    target = arguments.programme_time(when)
    registry, out = setup(ctx, as_json)
    moved = registry.request("PUT", "/api/v1/programme/clock",
                             json={"programme_now": target.isoformat(), "reason": reason}).json()
    _show_clock(out, moved, "programme clock moved")


@command(clock_app, "advance")
def clock_advance(
    ctx: typer.Context,
    by: Annotated[str, typer.Argument(metavar="DURATION", help="e.g. 3600, 15m, 12h, 2d, 1d12h")],
    reason: Annotated[str | None, typer.Option("--reason", help="kept in the audit log")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the programme clock forward by DURATION."""
    seconds = arguments.duration_seconds(by)
    registry, out = setup(ctx, as_json)
    moved = registry.request("PUT", "/api/v1/programme/clock",
                             json={"advance_seconds": seconds, "reason": reason}).json()
    _show_clock(out, moved, "programme clock moved")


# Allocation -----------------------------------------------------------------------------------------------
TABLE_FIELDS = ["id", "state", "method", "period", "filename", "sha256", "line_count", "total", "budget",
                "remainder", "source_account_id", "approval_id", "approval_state", "run_trigger", "completed_at"]


@command(allocation_app, "import")
def allocation_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(metavar="FILE.xlsx", help="the filled template")],
    method: Annotated[str, typer.Option("--method", help="table or proportional")] = "table",
    period: Annotated[str | None, typer.Option("--period", help="the period (required for proportional)")] = None,
    budget: Annotated[int | None, typer.Option("--budget", min=0, help="proportional: units to share")] = None,
    national: Annotated[str | None, typer.Option("--national-consumption-mwh",
                                                 help="proportional: national consumption, MWh")] = None,
    source: Annotated[str | None, typer.Option("--source-account", help="default: the cap account")] = None,
    submit: Annotated[bool, typer.Option("--submit", help="then ask a second authority user to approve")] = False,
    note: Annotated[str | None, typer.Option("--note", help="shown to the approver")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload an allocation table (.xlsx) with a progress bar; the registry validates every row. A bad table
    is listed row by row (exit 1). With --submit, the valid table goes to four-eyes approval."""
    if method not in ("table", "proportional"):
        raise typer.BadParameter("table or proportional", param_hint="--method")
    params = arguments.allocation_parameters(method, period, budget, national, source, file.name)
    data = arguments.read_workbook(file)
    registry, out = setup(ctx, as_json)
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=out.err, disable=out.as_json, transient=False) as progress:
        task = progress.add_task(f"uploading {file.name}", total=len(data))
        answer = registry.upload("/api/v1/allocation-tables", data, content_type=XLSX, params=params,
                                 progress=lambda sent: progress.advance(task, sent))
        progress.update(task, description=f"validated {file.name}", completed=len(data))
    if answer.status_code != 201:
        error = error_from_response(answer)
        if error.problem.get("code") == "allocation.invalid_table" and not out.as_json:
            out.table(f"table {error.problem.get('table_id')}: {error.problem.get('count')} problem(s)",
                      ["sheet", "row", "column", "code", "message"],
                      [(e.get("sheet"), e.get("row"), e.get("column"), e.get("code"), e.get("message"))
                       for e in error.problem.get("errors", [])])
            error.problem = {k: v for k, v in error.problem.items() if k != "errors"}
        raise error
    table = answer.json()
    result: dict[str, Any] = {"table": table}
    if submit:
        submitted = registry.post(f"/api/v1/allocation-tables/{table['id']}/submit", idempotent=True,
                                  json={"note": note}, ok=(202,)).json()
        result["submitted"] = submitted
    if out.as_json:
        out.json(result)
        return
    out.fields(f"allocation table {table['id']}", table, TABLE_FIELDS)
    if submit:
        out.line(f"Submitted for approval {result['submitted']['approval_id']} "
                 f"(payload hash {result['submitted']['payload_hash']}). Another authority user approves with:\n"
                 f"  registry approvals approve issuance {result['submitted']['approval_id']}")
    else:
        out.line(f"Valid. Submit it for approval with: registry allocation submit {table['id']}")


@command(allocation_app, "submit")
def allocation_submit(
    ctx: typer.Context,
    table_id: Annotated[str, typer.Argument(metavar="TABLE_ID")],
    note: Annotated[str | None, typer.Option("--note", help="shown to the approver")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask a second authority user to approve a validated table (four eyes)."""
    registry, out = setup(ctx, as_json)
    submitted = registry.post(f"/api/v1/allocation-tables/{table_id}/submit", idempotent=True,
                              json={"note": note}, ok=(202,)).json()
    out.json(submitted) if out.as_json else out.fields(
        "submitted", submitted, ["table_id", "approval_id", "state", "sha256", "payload_hash"])


@command(allocation_app, "list")
def allocation_list(
    ctx: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="only tables in this state")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The allocation tables, newest first."""
    registry, out = setup(ctx, as_json)
    items = registry.get("/api/v1/allocation-tables", params={"state": state} if state else None)["items"]
    if out.as_json:
        out.json(items)
        return
    out.table("allocation tables", ["id", "state", "period", "method", "lines", "total", "uploaded_at"],
              [(t["id"], t["state"], t["period"], t["method"], t["line_count"], t["total"], t["uploaded_at"])
               for t in items])


@command(allocation_app, "show")
def allocation_show(
    ctx: typer.Context,
    table_id: Annotated[str, typer.Argument(metavar="TABLE_ID")],
    lines: Annotated[bool, typer.Option("--lines", help="also every line (the dry run)")] = False,
    as_json: JsonOpt = False,
) -> None:
    """One table: state, totals, approval; with --lines, what the run allocates line by line."""
    registry, out = setup(ctx, as_json)
    table = registry.get(f"/api/v1/allocation-tables/{table_id}")
    dry = registry.get(f"/api/v1/allocation-tables/{table_id}/dry-run") if lines else None
    if out.as_json:
        out.json({"table": table, "dry_run": dry} if lines else table)
        return
    out.fields(f"allocation table {table_id}", table, TABLE_FIELDS)
    if dry is not None:
        out.table("lines", ["sheet", "row", "installation", "quantity", "state", "code"],
                  [(x["sheet"], x["row"], x["installation_account_id"], x["quantity"], x["state"], x["code"])
                   for x in dry["lines"]])


def watch_allocation(registry: Registry, out: Output, table_id: str, timeout: float) -> dict[str, Any]:
    """A progress bar over the table's lines until the run is complete; returns the table."""
    deadline = time.monotonic() + timeout
    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=out.err, disable=out.as_json) as progress:
        task = progress.add_task(f"allocation {table_id[:8]}", total=None)
        while True:
            table = registry.get(f"/api/v1/allocation-tables/{table_id}")
            dry = registry.get(f"/api/v1/allocation-tables/{table_id}/dry-run")
            done, total, refused = arguments.allocation_progress(dry)
            progress.update(task, total=total or None, completed=done,
                            description=f"allocation {table_id[:8]} {table['state']}"
                                        + (f", {refused} refused" if refused else ""))
            if table["state"] in arguments.TABLE_FINAL:
                return table
            if table["state"] not in ("approved", "running"):
                raise CliError(f"the table is {table['state']}: it does not run until it is approved")
            if time.monotonic() >= deadline:
                raise CliError(f"the run of {table_id} was not complete after {timeout:.0f}s "
                               f"({done} of {total} lines answered)", EXIT_UNREACHABLE)
            time.sleep(POLL_SECONDS)


def _finish_allocation(out: Output, table: dict[str, Any], started: dict[str, Any] | None) -> None:
    if out.as_json:
        out.json({"run": started, "table": table} if started is not None else table)
    else:
        out.fields(f"allocation table {table['id']}", table, TABLE_FIELDS)
    if table["state"] == "completed_with_refusals":
        out.note("some lines were refused by the ledger: see `registry allocation show --lines`")
        raise typer.Exit(EXIT_FAILED)


@command(allocation_app, "run")
def allocation_run(
    ctx: typer.Context,
    table_id: Annotated[str, typer.Argument(metavar="TABLE_ID")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the run with a progress bar")] = True,
    reason: Annotated[str | None, typer.Option("--reason")] = None,
    timeout: Timeout = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Run an approved table now instead of on its allocation date (exactly once), and follow it."""
    registry, out = setup(ctx, as_json)
    started = registry.post(f"/api/v1/allocation-tables/{table_id}/run", idempotent=True, json={"reason": reason},
                            ok=(200, 202)).json()
    if not started.get("started"):
        out.note(f"the table was already {started.get('state')}: nothing started")
    if not wait:
        out.json(started) if out.as_json else out.fields("run", started)
        return
    _finish_allocation(out, watch_allocation(registry, out, table_id, timeout), started)


@command(allocation_app, "watch")
def allocation_watch(
    ctx: typer.Context,
    table_id: Annotated[str, typer.Argument(metavar="TABLE_ID")],
    timeout: Timeout = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Follow a table's run (started on command, or by the clock on its allocation date) until complete."""
    registry, out = setup(ctx, as_json)
    _finish_allocation(out, watch_allocation(registry, out, table_id, timeout), None)


# Approvals ------------------------------------------------------------------------------------------------
@command(approvals_app, "list")
def approvals_list(
    ctx: typer.Context,
    service: ServiceFilter = None,
    state: Annotated[str, typer.Option("--state", help="pending, approved, rejected, expired or all")] = "pending",
    as_json: JsonOpt = False,
) -> None:
    """Approvals of every service (the gateway merges them), or of one with --service."""
    if state not in ("pending", "approved", "rejected", "expired", "all"):
        raise typer.BadParameter("pending, approved, rejected, expired or all", param_hint="--state")
    registry, out = setup(ctx, as_json)
    params = {} if state == "all" else {"state": state}
    if service is None:
        merged = registry.get("/api/v1/approvals", params=params)
    else:
        merged = {"items": [{**i, "service": service} for i in
                            registry.get(f"/api/v1/{service}/approvals", params=params)["items"]]}
    if out.as_json:
        out.json(merged)
        return
    out.table(f"approvals ({state})", ["service", "id", "action", "state", "requested by", "requested at",
                                       "expires at"],
              [(a["service"], a["id"], a["action"], a["state"], a["requested_by"], a["requested_at"],
                a["expires_at"]) for a in merged["items"]])
    _unanswered(out, merged)


def _unanswered(out: Output, merged: dict[str, Any]) -> None:
    if merged.get("missing_services"):
        out.note(f"no answer from: {', '.join(merged['missing_services'])}")
    if merged.get("forbidden_services"):
        out.note(f"not allowed to see: {', '.join(merged['forbidden_services'])}")


def find_approval(registry: Registry, service: str, approval_id: str) -> dict[str, Any]:
    for item in registry.get(f"/api/v1/{service}/approvals", params={"limit": 500})["items"]:
        if str(item["id"]) == approval_id:
            return dict(item)
    raise CliError(f"{service} has no approval {approval_id}")


def _show_approval(out: Output, approval: dict[str, Any]) -> None:
    out.fields(f"approval {approval['id']}", approval,
               ["action", "state", "requested_by", "requested_at", "expires_at", "required_roles", "payload_hash",
                "decided_by", "decided_at", "reason"])
    out.table("payload", ["field", "value"], sorted((approval.get("payload") or {}).items()))


@command(approvals_app, "show")
def approvals_show(ctx: typer.Context, service: Service, approval_id: Annotated[str, typer.Argument(metavar="ID")],
                   as_json: JsonOpt = False) -> None:
    """One approval with the payload the approver is asked to confirm."""
    registry, out = setup(ctx, as_json)
    approval = find_approval(registry, service, approval_id)
    out.json(approval) if out.as_json else _show_approval(out, approval)


@command(approvals_app, "approve")
def approvals_approve(
    ctx: typer.Context, service: Service, approval_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str | None, typer.Option("--reason")] = None, yes: Yes = False, as_json: JsonOpt = False,
) -> None:
    """Approve after reviewing the payload: the decision carries the payload's hash, so a request changed
    since it was shown is refused."""
    registry, out = setup(ctx, as_json)
    approval = find_approval(registry, service, approval_id)
    if not out.as_json:
        _show_approval(out, approval)
    if approval["state"] != "pending":
        raise CliError(f"approval {approval_id} is {approval['state']}, not pending")
    confirm(f"Approve {approval['action']} {approval_id}?", yes)
    decided = registry.post(f"/api/v1/{service}/approvals/{approval_id}/approve",
                            json={"payload_hash": approval["payload_hash"], "reason": reason}).json()
    out.json(decided) if out.as_json else out.line(f"Approved {approval_id} ({decided.get('state', 'approved')}).")


@command(approvals_app, "reject")
def approvals_reject(
    ctx: typer.Context, service: Service, approval_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str, typer.Option("--reason", help="required: why")], yes: Yes = False,
    as_json: JsonOpt = False,
) -> None:
    """Reject an approval, with a reason."""
    registry, out = setup(ctx, as_json)
    confirm(f"Reject {service} approval {approval_id}?", yes)
    decided = registry.post(f"/api/v1/{service}/approvals/{approval_id}/reject", json={"reason": reason}).json()
    out.json(decided) if out.as_json else out.line(f"Rejected {approval_id}.")


# Compliance evaluation ------------------------------------------------------------------------------------
EVALUATION_DONE = "completed"  # compliance: pending -> cancelling -> completed


def _show_evaluation(out: Output, evaluation: dict[str, Any]) -> None:
    if out.as_json:
        out.json(evaluation)
        return
    scalars = {k: v for k, v in evaluation.items() if not isinstance(v, list)}
    out.fields("evaluation", scalars)
    for key, value in evaluation.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            columns = list(dict.fromkeys(k for v in value for k in v))
            out.table(key, columns, [[v.get(c) for c in columns] for v in value])


@command(evaluation_app, "run")
def evaluation_run(
    ctx: typer.Context,
    period: Annotated[str, typer.Argument(parser=arguments.period_code, metavar="PERIOD")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait until the evaluation is finished")] = True,
    timeout: Timeout = 600.0,
    as_json: JsonOpt = False,
) -> None:
    """Run the compliance evaluation of PERIOD once its surrender deadline has passed (POST
    /api/v1/compliance/periods/{period}/evaluations: 202 started, 200 the existing one, which a re-run
    answers without moving anything more), wait until it is completed and show it."""
    registry, out = setup(ctx, as_json)
    path = f"/api/v1/compliance/periods/{period}/evaluations"
    started = registry.post(path, idempotent=True, json={}, ok=(200, 201, 202)).json()
    if not wait:
        _show_evaluation(out, started)
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), TimeElapsedColumn(), console=out.err,
                  disable=out.as_json) as progress:
        task = progress.add_task(f"evaluating {period}", total=None)

        def finished() -> dict[str, Any] | None:
            latest = registry.get(path)
            progress.update(task, description=f"evaluating {period}: {latest.get('state')}")
            return latest if latest.get("state") == EVALUATION_DONE else None

        evaluation = wait_until(finished, timeout, f"the evaluation of {period}")
    _show_evaluation(out, evaluation)


@command(evaluation_app, "show")
def evaluation_show(
    ctx: typer.Context,
    period: Annotated[str, typer.Argument(parser=arguments.period_code, metavar="PERIOD")],
    as_json: JsonOpt = False,
) -> None:
    """The latest evaluation of PERIOD (GET /api/v1/compliance/periods/{period}/evaluations)."""
    registry, out = setup(ctx, as_json)
    _show_evaluation(out, registry.get(f"/api/v1/compliance/periods/{period}/evaluations"))


# Dead letters ---------------------------------------------------------------------------------------------
@command(dead_letters_app, "list")
def dead_letters_list(
    ctx: typer.Context,
    service: ServiceFilter = None,
    state: Annotated[str, typer.Option("--state", help="dead or replayed")] = "dead",
    as_json: JsonOpt = False,
) -> None:
    """Messages that failed every attempt, with their error (newest first)."""
    if state not in ("dead", "replayed"):
        raise typer.BadParameter("dead or replayed", param_hint="--state")
    registry, out = setup(ctx, as_json)
    if service is None:
        merged = registry.get("/api/v1/dead-letters", params={"state": state})
    else:
        merged = {"items": [{**i, "service": service} for i in
                            registry.get(f"/api/v1/{service}/dead-letters", params={"state": state})["items"]]}
    if out.as_json:
        out.json(merged)
        return
    out.table(f"dead letters ({state})", ["service", "id", "type", "attempts", "dead at", "state", "error"],
              [(d["service"], d["id"], d["message_type"], d["attempts"], d["dead_at"], d.get("state"),
                (d.get("error") or "").splitlines()[-1][:120] if d.get("error") else None) for d in merged["items"]])
    _unanswered(out, merged)
    if merged["items"] and state == "dead":
        out.note("replay one with: registry dead-letters replay SERVICE ID")


@command(dead_letters_app, "replay")
def dead_letters_replay(
    ctx: typer.Context, service: Service,
    dead_letter_id: Annotated[int, typer.Argument(metavar="ID", min=1)],
    yes: Yes = False, as_json: JsonOpt = False,
) -> None:
    """Run a dead letter's message again, with a fresh count of attempts (administrator; audited)."""
    registry, out = setup(ctx, as_json)
    confirm(f"Replay {service} dead letter {dead_letter_id}?", yes)
    replayed = registry.post(f"/api/v1/{service}/dead-letters/{dead_letter_id}/replay", ok=(202,)).json()
    out.json(replayed) if out.as_json else out.line(
        f"Dead letter {dead_letter_id} of {service} replayed: message {replayed['message_id']} runs again.")


# Checks ---------------------------------------------------------------------------------------------------
def _problems(out: Output, title: str, items: list[dict[str, Any]]) -> None:
    if items:
        columns = list(dict.fromkeys(k for item in items for k in item))
        out.table(title, columns, [[item.get(c) for c in columns] for item in items])


@command(app)
def audit(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The ledger audit: issued = held + in holds + cancelled for every unit type and vintage, every
    account's blocks against its journal, every hold's escrow (GET /api/v1/ledger/audit). Exit 1 if not clean."""
    registry, out = setup(ctx, as_json)
    report = registry.get("/api/v1/ledger/audit")
    if out.as_json:
        out.json(report)
    else:
        out.table("supply", ["unit type", "vintage", "issued", "held", "in holds", "cancelled"],
                  [(s["unit_type"], s["vintage"], f"{s['issued']:,}", f"{s['held']:,}", f"{s['in_holds']:,}",
                    f"{s['cancelled']:,}") for s in report["supply"]])
        _problems(out, "discrepancies", report["discrepancies"])
        out.line("ledger audit: clean" if report["ok"] else
                 f"ledger audit: {len(report['discrepancies'])} discrepancies",
                 style="green" if report["ok"] else "bold red")
    if not report["ok"]:
        raise typer.Exit(EXIT_FAILED)


@command(journal_app, "verify")
def journal_verify(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Recompute the journal's hashes and chain and check the signed checkpoints
    (GET /api/v1/ledger/journal/verify). Exit 1 if anything was found."""
    registry, out = setup(ctx, as_json)
    report = registry.get("/api/v1/ledger/journal/verify")
    if out.as_json:
        out.json(report)
    else:
        out.fields("journal", report, ["sealed", "unsealed", "checkpoints_checked", "checkpoints_skipped",
                                       "discrepancies_total", "discrepancies_by_code", "head"])
        _problems(out, "discrepancies", report["discrepancies"])
        _problems(out, "warnings", report["warnings"])
        out.line("journal: verified" if report["ok"] else
                 f"journal: {report['discrepancies_total']} discrepancies",
                 style="green" if report["ok"] else "bold red")
    if not report["ok"]:
        raise typer.Exit(EXIT_FAILED)


@command(app)
def reconciliation(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every transfer against its hold in the ledger, every hold against a transfer, and transfers stuck
    (GET /api/v1/transfers/reconciliation). Exit 1 if anything does not match."""
    registry, out = setup(ctx, as_json)
    report = registry.get("/api/v1/transfers/reconciliation")
    if out.as_json:
        out.json(report)
    else:
        out.fields("transfers", report, ["transfers", "final", "holds_outside_transfers"])
        _problems(out, "problems", report["problems"])
        out.line("reconciliation: clean" if report["ok"] else
                 f"reconciliation: {len(report['problems'])} problems",
                 style="green" if report["ok"] else "bold red")
    if not report["ok"]:
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    """The console script ``registry``."""
    app()
