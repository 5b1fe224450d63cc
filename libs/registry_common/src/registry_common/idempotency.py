"""HTTP ``Idempotency-Key``: required on every POST that creates or moves units. The key is reserved in
the request's own transaction before the work, so two concurrent requests with one key cannot both act:
the second waits for the first and then answers with its stored response. The same key with a different
body is refused (422)."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import Header
from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_common.errors import RegistryError
from registry_common.tables import idempotency_keys

IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=200,
                                        description="your unique key for this request; a repeat answers the same")]


def request_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


# Built once (every write request with a key runs them).
_CLAIM = (pg_insert(idempotency_keys).values(key=bindparam("key"), principal=bindparam("principal"),
                                            request_hash=bindparam("request_hash"), status_code=0, response={})
          .on_conflict_do_nothing().returning(idempotency_keys.c.key))
_STORED = select(idempotency_keys).where(idempotency_keys.c.key == bindparam("key"),
                                         idempotency_keys.c.principal == bindparam("principal"))
_REMEMBER = (update(idempotency_keys)
             .where(idempotency_keys.c.key == bindparam("the_key"),
                    idempotency_keys.c.principal == bindparam("the_principal"))
             .values(status_code=bindparam("status_code"), response=bindparam("response")))


async def reserve(conn: AsyncConnection, key: str, principal: str, body: Any) -> dict[str, Any] | None:
    """Reserve ``key`` for this request. Returns the stored ``{"status_code", "response"}`` when the key
    was already used with the same body; raises when it was used with another body."""
    digest = request_hash(body)
    claimed = (await conn.execute(_CLAIM, {"key": key, "principal": principal, "request_hash": digest})).first()
    if claimed is not None:
        return None
    stored = (await conn.execute(_STORED, {"key": key, "principal": principal})).one()
    if stored.request_hash != digest:
        raise RegistryError("request.idempotency_key_reused", field="Idempotency-Key")
    return {"status_code": stored.status_code, "response": stored.response}


async def remember(conn: AsyncConnection, key: str, principal: str, status_code: int, response: Any) -> None:
    await conn.execute(_REMEMBER, {"the_key": key, "the_principal": principal, "status_code": status_code,
                                   "response": json.loads(json.dumps(response, default=str))})
