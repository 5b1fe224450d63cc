"""Tokens: issued and verified with real Ed25519 keys; a verified token is remembered until it expires."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from registry_common import auth
from registry_common.auth import TokenCodec, generate_keypair
from registry_common.errors import RegistryError


@pytest.fixture
def codec(tmp_path: Path) -> TokenCodec:
    generate_keypair(tmp_path / "private.pem", tmp_path / "public.pem")
    return TokenCodec(public_key_file=tmp_path / "public.pem", private_key_file=tmp_path / "private.pem",
                      issuer="registro-mx", audience="registro-mx")


def test_a_token_verifies_to_its_principal_again_and_again(codec: TokenCodec) -> None:
    token = codec.issue(user_id="u-1", username="ana", roles=["authority"], lifetime=timedelta(minutes=5))
    first, second = codec.verify(token), codec.verify(token)
    assert first == second and first.user_id == "u-1" and first.roles == frozenset({"authority"})


def test_a_remembered_token_is_refused_once_it_expires(codec: TokenCodec, monkeypatch) -> None:
    token = codec.issue(user_id="u-1", username="ana", roles=["authority"], lifetime=timedelta(minutes=5))
    codec.verify(token)
    later = auth.time.time() + 301
    monkeypatch.setattr(auth.time, "time", lambda: later)
    with pytest.raises(RegistryError) as refused:
        codec.verify(token)
    assert refused.value.code == "auth.token_expired"


def test_a_tampered_or_foreign_token_is_refused_even_after_a_good_one(codec: TokenCodec, tmp_path: Path) -> None:
    token = codec.issue(user_id="u-1", username="ana", roles=["participant"], lifetime=timedelta(minutes=5))
    codec.verify(token)
    head, body, signature = token.split(".")
    middle = len(signature) // 2  # the last characters carry padding bits a decoder may ignore
    changed = "B" if signature[middle] == "A" else "A"
    with pytest.raises(RegistryError) as tampered:
        codec.verify(f"{head}.{body}.{signature[:middle]}{changed}{signature[middle + 1:]}")
    assert tampered.value.code == "auth.token_invalid"
    generate_keypair(tmp_path / "other.pem", tmp_path / "other.pub")
    foreign = TokenCodec(public_key_file=tmp_path / "other.pub", private_key_file=tmp_path / "other.pem",
                         issuer="registro-mx", audience="registro-mx")
    with pytest.raises(RegistryError):
        codec.verify(foreign.issue(user_id="u-1", username="ana", roles=["authority"], lifetime=timedelta(minutes=5)))


def test_the_memory_is_bounded(codec: TokenCodec, monkeypatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_TOKENS", 3)
    tokens = [codec.issue(user_id=f"u-{n}", username="x", roles=[], lifetime=timedelta(minutes=5)) for n in range(5)]
    for token in tokens:
        codec.verify(token)
    assert len(codec._verified) == 3 and list(codec._verified) == tokens[2:]
