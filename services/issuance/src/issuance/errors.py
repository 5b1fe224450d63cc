"""Issuance's error codes (Spanish and English), registered with the chassis catalogue."""

from registry_common.errors import register_errors

register_errors({
    "period.not_found": (404, "El periodo {period} no existe.", "Period {period} does not exist."),
    "period.exists": (409, "El periodo {period} ya existe.", "Period {period} already exists."),
    "period.invalid_dates": (422, "Fechas del periodo no válidas: {detail}.", "Invalid period dates: {detail}."),
    "cap.already_generated": (409, "El tope del periodo {period} ya se generó; use un ajuste.",
                              "The cap of period {period} was already generated; use an adjustment."),
    "cap.generation_pending": (409, "Ya hay una generación del tope pendiente de aprobación para {period}.",
                               "A cap generation for {period} is already awaiting approval."),
    "cap.unknown_reserve": (422, "La reserva {reserve} no existe.", "Reserve {reserve} does not exist."),
    "cap.nothing_to_generate": (422, "Indique un tope o una reserva mayor que cero.",
                                "Give a cap or a reserve greater than zero."),
    "cap.not_found": (404, "La generación no existe.", "The generation does not exist."),
    "allocation.not_found": (404, "La tabla de asignación no existe.", "The allocation table does not exist."),
    "allocation.file_too_large": (413, "El archivo excede {limit} bytes.", "The file exceeds {limit} bytes."),
    "allocation.uncompressed_too_large": (
        413, "El contenido descomprimido del archivo excede {limit} bytes.",
        "The file's uncompressed content exceeds {limit} bytes."),
    "allocation.too_many_rows": (413, "El archivo excede {limit} filas.", "The file exceeds {limit} rows."),
    "allocation.not_xlsx": (422, "El archivo no es un libro .xlsx.", "The file is not an .xlsx workbook."),
    "allocation.unreadable": (422, "El archivo .xlsx está dañado o no se puede leer.",
                              "The .xlsx file is corrupt or cannot be read."),
    "allocation.empty_file": (422, "El archivo está vacío.", "The file is empty."),
    "allocation.invalid_table": (422, "La tabla {table_id} tiene {count} errores; vea el informe.",
                                 "Table {table_id} has {count} errors; see the report."),
    "allocation.invalid_parameters": (422, "Parámetro no válido: {detail}.", "Invalid parameter: {detail}."),
    "allocation.wrong_state": (409, "La tabla está en estado {state}; no se puede {action}.",
                               "The table is {state}; cannot {action}."),
    "allocation.line_not_found": (404, "La tabla no tiene línea para {account}.",
                                  "The table has no line for {account}."),
    "allocation.unknown_source": (422, "La cuenta de origen {account} no es una cuenta del tope, reserva o "
                                       "asignación.", "Source account {account} is not a cap, reserve or "
                                                      "allocation account."),
    "offset.project_exists": (409, "El proyecto {project} ya existe.", "Project {project} already exists."),
    "offset.project_not_found": (404, "El proyecto {project} no existe.", "Project {project} does not exist."),
    "offset.developer_account": (422, "La cuenta {account} no es una cuenta de tenencia activa.",
                                 "Account {account} is not an active holding account."),
})
