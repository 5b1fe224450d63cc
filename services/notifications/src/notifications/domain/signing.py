"""Standard Webhooks: a ``whsec_`` secret (base64 of 32 random bytes) and the signature
``v1,base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))``; stable ids for receivers to drop repeats."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from uuid import UUID, uuid5

PREFIX = "whsec_"
NAMESPACE = UUID("6f1c3e8a-2b7d-5c4e-9a10-3d5e7f9b1c2a")


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(PREFIX))


def sign(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    digest = hmac.new(_key(secret), f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(secret: str, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    return {"content-type": "application/json", "webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, webhook_id, timestamp, body)}


def stable_uuid(event_id: UUID | str, recipient: str) -> UUID:
    """The same (event, recipient) always gives the same id: a redelivery carries the id of the first."""
    return uuid5(NAMESPACE, f"{event_id}|{recipient}")


def message_id(event_id: UUID | str, recipient: str, domain: str) -> str:
    return f"<{stable_uuid(event_id, recipient)}@{domain}>"


def webhook_id(event_id: UUID | str, recipient: str) -> str:
    return f"msg_{stable_uuid(event_id, recipient).hex}"
