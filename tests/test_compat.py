"""FULL_TRANSITIVE compatibility: the resolution rules, and the repo's schemas against releases."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exchange.wire.codec import default_schemas_dir
from exchange.wire.compat import check_all, check_pair, main

PARTY = {
    "type": "record",
    "name": "Party",
    "namespace": "kpx",
    "fields": [
        {"name": "name", "type": "string"},
        {"name": "country", "type": "string"},
    ],
}
STATUS = {
    "type": "enum",
    "name": "Status",
    "namespace": "kpx",
    "symbols": ["UNKNOWN", "ADMITTED", "SUSPENDED"],
    "default": "UNKNOWN",
}
DECIMAL = {"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 2}


def record(*fields: dict[str, Any], name: str = "Event") -> dict[str, Any]:
    return {"type": "record", "name": name, "namespace": "kpx", "fields": list(fields)}


def full(old: Any, new: Any) -> list[str]:
    """Problems in both directions, as check_all applies them."""
    return check_pair(old, new) + check_pair(new, old)


BASE = record(
    {"name": "party", "type": PARTY},
    {"name": "status", "type": STATUS},
    {"name": "carats", "type": DECIMAL},
    {"name": "count", "type": "int"},
    {"name": "note", "type": ["null", "string"], "default": None},
)


def changed(**fields: Any) -> dict[str, Any]:
    """BASE with the named fields' types replaced."""
    schema = copy.deepcopy(BASE)
    for f in schema["fields"]:
        if f["name"] in fields:
            f["type"] = fields[f["name"]]
    return schema


def test_an_unchanged_schema_is_compatible() -> None:
    assert full(BASE, copy.deepcopy(BASE)) == []


def test_adding_a_field_with_a_default_is_compatible() -> None:
    new = record(*BASE["fields"], {"name": "remarks", "type": "string", "default": ""})
    assert full(BASE, new) == []


def test_adding_a_field_without_a_default_is_incompatible() -> None:
    new = record(*BASE["fields"], {"name": "remarks", "type": "string"})
    assert full(BASE, new) == [
        "Event.remarks: reader field has no default and the writer does not have it"
    ]


def test_removing_a_field_without_a_default_is_incompatible() -> None:
    new = record(*[f for f in BASE["fields"] if f["name"] != "count"])
    assert full(BASE, new) == [
        "Event.count: reader field has no default and the writer does not have it"
    ]


def test_removing_a_field_with_a_default_is_compatible() -> None:
    new = record(*[f for f in BASE["fields"] if f["name"] != "note"])
    assert full(BASE, new) == []


def test_renaming_an_enum_symbol_is_incompatible() -> None:
    status = {**STATUS, "symbols": ["UNKNOWN", "ADMITTED", "SUSPENDED_"]}
    status.pop("default")
    problems = full(BASE, changed(status=status))
    assert any("Event.status: writer symbols ['SUSPENDED']" in p for p in problems)


def test_adding_an_enum_symbol_with_a_default_is_compatible() -> None:
    status = {**STATUS, "symbols": [*STATUS["symbols"], "WITHDRAWN"]}
    assert full(BASE, changed(status=status)) == []


def test_adding_an_enum_symbol_without_a_default_on_the_old_reader_is_incompatible() -> None:
    old_status = {k: v for k, v in STATUS.items() if k != "default"}
    new_status = {**old_status, "symbols": [*STATUS["symbols"], "WITHDRAWN"]}
    assert full(changed(status=old_status), changed(status=new_status)) == [
        "Event.status: writer symbols ['WITHDRAWN'] are not in the reader enum Status, "
        "which has no default"
    ]


def test_changing_a_type_is_incompatible() -> None:
    assert full(BASE, changed(count="string")) == [
        "Event.count: type changed from int to string",
        "Event.count: type changed from string to int",
    ]


def test_a_promotion_reads_one_way_only() -> None:
    assert check_pair(BASE, changed(count="long")) == []
    assert check_pair(changed(count="long"), BASE) == ["Event.count: type changed from long to int"]


def test_string_and_bytes_read_each_other() -> None:
    assert full(changed(note=["null", "string"]), changed(note=["null", "bytes"])) == []


def test_a_nested_field_change_is_named_by_path() -> None:
    party = copy.deepcopy(PARTY)
    party["fields"][1]["type"] = "int"
    assert check_pair(BASE, changed(party=party)) == [
        "Event.party.country: type changed from string to int"
    ]


def test_renaming_a_record_is_incompatible_unless_aliased() -> None:
    renamed = {**PARTY, "name": "Trader"}
    assert "Event.party: record name changed from Party to Trader (and not an alias)" in (
        check_pair(BASE, changed(party=renamed))
    )
    assert check_pair(BASE, changed(party={**renamed, "aliases": ["Party"]})) == []


def test_changing_a_decimal_scale_is_incompatible() -> None:
    problems = full(BASE, changed(carats={**DECIMAL, "scale": 3}))
    assert "Event.carats: decimal scale changed from 2 to 3" in problems


def test_narrowing_a_decimal_precision_is_incompatible() -> None:
    assert check_pair(BASE, changed(carats={**DECIMAL, "precision": 10})) == [
        "Event.carats: decimal precision narrowed from 18 to 10"
    ]


def test_dropping_a_logical_type_is_incompatible() -> None:
    assert check_pair(BASE, changed(carats="bytes")) == [
        "Event.carats: logical type changed from decimal to None"
    ]


def test_a_fixed_size_change_is_incompatible() -> None:
    old = record({"name": "key", "type": {"type": "fixed", "name": "Key", "size": 32}})
    new = record({"name": "key", "type": {"type": "fixed", "name": "Key", "size": 64}})
    assert check_pair(old, new) == ["Event.key: fixed size changed from 32 to 64"]


def test_a_union_branch_the_reader_lacks_is_incompatible() -> None:
    new = changed(note=["null", "string", "long"])
    assert check_pair(new, BASE) == [
        "Event.note<long>: writer type long matches no branch of reader union [null, string]"
    ]


def test_making_a_field_optional_reads_old_data_but_not_the_reverse() -> None:
    optional = changed(count=["null", "int"])
    assert check_pair(BASE, optional) == []
    assert check_pair(optional, BASE) == ["Event.count<null>: type changed from null to int"]


def test_named_references_resolve_within_each_schema() -> None:
    old = record({"name": "a", "type": PARTY}, {"name": "b", "type": "kpx.Party"})
    party = copy.deepcopy(PARTY)
    party["fields"].append({"name": "licence_no", "type": "string"})
    new = record({"name": "a", "type": party}, {"name": "b", "type": "Party"})
    assert check_pair(old, new) == [
        "Event.a.licence_no: reader field has no default and the writer does not have it"
    ]


def test_the_repository_schemas_are_compatible_with_every_released_version() -> None:
    assert check_all(default_schemas_dir()) == []


def test_there_is_at_least_one_released_version() -> None:
    assert (default_schemas_dir() / "released" / "v1" / "kpx.CertificateIssued.avsc").is_file()


@pytest.fixture
def schemas_copy(tmp_path: Path) -> Path:
    root = tmp_path / "schemas"
    shutil.copytree(default_schemas_dir(), root)
    return root


def edit(path: Path, change: Any) -> None:
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))


def test_check_all_reports_an_incompatible_current_schema_in_both_directions(
    schemas_copy: Path,
) -> None:
    edit(
        schemas_copy / "kpx.Parcel.avsc",
        lambda s: s["fields"].append({"name": "colour", "type": "string"}),
    )
    problems = check_all(schemas_copy)
    assert (
        "kpx.Parcel: v1 writer -> current reader: Parcel.colour: reader field has no default "
        "and the writer does not have it"
    ) in problems
    assert any(p.startswith("kpx.CertificateIssued: v1 writer") for p in problems)


def test_check_all_reports_a_released_schema_that_disappeared(schemas_copy: Path) -> None:
    # A record no other refers to (since v3 ShipmentNotices refers to ShipmentExpected).
    (schemas_copy / "kpx.ParticipantStatusChanged.avsc").unlink()
    assert check_all(schemas_copy) == [
        f"kpx.ParticipantStatusChanged: released in {v}, missing from {schemas_copy}"
        for v in ("v1", "v2", "v3")
    ]


def test_check_all_reports_an_unloadable_file(schemas_copy: Path) -> None:
    (schemas_copy / "kpx.Scope.avsc").write_text("{not json")
    problems = check_all(schemas_copy)
    assert any(p.startswith(f"{schemas_copy / 'kpx.Scope.avsc'}: cannot load") for p in problems)


def test_main_without_arguments_checks_the_repository_and_returns_zero(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main() == 0
    assert "compatible" in capsys.readouterr().out


def test_main_prints_the_problems_and_returns_one(
    schemas_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(schemas_copy / "kpx.Party.avsc", lambda s: s["fields"].pop())
    assert main([str(schemas_copy)]) == 1
    assert "licence_no" in capsys.readouterr().out


def test_the_module_runs_as_a_command_that_exits_zero() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exchange.wire.compat", str(default_schemas_dir())],
        capture_output=True,
        text=True,
        check=False,
        cwd=default_schemas_dir().parent,
    )
    assert (done.returncode, done.stderr) == (0, "")
