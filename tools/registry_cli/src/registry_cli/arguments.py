"""Argument handling with no I/O beyond reading a named file: what the commands accept, refused before any
request is sent (click's usage error, exit code 2)."""

from __future__ import annotations

import re
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import typer

SERVICES = ("accounts", "issuance", "transfers", "compliance", "auctions", "notifications")
"""Services with approvals, dead letters and an audit log (the gateway has none)."""

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # the gateway's and issuance's limit for one request body
PERIOD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,19}$")
_DURATION = re.compile(r"^\s*(?:(?P<d>\d+(?:\.\d+)?)d)?\s*(?:(?P<h>\d+(?:\.\d+)?)h)?\s*(?:(?P<m>\d+(?:\.\d+)?)m)?"
                       r"\s*(?:(?P<s>\d+(?:\.\d+)?)s?)?\s*$")

# Allocation line states (issuance): what the run still has to do and what it has done.
LINE_PENDING = frozenset({"planned", "sent"})
LINE_DONE = frozenset({"delivered", "refused"})
TABLE_FINAL = frozenset({"completed", "completed_with_refusals"})


def programme_time(text: str) -> datetime:
    """An ISO 8601 time with its UTC offset (``2021-10-01T00:00:00-06:00`` or ``...Z``)."""
    try:
        value = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time, e.g. 2021-10-01T00:00:00-06:00") from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise typer.BadParameter(f"{text!r} has no UTC offset: add one, e.g. -06:00 or Z")
    return value


def duration_seconds(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``12h``, ``2d`` or combined (``1d12h``); positive."""
    match = _DURATION.match(text or "")
    if not text or not text.strip() or match is None or not any(match.groupdict().values()):
        raise typer.BadParameter(f"{text!r} is not a duration such as 3600, 90s, 15m, 12h, 2d or 1d12h")
    factors = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    seconds = sum(float(value) * factors[unit] for unit, value in match.groupdict().items() if value)
    if seconds <= 0:
        raise typer.BadParameter("the clock only moves forward: give a positive duration")
    return seconds


def service_name(text: str) -> str:
    name = text.strip().lower()
    if name not in SERVICES:
        raise typer.BadParameter(f"{text!r} is not a service; one of: {', '.join(SERVICES)}")
    return name


def period_code(text: str) -> str:
    if not PERIOD.match(text):
        raise typer.BadParameter(f"{text!r} is not a period code (letters, digits, '-', '_', '.', at most 20)")
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{text!r} is not a whole number") from exc
    if value <= 0:
        raise typer.BadParameter("must be positive")
    return value


def read_workbook(path: Path) -> bytes:
    """The .xlsx bytes, refused early when the file is missing, empty, too large or not a zip workbook.
    The registry checks all of it again (and every row); this only saves a pointless upload."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file")
    size = path.stat().st_size
    if size == 0:
        raise typer.BadParameter(f"{path} is empty")
    if size > MAX_UPLOAD_BYTES:
        raise typer.BadParameter(f"{path} has {size:,} bytes; the registry accepts at most {MAX_UPLOAD_BYTES:,}")
    if not zipfile.is_zipfile(path):
        raise typer.BadParameter(f"{path} is not an .xlsx workbook (not a zip file)")
    return path.read_bytes()


def allocation_parameters(method: str, period: str | None, budget: int | None, national: str | None,
                          source: str | None, filename: str) -> dict[str, Any]:
    """The upload's query parameters; the proportional method needs a period, a budget and the national
    consumption (MWh with at most two decimals)."""
    params: dict[str, Any] = {"method": method, "filename": filename}
    if period is not None:
        params["period"] = period_code(period)
    if method == "proportional":
        missing = [name for name, value in (("--period", period), ("--budget", budget),
                                            ("--national-consumption-mwh", national)) if value is None]
        if missing:
            raise typer.BadParameter(f"the proportional method needs {', '.join(missing)}")
        if not re.fullmatch(r"\d+(\.\d{1,2})?", national or ""):
            raise typer.BadParameter(f"--national-consumption-mwh {national!r}: MWh with at most two decimals")
        params |= {"budget": budget, "national_consumption_mwh": national}
    elif budget is not None or national is not None:
        raise typer.BadParameter("--budget and --national-consumption-mwh belong to --method proportional")
    if source is not None:
        params["source_account_id"] = source
    return params


def allocation_progress(dry_run: dict[str, Any]) -> tuple[int, int, int]:
    """(done, to do, refused) over the lines the run sends (planned, sent, delivered, refused)."""
    lines = [line for line in dry_run.get("lines", []) if line.get("state") in LINE_PENDING | LINE_DONE]
    done = sum(1 for line in lines if line["state"] in LINE_DONE)
    refused = sum(1 for line in lines if line["state"] == "refused")
    return done, len(lines), refused
