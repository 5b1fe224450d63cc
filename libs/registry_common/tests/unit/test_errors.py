"""registry_common.errors: language negotiation, problem+json bodies, the code catalogue, and the
exception handlers seen through a tiny FastAPI app (in memory, no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

from registry_common.context import correlation_id_var, request_id_var
from registry_common.errors import (
    CATALOGUE,
    PROBLEM_JSON,
    RegistryError,
    install_error_handlers,
    negotiate_language,
    problem_body,
    register_errors,
)

SECRET = "s3cr3t-connection-string-do-not-leak"


# negotiate_language -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "es"),
        ("", "es"),
        ("en", "en"),
        ("es", "es"),
        ("EN", "en"),
        ("en-US", "en"),
        ("es-MX", "es"),
        ("es-MX,es;q=0.9,en;q=0.8", "es"),
        ("en-GB,en;q=0.9,es;q=0.5", "en"),
        ("es;q=0.5, en;q=0.8", "en"),
        ("en;q=0.2, es-MX;q=0.7", "es"),
        ("fr-FR, fr;q=0.9, en;q=0.8", "en"),  # unsupported first choices are skipped
        ("fr, de", "es"),  # nothing supported: Spanish
        ("*", "es"),
        ("en;q=0", "es"),  # q=0 means "not acceptable"
        ("en;q=0, es;q=0", "es"),
        ("en;q=abc", "es"),  # an unreadable quality counts as zero
        ("en;q=0.5, es;q=0.5", "en"),  # equal quality: the first named wins
        ("es;q=0.5, en;q=0.5", "es"),
    ],
)
def test_negotiate_language(header: str | None, expected: str) -> None:
    assert negotiate_language(header) == expected


# problem_body -------------------------------------------------------------------------------------
def test_problem_body_has_the_rfc9457_fields_in_spanish() -> None:
    body = problem_body("approval.expired", "es")
    assert body["type"] == "https://registro.semarnat.gob.mx/problems/approval.expired"
    assert body["title"] == "La aprobación expiró."
    assert body["detail"] == "La aprobación expiró."
    assert body["status"] == 409
    assert body["code"] == "approval.expired"
    assert "errors" not in body
    assert "field" not in body
    assert "instance" not in body


def test_problem_body_in_english_with_parameters() -> None:
    body = problem_body("approval.not_pending", "en", state="approved")
    assert body["detail"] == "The approval was already decided (approved)."
    spanish = problem_body("approval.not_pending", "es", state="rejected")
    assert spanish["detail"] == "La aprobación ya fue decidida (rejected)."


def test_problem_body_with_missing_parameter_keeps_the_template() -> None:
    body = problem_body("auth.forbidden", "en")
    assert body["detail"] == "You are not allowed to do this (requires: {required})."


def test_problem_body_status_override_and_instance() -> None:
    body = problem_body("request.invalid", "en", status=400, instance="/api/v1/things")
    assert body["status"] == 400
    assert body["instance"] == "/api/v1/things"


def test_problem_body_field_becomes_the_first_error() -> None:
    other = {"field": "quantity", "code": "int_parsing", "message": "bad"}
    body = problem_body("approval.payload_mismatch", "en", field="payload_hash", errors=[other])
    assert body["field"] == "payload_hash"
    assert body["errors"] == [
        {"field": "payload_hash", "code": "approval.payload_mismatch",
         "message": "The approved content does not match the request."},
        other,
    ]


def test_problem_body_field_alone_gives_a_one_item_errors_list() -> None:
    body = problem_body("clock.backwards", "es", field="programme_now")
    assert body["errors"] == [
        {"field": "programme_now", "code": "clock.backwards",
         "message": "El reloj del programa solo puede avanzar."}
    ]


def test_problem_body_carries_request_and_correlation_ids() -> None:
    request_token = request_id_var.set("req-123")
    correlation_token = correlation_id_var.set("flow-9")
    try:
        body = problem_body("request.conflict", "en")
    finally:
        request_id_var.reset(request_token)
        correlation_id_var.reset(correlation_token)
    assert body["request_id"] == "req-123"
    assert body["correlation_id"] == "flow-9"
    assert "request_id" not in problem_body("request.conflict", "en")


# The catalogue ------------------------------------------------------------------------------------
def test_registry_error_takes_status_from_the_catalogue() -> None:
    exc = RegistryError("approval.wrong_role", field="role", extra="x")
    assert exc.code == "approval.wrong_role"
    assert exc.status == 403
    assert exc.field == "role"
    assert exc.params == {"extra": "x"}
    assert RegistryError("approval.wrong_role", status=418).status == 418


def test_registry_error_with_an_unknown_code_raises_key_error() -> None:
    with pytest.raises(KeyError, match="no.such.code"):
        RegistryError("no.such.code")


@pytest.fixture
def scratch_code() -> Iterator[str]:
    code = "unit_test.scratch_code"
    CATALOGUE.pop(code, None)
    yield code
    CATALOGUE.pop(code, None)


def test_register_errors_adds_a_code(scratch_code: str) -> None:
    register_errors({scratch_code: (418, "Soy una tetera.", "I am a teapot.")})
    assert RegistryError(scratch_code).status == 418
    assert problem_body(scratch_code, "en")["detail"] == "I am a teapot."


def test_register_errors_accepts_the_identical_definition_again(scratch_code: str) -> None:
    register_errors({scratch_code: (418, "Soy una tetera.", "I am a teapot.")})
    register_errors({scratch_code: (418, "Soy una tetera.", "I am a teapot.")})
    assert CATALOGUE[scratch_code].status == 418


@pytest.mark.parametrize(
    "redefinition",
    [
        (409, "Soy una tetera.", "I am a teapot."),
        (418, "Otra cosa.", "I am a teapot."),
        (418, "Soy una tetera.", "Something else."),
    ],
)
def test_register_errors_refuses_a_different_redefinition(
    scratch_code: str, redefinition: tuple[int, str, str]
) -> None:
    register_errors({scratch_code: (418, "Soy una tetera.", "I am a teapot.")})
    with pytest.raises(ValueError, match=scratch_code):
        register_errors({scratch_code: redefinition})
    assert CATALOGUE[scratch_code].status == 418
    assert CATALOGUE[scratch_code].en == "I am a teapot."


def test_register_errors_refuses_redefining_a_chassis_code() -> None:
    before = CATALOGUE["internal.error"]
    with pytest.raises(ValueError):
        register_errors({"internal.error": (500, "Otro.", "Other.")})
    assert CATALOGUE["internal.error"] == before


# Through an app -----------------------------------------------------------------------------------
class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    quantity: int


def build_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/items")
    async def create_item(item: Item) -> dict[str, object]:
        return {"name": item.name, "quantity": item.quantity}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET)

    @app.get("/decided")
    async def decided() -> None:
        raise RegistryError("approval.not_pending", field="approval_id", state="approved")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: Starlette re-raises an unhandled exception after the 500 response
    # has been sent; the client must see the response, as a real server's client would.
    transport = httpx.ASGITransport(app=build_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://registry.test") as http:
        yield http


def fields_of(body: dict[str, object]) -> list[object]:
    errors = body.get("errors")
    assert isinstance(errors, list), body
    return [e["field"] for e in errors]


async def test_valid_request_passes(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "EUA", "quantity": 3})
    assert response.status_code == 200
    assert response.json() == {"name": "EUA", "quantity": 3}


async def test_malformed_json_is_request_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", content=b'{"name": "EUA", ',
                                 headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["code"] == "request.malformed_json"
    assert body["status"] == 422
    assert body["detail"] == "El cuerpo no es JSON válido."
    assert [e["code"] for e in body["errors"]] == ["json_invalid"]


async def test_unknown_field_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "EUA", "quantity": 3, "colour": "green"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "request.invalid"
    assert fields_of(body) == ["colour"]
    assert body["errors"][0]["code"] == "extra_forbidden"
    assert body["errors"][0]["message"] == "Campo no permitido."


async def test_wrong_type_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "EUA", "quantity": "three"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "request.invalid"
    assert fields_of(body) == ["quantity"]
    assert body["errors"][0]["code"] == "int_parsing"


async def test_missing_field_is_named(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"quantity": 1}, headers={"accept-language": "en"})
    body = response.json()
    assert response.status_code == 422
    assert fields_of(body) == ["name"]
    assert body["errors"][0]["message"] == "Field required."


async def test_problem_json_content_type_and_instance(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "EUA"})
    assert response.headers["content-type"].split(";")[0] == PROBLEM_JSON
    assert response.json()["instance"] == "/items"


async def test_spanish_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "EUA", "quantity": 1, "x": 1})
    assert response.headers["content-language"] == "es"
    body = response.json()
    assert body["detail"] == "La solicitud no es válida."
    assert body["title"] == "La solicitud no es válida."


async def test_english_when_asked(client: httpx.AsyncClient) -> None:
    response = await client.post("/items", json={"name": "EUA", "quantity": 1, "x": 1},
                                 headers={"Accept-Language": "en"})
    assert response.headers["content-language"] == "en"
    body = response.json()
    assert body["detail"] == "The request is not valid."
    assert body["errors"][0]["message"] == "Unknown field."


async def test_regional_english_and_unsupported_language(client: httpx.AsyncClient) -> None:
    english = await client.post("/items", json={}, headers={"Accept-Language": "en-US,en;q=0.9"})
    assert english.json()["detail"] == "The request is not valid."
    french = await client.post("/items", json={}, headers={"Accept-Language": "fr-FR"})
    assert french.json()["detail"] == "La solicitud no es válida."


async def test_unknown_route_is_problem_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/nowhere", headers={"Accept-Language": "en"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["code"] == "request.not_found"
    assert body["status"] == 404
    assert body["detail"] == "The resource does not exist."


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.delete("/items")
    assert response.status_code == 405
    assert response.json()["code"] == "request.method_not_allowed"


async def test_registry_error_is_rendered_with_its_field_and_params(client: httpx.AsyncClient) -> None:
    response = await client.get("/decided", headers={"Accept-Language": "en"})
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "approval.not_pending"
    assert body["detail"] == "The approval was already decided (approved)."
    assert body["field"] == "approval_id"
    assert fields_of(body) == ["approval_id"]


async def test_unexpected_exception_is_500_without_leaking(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/boom", headers={"Accept-Language": "en"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith(PROBLEM_JSON)
    body = response.json()
    assert body["code"] == "internal.error"
    assert body["status"] == 500
    assert SECRET not in response.text
    assert "RuntimeError" not in response.text
    # ... but it is logged for the operators.
    logged = [r for r in caplog.records if r.name == "registry.errors" and r.exc_info]
    assert logged and str(logged[0].exc_info[1]) == SECRET


async def test_method_not_allowed_keeps_the_allow_header(client: httpx.AsyncClient) -> None:
    response = await client.delete("/items")
    assert response.headers.get("allow") == "POST"
