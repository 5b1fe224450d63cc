"""One OpenAPI document for the whole public API, merged from the upstreams' documents.

Each upstream's ``/openapi.json`` is fetched on first use and cached; a service whose document could
not be fetched is tried again on the next request and meanwhile listed under ``x-missing-services``.
Only paths the route table sends to that service are kept, with the components they reach. Components
with the same name and the same content merge; different content under one name is renamed
``<service>_<Name>`` in every service using the name, with every ``$ref`` rewritten. Operation ids that
clash are prefixed with the service name. Non-public operations carry the bearer security scheme.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from gateway.proxy import send
from gateway.routes_table import RouteTable
from registry_common.errors import RegistryError

log = logging.getLogger("registry.gateway")

TITLE = "Registro de Emisiones — API"
VERSION = "1"
SECURITY_SCHEME = "bearerAuth"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
REF_PREFIX = "#/components/"
GATEWAY = "gateway"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; `code` is stable, title and detail follow Accept-Language.",
    "properties": {
        "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
        "code": {"type": "string"}, "detail": {"type": "string"}, "instance": {"type": "string"},
        "field": {"type": "string"}, "errors": {"type": "array", "items": {"type": "object"}},
        "request_id": {"type": "string"}, "correlation_id": {"type": "string"},
    },
    "required": ["type", "title", "status", "code"],
}


# Walking references ------------------------------------------------------------------------------
def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _parse_ref(ref: str) -> tuple[str, str] | None:
    if not ref.startswith(REF_PREFIX):
        return None
    kind, _, name = ref[len(REF_PREFIX):].partition("/")
    return (kind, name) if kind and name and "/" not in name else None


def _rewrite_refs(node: Any, renames: Mapping[tuple[str, str], str]) -> Any:
    if isinstance(node, dict):
        out = {key: _rewrite_refs(value, renames) for key, value in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and (parsed := _parse_ref(ref)) in renames:
            out["$ref"] = f"{REF_PREFIX}{parsed[0]}/{renames[parsed]}"  # type: ignore[index]
        return out
    if isinstance(node, list):
        return [_rewrite_refs(value, renames) for value in node]
    return node


def reachable_components(paths: dict[str, Any], components: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The components (by kind) reachable from ``paths``, transitively. Security schemes are dropped:
    the gateway declares its own."""
    kept: dict[str, dict[str, Any]] = {}
    pending = list(_refs(paths))
    while pending:
        parsed = _parse_ref(pending.pop())
        if parsed is None:
            continue
        kind, name = parsed
        if kind == "securitySchemes" or name in kept.get(kind, {}):
            continue
        definition = components.get(kind, {}).get(name)
        if definition is None:
            continue
        kept.setdefault(kind, {})[name] = definition
        pending.extend(_refs(definition))
    return kept


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# Merging -----------------------------------------------------------------------------------------
def _operations(paths: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    for path, item in paths.items():
        for method in HTTP_METHODS:
            operation = item.get(method)
            if isinstance(operation, dict):
                yield path, method, operation


def _filtered(service: str, document: dict[str, Any], table: RouteTable) -> dict[str, Any]:
    paths = document.get("paths") or {}
    if service == GATEWAY:
        return dict(paths)
    kept = {}
    for path, item in paths.items():
        route = table.match(path)
        if route is not None and route.service == service:
            kept[path] = item
    return kept


def merge_documents(documents: Mapping[str, dict[str, Any]], table: RouteTable,
                    missing: Iterable[str] = ()) -> dict[str, Any]:
    """Merge ``{service: openapi document}`` (the gateway's own under ``"gateway"``) into one."""
    parts: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
    for service, document in documents.items():
        document = copy.deepcopy(document)
        paths = _filtered(service, document, table)
        parts[service] = (paths, reachable_components(paths, document.get("components") or {}))

    # Components: one name, one meaning. A name with different meanings is prefixed everywhere.
    variants: dict[tuple[str, str], dict[str, str]] = {}
    for service, (_, components) in parts.items():
        for kind, named in components.items():
            for name, definition in named.items():
                variants.setdefault((kind, name), {})[service] = _canonical(definition)
    taken = {(kind, name) for kind, name in variants}
    renames: dict[str, dict[tuple[str, str], str]] = {service: {} for service in parts}
    for (kind, name), by_service in sorted(variants.items()):
        if len(set(by_service.values())) == 1:
            continue
        for service in by_service:
            new, n = f"{service}_{name}", 2
            while (kind, new) in taken:
                new, n = f"{service}_{name}_{n}", n + 1
            taken.add((kind, new))
            renames[service][(kind, name)] = new

    merged_paths: dict[str, Any] = {}
    merged_components: dict[str, dict[str, Any]] = {}
    owner: dict[int, str] = {}
    for service, (paths, components) in parts.items():
        mapping = renames[service]
        for path, item in _rewrite_refs(paths, mapping).items():
            if path in merged_paths:  # two services claiming one path: the route table decides
                log.warning("openapi: %s also documents %s; keeping the first", service, path)
                continue
            merged_paths[path] = item
            for _, _, operation in _operations({path: item}):
                owner[id(operation)] = service
        for kind, named in components.items():
            for name, definition in named.items():
                target = mapping.get((kind, name), name)
                merged_components.setdefault(kind, {})[target] = _rewrite_refs(definition, mapping)

    # Operation ids stay unique: a clash is prefixed with the service name.
    operations = list(_operations(merged_paths))
    counts: dict[str, int] = {}
    for _, _, operation in operations:
        if op_id := operation.get("operationId"):
            counts[op_id] = counts.get(op_id, 0) + 1
    seen: set[str] = {op_id for op_id, n in counts.items() if n == 1}
    for _, _, operation in operations:
        op_id = operation.get("operationId")
        if op_id and counts[op_id] > 1:
            new, n = f"{owner[id(operation)]}-{op_id}", 2
            while new in seen:
                new, n = f"{owner[id(operation)]}-{op_id}-{n}", n + 1
            seen.add(new)
            operation["operationId"] = new

    # Security and the problem responses the gateway itself may give.
    schemas = merged_components.setdefault("schemas", {})
    problem = "Problem"
    if problem in schemas and _canonical(schemas[problem]) != _canonical(PROBLEM_SCHEMA):
        problem = "gateway_Problem"
    schemas[problem] = PROBLEM_SCHEMA
    problem_content = {"application/problem+json": {"schema": {"$ref": f"{REF_PREFIX}schemas/{problem}"}}}
    for path, _, operation in operations:
        responses = operation.setdefault("responses", {})
        if "422" in responses:  # every service answers bad input as problem+json (registry_common.errors)
            responses["422"] = {"description": "The request is not valid; `field` or `errors` name what is wrong.",
                                "content": problem_content}
        if table.is_public(path):
            operation["security"] = []
            continue
        operation["security"] = [{SECURITY_SCHEME: []}]
        responses.setdefault("401", {"description": "Sign-in required, or the token is invalid or expired.",
                                     "content": problem_content})
        route = table.match(path)
        if route is not None and route.roles:
            responses.setdefault("403", {"description": f"Requires one of: {', '.join(route.roles)}.",
                                         "content": problem_content})
    merged_components["securitySchemes"] = {
        SECURITY_SCHEME: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                          "description": "The access token from POST /api/v1/auth/token."},
    }

    result: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": dict(sorted(merged_paths.items())),
        "components": {kind: dict(sorted(named.items()))
                       for kind, named in sorted(merged_components.items())},
    }
    tags = {}
    for document in documents.values():
        for tag in document.get("tags") or []:
            if isinstance(tag, dict) and "name" in tag:
                tags.setdefault(tag["name"], tag)
    if tags:
        result["tags"] = list(tags.values())
    missing = list(missing)
    if missing:
        result["x-missing-services"] = missing
    return result


# Fetching and caching ----------------------------------------------------------------------------
class OpenAPICatalogue:
    """The upstreams' documents, fetched lazily and cached; failures are retried on the next call."""

    def __init__(self, clients: Mapping[str, httpx.AsyncClient], table: RouteTable,
                 gateway_document: Any):
        self._clients = clients
        self._table = table
        self._gateway_document = gateway_document  # a callable returning the gateway's own document
        self._documents: dict[str, dict[str, Any]] = {}
        self._merged: dict[str, Any] | None = None
        self._lock = asyncio.Lock()

    async def _fetch(self, service: str) -> dict[str, Any] | None:
        try:
            answer = await send(self._clients[service], service, "GET", "/openapi.json",
                                {"accept": "application/json"})
            answer.raise_for_status()
            document = answer.json()
        except (RegistryError, httpx.HTTPError, ValueError) as exc:
            log.warning("openapi: could not fetch %s's document: %r", service, exc)
            return None
        if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
            log.warning("openapi: %s's document has no paths", service)
            return None
        return document

    async def document(self) -> dict[str, Any]:
        async with self._lock:
            if self._merged is not None:
                return self._merged
            wanted = [s for s in self._table.services() if s in self._clients]
            absent = [s for s in wanted if s not in self._documents]
            for service, fetched in zip(absent, await asyncio.gather(*(self._fetch(s) for s in absent)),
                                        strict=True):
                if fetched is not None:
                    self._documents[service] = fetched
            missing = [s for s in self._table.services() if s not in self._documents]
            documents = {s: self._documents[s] for s in wanted if s in self._documents}
            documents[GATEWAY] = self._gateway_document()
            merged = merge_documents(documents, self._table, missing)
            if not missing:
                self._merged = merged
            return merged
