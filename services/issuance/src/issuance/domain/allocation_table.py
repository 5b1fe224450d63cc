"""Validation of an allocation table, free of I/O: the rows of a sheet (as the workbook reader gives
them) against the accounts the registry knows, the periods and what the source account holds.

Every problem is an :class:`Issue` naming the sheet, the row (as Excel numbers it), the column and a
stable code; blank rows and surrounding spaces are tolerated. Two methods:

- ``table``: ``installation_account_id | period | quantity`` (Spanish aliases accepted), one line per
  installation, whole positive quantities, all lines of one existing period, their total within what the
  source account holds of the period's vintage;
- ``proportional`` (seed 003): ``id | consumption_mwh | eligible | reason`` plus the national consumption
  and the number of units to share; see :mod:`issuance.domain.proportional`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from issuance.domain.proportional import ConsumptionError, Participant, parse_hundredths, proportional_shares

MAX_QUANTITY = 10**15

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "installation_account_id": ("installation_account_id", "installation", "account_id", "cuenta_instalacion",
                                "id_cuenta", "cuenta", "cuenta_central", "instalacion"),
    "period": ("period", "periodo", "periodo_de_cumplimiento", "compliance_period"),
    "quantity": ("quantity", "cantidad", "derechos", "derechos_de_emision", "allowances"),
}
PROPORTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "id": ("id", "participant_id", "installation_account_id", "id_participante", "participante",
           "cuenta_instalacion", "cuenta"),
    "consumption_mwh": ("consumption_mwh", "consumption", "consumo_mwh", "consumo"),
    "eligible": ("eligible", "elegible"),
    "reason": ("reason", "motivo", "razon", "observaciones"),
}
OPTIONAL_COLUMNS = frozenset({"reason"})
TEMPLATE_HEADERS = {"table": list(TABLE_COLUMNS), "proportional": list(PROPORTIONAL_COLUMNS)}

ISSUE_MESSAGES: dict[str, tuple[str, str]] = {
    "missing_column": ("Falta la columna {column}.", "Column {column} is missing."),
    "no_rows": ("La hoja no tiene filas de datos.", "The sheet has no data rows."),
    "missing_value": ("Falta el valor.", "The value is missing."),
    "formula": ("La celda contiene una fórmula; escriba el valor.", "The cell holds a formula; enter the value."),
    "not_a_number": ("El texto no es un número.", "The text is not a number."),
    "zero": ("La cantidad es cero.", "The quantity is zero."),
    "negative": ("El valor es negativo.", "The value is negative."),
    "fractional": ("La cantidad no es entera.", "The quantity is not a whole number."),
    "too_many_decimals": ("Más de dos decimales.", "More than two decimals."),
    "too_large": ("El valor es demasiado grande.", "The value is too large."),
    "unknown_installation": ("La cuenta de instalación no existe.", "The installation account does not exist."),
    "not_an_installation": ("La cuenta no es la cuenta central de una instalación.",
                            "The account is not an installation's central account."),
    "account_not_active": ("La cuenta está {state}.", "The account is {state}."),
    "duplicate_row": ("Repite la cuenta de la fila {first_row}.", "Repeats the account of row {first_row}."),
    "unknown_period": ("El periodo no existe.", "The period does not exist."),
    "mixed_periods": ("La tabla mezcla periodos ({periods}).", "The table mixes periods ({periods})."),
    "period_mismatch": ("El periodo no es el de la tabla ({expected}).",
                        "The period is not the table's ({expected})."),
    "invalid_eligible": ("Use sí/no.", "Use yes/no."),
    "exceeds_available": ("El total {total} excede lo que tiene la cuenta {account} ({available}).",
                          "The total {total} exceeds what account {account} holds ({available})."),
    "exceeds_national": ("El consumo elegible {eligible} excede el nacional {national}.",
                         "Eligible consumption {eligible} exceeds the national {national}."),
}


@dataclass(frozen=True)
class Cell:
    value: Any
    formula: bool = False

    @property
    def blank(self) -> bool:
        return self.value is None or (isinstance(self.value, str) and not self.value.strip())


@dataclass(frozen=True)
class SheetData:
    name: str
    rows: Sequence[tuple[int, Sequence[Cell]]]  # (Excel row number, cells); the first non-blank is the header


@dataclass(frozen=True)
class Issue:
    sheet: str
    row: int | None
    column: str | None
    code: str
    value: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self, language: str = "es") -> dict[str, Any]:
        es, en = ISSUE_MESSAGES[self.code]
        try:
            message = (es if language == "es" else en).format(column=self.column, **self.params)
        except (KeyError, IndexError):
            message = es if language == "es" else en
        value = self.value if self.value is None or isinstance(self.value, (int, str, bool)) else str(self.value)
        return {"sheet": self.sheet, "row": self.row, "column": self.column, "code": self.code,
                "value": value, "message": message, **({"params": dict(self.params)} if self.params else {})}


@dataclass(frozen=True)
class AccountView:
    id: str
    kind: str
    state: str


@dataclass(frozen=True)
class Line:
    sheet: str
    row: int
    account_id: str
    quantity: int
    consumption: int | None = None  # hundredths of MWh (proportional)
    eligible: bool | None = None
    reason: str | None = None


@dataclass
class TableCheck:
    lines: list[Line] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    period: str | None = None
    total: int = 0
    remainder: int | None = None
    eligible_consumption: int | None = None

    @property
    def ok(self) -> bool:
        return not self.issues


def normalise_header(text: Any) -> str:
    raw = "" if text is None else str(text)
    stripped = "".join(c for c in unicodedata.normalize("NFKD", raw) if not unicodedata.combining(c))
    return "_".join(stripped.strip().lower().replace("-", " ").split())


def _map_headers(sheet: SheetData, columns: Mapping[str, tuple[str, ...]]
                 ) -> tuple[int | None, dict[str, int], list[tuple[int, Sequence[Cell]]], list[Issue]]:
    rows = [(n, cells) for n, cells in sheet.rows if not all(c.blank for c in cells)]
    if not rows:
        return None, {}, [], [Issue(sheet.name, None, None, "no_rows")]
    header_row, header_cells = rows[0]
    names = [normalise_header(c.value) for c in header_cells]
    found: dict[str, int] = {}
    for canonical, aliases in columns.items():
        for index, name in enumerate(names):
            if name in aliases:
                found[canonical] = index
                break
    issues = [Issue(sheet.name, header_row, column, "missing_column")
              for column in columns if column not in found and column not in OPTIONAL_COLUMNS]
    return header_row, found, rows[1:], issues


def _cell(cells: Sequence[Cell], index: int | None) -> Cell:
    if index is None or index >= len(cells):
        return Cell(None)
    return cells[index]


def _text(cell: Cell) -> str:
    value = cell.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value).strip()


def parse_quantity(cell: Cell) -> int | str:
    """A whole positive number of units, or the code of what is wrong with the cell."""
    if cell.formula:
        return "formula"
    if cell.blank:
        return "missing_value"
    value = cell.value
    if isinstance(value, bool):
        return "not_a_number"
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip().replace(",", ""))
        except InvalidOperation:
            return "not_a_number"
        if not number.is_finite():
            return "not_a_number"
    else:
        return "not_a_number"
    if number < 0:
        return "negative"
    if number == 0:
        return "zero"
    if number != number.to_integral_value():
        return "fractional"
    if number > MAX_QUANTITY:
        return "too_large"
    return int(number)


def parse_eligible(cell: Cell) -> bool | str:
    if cell.formula:
        return "formula"
    value = cell.value
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = normalise_header(value)
    if text in ("yes", "y", "true", "si", "s", "1", "x", "elegible", "eligible"):
        return True
    if text in ("no", "n", "false", "0", "no_elegible", "not_eligible"):
        return False
    return "missing_value" if cell.blank else "invalid_eligible"


def check_account(account: AccountView | None) -> tuple[str, dict[str, Any]] | None:
    if account is None:
        return "unknown_installation", {}
    if account.kind != "central":
        return "not_an_installation", {}
    if account.state != "active":
        return "account_not_active", {"state": account.state}
    return None


def validate_table(sheet: SheetData, accounts: Mapping[str, AccountView], periods: Mapping[str, int],
                   available: Mapping[str, int], source_account: str, expected_period: str | None = None
                   ) -> TableCheck:
    """The ``table`` method. ``periods``: code → vintage; ``available``: period code → units the source
    account holds of that period's vintage."""
    check = TableCheck()
    _, columns, rows, issues = _map_headers(sheet, TABLE_COLUMNS)
    check.issues.extend(issues)
    if issues:
        return check
    seen: dict[str, int] = {}
    seen_periods: dict[str, int] = {}
    for row, cells in rows:
        account_cell = _cell(cells, columns["installation_account_id"])
        period_cell = _cell(cells, columns["period"])
        quantity_cell = _cell(cells, columns["quantity"])
        row_ok = True

        def problem(column: str, code: str, value: Any = None, row: int = row, **params: Any) -> None:
            nonlocal row_ok
            row_ok = False
            check.issues.append(Issue(sheet.name, row, column, code, value, params))

        account_id = _text(account_cell)
        if account_cell.formula:
            problem("installation_account_id", "formula", account_cell.value)
        elif not account_id:
            problem("installation_account_id", "missing_value")
        elif account_id in seen:
            problem("installation_account_id", "duplicate_row", account_id, first_row=seen[account_id])
        else:
            seen[account_id] = row
            if (wrong := check_account(accounts.get(account_id))) is not None:
                problem("installation_account_id", wrong[0], account_id, **wrong[1])
        period = _text(period_cell)
        if period_cell.formula:
            problem("period", "formula", period_cell.value)
        elif not period:
            problem("period", "missing_value")
        elif period not in periods:
            problem("period", "unknown_period", period)
        elif expected_period is not None and period != expected_period:
            problem("period", "period_mismatch", period, expected=expected_period)
        else:
            seen_periods.setdefault(period, row)
        quantity = parse_quantity(quantity_cell)
        if isinstance(quantity, str):
            problem("quantity", quantity, quantity_cell.value)
        if row_ok:
            assert isinstance(quantity, int)
            check.lines.append(Line(sheet.name, row, account_id, quantity))
    if len(seen_periods) > 1:
        first = sorted(seen_periods.items(), key=lambda kv: kv[1])
        check.issues.append(Issue(sheet.name, first[1][1], "period", "mixed_periods", None,
                                  {"periods": ", ".join(p for p, _ in first)}))
    elif seen_periods:
        check.period = next(iter(seen_periods))
    elif expected_period is not None:
        check.period = expected_period
    if not rows:
        check.issues.append(Issue(sheet.name, None, None, "no_rows"))
    check.total = sum(line.quantity for line in check.lines)
    if check.period is not None:
        have = available.get(check.period, 0)
        if check.total > have:
            check.issues.append(Issue(sheet.name, None, "quantity", "exceeds_available", check.total,
                                      {"total": check.total, "available": have, "account": source_account}))
    return check


def validate_proportional(sheet: SheetData, accounts: Mapping[str, AccountView], *, budget: int, national: int,
                          available: int, source_account: str) -> TableCheck:
    """The ``proportional`` method: shares of ``budget`` by consumption over ``national`` (hundredths)."""
    check = TableCheck()
    _, columns, rows, issues = _map_headers(sheet, PROPORTIONAL_COLUMNS)
    check.issues.extend(issues)
    if issues:
        return check
    seen: dict[str, int] = {}
    participants: list[tuple[Participant, int, str | None]] = []
    for row, cells in rows:
        row_ok = True

        def problem(column: str, code: str, value: Any = None, row: int = row, **params: Any) -> None:
            nonlocal row_ok
            row_ok = False
            check.issues.append(Issue(sheet.name, row, column, code, value, params))

        id_cell = _cell(cells, columns["id"])
        participant_id = _text(id_cell)
        eligible = parse_eligible(_cell(cells, columns["eligible"]))
        if isinstance(eligible, str):
            problem("eligible", eligible, _cell(cells, columns["eligible"]).value)
        if id_cell.formula:
            problem("id", "formula", id_cell.value)
        elif not participant_id:
            problem("id", "missing_value")
        elif participant_id in seen:
            problem("id", "duplicate_row", participant_id, first_row=seen[participant_id])
        else:
            seen[participant_id] = row
            if eligible is True and (wrong := check_account(accounts.get(participant_id))) is not None:
                problem("id", wrong[0], participant_id, **wrong[1])
        consumption_cell = _cell(cells, columns["consumption_mwh"])
        consumption: int | None = None
        if consumption_cell.formula:
            problem("consumption_mwh", "formula", consumption_cell.value)
        elif consumption_cell.blank:
            problem("consumption_mwh", "missing_value")
        else:
            try:
                consumption = parse_hundredths(consumption_cell.value)
            except ConsumptionError as exc:
                problem("consumption_mwh", exc.code, consumption_cell.value)
        reason_cell = _cell(cells, columns.get("reason"))
        reason = _text(reason_cell) or None
        if row_ok:
            assert consumption is not None and isinstance(eligible, bool)
            participants.append((Participant(participant_id, consumption, eligible), row, reason))
    if not rows:
        check.issues.append(Issue(sheet.name, None, None, "no_rows"))
    eligible_total = sum(p.consumption for p, _, _ in participants if p.eligible)
    if eligible_total > national:
        check.issues.append(Issue(sheet.name, None, "consumption_mwh", "exceeds_national", eligible_total,
                                  {"eligible": eligible_total / 100, "national": national / 100}))
        return check
    if budget > available:
        check.issues.append(Issue(sheet.name, None, None, "exceeds_available", budget,
                                  {"total": budget, "available": available, "account": source_account}))
    result = proportional_shares(budget, national, [p for p, _, _ in participants])
    check.lines = [Line(sheet.name, row, p.id, result.shares[p.id], p.consumption, p.eligible, reason)
                   for p, row, reason in participants]
    check.total = result.allocated
    check.remainder = result.remainder
    check.eligible_consumption = result.eligible_consumption
    return check
