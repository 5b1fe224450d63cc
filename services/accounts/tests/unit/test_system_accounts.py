"""Which system accounts provisioning creates, and where the reserve names come from."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from accounts.system_accounts import configured_reserves, system_accounts


def test_reserve_names_come_from_settings_or_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("REGISTRY_RESERVES", raising=False)
    assert configured_reserves(SimpleNamespace()) == ["price_containment", "new_entrants"]
    monkeypatch.setenv("REGISTRY_RESERVES", "strategic")
    assert configured_reserves(SimpleNamespace()) == ["strategic"]
    assert configured_reserves(SimpleNamespace(reserves="a_b, c")) == ["a_b", "c"]  # the settings field wins
    monkeypatch.setenv("REGISTRY_RESERVES", "not valid")
    with pytest.raises(ValueError):
        configured_reserves(SimpleNamespace())


def test_the_system_accounts(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("REGISTRY_RESERVES", raising=False)
    assert [(i, k.value) for i, k, _name in system_accounts(SimpleNamespace())] == [
        ("SYS-CAP", "cap"), ("SYS-RES-PRICE_CONTAINMENT", "reserve"), ("SYS-RES-NEW_ENTRANTS", "reserve"),
        ("SYS-ALLOC", "allocation"), ("SYS-AUCTION", "auction"), ("SYS-CANCEL", "cancellation")]
