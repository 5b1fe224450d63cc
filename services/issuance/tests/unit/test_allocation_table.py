"""Validation of allocation tables and the safe reading of .xlsx files."""

from __future__ import annotations

import io
import zipfile

import pytest
from openpyxl import Workbook

from issuance.domain.allocation_table import AccountView, validate_proportional, validate_table
from issuance.workbook import WorkbookRefused, read_first_sheet, template

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_uncompressed": 100 * 1024 * 1024, "max_rows": 20_000}
ACCOUNTS = {a.id: a for a in [AccountView("CEN-1", "central", "active"), AccountView("CEN-2", "central", "active"),
                              AccountView("CEN-S", "central", "suspended"), AccountView("CEN-C", "central", "closed"),
                              AccountView("TRD-1", "trading", "active")]}
PERIODS = {"2021": 2021, "2022": 2022}


def xlsx(rows: list[list[object]], title: str = "Hoja1") -> bytes:
    book = Workbook()
    sheet = book.active
    sheet.title = title
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def check(rows: list[list[object]], available: int = 10_000):
    sheet = read_first_sheet(xlsx(rows), **LIMITS)
    return validate_table(sheet, ACCOUNTS, PERIODS, {"2021": available, "2022": available}, "SYS-CAP")


def codes(result) -> set[tuple[int | None, str]]:
    return {(i.row, i.code) for i in result.issues}


def test_a_good_table_with_spanish_headers_blank_rows_and_spaces():
    result = check([["Cuenta instalación", "Periodo", "Cantidad"], [" CEN-1 ", 2021, 100], [None, None, None],
                    ["CEN-2", "2021", " 1,000 "]])
    assert result.ok, result.issues
    assert [(line.account_id, line.quantity, line.row) for line in result.lines] == [("CEN-1", 100, 2),
                                                                                      ("CEN-2", 1000, 4)]
    assert result.period == "2021" and result.total == 1100


def test_every_bad_row_is_named_by_sheet_and_row():
    result = check([["installation_account_id", "period", "quantity"],
                    ["NOPE", 2021, 10],  # 2 unknown
                    ["CEN-S", 2021, 10],  # 3 suspended
                    ["CEN-C", 2021, 10],  # 4 closed
                    ["CEN-1", 2021, 0],  # 5 zero
                    ["CEN-2", 2021, -5],  # 6 negative
                    ["TRD-1", 2021, 1.5],  # 7 not an installation + fractional
                    ["CEN-1", 2021, 10],  # 8 duplicate of row 5
                    ["CEN-X", 2021, "=1+1"],  # 9 formula (and unknown)
                    ["CEN-Y", 2021, "ten"],  # 10 not a number
                    ["CEN-Z", 1999, 5]])  # 11 unknown period
    found = codes(result)
    for expected in [(2, "unknown_installation"), (3, "account_not_active"), (4, "account_not_active"), (5, "zero"),
                     (6, "negative"), (7, "not_an_installation"), (7, "fractional"), (8, "duplicate_row"),
                     (9, "formula"), (10, "not_a_number"), (11, "unknown_period")]:
        assert expected in found, (expected, found)
    assert all(i.sheet == "Hoja1" for i in result.issues)


def test_total_above_what_the_cap_account_holds():
    result = check([["installation_account_id", "period", "quantity"], ["CEN-1", 2021, 600], ["CEN-2", 2021, 500]],
                   available=1000)
    assert (None, "exceeds_available") in codes(result)


def test_wrong_headers_and_mixed_periods():
    assert {i.code for i in check([["account", "year", "amount"], ["CEN-1", 2021, 1]]).issues} == {"missing_column"}
    mixed = check([["installation_account_id", "period", "quantity"], ["CEN-1", 2021, 1], ["CEN-2", 2022, 1]])
    assert "mixed_periods" in {i.code for i in mixed.issues}


def test_proportional_table():
    sheet = read_first_sheet(xlsx([["id", "consumo_mwh", "elegible", "motivo"], ["CEN-1", "100.25", "sí", None],
                                   ["CEN-2", 50, "no", "behind on fees"], ["NOT-REGISTERED", "10.00", "no", "x"]]),
                             **LIMITS)
    result = validate_proportional(sheet, ACCOUNTS, budget=1000, national=100_000, available=1000,
                                   source_account="SYS-CAP")
    assert result.ok, result.issues
    assert {line.account_id: line.quantity for line in result.lines} == {"CEN-1": 100, "CEN-2": 0,
                                                                         "NOT-REGISTERED": 0}
    assert result.remainder == 900


def test_proportional_refusals():
    sheet = read_first_sheet(xlsx([["id", "consumption_mwh", "eligible"], ["CEN-1", "1.234", "yes"],
                                   ["CEN-S", "1", "yes"], ["CEN-2", "1", "maybe"]]), **LIMITS)
    result = validate_proportional(sheet, ACCOUNTS, budget=10, national=100_000, available=5, source_account="SYS-CAP")
    assert {(i.row, i.code) for i in result.issues} >= {(2, "too_many_decimals"), (3, "account_not_active"),
                                                        (4, "invalid_eligible"), (None, "exceeds_available")}


def test_not_xlsx_corrupt_and_limits():
    with pytest.raises(WorkbookRefused) as caught:
        read_first_sheet(b"installation_account_id,period,quantity\n", **LIMITS)
    assert caught.value.code == "allocation.not_xlsx"
    good = xlsx([["installation_account_id", "period", "quantity"], ["CEN-1", 2021, 1]])
    with pytest.raises(WorkbookRefused) as caught:
        read_first_sheet(good[: len(good) // 2], **LIMITS)
    assert caught.value.code in ("allocation.not_xlsx", "allocation.unreadable")
    with pytest.raises(WorkbookRefused) as caught:
        read_first_sheet(good, **{**LIMITS, "max_bytes": 100})
    assert caught.value.code == "allocation.file_too_large"
    rows = [["installation_account_id", "period", "quantity"]] + [[f"CEN-{i}", 2021, 1] for i in range(30)]
    with pytest.raises(WorkbookRefused) as caught:
        read_first_sheet(xlsx(rows), **{**LIMITS, "max_rows": 20})
    assert caught.value.code == "allocation.too_many_rows"


def test_a_zip_bomb_is_refused_before_openpyxl_opens_it():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/worksheets/sheet1.xml", b"\0" * (120 * 1024 * 1024))
    data = buffer.getvalue()
    assert len(data) < 1024 * 1024
    with pytest.raises(WorkbookRefused) as caught:
        read_first_sheet(data, **LIMITS)
    assert caught.value.code == "allocation.uncompressed_too_large"


def test_template_has_the_headers():
    sheet = read_first_sheet(template("table"), **LIMITS)
    assert [c.value for c in sheet.rows[0][1]] == ["installation_account_id", "period", "quantity"]
