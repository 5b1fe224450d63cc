"""Jinja2 templates, one per notification type and language (``templates/<lang>/<type>.txt.j2``): the
first line is the subject, the rest after a blank line the body."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

LANGUAGES = ("es", "en")
TEMPLATES = Path(__file__).parent / "templates"
UNIT_LABELS = {
    "es": {"allowance": "derechos de emisión", "offset": "créditos de compensación"},
    "en": {"allowance": "allowances", "offset": "offset credits"},
}


@cache
def environment() -> jinja2.Environment:
    # The templates ship with the code: each is read and compiled once, never checked again on disk.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                              autoescape=False, keep_trailing_newline=False,  # noqa: S701 (plain text)
                              auto_reload=False)


def language_of(value: str | None) -> str:
    return value if value in LANGUAGES else "es"


def _when(value: Any, language: str, timezone: str) -> str:
    if not isinstance(value, datetime):
        try:
            value = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)
    local = value.astimezone(ZoneInfo(timezone))
    return local.strftime("%d/%m/%Y %H:%M" if language == "es" else "%Y-%m-%d %H:%M") + f" ({timezone})"


def render(notification_type: str, language: str, facts: dict[str, Any], *, side: str,
           timezone: str = "America/Mexico_City") -> tuple[str, str]:
    """(subject, body) of a notification in ``language``."""
    language = language_of(language)
    context = {key: ("" if value is None else value) for key, value in facts.items()}
    context.update(side=side, unit_label=UNIT_LABELS[language].get(str(facts.get("unit_type", "allowance")),
                                                                    str(facts.get("unit_type", ""))))
    if "unit_type" not in facts:
        context["unit_label"] = UNIT_LABELS[language]["allowance"]
    for key in ("acceptance_deadline",):
        if facts.get(key):
            context["deadline"] = _when(facts[key], language, timezone)
    context.setdefault("deadline", "")
    text = environment().get_template(f"{language}/{notification_type}.txt.j2").render(context).strip()
    subject, _, body = text.partition("\n")
    return subject.strip(), body.strip() + "\n"


def available_types() -> set[tuple[str, str]]:
    return {(p.parent.name, p.name.removesuffix(".txt.j2")) for p in TEMPLATES.glob("*/*.txt.j2")}
