"""The message catalogue as a contract.

Every message class must: round-trip through JSON with an example instance, have a routing key
``<owner>.<snake_name>.v<major>`` owned by a known service, and keep its published JSON schema
compatible with the committed snapshot ``libs/registry_contracts/schemas/<routing_key>.json``.

A published schema is never broken (ARCHITECTURE.md, "Messages"): an added optional field keeps the
version; a removed field, a changed type, a new required field or a field that stops being required
needs a new class with a new version, published beside the old one.

- A new message needs a snapshot: run ``UPDATE_SCHEMAS=1 pytest tests/contract`` once and commit the
  file it writes (that run fails on purpose with "snapshot created, commit it").
- A compatible change passes as it is; ``UPDATE_SCHEMAS=1`` refreshes its snapshot too.
- Examples are generated from the fields' types (``SAMPLES``); a field type without a sample fails
  the test until the class gets an explicit entry in ``EXAMPLES``.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import re
import types
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from uuid import UUID

import pytest
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, NaiveDatetime

import registry_contracts
from registry_contracts import CATALOGUE, Message

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO_ROOT / "libs" / "registry_contracts" / "schemas"
ROUTING_KEY = re.compile(r"^[a-z_]+\.[a-z_]+\.v\d+$")
OWNERS = frozenset({"accounts", "issuance", "transfers", "compliance", "auctions", "notifications"})
TEST_ONLY_OWNERS = frozenset({"probe"})  # registry_common.testing.probe registers probe.ping.v1

# Every module of the catalogue registers its classes on import; the package itself imports none.
for _module in pkgutil.walk_packages(registry_contracts.__path__, f"{registry_contracts.__name__}."):
    importlib.import_module(_module.name)


def catalogue_classes() -> list[type[Message]]:
    return [cls for key, cls in sorted(CATALOGUE.items()) if cls.owner() not in TEST_ONLY_OWNERS]


CLASSES = catalogue_classes()


def class_id(cls: type[Message]) -> str:
    return cls.routing_key()


# Examples -----------------------------------------------------------------------------------------
SAMPLE_MOMENT = datetime(2030, 4, 30, 17, 5, 9, 123456, tzinfo=UTC)
SAMPLES: dict[Any, Any] = {
    str: "sample-text",
    int: 7,
    float: 2.5,
    bool: True,
    Decimal: Decimal("1234.50"),
    UUID: UUID("6f1c2a4e-8b7d-4c3e-9a10-2b3c4d5e6f70"),
    datetime: SAMPLE_MOMENT,
    AwareDatetime: SAMPLE_MOMENT,
    NaiveDatetime: SAMPLE_MOMENT.replace(tzinfo=None),
    date: date(2030, 4, 30),
    time: time(17, 5, 9),
    timedelta: timedelta(hours=1, microseconds=5),
}

# Explicit examples (routing key -> payload), for classes whose fields the generic samples cannot
# satisfy (patterns, cross-field rules) or where realistic values matter.
EXAMPLES: dict[str, dict[str, Any]] = {
    "issuance.programme_clock_moved.v1": {
        "offset_us": 157_766_400_000_000,
        "version": 12,
        "programme_now": "2031-01-01T06:00:00Z",
        "moved_by": "0b5e9f2c-1d7a-4e55-8f0e-3c2b1a9d8e7f",
    },
}


class NoExample(LookupError):
    """No sample value for a field's type: the class needs an explicit entry in EXAMPLES."""


def sample_value(annotation: Any, where: str) -> Any:
    if annotation in SAMPLES:
        return SAMPLES[annotation]
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return sample_value(args[0], where)
    if origin in (Union, types.UnionType):
        choices = [a for a in args if a is not type(None)]
        if not choices:
            return None
        return sample_value(choices[0], where)
    if origin is Literal:
        return args[0]
    if origin in (list, set, frozenset) or (origin is tuple and len(args) == 2 and args[1] is Ellipsis):
        return [sample_value(args[0], f"{where}[]")] if args else []
    if origin is tuple:
        return [sample_value(a, f"{where}[{i}]") for i, a in enumerate(args)]
    if origin is dict:
        key_type, value_type = args or (str, str)
        return {sample_value(key_type, f"{where}{{key}}"): sample_value(value_type, f"{where}{{}}")}
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return next(iter(annotation)).value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return generated_example(annotation, where)
    raise NoExample(f"no sample value for {where}: {annotation!r}")


def generated_example(model: type[BaseModel], where: str | None = None) -> dict[str, Any]:
    """Every field filled (optional ones too, so they are exercised)."""
    prefix = where or model.__name__
    return {
        (field.alias or name): sample_value(field.annotation, f"{prefix}.{name}")
        for name, field in model.model_fields.items()
    }


def example_payload(cls: type[BaseModel], key: str) -> dict[str, Any]:
    if key in EXAMPLES:
        return EXAMPLES[key]
    try:
        return generated_example(cls)
    except NoExample as exc:
        pytest.fail(f"{key}: {exc}; add an example for it to EXAMPLES in {Path(__file__).name}")


# Schema compatibility -----------------------------------------------------------------------------
ANNOTATION_KEYS = frozenset({"title", "description", "default", "examples", "deprecated"})
STRUCTURE_KEYS = frozenset({"properties", "required", "$defs"})


def shape(schema: Any) -> Any:
    """A schema without its annotations: what decides which documents are valid."""
    if isinstance(schema, dict):
        return {k: shape(v) for k, v in schema.items() if k not in ANNOTATION_KEYS}
    if isinstance(schema, list):
        return [shape(v) for v in schema]
    return schema


def _object_problems(old: dict[str, Any], new: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    outer_old = shape({k: v for k, v in old.items() if k not in STRUCTURE_KEYS})
    outer_new = shape({k: v for k, v in new.items() if k not in STRUCTURE_KEYS})
    if outer_old != outer_new:
        problems.append(f"{where}: type changed from {outer_old} to {outer_new}")
    old_props: dict[str, Any] = old.get("properties", {})
    new_props: dict[str, Any] = new.get("properties", {})
    for name, old_prop in old_props.items():
        if name not in new_props:
            problems.append(f"{where}.{name}: field removed")
        elif shape(old_prop) != shape(new_props[name]):
            problems.append(
                f"{where}.{name}: type changed from {shape(old_prop)} to {shape(new_props[name])}"
            )
    old_required = set(old.get("required", []))
    new_required = set(new.get("required", []))
    for name in sorted(new_required - old_required):
        kind = "became required" if name in old_props else "new required field"
        problems.append(f"{where}.{name}: {kind}")
    for name in sorted(old_required - new_required):
        if name in new_props:
            problems.append(f"{where}.{name}: no longer required (old consumers rely on it)")
    return problems


def incompatibilities(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why a reader or writer of the ``old`` schema would break with the ``new`` one (empty: fine)."""
    problems = _object_problems(old, new, "$")
    new_defs: dict[str, Any] = new.get("$defs", {})
    for name, old_def in old.get("$defs", {}).items():
        if name not in new_defs:
            problems.append(f"$defs.{name}: definition removed")
        else:
            problems.extend(_object_problems(old_def, new_defs[name], f"$defs.{name}"))
    return problems


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def check_snapshot(schema: dict[str, Any], path: Path, *, update: bool) -> None:
    """Compare ``schema`` with its committed snapshot; raise AssertionError with the reason if not fine."""
    if not path.exists():
        if update:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render(schema), encoding="utf-8")
            raise AssertionError(f"{path.name}: snapshot created, commit it")
        raise AssertionError(
            f"{path.name}: no schema snapshot; run the contract tests with UPDATE_SCHEMAS=1 to create it, "
            "then commit it"
        )
    old = json.loads(path.read_text(encoding="utf-8"))
    problems = incompatibilities(old, schema)
    if problems:
        raise AssertionError(
            f"{path.name}: incompatible change to a published message; publish a new version beside it "
            "instead:\n  " + "\n  ".join(problems)
        )
    if update and old != schema:
        path.write_text(render(schema), encoding="utf-8")
        raise AssertionError(f"{path.name}: snapshot updated (compatible change), commit it")


def updating() -> bool:
    return os.environ.get("UPDATE_SCHEMAS") == "1"


# The catalogue ------------------------------------------------------------------------------------
def test_the_catalogue_is_loaded() -> None:
    keys = {cls.routing_key() for cls in CLASSES}
    assert "issuance.programme_clock_moved.v1" in keys
    assert all(cls.owner() not in TEST_ONLY_OWNERS for cls in CLASSES)


@pytest.mark.parametrize("cls", CLASSES, ids=class_id)
def test_routing_key(cls: type[Message]) -> None:
    key = cls.routing_key()
    assert ROUTING_KEY.match(key), f"{cls.__name__}: routing key {key!r} is not <owner>.<snake_name>.v<major>"
    assert CATALOGUE[key] is cls
    assert key == f"{cls.TYPE}.v{cls.VERSION}"
    assert isinstance(cls.VERSION, int) and cls.VERSION >= 1


@pytest.mark.parametrize("cls", CLASSES, ids=class_id)
def test_owner_is_a_known_service(cls: type[Message]) -> None:
    assert cls.owner() in OWNERS, f"{cls.routing_key()}: owner {cls.owner()!r} is not one of {sorted(OWNERS)}"


@pytest.mark.parametrize("cls", CLASSES, ids=class_id)
def test_kind(cls: type[Message]) -> None:
    assert cls.KIND in {"event", "command"}


@pytest.mark.parametrize("cls", CLASSES, ids=class_id)
def test_round_trip(cls: type[Message]) -> None:
    key = cls.routing_key()
    instance = cls.model_validate(example_payload(cls, key))
    raw = instance.model_dump_json()
    again = cls.model_validate_json(raw)
    assert again == instance
    assert again.model_dump_json() == raw
    assert json.loads(raw).keys() == {f.alias or n for n, f in cls.model_fields.items()}


@pytest.mark.parametrize("cls", CLASSES, ids=class_id)
def test_schema_snapshot(cls: type[Message]) -> None:
    path = SCHEMA_DIR / f"{cls.routing_key()}.json"
    problem = None
    try:
        check_snapshot(cls.model_json_schema(), path, update=updating())
    except AssertionError as exc:
        problem = str(exc)
    if problem is not None:
        pytest.fail(problem, pytrace=False)


def test_every_snapshot_belongs_to_a_message() -> None:
    """A published schema stays published: its class may not disappear from the catalogue."""
    keys = {cls.routing_key() for cls in CLASSES}
    orphans = sorted(p.name for p in SCHEMA_DIR.glob("*.json") if p.name.removesuffix(".json") not in keys)
    assert not orphans, f"snapshots without a message class (a published message was removed?): {orphans}"


def test_explicit_examples_name_catalogue_messages() -> None:
    assert set(EXAMPLES) <= set(CATALOGUE), sorted(set(EXAMPLES) - set(CATALOGUE))


# The helpers above are themselves tested, on plain models outside the catalogue ---------------------
class Colour(str, Enum):
    RED = "red"
    BLUE = "blue"


class Line(BaseModel):
    serial_from: int
    serial_to: int


class V1(BaseModel):
    account_id: int
    unit_type: str
    lines: list[Line]


class V1AddedOptional(BaseModel):
    account_id: int
    unit_type: str
    lines: list[Line]
    note: str | None = None
    colour: Colour = Colour.RED


class V1Removed(BaseModel):
    account_id: int
    lines: list[Line]


class V1TypeChanged(BaseModel):
    account_id: str
    unit_type: str
    lines: list[Line]


class V1NewRequired(BaseModel):
    account_id: int
    unit_type: str
    lines: list[Line]
    vintage: int


class V1NowOptional(BaseModel):
    account_id: int
    unit_type: str | None = None
    lines: list[Line]


class V1DescribedDifferently(BaseModel):
    """Only annotations differ: not a change of contract."""

    account_id: int = Field(description="the account")
    unit_type: str = Field(title="Unit type")
    lines: list[Line]


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["title"] = "V1"  # the snapshot of one message: the class name is not part of the contract
    return schema


def test_compatible_changes_pass() -> None:
    assert incompatibilities(schema_of(V1), schema_of(V1)) == []
    assert incompatibilities(schema_of(V1), schema_of(V1AddedOptional)) == []
    assert incompatibilities(schema_of(V1), schema_of(V1DescribedDifferently)) == []


def test_a_removed_field_is_incompatible() -> None:
    assert incompatibilities(schema_of(V1), schema_of(V1Removed)) == ["$.unit_type: field removed"]


def test_a_changed_type_is_incompatible() -> None:
    problems = incompatibilities(schema_of(V1), schema_of(V1TypeChanged))
    assert len(problems) == 1 and problems[0].startswith("$.account_id: type changed")


def test_a_new_required_field_is_incompatible() -> None:
    assert incompatibilities(schema_of(V1), schema_of(V1NewRequired)) == ["$.vintage: new required field"]


def test_a_field_that_stops_being_required_is_incompatible() -> None:
    problems = incompatibilities(schema_of(V1), schema_of(V1NowOptional))
    assert "$.unit_type: no longer required (old consumers rely on it)" in problems


def test_a_changed_nested_model_is_incompatible() -> None:
    old = schema_of(V1)
    new = json.loads(json.dumps(old))
    new["$defs"]["Line"]["properties"]["serial_to"] = {"type": "string"}
    assert incompatibilities(old, new) == [
        "$defs.Line.serial_to: type changed from {'type': 'integer'} to {'type': 'string'}"
    ]
    del new["$defs"]["Line"]
    assert "$defs.Line: definition removed" in incompatibilities(old, new)


def test_a_missing_snapshot_fails_without_update(tmp_path: Path) -> None:
    path = tmp_path / "x.y.v1.json"
    with pytest.raises(AssertionError, match="no schema snapshot"):
        check_snapshot(schema_of(V1), path, update=False)
    assert not path.exists()


def test_a_missing_snapshot_is_created_with_update(tmp_path: Path) -> None:
    path = tmp_path / "schemas" / "x.y.v1.json"
    with pytest.raises(AssertionError, match="snapshot created, commit it"):
        check_snapshot(schema_of(V1), path, update=True)
    assert json.loads(path.read_text(encoding="utf-8")) == schema_of(V1)
    check_snapshot(schema_of(V1), path, update=False)  # and now it passes


def test_snapshot_check_passes_compatible_and_fails_incompatible(tmp_path: Path) -> None:
    path = tmp_path / "x.y.v1.json"
    path.write_text(render(schema_of(V1)), encoding="utf-8")
    check_snapshot(schema_of(V1AddedOptional), path, update=False)
    assert json.loads(path.read_text(encoding="utf-8")) == schema_of(V1)  # untouched
    with pytest.raises(AssertionError, match="field removed"):
        check_snapshot(schema_of(V1Removed), path, update=False)
    with pytest.raises(AssertionError, match="field removed"):
        check_snapshot(schema_of(V1Removed), path, update=True)  # updating never accepts a break
    assert json.loads(path.read_text(encoding="utf-8")) == schema_of(V1)


def test_a_compatible_change_refreshes_the_snapshot_with_update(tmp_path: Path) -> None:
    path = tmp_path / "x.y.v1.json"
    path.write_text(render(schema_of(V1)), encoding="utf-8")
    with pytest.raises(AssertionError, match="snapshot updated"):
        check_snapshot(schema_of(V1AddedOptional), path, update=True)
    assert json.loads(path.read_text(encoding="utf-8")) == schema_of(V1AddedOptional)


def test_generated_examples_cover_every_field() -> None:
    example = generated_example(V1AddedOptional)
    assert example == {
        "account_id": 7, "unit_type": "sample-text", "lines": [{"serial_from": 7, "serial_to": 7}],
        "note": "sample-text", "colour": "red",
    }
    assert V1AddedOptional.model_validate(example).note == "sample-text"


def test_a_field_type_without_a_sample_has_no_example() -> None:
    class Odd:
        pass

    class WithOddField(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        fine: int
        odd: Odd

    with pytest.raises(NoExample, match="WithOddField.odd"):
        generated_example(WithOddField)
    with pytest.raises(pytest.fail.Exception, match="add an example"):
        example_payload(WithOddField, "x.with_odd_field.v1")
