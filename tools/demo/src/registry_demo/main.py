"""``registry-demo`` (``make demo``): seed a population through the public API, drive the pilot's three
periods on the programme clock, and end with the ledger audit, the journal verification and the transfer
reconciliation. Exit 0 when every step went as planned and every check is clean; 1 otherwise (3 when the
registry does not answer).

It needs a freshly started registry in the development profile (clock control on, the programme clock at
the start of 2020): the programme clock only moves forward, so a second run on the same system is refused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from registry_cli.client import EXIT_UNREACHABLE, CliError

from registry_demo.client import Actor, DemoFailure, programme_now, wait_until
from registry_demo.population import ADMINISTRATOR, people_count, seed
from registry_demo.programme import ZONE, Plan, Programme, run
from registry_demo.show import Show

LATEST_START = datetime(2020, 9, 1, tzinfo=ZONE)
"""The programme clock runs on from 1 January 2020 after `make up`: the demo starts any time before the
allocation tables of 2020 are due."""


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="registry-demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("REGISTRY_URL", "http://127.0.0.1:8000"),
                        help="the gateway (default: $REGISTRY_URL or http://127.0.0.1:8000)")
    parser.add_argument("--admin-password-file", type=Path, default=Path("var/secrets/bootstrap_admin_password"),
                        help="the first administrator's password (user admin), as `make up` wrote it; "
                        "$REGISTRY_BOOTSTRAP_ADMIN_PASSWORD wins when set")
    parser.add_argument("--installations", type=int, default=20, help="how many installations (4 to 20)")
    parser.add_argument("--secrets-dir", type=Path, default=Path("var/secrets/demo"),
                        help="where the generated passwords are written (mode 0600)")
    parser.add_argument("--timeout", type=float, default=120.0, help="longest wait for any one thing, seconds")
    args = parser.parse_args(argv)
    if not 4 <= args.installations <= 20:
        parser.error("--installations: from 4 to 20")
    return args


def main(argv: list[str] | None = None) -> None:
    sys.exit(demo(arguments(argv)))


def demo(args: argparse.Namespace, show: Show | None = None) -> int:
    show = show or Show()
    started = time.monotonic()
    population = None
    try:
        password = os.environ.get("REGISTRY_BOOTSTRAP_ADMIN_PASSWORD") or args.admin_password_file.read_text().strip()
        bootstrap = Actor("admin", "Administrador inicial", ["administrator"], password, args.url, "")
        bootstrap.sign_in()
        clock = bootstrap.call("GET", "/api/v1/programme/clock", ok=(200, 404))
        if clock.status_code == 404:
            raise DemoFailure("the programme clock cannot be moved here (REGISTRY_CLOCK_CONTROL is off): the demo "
                              "runs on the development profile only")
        if demo_ran_before(bootstrap):
            raise DemoFailure(f"the user {ADMINISTRATOR} exists already: a demo ran on this registry before; the "
                              "demo needs a freshly started registry (see README, The demo)")
        now = programme_now(bootstrap)
        if now >= LATEST_START:
            raise DemoFailure(f"the programme clock is already at {now.astimezone(ZONE):%d %b %Y}: the demo drives "
                              "the programme from its start and needs a freshly started registry "
                              "(make down && rm -rf var/run && make up; see README, The demo)")
        show.step(f"Seeding the population through {args.url}", f"{now.astimezone(ZONE):%d %b %Y} programme time")
        with show.progress() as progress:
            task = progress.add_task("people and accounts", total=people_count(args.installations))
            population = seed(args.url, bootstrap, args.installations, args.secrets_dir,
                              lambda what: progress.update(task, advance=1, description=what[:60]))
        show_population(show, population, args.secrets_dir)
        programme = Programme(population, show, Plan(len(population.installations)), timeout=args.timeout)
        run(programme)
        clean = final_checks(population.enforcement or population.authority[0], show, args.timeout)
    except DemoFailure as failure:
        show.problem(str(failure))
        return 1
    except CliError as error:
        show.problem(f"the registry answered: {error.message}")
        if error.exit_code == EXIT_UNREACHABLE:
            show.info(f"is the registry running at {args.url}? `make up` starts it (`make status` shows it)")
        return error.exit_code
    except OSError as error:
        show.problem(str(error))
        return 1
    finally:
        if population is not None:
            population.close()
    elapsed = time.monotonic() - started
    if show.problems or not clean:
        show.console.print(f"[bold red]The demo found {len(show.problems)} problem(s)[/] ({elapsed:.0f} s).")
        return 1
    show.console.print(f"[bold green]The pilot ran end to end and every check is clean[/] ({elapsed:.0f} s).")
    return 0


def demo_ran_before(administrator: Actor) -> bool:
    cursor = None
    while True:
        page = administrator.get("/api/v1/users", params={"limit": 500, **({"cursor": cursor} if cursor else {})})
        if any(user["username"] == ADMINISTRATOR for user in page["items"]):
            return True
        cursor = page.get("next_cursor")
        if not cursor:
            return False


def show_population(show: Show, population: Any, folder: Path) -> None:
    rows = [(a.display_name, ", ".join(a.roles), a.username, a.account_id or "—", a.delivery_account_id or "—")
            for a in population.everyone()]
    show.table("population", ["who", "role", "user", "account", "delivery account"], rows)
    show.done(f"{len(rows)} users; passwords in {folder}/<user>.password (mode 0600), the list in "
              f"{folder}/population.json")


def final_checks(overseer: Actor, show: Show, timeout: float) -> bool:
    """The ledger audit, the journal verification and the transfer reconciliation, as the enforcement office
    runs them; all three must be clean."""
    show.step("Checks")
    audit = overseer.get("/api/v1/ledger/audit")
    show.table("ledger audit: supply", ["unit type", "vintage", "issued", "held", "in holds", "cancelled"],
               [(s["unit_type"], str(s["vintage"]), s["issued"], s["held"], s["in_holds"], s["cancelled"])
                for s in audit["supply"]])
    for item in audit["discrepancies"][:20]:
        show.info(str(item))
    audit_ok = show.check(audit["ok"], "ledger audit: clean (issued = held + in holds + cancelled; every account's "
                          "blocks match its journal)", f"ledger audit: {len(audit['discrepancies'])} discrepancies")

    def sealed() -> dict[str, Any] | None:  # the sealer runs in the ledger's worker, a moment behind
        report = overseer.get("/api/v1/ledger/journal/verify")
        return report if report["unsealed"] == 0 or not report["ok"] else None

    try:
        journal = wait_until(sealed, timeout, "every journal row to be sealed", interval=1.0)
    except DemoFailure:
        journal = overseer.get("/api/v1/ledger/journal/verify")
    for item in journal["discrepancies"][:20]:
        show.info(str(item))
    for item in journal["warnings"]:
        show.info(f"warning: {item['detail']}")
    journal_ok = show.check(journal["ok"], f"journal: verified ({journal['sealed']:,} rows sealed in one hash "
                            f"chain, {journal['checkpoints_checked']} signed checkpoints checked)",
                            f"journal: {journal['discrepancies_total']} discrepancies "
                            f"{journal['discrepancies_by_code']}")

    def settled() -> dict[str, Any] | None:
        report = overseer.get("/api/v1/transfers/reconciliation")
        return report if report["final"] == report["transfers"] else None

    try:
        reconciliation = wait_until(settled, timeout, "every transfer to be final")
    except DemoFailure:
        reconciliation = overseer.get("/api/v1/transfers/reconciliation")
    for item in reconciliation["problems"][:20]:
        show.info(str(item))
    reconciliation_ok = show.check(
        reconciliation["ok"], f"transfer reconciliation: clean ({reconciliation['transfers']} transfers, all final, "
        f"each matching its hold; {reconciliation['holds_outside_transfers']} holds outside transfers)",
        f"transfer reconciliation: {len(reconciliation['problems'])} problems")
    return audit_ok and journal_ok and reconciliation_ok
