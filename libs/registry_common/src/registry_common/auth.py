"""Identity: signed tokens verified by every service (never a bare header), roles, FastAPI dependencies.

Tokens are EdDSA (Ed25519) JWTs. Accounts signs them with the private key; every other process holds
only the public key. A token carries the user id (``sub``), user name, roles and expiry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Annotated, Any
from uuid import uuid4

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, Request

from registry_common.context import actor_var
from registry_common.errors import RegistryError

ALGORITHM = "EdDSA"


class Role(StrEnum):
    AUTHORITY = "authority"
    AUTHORITY_READONLY = "authority-readonly"
    ADMINISTRATOR = "administrator"
    INSTALLATION = "installation"
    VERIFIER = "verifier"
    INTERMEDIARY = "intermediary"


OVERSIGHT_ROLES = frozenset({Role.AUTHORITY, Role.AUTHORITY_READONLY, Role.ADMINISTRATOR})


@dataclass(frozen=True)
class Principal:
    user_id: str
    username: str
    roles: frozenset[str]

    def has_any(self, roles: Iterable[str]) -> bool:
        return bool(self.roles.intersection(roles))


# Keys -------------------------------------------------------------------------------------------
def generate_keypair(private_path: Path, public_path: Path) -> None:
    """Write a fresh Ed25519 key pair (private key mode 0600). Used by ``make up`` and test fixtures."""
    key = Ed25519PrivateKey.generate()
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@cache
def _read_key(path: Path) -> bytes:
    return path.read_bytes()


@cache
def _verifying_key(path: Path) -> Any:
    """The public key, parsed once (PyJWT would parse the PEM again for every token it verifies)."""
    return serialization.load_pem_public_key(_read_key(path))


VERIFIED_TOKENS = 4096
"""How many verified tokens a codec remembers (a client sends the same token with every request)."""


class TokenCodec:
    """Signs (where the private key is present) and verifies tokens. A token verified once is remembered
    (least recently used first out) with its expiry: until then the same bytes give the same principal
    without checking the signature again; past it the token is refused as expired."""

    def __init__(self, *, public_key_file: Path, private_key_file: Path | None, issuer: str, audience: str):
        self._public_key_file = public_key_file
        self._private_key_file = private_key_file
        self.issuer = issuer
        self.audience = audience
        self._verified: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def issue(
        self, *, user_id: str, username: str, roles: Iterable[str], lifetime: timedelta, **claims: Any
    ) -> str:
        if self._private_key_file is None:
            raise RuntimeError("this process holds no signing key")
        now = datetime.now(UTC)
        body = {
            "sub": user_id,
            "name": username,
            "roles": sorted(roles),
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + lifetime,
            "jti": str(uuid4()),
            **claims,
        }
        return jwt.encode(body, _read_key(self._private_key_file), algorithm=ALGORITHM)

    def verify(self, token: str) -> Principal:
        remembered = self._verified.get(token)
        if remembered is not None:
            expires, principal = remembered
            if time.time() < expires:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
            raise RegistryError("auth.token_expired")
        principal, expires = self._decode(token)
        self._verified[token] = (expires, principal)
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return principal

    def _decode(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                _verifying_key(self._public_key_file),
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise RegistryError("auth.token_expired") from exc
        except jwt.PyJWTError as exc:
            raise RegistryError("auth.token_invalid") from exc
        if claims.get("typ", "access") != "access":
            raise RegistryError("auth.token_invalid")
        return Principal(
            user_id=str(claims["sub"]),
            username=str(claims.get("name", claims["sub"])),
            roles=frozenset(claims.get("roles", [])),
        ), float(claims["exp"])


def codec_from_settings(settings: Any) -> TokenCodec:
    private = settings.private_key_path if settings.private_key_path.exists() else None
    return TokenCodec(
        public_key_file=settings.public_key_path,
        private_key_file=private,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )


# FastAPI dependencies ---------------------------------------------------------------------------
def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise RegistryError("auth.required")
    return token.strip()


async def current_principal(request: Request) -> Principal:
    """The caller, from the bearer token (async although it does no I/O: FastAPI runs a plain-function
    dependency in its thread pool, a hop per request that costs more than the check)."""
    principal: Principal = request.app.state.token_codec.verify(bearer_token(request))
    request.state.principal = principal
    actor_var.set(principal.user_id)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency admitting only principals holding one of ``roles``."""
    allowed = frozenset(roles)

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.has_any(allowed):
            raise RegistryError("auth.forbidden", required=", ".join(sorted(allowed)))
        return principal

    return check
