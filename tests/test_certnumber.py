"""ISO 7064 MOD 97-10 check digits and the regional / foreign number formats (DESIGN §3)."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.domain import certnumber
from exchange.domain.certnumber import (
    RegionalNumber,
    check_digits,
    check_foreign,
    is_well_formed,
    parse_regional,
    regional_number,
)
from exchange.errors import Refusal

EXAMPLE = "XS-BW-2026-0000001-03"
ALPHABET = string.ascii_uppercase + string.digits

codes = st.text(string.ascii_uppercase, min_size=2, max_size=2)
numbers = st.builds(
    regional_number,
    region=st.just("XS"),
    member=codes,
    year=st.integers(1000, 9999),
    serial=st.integers(1, 9_999_999),
)


def _substitutions(number: str) -> list[str]:
    return [
        number[:i] + c + number[i + 1 :]
        for i, old in enumerate(number)
        for c in ALPHABET
        if c != old
    ]


def _same_class(a: str, b: str) -> bool:
    return a.isdigit() == b.isdigit()


def test_the_design_example_number_is_valid() -> None:
    assert is_well_formed(EXAMPLE)
    assert parse_regional(EXAMPLE, "XS") == RegionalNumber("XS", "BW", 2026, 1)


def test_the_check_digits_of_the_example_body_are_03() -> None:
    assert check_digits("XS-BW-2026-0000001") == "03"


def test_regional_number_builds_the_example() -> None:
    assert regional_number("XS", "BW", 2026, 1) == EXAMPLE


def test_check_digits_are_always_two_digits() -> None:
    # 98 - (n mod 97) ranges over 2..98: the single-digit results must be zero-padded.
    bodies = [f"XS-BW-2026-{serial:07d}" for serial in range(1, 200)]
    assert all(len(check_digits(b)) == 2 for b in bodies)
    assert any(check_digits(b).startswith("0") for b in bodies)


@given(numbers)
def test_every_regional_number_is_well_formed_and_parses_back(number: str) -> None:
    parsed = parse_regional(number, "XS")
    assert is_well_formed(number)
    assert regional_number(parsed.region, parsed.member, parsed.year, parsed.serial) == number


@given(numbers)
def test_every_same_class_substitution_fails_the_check_digits(number: str) -> None:
    for typo in _substitutions(number):
        changed = next(i for i, (a, b) in enumerate(zip(number, typo, strict=True)) if a != b)
        if number[changed] != "-" and _same_class(number[changed], typo[changed]):
            assert not is_well_formed(typo), typo


@given(numbers)
def test_every_single_character_substitution_is_refused(number: str) -> None:
    for typo in _substitutions(number):
        with pytest.raises(Refusal) as caught:
            parse_regional(typo, "XS")
        assert caught.value.code == "BAD_CERTIFICATE_NUMBER"


def test_every_substitution_of_the_example_is_refused() -> None:
    for typo in _substitutions(EXAMPLE):
        with pytest.raises(Refusal):
            parse_regional(typo, "XS")


@given(numbers)
def test_every_adjacent_transposition_of_digits_fails_the_check_digits(number: str) -> None:
    for i in range(len(number) - 1):
        a, b = number[i], number[i + 1]
        if a != b and a.isdigit() and b.isdigit():
            swapped = number[:i] + b + a + number[i + 2 :]
            assert not is_well_formed(swapped), swapped


@given(numbers)
def test_every_adjacent_transposition_of_differing_characters_is_refused(number: str) -> None:
    for i in range(len(number) - 1):
        a, b = number[i], number[i + 1]
        if a != b:
            with pytest.raises(Refusal):
                parse_regional(number[:i] + b + a + number[i + 2 :], "XS")


def test_a_wrong_check_digit_is_refused_with_the_expected_digits() -> None:
    with pytest.raises(Refusal) as caught:
        parse_regional("XS-BW-2026-0000001-04", "XS")
    assert caught.value.code == "BAD_CERTIFICATE_NUMBER"
    assert "check digits 04" in caught.value.sentence
    assert "gives 03" in caught.value.sentence


def test_a_number_of_another_region_is_refused_naming_the_prefix() -> None:
    number = regional_number("XT", "BW", 2026, 1)
    with pytest.raises(Refusal) as caught:
        parse_regional(number, "XS")
    assert "starts with XT" in caught.value.sentence


@pytest.mark.parametrize(
    "number",
    ["", "XS-BW-2026-000001-03", "XS-BW-26-0000001-03", "xs-bw-2026-0000001-03", "XSBW20260000001"],
)
def test_a_malformed_number_is_refused_naming_the_format(number: str) -> None:
    with pytest.raises(Refusal) as caught:
        parse_regional(number, "XS")
    assert "is not of the form" in caught.value.sentence


def test_a_number_with_other_characters_is_not_well_formed() -> None:
    assert not is_well_formed("XS-BW-2026-0000001-0$")


def test_check_digits_refuse_characters_outside_the_alphabet() -> None:
    with pytest.raises(ValueError):
        check_digits("XS-bw-2026")


@pytest.mark.parametrize(
    ("region", "member", "year", "serial"),
    [
        ("XS", "BW", 2026, 0),
        ("XS", "BW", 2026, 10_000_000),
        ("XS", "B", 2026, 1),
        ("X1", "BW", 2026, 1),
        ("XS", "BW", 999, 1),
    ],
)
def test_regional_number_refuses_parts_that_do_not_fit(
    region: str, member: str, year: int, serial: int
) -> None:
    with pytest.raises(Refusal) as caught:
        regional_number(region, member, year, serial)
    assert caught.value.code == "BAD_CERTIFICATE_NUMBER"


@pytest.mark.parametrize("number", ["AE", "AE-2026/00017", "AE" + "9" * 38])
def test_a_foreign_number_starting_with_its_issuer_is_accepted(number: str) -> None:
    assert check_foreign(number, "AE") is None


def test_a_foreign_number_of_another_issuer_is_refused() -> None:
    refusal = check_foreign("IN-2026-17", "AE")
    assert refusal is not None
    assert refusal.code == "BAD_CERTIFICATE_NUMBER"
    assert "must start with the issuer's code AE" in refusal.sentence


@pytest.mark.parametrize("number", ["", "AE" + "9" * 39, "AE 2026", "ae-2026", "AE-2026_1"])
def test_a_foreign_number_outside_the_allowed_characters_or_length_is_refused(
    number: str,
) -> None:
    refusal = check_foreign(number, "AE")
    assert refusal is not None
    assert "1 to 40 characters" in refusal.sentence


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=40))
def test_the_digit_conversion_is_the_iso_7064_table_one_character_at_a_time(chars: str) -> None:
    assert certnumber._as_digits(chars) == int("".join(str(int(c, 36)) for c in chars))
