"""Compliance reports as documents: the stored result rows rendered on request as JSON, CSV or PDF, in
Spanish or English (the reader's ``Accept-Language``)."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from fpdf import FPDF

COLUMNS = ("installation_account_id", "name", "status", "reason", "emissions", "carried_in", "credited", "obligation",
           "counted_allowances", "counted_offsets", "shortfall", "carried_out", "delivered", "offsets_over_limit",
           "future_vintage", "over_delivered", "cancelled", "returned", "adjusted")

LABELS = {
    "es": {"installation_account_id": "Instalación (cuenta central)", "name": "Nombre", "status": "Estado",
           "reason": "Motivo", "emissions": "Emisiones verificadas (tCO2e)", "carried_in": "Obligación arrastrada",
           "credited": "Ya contadas en años intermedios", "intermediate_year": "año intermedio",
           "obligation": "Obligación", "counted_allowances": "Derechos contados", "counted_offsets":
           "Créditos contados", "shortfall": "Faltante", "carried_out": "Arrastre al siguiente periodo",
           "delivered": "Entregadas", "offsets_over_limit": "Créditos sobre el límite", "future_vintage":
           "Añada futura", "over_delivered": "Entregadas de más", "cancelled": "Cancelados (series)",
           "returned": "Devueltas a la cuenta central", "adjusted": "Ajustes",
           "title": "Informe de cumplimiento", "period": "Periodo", "evaluated_at": "Evaluado",
           "summary": "Instalaciones: {installations}; cumplen: {compliant}; no cumplen: {non_compliant}; "
                      "unidades canceladas: {cancelled_units}; devueltas: {returned_units}",
           "compliant": "cumple", "non_compliant": "no cumple", "shortfall_reason": "faltante",
           "no_attested_report": "sin reporte verificado"},
    "en": {"installation_account_id": "Installation (central account)", "name": "Name", "status": "Status",
           "reason": "Reason", "emissions": "Verified emissions (tCO2e)", "carried_in": "Carried obligation",
           "credited": "Already counted in intermediate years", "intermediate_year": "intermediate year",
           "obligation": "Obligation", "counted_allowances": "Allowances counted", "counted_offsets":
           "Offsets counted", "shortfall": "Shortfall", "carried_out": "Carried to next period",
           "delivered": "Delivered", "offsets_over_limit": "Offsets over the limit", "future_vintage":
           "Future vintage", "over_delivered": "Over-delivered", "cancelled": "Cancelled (serials)",
           "returned": "Returned to the central account", "adjusted": "Adjustments",
           "title": "Compliance report", "period": "Period", "evaluated_at": "Evaluated",
           "summary": "Installations: {installations}; compliant: {compliant}; non-compliant: {non_compliant}; "
                      "units cancelled: {cancelled_units}; returned: {returned_units}",
           "compliant": "compliant", "non_compliant": "non-compliant", "shortfall_reason": "shortfall",
           "no_attested_report": "no attested report"},
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def serials(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Readable serial ranges (``MX-DE-2021-000000000001``…) of moved blocks."""
    out = []
    for block in blocks:
        prefix = "DE" if block["unit_type"] == "allowance" else "CC"
        for r in block["ranges"]:
            out.append({"unit_type": block["unit_type"], "vintage": block["vintage"], "start": r["start"],
                        "end": r["end"], "quantity": r["end"] - r["start"] + 1,
                        "first": f"MX-{prefix}-{block['vintage']}-{r['start']:012d}",
                        "last": f"MX-{prefix}-{block['vintage']}-{r['end']:012d}"})
    return out


def installation_line(row: Any, adjusted: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "installation_account_id": row.installation_account_id, "name": row.name,
        "delivery_account_id": row.delivery_account_id, "status": row.status, "reason": row.reason,
        "report_id": str(row.report_id) if row.report_id else None, "emissions": row.emissions,
        "carried_in": row.carried_in, "credited": row.credited, "obligation": row.obligation,
        "counted_allowances": row.counted_allowances,
        "counted_offsets": row.counted_offsets, "counted": row.counted, "shortfall": row.shortfall,
        "carried_out": row.carried_out, "delivered": row.delivered, "offsets_over_limit": row.offsets_over_limit,
        "future_vintage": row.future_vintage, "over_delivered": row.over_delivered, "returned": row.returned,
        "cancelled_serials": serials(row.cancelled_blocks), "returned_serials": serials(row.returned_blocks),
        "ledger_refusals": row.refusals, "cancellation_complete": row.lines_pending == 0, "adjustments": adjusted,
    }


def _header(evaluation: Any) -> dict[str, Any]:
    return {"period": evaluation.period, "intermediate_year": evaluation.intermediate_year,
            "deadline_at": _iso(evaluation.deadline_at), "evaluation_id": str(evaluation.id), "state": evaluation.state,
            "trigger": evaluation.trigger, "requested_at": _iso(evaluation.requested_at),
            "evaluated_at": _iso(evaluation.evaluated_at), "completed_at": _iso(evaluation.completed_at),
            "rules": evaluation.rules}


def system_report(evaluation: Any, rows: list[Any], adjusted: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    lines = [installation_line(r, adjusted.get(r.installation_account_id, [])) for r in rows]
    compliant = sum(1 for line in lines if line["status"] == "compliant")
    return {**_header(evaluation), "summary": {
        "installations": len(lines), "compliant": compliant, "non_compliant": len(lines) - compliant,
        "obligation": sum(line["obligation"] for line in lines),
        "shortfall": sum(line["shortfall"] for line in lines),
        "cancelled_units": evaluation.cancelled_units, "returned_units": evaluation.returned_units},
        "installations": lines}


def installation_report(evaluation: Any, row: Any, adjusted: list[dict[str, Any]]) -> dict[str, Any]:
    return {**_header(evaluation), "installation": installation_line(row, adjusted)}


def _cells(line: dict[str, Any], language: str) -> list[str]:
    labels = LABELS[language]
    values = {**line,
              "status": labels[line["status"]],
              "reason": {"shortfall": labels["shortfall_reason"], "no_attested_report": labels["no_attested_report"]}
              .get(line["reason"] or "", ""),
              "cancelled": "; ".join(f"{s['first']}..{s['last']} ({s['quantity']})" for s in line["cancelled_serials"]),
              "returned": "; ".join(f"{s['unit_type']} {s['vintage']}: {s['quantity']}"
                                    for s in line["returned_serials"]),
              "adjusted": "; ".join(f"{a['current']['status']} ({a['reason']})" for a in line["adjustments"])}
    return ["" if values.get(c) is None else str(values[c]) for c in COLUMNS]


def _lines(report: dict[str, Any]) -> list[dict[str, Any]]:
    return report.get("installations") or [report["installation"]]


def as_csv(report: dict[str, Any], language: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([LABELS[language][c] for c in COLUMNS])
    for line in _lines(report):
        writer.writerow(_cells(line, language))
    return buffer.getvalue()


def _latin(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


def as_pdf(report: dict[str, Any], language: str) -> bytes:
    labels = LABELS[language]
    pdf = FPDF(orientation="L", format="A4")
    year = f", {labels['intermediate_year']} {report['intermediate_year']}" if report.get("intermediate_year") else ""
    pdf.set_title(f"{labels['title']} {report['period']}{year}")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(0, 10, _latin(f"{labels['title']} - {labels['period']} {report['period']}{year}"), new_x="LMARGIN",
             new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 6, _latin(f"{labels['evaluated_at']}: {report.get('evaluated_at') or '-'}"), new_x="LMARGIN",
             new_y="NEXT")
    if "summary" in report:
        pdf.multi_cell(0, 6, _latin(labels["summary"].format(**report["summary"])), new_x="LMARGIN", new_y="NEXT")
    shown = ("installation_account_id", "name", "status", "reason", "emissions", "obligation", "counted_allowances",
             "counted_offsets", "shortfall", "carried_out")
    widths = (34, 50, 24, 34, 26, 24, 24, 22, 20, 22)
    pdf.set_font("Helvetica", "B", 7)
    for column, width in zip(shown, widths, strict=True):
        pdf.cell(width, 8, _latin(labels[column])[:30], border=1)
    pdf.ln()
    pdf.set_font("Helvetica", "", 7)
    for line in _lines(report):
        cells = dict(zip(COLUMNS, _cells(line, language), strict=True))
        for column, width in zip(shown, widths, strict=True):
            pdf.cell(width, 6, _latin(cells[column])[:34], border=1)
        pdf.ln()
        if line["cancelled_serials"]:
            pdf.multi_cell(0, 5, _latin(f"  {labels['cancelled']}: {cells['cancelled']}"), new_x="LMARGIN",
                           new_y="NEXT")
    return bytes(pdf.output())
