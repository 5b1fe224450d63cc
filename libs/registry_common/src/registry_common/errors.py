"""Errors: one catalogue of stable codes, each with its HTTP status and a message in Spanish and English,
rendered as RFC 9457 problem+json in the language the client asks for (``Accept-Language``).

Services add their own codes with :func:`register_errors`; a code is never renamed or reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry_common.context import correlation_id_var, request_id_var

PROBLEM_JSON = "application/problem+json"
LANGUAGES = ("es", "en")
DEFAULT_LANGUAGE = "es"
log = logging.getLogger("registry.errors")


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    es: str
    en: str

    def message(self, language: str, params: dict[str, Any]) -> str:
        template = self.es if language == "es" else self.en
        try:
            return template.format(**params)
        except (KeyError, IndexError):
            return template


CATALOGUE: dict[str, ErrorSpec] = {}


def register_errors(entries: dict[str, tuple[int, str, str]]) -> None:
    """Add codes: ``{code: (status, spanish, english)}``. Registering a code twice with a different
    meaning is a programming error."""
    for code, (status, es, en) in entries.items():
        spec = ErrorSpec(status, es, en)
        if CATALOGUE.get(code, spec) != spec:
            raise ValueError(f"error code {code!r} already registered differently")
        CATALOGUE[code] = spec


register_errors(
    {
        "request.invalid": (422, "La solicitud no es válida.", "The request is not valid."),
        "request.malformed_json": (422, "El cuerpo no es JSON válido.", "The body is not valid JSON."),
        "request.not_found": (404, "El recurso no existe.", "The resource does not exist."),
        "request.method_not_allowed": (405, "Método no permitido.", "Method not allowed."),
        "request.conflict": (409, "La solicitud entra en conflicto con el estado actual.",
                             "The request conflicts with the current state."),
        "request.idempotency_key_required": (
            428, "Falta el encabezado Idempotency-Key.", "The Idempotency-Key header is required."),
        "request.idempotency_key_reused": (
            422, "La Idempotency-Key ya se usó con otra solicitud.",
            "The Idempotency-Key was already used with a different request."),
        "auth.required": (401, "Se requiere iniciar sesión.", "Sign-in is required."),
        "auth.token_invalid": (401, "El token no es válido.", "The token is not valid."),
        "auth.token_expired": (401, "El token expiró.", "The token has expired."),
        "auth.forbidden": (403, "No tiene permiso para esta operación (se requiere: {required}).",
                           "You are not allowed to do this (requires: {required})."),
        "approval.not_found": (404, "La aprobación no existe.", "The approval does not exist."),
        "approval.self_approval": (
            403, "No puede aprobar una solicitud que usted inició.",
            "You cannot approve a request you initiated."),
        "approval.wrong_role": (403, "Su rol no puede decidir esta aprobación.",
                                "Your role cannot decide this approval."),
        "approval.payload_mismatch": (
            409, "El contenido aprobado no coincide con el solicitado.",
            "The approved content does not match the request."),
        "approval.expired": (409, "La aprobación expiró.", "The approval has expired."),
        "approval.not_pending": (409, "La aprobación ya fue decidida ({state}).",
                                 "The approval was already decided ({state})."),
        "dead_letter.not_found": (404, "El mensaje no existe en la cola de errores.",
                                  "The dead letter does not exist."),
        "dead_letter.not_replayable": (409, "El mensaje ya fue reprocesado ({state}).",
                                       "The dead letter was already replayed ({state})."),
        "clock.control_disabled": (404, "El control del reloj no está habilitado.",
                                   "Clock control is not enabled."),
        "clock.backwards": (409, "El reloj del programa solo puede avanzar.",
                            "The programme clock can only move forward."),
        "internal.error": (500, "Error interno. Se registró con el identificador de solicitud.",
                           "Internal error. It was logged with the request id."),
        "service.unavailable": (503, "Servicio no disponible temporalmente.",
                                "Service temporarily unavailable."),
    }
)


class RegistryError(Exception):
    """An error with a stable code from the catalogue. ``field`` names the input at fault."""

    def __init__(self, code: str, *, field: str | None = None, status: int | None = None, **params: Any):
        if code not in CATALOGUE:
            raise KeyError(f"unknown error code {code!r}: register it first")
        super().__init__(code)
        self.code = code
        self.field = field
        self.status = status or CATALOGUE[code].status
        self.params = params


def negotiate_language(accept_language: str | None) -> str:
    """The first supported language in the header by quality; Spanish when none is named."""
    if not accept_language:
        return DEFAULT_LANGUAGE
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")):
        tag, *parameters = part.strip().split(";")
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        primary = tag.strip().lower().split("-")[0]
        if primary in LANGUAGES and quality > 0:
            ranked.append((-quality, position, primary))
    return sorted(ranked)[0][2] if ranked else DEFAULT_LANGUAGE


def problem_body(
    code: str, language: str, *, status: int | None = None, instance: str | None = None,
    errors: list[dict[str, Any]] | None = None, field: str | None = None, **params: Any,
) -> dict[str, Any]:
    spec = CATALOGUE[code]
    body: dict[str, Any] = {
        "type": f"https://registro.semarnat.gob.mx/problems/{code}",
        "title": spec.message(language, params),
        "status": status or spec.status,
        "code": code,
        "detail": spec.message(language, params),
    }
    if instance:
        body["instance"] = instance
    if field:
        body["field"] = field
        errors = [{"field": field, "code": code, "message": body["detail"]}, *(errors or [])]
    if errors:
        body["errors"] = errors
    if request_id := request_id_var.get():
        body["request_id"] = request_id
    if correlation_id := correlation_id_var.get():
        body["correlation_id"] = correlation_id
    return body


def problem_response(request: Request, code: str, **kwargs: Any) -> JSONResponse:
    language = negotiate_language(request.headers.get("accept-language"))
    body = problem_body(code, language, instance=request.url.path, **kwargs)
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_JSON,
                        headers={"Content-Language": language})


_VALIDATION_MESSAGES = {
    "missing": ("Campo obligatorio.", "Field required."),
    "extra_forbidden": ("Campo no permitido.", "Unknown field."),
    "json_invalid": ("JSON mal formado.", "Malformed JSON."),
}
_INVALID_VALUE = ("Valor no válido: {detail}", "Invalid value: {detail}")


def _field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in {"body", "query", "path", "header"}:
        parts = parts[1:] or parts
    return ".".join(parts)


async def _on_registry_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RegistryError)
    return problem_response(request, exc.code, status=exc.status, field=exc.field, **exc.params)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    language = negotiate_language(request.headers.get("accept-language"))
    errors = []
    malformed = False
    for err in exc.errors():
        kind = str(err.get("type", "invalid"))
        malformed = malformed or kind == "json_invalid"
        es, en = _VALIDATION_MESSAGES.get(kind, _INVALID_VALUE)
        errors.append({
            "field": "body" if kind == "json_invalid" else _field_name(err.get("loc", ())),
            "code": kind,
            "message": (es if language == "es" else en).format(detail=err.get("msg", "")),
        })
    code = "request.malformed_json" if malformed else "request.invalid"
    response = problem_response(request, code, errors=errors)
    return response


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "request.not_found", 405: "request.method_not_allowed", 401: "auth.required",
            403: "auth.forbidden", 409: "request.conflict"}.get(exc.status_code, "request.invalid")
    response = problem_response(request, code, status=exc.status_code, required="-")
    response.headers.update(exc.headers or {})
    return response


def _refused_by_the_database(exc: BaseException) -> bool:
    """A value PostgreSQL cannot take (SQLSTATE class 22, "data exception": a NUL character, a number out of
    range, text that is not a number or date) or that asyncpg cannot encode: the request's fault."""
    from asyncpg.exceptions import DataError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DataError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    if _refused_by_the_database(exc):
        log.info("a value of %s %s was refused by the database: %s", request.method, request.url.path, exc)
        return problem_response(request, "request.invalid")
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(request, "internal.error")


async def _on_database_error(request: Request, exc: Exception) -> JSONResponse:
    """Handled here (not as a 500 by the outermost middleware, which re-raises and so drops the keep-alive
    connection the gateway would use next): a value the database refused is the request's fault."""
    if _refused_by_the_database(exc):
        log.info("a value of %s %s was refused by the database: %s", request.method, request.url.path, exc)
        return problem_response(request, "request.invalid")
    raise exc


def install_error_handlers(app: FastAPI) -> None:
    from asyncpg.exceptions import DataError
    from sqlalchemy.exc import DBAPIError

    app.add_exception_handler(RegistryError, _on_registry_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(DataError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)
