"""The gateway: allow-list, authentication, forwarding, failures, merged OpenAPI and merged views."""

from datetime import timedelta

import pytest
from asgi_lifespan import LifespanManager

from gateway.app import create_app
from gateway.proxy import MAX_BODY_BYTES
from gateway.routes_table import ROUTES, Route, RouteTable
from gateway.security import IDENTITY_HEADER
from registry_common.settings import RegistrySettings

PROBLEM = "application/problem+json"


def header(echoed: dict, name: str) -> str | None:
    values = [v for k, v in echoed["headers"] if k == name.lower()]
    assert len(values) <= 1, values
    return values[0] if values else None


# The route table ---------------------------------------------------------------------------------
def test_prefixes_match_whole_segments_and_the_longest_wins():
    assert ROUTES.match("/api/v1/users").service == "accounts"
    assert ROUTES.match("/api/v1/users/123/deactivate").service == "accounts"
    assert ROUTES.match("/api/v1/users/").service == "accounts"
    assert ROUTES.match("/api/v1/usersx") is None
    assert ROUTES.match("/api/v1/programme/clock").service == "issuance"
    assert ROUTES.match("/api/v1/transfers/audit-log").roles == ("administrator", "authority",
                                                                  "authority-readonly")
    assert ROUTES.match("/api/v1/transfers/approvals/7/approve").roles is None
    assert ROUTES.match("/api/v1/transferss") is None  # whole segments only
    assert ROUTES.match("/api/v1/public/anything") is None
    # dot segments and empty segments never route, so no normalisation downstream can move them
    assert ROUTES.match("/api/v1/users/../accounts/audit-log") is None
    assert ROUTES.match("/api/v1/users//x") is None

    table = RouteTable([Route("/api/v1/a", "accounts"),
                        Route("/api/v1/a/b", "issuance", roles=("authority",))])
    assert table.match("/api/v1/a/b/c").service == "issuance"
    assert table.match("/api/v1/a/bc").service == "accounts"


def test_the_public_list_is_closed():
    assert ROUTES.is_public("/api/v1/auth/token") and ROUTES.is_public("/api/v1/auth/refresh")
    assert ROUTES.is_public("/api/v1/public/calendar") and ROUTES.is_public("/openapi.json")
    assert not ROUTES.is_public("/api/v1/users") and not ROUTES.is_public("/api/v1/auth/tokens")
    with pytest.raises(ValueError, match="public list is closed"):
        RouteTable([Route("/api/v1/users", "accounts", public=True)])
    with pytest.raises(ValueError, match="must be public"):
        RouteTable([Route("/api/v1/public/calendar", "auctions")])
    with pytest.raises(ValueError):
        Route("/api/v1/users/", "accounts")


def test_identity_like_headers_are_recognised():
    for name in ("x-user-id", "X-User", "x-roles", "x-role", "x-principal", "x-authenticated-user",
                 "x-forwarded-user", "x-auth-request-email", "remote-user"):
        assert IDENTITY_HEADER.match(name), name
    for name in ("x-request-id", "x-correlation-id", "authorization", "accept-language", "idempotency-key"):
        assert not IDENTITY_HEADER.match(name), name


# The allow-list at work --------------------------------------------------------------------------
async def test_a_path_outside_the_table_is_404_and_never_forwarded(harness):
    bearer = harness.bearer("u-1", "authority")
    for path in ("/api/v1/secret", "/api/v1/usersx", "/api/v1/internal/stuff", "/api/v1/public/x",
                 "/api/v1/users/%2e%2e/secret", "/"):
        answer = await harness.client.get(path, headers=bearer)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["code"] == "request.not_found"
    assert harness.calls("accounts") == []

    answer = await harness.client.get("/api/v1/users", headers=bearer)
    assert answer.status_code == 200 and answer.json()["items"][0]["id"] == "u1"
    assert [c[1] for c in harness.calls("accounts")] == ["/api/v1/users"]


async def test_public_routes_need_no_token(harness):
    answer = await harness.client.post("/api/v1/auth/token", json={"username": "ana", "password": "pw"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["access_token"] == "token-for-ana"
    for path in ("/health", "/ready", "/openapi.json", "/docs", "/docs/oauth2-redirect"):
        answer = await harness.client.get(path)
        assert answer.status_code == 200, (path, answer.text)
    health = await harness.client.get("/api/v1/health")
    assert health.status_code == 503
    assert health.json()["services"]["accounts"]["worker"]["status"] == "unreachable"
    public = await harness.client.get("/api/v1/public/calendar")  # public area: 404, not 401
    assert public.status_code == 404 and public.json()["code"] == "request.not_found"
    docs = await harness.client.get("/docs")
    assert "/openapi.json" in docs.text and "swagger-ui" in docs.text


# Authentication and roles ------------------------------------------------------------------------
async def test_tokens_are_verified_at_the_gateway(harness, other_key_token):
    cases = [
        ({}, "auth.required"),
        ({"Authorization": "Basic dXNlcjpwdw=="}, "auth.required"),
        ({"Authorization": "Bearer not-a-token"}, "auth.token_invalid"),
        ({"Authorization": f"Bearer {other_key_token('u-1', 'authority')}"}, "auth.token_invalid"),
        ({"Authorization": f"Bearer {harness.token('u-1', 'authority', typ='refresh')}"},
         "auth.token_invalid"),
        ({"Authorization": f"Bearer {harness.token('u-1', 'authority', lifetime=timedelta(seconds=-1))}"},
         "auth.token_expired"),
    ]
    for headers, code in cases:
        answer = await harness.client.get("/api/v1/users/7", headers={**headers, "Accept-Language": "en"})
        assert answer.status_code == 401, (headers, answer.text)
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["code"] == code, headers
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert answer.headers["content-language"] == "en"
    assert harness.calls("accounts") == []


async def test_a_route_with_roles_refuses_others_at_the_gateway(harness):
    installation, authority = harness.bearer("u-1", "installation"), harness.bearer("u-2", "authority")
    answer = await harness.client.get("/api/v1/accounts/audit-log", headers=installation)
    assert answer.status_code == 403 and answer.json()["code"] == "auth.forbidden"
    assert "authority" in answer.json()["detail"]
    assert harness.calls("accounts") == []  # refused here, not by the service

    answer = await harness.client.get("/api/v1/accounts/audit-log", headers=authority)
    assert answer.status_code == 200, answer.text
    assert [c[1] for c in harness.calls("accounts")] == ["/api/v1/accounts/audit-log"]

    # approvals need only a valid token at the gateway; the service decides (here it refuses)
    answer = await harness.client.get("/api/v1/accounts/approvals", headers=installation)
    assert answer.status_code == 403
    assert len(harness.calls("accounts")) == 2


# Forwarding --------------------------------------------------------------------------------------
async def test_the_request_is_forwarded_faithfully_and_identity_headers_are_stripped(harness):
    token = harness.token("u-1", "installation")
    answer = await harness.client.post(
        "/api/v1/users/a%2Fb/deactivate?x=1&y=a%20b&y=2",
        content=b'{"reason": "left the company"}',
        headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json",
            "Accept": "application/json",
            "Accept-Language": "en-GB,en;q=0.9", "Idempotency-Key": "key-1", "If-Match": '"v6"',
            "X-User-Id": "admin", "X-Roles": "authority", "X-Principal": "admin", "X-Forwarded-User": "admin",
            "Cookie": "session=abc", "X-Forwarded-For": "6.6.6.6", "X-Whatever": "1",
        },
    )
    assert answer.status_code == 201, answer.text
    echoed = answer.json()
    assert echoed["method"] == "POST"
    assert echoed["raw_path"] == "/api/v1/users/a%2Fb/deactivate"  # as received, still encoded
    assert echoed["query"] == "x=1&y=a%20b&y=2"
    assert echoed["body"] == '{"reason": "left the company"}'
    assert header(echoed, "authorization") == f"Bearer {token}"  # unchanged
    assert header(echoed, "content-type") == "application/json"
    assert header(echoed, "accept-language") == "en-GB,en;q=0.9"
    assert header(echoed, "idempotency-key") == "key-1"
    assert header(echoed, "if-match") == '"v6"'
    for stripped in ("x-user-id", "x-roles", "x-principal", "x-forwarded-user", "cookie", "x-whatever"):
        assert header(echoed, stripped) is None, stripped
    assert header(echoed, "x-forwarded-for") == "127.0.0.1"  # the caller's address, not what it claimed
    # a request id is made up when missing, sent upstream, echoed; correlation defaults to it
    request_id = answer.headers["x-request-id"]
    assert request_id and header(echoed, "x-request-id") == request_id
    assert header(echoed, "x-correlation-id") == request_id == answer.headers["x-correlation-id"]
    # the upstream's answer comes back with its own headers, only the allowed ones
    assert answer.headers["location"] == "/api/v1/users/42"
    assert answer.headers["etag"] == '"v7"'
    assert answer.headers["content-language"] == "en"
    assert "x-internal-secret" not in answer.headers and "set-cookie" not in answer.headers


async def test_given_request_and_correlation_ids_travel_unchanged(harness):
    answer = await harness.client.get("/api/v1/users/7", headers=harness.bearer(
        "u-1", **{"X-Request-ID": "req-123", "X-Correlation-ID": "transfer-9"}))
    echoed = answer.json()
    assert header(echoed, "x-request-id") == "req-123" and header(echoed, "x-correlation-id") == "transfer-9"
    assert answer.headers["x-request-id"] == "req-123" and answer.headers["x-correlation-id"] == "transfer-9"


async def test_an_oversized_body_is_refused_before_forwarding(harness):
    answer = await harness.client.post("/api/v1/users/7/notes", content=b"x" * (MAX_BODY_BYTES + 1),
                                       headers=harness.bearer("u-1"))
    assert answer.status_code == 413 and answer.json()["code"] == "gateway.payload_too_large"
    assert harness.calls("accounts") == []


async def test_own_routes_with_another_method_are_405(harness):
    answer = await harness.client.post("/api/v1/approvals", headers=harness.bearer("u-1", "authority"))
    assert answer.status_code == 405 and answer.json()["code"] == "request.method_not_allowed"


# Upstream failures -------------------------------------------------------------------------------
async def test_an_upstream_that_refuses_connections_is_503_in_the_callers_language(harness):
    bearer = harness.bearer("u-1", "authority")
    english = await harness.client.get("/api/v1/notifications/approvals",
                                       headers={**bearer, "Accept-Language": "en"})
    assert english.status_code == 503
    assert english.headers["content-type"] == PROBLEM and english.headers["content-language"] == "en"
    body = english.json()
    assert body["code"] == "gateway.upstream_unavailable"
    assert body["title"] == "The notifications service is temporarily unavailable."
    assert body["request_id"] == english.headers["x-request-id"]

    spanish = await harness.client.get("/api/v1/notifications/approvals", headers=bearer)
    assert spanish.status_code == 503 and spanish.headers["content-language"] == "es"
    assert spanish.json()["title"] == "El servicio notifications no está disponible temporalmente."


async def test_connection_errors_are_retried_once_only_when_safe(harness, faults):
    accounts = harness.transports["accounts"]
    bearer = harness.bearer("u-1")

    accounts.faults = [faults("refused")]
    answer = await harness.client.get("/api/v1/users/7", headers=bearer)
    assert answer.status_code == 200 and accounts.calls == 2

    accounts.faults, accounts.calls = [faults("refused"), faults("refused")], 0
    answer = await harness.client.get("/api/v1/users/7", headers=bearer)
    assert answer.status_code == 503 and accounts.calls == 2  # one retry, no more

    accounts.faults, accounts.calls = [faults("refused")], 0
    answer = await harness.client.post("/api/v1/users/7/deactivate", headers=bearer, json={})
    assert answer.status_code == 503 and accounts.calls == 1  # a plain POST is never retried

    accounts.faults, accounts.calls = [faults("refused")], 0
    answer = await harness.client.post("/api/v1/users/7/deactivate", json={},
                                       headers={**bearer, "Idempotency-Key": "k-2"})
    assert answer.status_code == 201 and accounts.calls == 2  # the upstream deduplicates by key
    assert header(answer.json(), "idempotency-key") == "k-2"


async def test_a_timeout_is_504_and_not_retried(harness, faults):
    accounts = harness.transports["accounts"]
    accounts.faults = [faults("timeout"), faults("timeout")]
    answer = await harness.client.get("/api/v1/users/7", headers=harness.bearer("u-1", Accept_Language="en"))
    assert answer.status_code == 504 and accounts.calls == 1
    assert answer.json()["code"] == "gateway.upstream_timeout"
    assert answer.headers["content-type"] == PROBLEM


# One OpenAPI document ----------------------------------------------------------------------------
async def test_the_merged_openapi_document(harness, faults):
    auctions = harness.transports["auctions"]
    auctions.faults = [faults("refused"), faults("refused")]
    answer = await harness.client.get("/openapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["info"] == {"title": "Registro de Emisiones — API", "version": "1"}
    assert doc["x-missing-services"] == ["auctions", "notifications"]

    paths = doc["paths"]
    assert {"/api/v1/users", "/api/v1/users/directory", "/api/v1/auth/token", "/api/v1/programme/periods",
            "/api/v1/accounts/approvals", "/api/v1/issuance/dead-letters", "/api/v1/health",
            "/api/v1/approvals", "/api/v1/dead-letters"} <= set(paths)
    assert "/api/v1/internal/stuff" not in paths and "/health" not in paths and "/openapi.json" not in paths
    assert not any(p.startswith("/api/v1/auctions/") for p in paths)

    # "Page" means two things: each service's copy is renamed and every reference follows
    schemas = doc["components"]["schemas"]
    assert "Page" not in schemas
    assert set(schemas["accounts_Page"]["properties"]) == {"items", "next_cursor"}
    assert set(schemas["issuance_Page"]["properties"]) == {"rows"}
    users_schema = paths["/api/v1/users"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert users_schema == {"$ref": "#/components/schemas/accounts_Page"}
    periods = paths["/api/v1/programme/periods"]["get"]["responses"]["200"]["content"]["application/json"]
    assert periods["schema"] == {"$ref": "#/components/schemas/issuance_Page"}
    assert schemas["Directory"]["properties"]["page"] == {"$ref": "#/components/schemas/accounts_Page"}
    # identical schemas merge under their name; unreachable ones are left out
    assert "HTTPValidationError" in schemas and "User" in schemas and "Period" in schemas
    assert "Internal" not in schemas
    refs = {r for r in _all_refs(doc)}
    assert refs and all(r.removeprefix("#/components/schemas/") in schemas for r in refs)

    # operation ids stay unique: the clashing "list" is prefixed with each service
    ids = [op["operationId"] for item in paths.values() for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids))
    assert paths["/api/v1/users"]["get"]["operationId"] == "accounts-list"
    assert paths["/api/v1/programme/periods"]["get"]["operationId"] == "issuance-list"

    # bearer security on every operation that needs it
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "The access token from POST /api/v1/auth/token."}
    assert paths["/api/v1/users"]["get"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/v1/approvals"]["get"]["security"] == [{"bearerAuth": []}]
    assert paths["/api/v1/auth/token"]["post"]["security"] == []
    assert paths["/api/v1/health"]["get"]["security"] == []
    assert "403" in paths["/api/v1/accounts/audit-log"]["get"]["responses"]

    # documents are cached; a missing service is fetched again next time
    fetched = [c for c in harness.calls("accounts") if c[1] == "/openapi.json"]
    again = (await harness.client.get("/openapi.json")).json()
    assert [c for c in harness.calls("accounts") if c[1] == "/openapi.json"] == fetched
    assert again["x-missing-services"] == ["notifications"]
    assert "/api/v1/auctions/approvals" in again["paths"]


def _all_refs(node):
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _all_refs(value)


# Merged views ------------------------------------------------------------------------------------
async def test_merged_approvals_from_every_service(harness):
    token = harness.token("u-9", "authority")
    answer = await harness.client.get("/api/v1/approvals?state=pending",
                                      headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(i["id"], i["service"]) for i in body["items"]] == [
        ("a-new", "accounts"), ("i-mid", "issuance"), ("a-old", "accounts")]
    assert body["missing_services"] == ["notifications"]
    assert body["forbidden_services"] == ["transfers"]
    for service in ("accounts", "issuance", "compliance", "auctions"):
        assert (("GET", f"/api/v1/{service}/approvals", b"state=pending&limit=100") in harness.calls(service))


async def test_merged_approvals_relay_a_refusal_from_every_service(harness):
    answer = await harness.client.get("/api/v1/approvals", headers=harness.bearer("u-1", "installation"))
    assert answer.status_code == 403 and answer.json()["code"] == "auth.forbidden"
    assert (await harness.client.get("/api/v1/approvals")).status_code == 401


async def test_merged_dead_letters_are_for_oversight_roles(harness):
    refused = await harness.client.get("/api/v1/dead-letters", headers=harness.bearer("u-1", "installation"))
    assert refused.status_code == 403 and refused.json()["code"] == "auth.forbidden"
    assert not any(c[1].endswith("/dead-letters") for c in harness.calls("accounts"))

    readonly = harness.bearer("u-2", "authority-readonly")
    answer = await harness.client.get("/api/v1/dead-letters", headers=readonly)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [(i["id"], i["service"]) for i in body["items"]] == [(1, "accounts")]
    assert body["missing_services"] == ["notifications"]


async def test_merged_view_when_no_service_answers_is_503(harness, faults):
    for transport in harness.transports.values():
        transport.faults = [faults("refused"), faults("refused")]
    answer = await harness.client.get("/api/v1/dead-letters", headers=harness.bearer("u-2", "authority"))
    assert answer.status_code == 503 and answer.json()["code"] == "service.unavailable"



async def test_the_gateway_refuses_to_start_without_the_token_key(tmp_path):
    settings = RegistrySettings(service="gateway", jwt_public_key_file=tmp_path / "absent.pem")
    with pytest.raises(RuntimeError, match="absent.pem"):
        async with LifespanManager(create_app(settings, upstreams=[])):
            pass
