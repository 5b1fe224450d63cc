"""What the demo prints: a rule per step with the programme date, a line per thing done, tables, progress."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text


class Show:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)
        self.problems: list[str] = []

    def step(self, title: str, when: str | None = None) -> None:
        label = f"{title}  [{when}]" if when else title
        self.console.rule(Text(label, style="bold cyan"), align="left")

    def done(self, text: str) -> None:
        self.console.print(Text("  ✓ ", style="green") + Text(text))

    def info(self, text: str) -> None:
        self.console.print(Text("    " + text, style="dim"))

    def unavailable(self, text: str) -> None:
        self.console.print(Text("  – not available: ", style="yellow") + Text(text))

    def problem(self, text: str) -> None:
        """A finding that makes the run fail (it carries on so that the rest is still shown)."""
        self.problems.append(text)
        self.console.print(Text("  ✗ ", style="bold red") + Text(text, style="red"))

    def check(self, condition: bool, good: str, bad: str) -> bool:
        if condition:
            self.done(good)
        else:
            self.problem(bad)
        return condition

    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        table = Table(title=Text(title), title_justify="left", show_lines=False, padding=(0, 1))
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(cell(v) for v in row))
        self.console.print(table)

    def progress(self) -> Progress:
        return Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=self.console, transient=False)


def cell(value: Any) -> Text:
    if value is None:
        return Text("—")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, int):
        return Text(f"{value:,}")
    if isinstance(value, dict | list):
        return Text(json.dumps(value, default=str, ensure_ascii=False, sort_keys=True))
    return Text(str(value))
