"""Printing: rich tables for people, ``--json`` for machines (one JSON document on stdout)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from registry_cli.client import CliError


class Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json
        # piped output is not cut to 80 columns
        self.out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200)
        self.err = Console(stderr=True)

    # Machines ----------------------------------------------------------------------------------------------
    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    # People ------------------------------------------------------------------------------------------------
    def line(self, text: str, style: str | None = None) -> None:
        if not self.as_json:
            self.out.print(text, style=style, highlight=False, markup=False)

    def note(self, text: str) -> None:
        """Something for the person at the terminal (on stderr, so it never mixes with --json output)."""
        self.err.print(text, style="yellow", highlight=False, markup=False)

    def table(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        table = Table(title=Text(title) if title else None, title_justify="left", show_lines=False)
        for column in columns:
            table.add_column(column, overflow="fold")
        count = 0
        for row in rows:
            table.add_row(*(cell(value) for value in row))
            count += 1
        if count == 0:
            table.caption = "(none)"
        self.out.print(table)

    def fields(self, title: str | None, data: dict[str, Any], keys: Sequence[str] | None = None) -> None:
        """Scalar fields as a two-column table (nested values as compact JSON)."""
        shown = [k for k in (keys or data.keys()) if k in data]
        self.table(title, ["field", "value"], [(k, data[k]) for k in shown])

    def error(self, error: CliError) -> None:
        if self.as_json:
            document = {"error": error.message, "exit_code": error.exit_code, "status": error.status,
                        "problem": error.problem or None}
            sys.stderr.write(json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n")
            return
        self.err.print(f"error: {error.message}", style="bold red", highlight=False, markup=False)
        for item in error.problem.get("errors") or []:
            if isinstance(item, dict):
                where = " ".join(f"{k}={item[k]}" for k in ("sheet", "row", "column", "field") if item.get(k)
                                 is not None)
                message = item.get("message") or item.get("detail") or ""
                text = f"  - {where} {item.get('code', '')}: {message}".rstrip()
                self.err.print(text, highlight=False, markup=False)


def cell(value: Any) -> Text:
    """Plain text: a value like ``[auth.forbidden]`` is never read as rich markup."""
    if value is None:
        return Text("—")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, default=str, ensure_ascii=False, sort_keys=True))
    return Text(str(value))
