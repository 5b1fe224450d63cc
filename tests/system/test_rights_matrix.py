"""The rights matrix: `rights_matrix.csv` is written by hand (route, method, role, allowed), never generated
from the code. Every route the gateway publishes must be in it, and every row must hold through the
gateway: "no" is 401 for an anonymous caller and 403 for a signed-in one; "yes" is anything else. Dummy
identifiers and empty bodies make every allowed call stop at 404 or 422, so the run changes nothing."""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from pathlib import Path
from uuid import uuid4

import pytest

pytestmark = [pytest.mark.system, pytest.mark.integration]
MATRIX = Path(__file__).with_name("rights_matrix.csv")
ROWS = list(csv.DictReader(MATRIX.open()))
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def concrete(route: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: "999999999" if m.group(1).endswith("letter_id") else str(uuid4()), route)


def test_the_matrix_is_well_formed():
    assert {r["allowed"] for r in ROWS} <= {"yes", "no"}
    roles_per_route = defaultdict(set)
    for row in ROWS:
        roles_per_route[(row["route"], row["method"])].add(row["role"])
    every_role = {"anonymous", "authority", "authority-readonly", "administrator", "installation", "verifier",
                  "intermediary"}
    incomplete = {k: every_role - v for k, v in roles_per_route.items() if v != every_role}
    assert not incomplete, f"routes without a row for every role: {incomplete}"


async def test_every_published_route_is_in_the_matrix(system, http):
    document = (await http.get(f"{system.gateway_url}/openapi.json")).json()
    assert not document.get("x-missing-services"), document.get("x-missing-services")
    published = {(path, method.upper()) for path, item in document["paths"].items()
                 for method in item if method in HTTP_METHODS}
    in_matrix = {(r["route"], r["method"]) for r in ROWS}
    assert published - in_matrix == set(), "routes missing from rights_matrix.csv"
    assert in_matrix - published == set(), "rows for routes the gateway does not publish"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['method']} {r['route']} as {r['role']}")
async def test_rights(system, http, token_for, row):
    headers = {"Accept-Language": "en"}
    if row["role"] != "anonymous":
        headers["Authorization"] = f"Bearer {token_for(str(uuid4()), row['role'])}"
    body = {} if row["method"] in ("POST", "PUT", "PATCH") else None
    answer = await http.request(row["method"], f"{system.gateway_url}{concrete(row['route'])}", headers=headers,
                                json=body)
    refused = 401 if row["role"] == "anonymous" else 403
    if row["allowed"] == "yes":
        assert answer.status_code not in (401, 403), answer.text
    else:
        assert answer.status_code == refused, answer.text
        assert answer.headers["content-type"] == "application/problem+json"


