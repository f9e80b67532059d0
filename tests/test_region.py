"""The region file: the example loads as the contract says, and every bad key is named."""

from __future__ import annotations

import copy
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exchange.domain.region import Policy, Region, load_region, parse_region
from exchange.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "region.example.toml"


@pytest.fixture(scope="module")
def example_data() -> dict[str, Any]:
    with EXAMPLE.open("rb") as file:
        return tomllib.load(file)


@pytest.fixture(scope="module")
def region() -> Region:
    return load_region(EXAMPLE)


def changed(data: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """A copy of ``data`` with the dotted ``path`` set to ``value`` (or removed: ``...``)."""
    result = copy.deepcopy(data)
    *parents, last = path.split(".")
    target = result
    for key in parents:
        target = target.setdefault(key, {})
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return result


def config_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_region(data)
    return str(caught.value)


# --- the example file ----------------------------------------------------------------------


def test_the_example_is_region_xs(region: Region) -> None:
    assert (region.code, region.vhost, region.registry_database) == ("XS", "kpx", "kpx_registry")


def test_the_example_has_the_contract_members_and_partners_in_file_order(region: Region) -> None:
    assert region.node_codes == ("BW", "ZA", "NA", "LS", "AO", "CD", "ZW", "EU", "AE", "IN")


def test_the_example_names_each_members_authority(region: Region) -> None:
    assert region.node("ZA").authority == "South African Diamond and Precious Metals Regulator"


def test_node_databases_and_broker_users_default_from_the_code(region: Region) -> None:
    node = region.node("BW")
    assert (node.database, node.broker_user, node.role) == ("kpx_node_bw", "kpx-bw", "member")


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("XS", "ADMITTED"),
        ("BW", "ADMITTED"),
        ("EU", "ADMITTED"),
        ("RU", "ADMITTED"),
        ("CF", "SUSPENDED"),
        ("VE", "WITHDRAWN"),
        ("SO", None),
    ],
)
def test_participant_status_in_the_example(region: Region, code: str, status: str | None) -> None:
    assert region.participant_status(code) == status


def test_members_and_partners_are_told_apart(region: Region) -> None:
    assert region.is_member("BW") and not region.is_member("EU")
    assert region.is_partner("EU") and not region.is_partner("BW")


def test_member_index_follows_the_file_with_partners_after_members(region: Region) -> None:
    assert [region.member_index(c) for c in ("BW", "ZA", "ZW", "EU")] == [0, 1, 6, 7]


def test_member_index_of_a_code_without_a_node_is_a_config_error(region: Region) -> None:
    with pytest.raises(ConfigError, match="RU is neither a member nor a partner of region XS"):
        region.member_index("RU")


def test_the_example_states_the_policy_numbers(region: Region) -> None:
    policy = region.policy
    assert (policy.grace_days, policy.max_validity_days, policy.gap_timeout_hours) == (30, 60, 24)
    assert (policy.outlier_mad_k, policy.outlier_min_sample) == (3.5, 30)
    assert policy.tolerances.carats_pct == Decimal("0.5")
    assert policy.tolerances.value_pct == Decimal("2")
    assert (policy.tolerances.parcels, policy.tolerances.mirror_pct) == (0, Decimal("5"))


def test_an_absent_policy_takes_the_defaults(example_data: dict[str, Any]) -> None:
    assert parse_region(changed(example_data, "policy", ...)).policy == Policy()


def test_the_book_lists_every_code_with_its_status(region: Region) -> None:
    book = region.book()
    assert book["XS"] == "ADMITTED" and book["CF"] == "SUSPENDED" and "SO" not in book


# --- every required or bad key is named ----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "region",
        "region.code",
        "region.name",
        "members",
        "members.BW.name",
        "members.BW.authority",
        "partners.EU.name",
        "partners.AE.authority",
        "participants.CF.status",
    ],
)
def test_removing_a_required_key_names_it(example_data: dict[str, Any], path: str) -> None:
    assert config_error(changed(example_data, path, ...)).startswith(path)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("region.code", "xs"),
        ("region.code", 5),
        ("region.name", ""),
        ("broker.vhost", ""),
        ("broker.vhost", "k p x"),
        ("registry.database", 3),
        ("members.BW.database", 5),
        ("members.BW.database", "Kpx-BW"),
        ("members.BW.broker_user", "kpx bw"),
        ("members.BW.authority", ["Ministry"]),
        ("partners.EU.status", "FRIENDLY"),
        ("participants.CF.status", "BANNED"),
        ("participants.CF", "SUSPENDED"),
        ("policy.grace_days", -1),
        ("policy.grace_days", "30"),
        ("policy.max_validity_days", 0),
        ("policy.gap_timeout_hours", 1.5),
        ("policy.outlier_mad_k", 0),
        ("policy.outlier_min_sample", 2),
        ("policy.supply_carry_over", "yes"),
        ("policy.tolerances.carats_pct", -0.5),
        ("policy.tolerances.value_pct", "2"),
        ("policy.tolerances.parcels", True),
        ("policy.tolerances.mirror_pct", float("nan")),
        ("policy.tolerances", 5),
    ],
)
def test_a_bad_value_names_its_key(example_data: dict[str, Any], path: str, value: object) -> None:
    assert config_error(changed(example_data, path, value)).startswith(path)


def test_a_bad_database_name_says_what_it_must_be(example_data: dict[str, Any]) -> None:
    message = config_error(changed(example_data, "members.BW.database", 5))
    assert message == "members.BW.database must be a non-empty string, got 5"


@pytest.mark.parametrize(
    "path", ["members.BW.databse", "policy.grace", "policy.tolerances.carat_pct", "brokers"]
)
def test_a_misspelt_key_is_refused_by_name(example_data: dict[str, Any], path: str) -> None:
    message = config_error(changed(example_data, path, 1))
    assert message.startswith(f"{path} is not a known key")


def test_a_password_in_the_region_file_is_refused(example_data: dict[str, Any]) -> None:
    message = config_error(changed(example_data, "members.BW.broker_password", "s3cret"))
    assert message.startswith("members.BW.broker_password looks like a secret")
    assert "s3cret" not in message


def test_a_lower_case_participant_code_is_refused(example_data: dict[str, Any]) -> None:
    data = changed(example_data, "members.bw", {"name": "Botswana", "authority": "MoME"})
    assert config_error(data).startswith("members.bw must be a participant code")


def test_a_region_without_members_is_refused(example_data: dict[str, Any]) -> None:
    assert config_error(changed(example_data, "members", {})) == (
        "members must list at least one member"
    )


def test_a_code_listed_twice_is_refused(example_data: dict[str, Any]) -> None:
    data = changed(example_data, "participants.BW", {"status": "ADMITTED"})
    assert config_error(data) == "participants.BW is already listed as members.BW"


def test_a_member_code_equal_to_the_region_code_is_refused(example_data: dict[str, Any]) -> None:
    data = changed(example_data, "members.XS", {"name": "X", "authority": "Y"})
    assert config_error(data) == "members.XS is already listed as region.code"


def test_two_nodes_sharing_a_database_are_refused(example_data: dict[str, Any]) -> None:
    data = changed(example_data, "members.ZA.database", "kpx_node_bw")
    assert config_error(data).startswith("members.ZA.database 'kpx_node_bw' is already used")


def test_a_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError, match=f"region file {missing} cannot be read"):
        load_region(missing)


def test_a_file_that_is_not_toml_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "region.toml"
    bad.write_text("[region\ncode = XS\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_region(bad)
