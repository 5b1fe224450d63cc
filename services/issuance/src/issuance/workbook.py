"""Reading an uploaded .xlsx safely, and writing the template and the results.

Before openpyxl touches the file: its size, that it is a zip holding a workbook, and the total
uncompressed size of its parts (a zip bomb is refused from the zip's directory, nothing inflated).
openpyxl then reads it in read-only mode, formulas kept as formulas (never evaluated), stopping at the
row limit."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterable, Sequence
from typing import Any

from openpyxl import Workbook, load_workbook

from issuance.domain.allocation_table import TEMPLATE_HEADERS, Cell, SheetData

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class WorkbookRefused(Exception):
    def __init__(self, code: str, **params: Any):
        super().__init__(code)
        self.code, self.params = code, params


def check_container(data: bytes, *, max_bytes: int, max_uncompressed: int) -> None:
    if not data:
        raise WorkbookRefused("allocation.empty_file")
    if len(data) > max_bytes:
        raise WorkbookRefused("allocation.file_too_large", limit=max_bytes)
    buffer = io.BytesIO(data)
    if not zipfile.is_zipfile(buffer):
        raise WorkbookRefused("allocation.not_xlsx")
    try:
        with zipfile.ZipFile(buffer) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise WorkbookRefused("allocation.not_xlsx") from exc
    if sum(m.file_size for m in members) > max_uncompressed:
        raise WorkbookRefused("allocation.uncompressed_too_large", limit=max_uncompressed)
    names = {m.filename for m in members}
    if "[Content_Types].xml" not in names or not any(n.startswith("xl/workbook") for n in names):
        raise WorkbookRefused("allocation.not_xlsx")


def read_first_sheet(data: bytes, *, max_bytes: int, max_uncompressed: int, max_rows: int) -> SheetData:
    """The first worksheet's rows (header included), blank trailing cells kept as blank."""
    check_container(data, max_bytes=max_bytes, max_uncompressed=max_uncompressed)
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=False, keep_links=False)
    except Exception as exc:  # openpyxl raises many kinds for a damaged file
        raise WorkbookRefused("allocation.unreadable") from exc
    try:
        if not book.worksheets:
            raise WorkbookRefused("allocation.unreadable")
        sheet = book.worksheets[0]
        rows: list[tuple[int, list[Cell]]] = []
        data_rows = 0
        try:
            for number, row in enumerate(sheet.iter_rows(), start=1):
                cells = [Cell(c.value, getattr(c, "data_type", None) == "f") for c in row]
                if all(c.blank for c in cells):
                    continue
                rows.append((getattr(row[0], "row", None) or number, cells))
                data_rows += 1
                if data_rows > max_rows + 1:  # + the header row
                    raise WorkbookRefused("allocation.too_many_rows", limit=max_rows)
        except WorkbookRefused:
            raise
        except Exception as exc:
            raise WorkbookRefused("allocation.unreadable") from exc
        return SheetData(name=sheet.title, rows=rows)
    finally:
        book.close()


def write_xlsx(sheet_title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    book = Workbook(write_only=True)
    sheet = book.create_sheet(sheet_title)
    sheet.append(list(headers))
    for row in rows:
        sheet.append(list(row))
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def write_csv(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def template(method: str) -> bytes:
    """An empty allocation table: the headers of ``method`` (``table`` or ``proportional``)."""
    return write_xlsx("asignacion" if method == "table" else "participantes", TEMPLATE_HEADERS[method], [])
