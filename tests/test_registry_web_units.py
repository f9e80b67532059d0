"""Pure parts of the registry's web face: verdicts, charts, the statistics page's figures."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from exchange.domain.certnumber import regional_number
from exchange.domain.kpstats import canonical, row
from exchange.registry.web import figures
from exchange.registry.web.charts import Bar, bar_chart, line_chart
from exchange.registry.web.verdict import Facts, Status, judge, normalise, precheck

GOOD = regional_number("XS", "BW", 2026, 1)
DAY = date(2026, 3, 10)


def facts(**changes: object) -> Facts:
    base: dict[str, object] = {
        "state": "ISSUED",
        "replaced_by": None,
        "issuing_member": "BW",
        "destination": "AE",
        "date_of_issue": date(2026, 3, 1),
        "date_of_expiry": date(2026, 4, 1),
        "number_of_parcels": 2,
        "total_carats": Decimal("100.50"),
    }
    base.update(changes)
    return Facts(**base)  # type: ignore[arg-type]


def test_a_number_with_one_digit_mistyped_is_caught_before_any_lookup() -> None:
    typo = GOOD[:-4] + ("1" if GOOD[-4] != "1" else "2") + GOOD[-3:]
    verdict = precheck(typo, "XS")
    assert verdict is not None and verdict.status is Status.MISTYPED and not verdict.valid
    assert "mistyped" in (verdict.reason or "") and "check digits" in (verdict.reason or "")


def test_a_well_formed_or_foreign_number_goes_on_to_the_lookup() -> None:
    assert precheck(GOOD, "XS") is None
    assert precheck("AE-2026-000123", "XS") is None
    assert precheck("<script>", "XS") is not None


def test_what_an_officer_types_is_normalised() -> None:
    assert normalise(f"  {GOOD.lower()[:6]} {GOOD.lower()[6:]} ") == GOOD


@pytest.mark.parametrize(
    ("changes", "on", "status", "words"),
    [
        ({}, DAY, Status.VALID, None),
        ({"state": "VOIDED"}, DAY, Status.VOIDED, "cancelled"),
        ({"state": "REPLACED", "replaced_by": "XS-BW-2026-0000002-XX"}, DAY, Status.REPLACED,
         "replaced by certificate XS-BW-2026-0000002-XX"),
        ({}, date(2026, 4, 2), Status.EXPIRED, "expired on 2026-04-01"),
        ({}, date(2026, 2, 28), Status.NOT_YET_VALID, "dated 2026-03-01"),
        ({"state": "IMPORT_CONFIRMED", "imported_on": date(2026, 3, 5), "imported_by": "AE"},
         DAY, Status.ALREADY_IMPORTED, "already imported on 2026-03-05 by AE"),
    ],
)  # fmt: skip
def test_each_state_gets_its_verdict_in_plain_words(
    changes: dict[str, object], on: date, status: Status, words: str | None
) -> None:
    verdict = judge(GOOD, facts(**changes), on)
    assert verdict.status is status and verdict.valid is (status is Status.VALID)
    assert (verdict.reason is None) if words is None else (words in (verdict.reason or ""))


def test_an_unknown_or_rejected_number_is_not_to_be_accepted() -> None:
    assert judge(GOOD, None, DAY).status is Status.UNKNOWN
    rejected = judge(GOOD, None, DAY, "TOTALS_MISMATCH")
    assert rejected.status is Status.REJECTED and "TOTALS_MISMATCH" in (rejected.reason or "")


def test_the_api_answer_has_exactly_the_public_fields() -> None:
    answer = judge(GOOD, facts(), DAY).to_json()
    assert list(answer) == [
        "certificate_id", "valid", "status", "reason", "issuing_member", "destination",
        "date_of_issue", "date_of_expiry", "number_of_parcels", "total_carats",
    ]  # fmt: skip
    assert answer["total_carats"] == "100.50" and answer["valid"] is True


def test_chart_labels_are_escaped() -> None:
    svg = bar_chart("t", [Bar("<script>alert(1)</script>", Decimal("5"))])
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    lines = line_chart("p", {"<b>": [("2026-Q1", Decimal("1")), ("2026-Q2", Decimal("3"))]})
    assert "<b>" not in lines and "polyline" in lines


def _rows() -> list[dict[str, object]]:
    return canonical([
        row(section="trade", participant="BW", period="2026-Q1", flow="export", by="partner",
            key="AE", carats=Decimal("10"), value_usd=Decimal("100"), certificates=1),
        row(section="trade", participant="ZA", period="2026-Q1", flow="export", by="partner",
            key="AE", carats=Decimal("5"), value_usd=Decimal("50"), certificates=1),
        row(section="mirror", participant="BW", period="2026-Q1", flow="mirror", by="partner",
            key="ZA", carats=Decimal("10"), value_usd=Decimal("100"), certificates=1,
            mirror_carats=Decimal("0"), mirror_value_usd=Decimal("0"), mirror_certificates=0),
    ])  # fmt: skip


def test_trade_charts_sum_the_rows_over_participants() -> None:
    (partner, *_) = figures.trade_charts(_rows())
    assert partner.title == "exports by partner" and "15.00" in partner.svg


def test_mirror_lines_name_the_measures_beyond_tolerance() -> None:
    (line,) = figures.mirror_lines(_rows(), Decimal("5"))
    assert line.differing == ("carats", "value_usd", "certificates")
    assert figures.participants(_rows()) == ["BW", "ZA"]
    assert len(figures.only(_rows(), "ZA")) == 1


def test_every_message_of_the_portals_templates_is_translated() -> None:
    import re
    from pathlib import Path

    from babel.messages.pofile import read_po

    folder = Path(__file__).resolve().parents[1] / "exchange/registry/web/templates"
    found = re.compile(r"""_\((?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')\)""")
    messages = {m.group(1) or m.group(2) for f in folder.glob("*.html")
                for m in found.finditer(f.read_text("utf-8"))}  # fmt: skip
    root = folder.parents[3]
    for lang in ("fr", "pt"):
        known: set[str] = set()
        for package in ("exchange/web", "exchange/registry/web"):
            with (root / package / f"locale/{lang}/LC_MESSAGES/messages.po").open("rb") as fh:
                known |= {str(m.id) for m in read_po(fh) if m.string}
        assert sorted(messages - known) == [], lang


def test_a_verdicts_reason_is_translated_with_its_values() -> None:
    from exchange.web import i18n

    fr = i18n.load_catalogues(["exchange.registry.web"])["fr"]
    why = judge(GOOD, facts(), date(2026, 4, 2)).why
    assert why is not None and why.text(fr.gettext) == "Il a expiré le 2026-04-01."


def test_the_lookup_limit_allows_a_burst_then_the_rate_per_client() -> None:
    from exchange.registry.web.limits import RateLimit

    limit = RateLimit(rate=2, burst=3, clients=2)
    assert [limit.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow("b", now=0.0)  # another client has its own bucket
    assert limit.allow("a", now=0.5) and not limit.allow("a", now=0.5)
    limit.allow("c", now=1.0)
    assert len(limit._buckets) == 2  # bounded memory: the oldest client was dropped


def test_the_region_file_names_the_public_url_and_what_is_published() -> None:
    import tomllib

    from exchange.domain.region import parse_region
    from exchange.errors import ConfigError

    example = Path(__file__).resolve().parents[1] / "deploy" / "region.example.toml"
    data = tomllib.loads(example.read_text("utf-8"))
    region = parse_region(data)
    assert (region.public_url, region.publish_statistics) == ("http://127.0.0.1:8400", "aggregates")
    data["registry"] = {"public_url": "https://kp.example.org/", "publish_statistics": "none"}
    closed = parse_region(data)
    assert (closed.public_url, closed.publish_statistics) == ("https://kp.example.org", "none")
    data["registry"] = {"publish_statistics": "certificates"}
    with pytest.raises(ConfigError, match="publish_statistics"):
        parse_region(data)
