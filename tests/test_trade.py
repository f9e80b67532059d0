"""Reading external trade files and the participant-standing rule (DESIGN §14), pure."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from exchange.domain.trade import (
    Parsed,
    StatusChange,
    kp_code,
    non_participant_sentence,
    read_trade,
    standing_during,
)
from exchange.errors import MalformedTradeFile

PLAIN = "period,reporter,partner,flow,hs_code,carats,value_usd\n"
COMTRADE = "refPeriodId,freqCode,reporterISO,partnerISO,flowCode,cmdCode,qty,primaryValue\n"


def rows(text: str) -> tuple[list[tuple[object, ...]], Parsed]:
    parsed = Parsed()
    out = [
        (r.line, r.period, r.first, r.last, r.reporter, r.partner, r.flow, r.hs_code, r.carats)
        for r in read_trade(text.splitlines(keepends=True), parsed)
    ]
    return out, parsed


def test_plain_rows_take_alpha_2_and_alpha_3_codes_and_every_period_shape() -> None:
    got, parsed = rows(
        PLAIN + "2026-Q1,BWA,ARE,X,7102.31,10,100\n2026-03,BW,IN,M,7102,1.005,2\n"
        "202604,ZAF,BE,X,710221,3,3\n2026-H2,NA,CH,M,7102,4,4\n2025,CD,AE,X,7102.10,5,5\n"
    )
    assert parsed.file_format == "plain" and parsed.skipped == 0
    assert got[0] == (2, "2026-Q1", date(2026, 1, 1), date(2026, 3, 31), "BW", "AE", "X",
                      "710231", Decimal("10.00"))  # fmt: skip
    assert got[1][1:4] == ("2026-03", date(2026, 3, 1), date(2026, 3, 31))
    assert got[1][8] == Decimal("1.01")  # half-up to the cent
    assert got[2][1] == "2026-04" and got[2][4] == "ZA"
    assert got[3][1:4] == ("2026-H2", date(2026, 7, 1), date(2026, 12, 31))
    assert got[4][1:4] == ("2025", date(2025, 1, 1), date(2025, 12, 31))


def test_comtrade_rows_keep_hs_7102_flows_x_and_m_and_skip_aggregates() -> None:
    got, parsed = rows(
        COMTRADE + "20250101,A,BWA,ARE,X,7102,1000,5\n20250101,A,BWA,W00,X,7102,1000,5\n"
        "20250101,A,BWA,_X,X,7102,1,1\n20250101,A,BWA,ARE,RX,7102,1,1\n"
        "20250101,A,BWA,ARE,X,7103,1,1\n20250301,M,BWA,IND,M,710231,3,12\n"
    )
    assert parsed.file_format == "comtrade" and parsed.skipped == 4
    assert [(g[1], g[5], g[6]) for g in got] == [("2025", "AE", "X"), ("2025-03", "IN", "M")]


@pytest.mark.parametrize(
    ("line", "column", "problem"),
    [
        ("2026-Q1,BWA,ZZZ,X,7102,1,1", "partner", "no ISO 3166"),
        ("2026-Q1,BW,AE,Y,7102,1,1", "flow", "X or M"),
        ("2026-Q5,BW,AE,X,7102,1,1", "period", "YYYY"),
        ("2026-Q1,BW,AE,X,7102,-1,1", "carats", "0 or more"),
        ("2026-Q1,BW,AE,X,7102,1,ten", "value_usd", "a number"),
        ("2026-Q1,BW,AE,X,7102.99,1,1", "hs_code", "no HS 7102"),
        ("2026-Q1,BW,AE,X,7102,1", "value_usd", "too short"),
    ],
)
def test_a_malformed_row_names_its_line_and_column(line: str, column: str, problem: str) -> None:
    with pytest.raises(MalformedTradeFile, match=problem) as caught:
        rows(PLAIN + "2026-Q1,BW,AE,X,7102,1,1\n" + line + "\n")
    assert (caught.value.line, caught.value.column) == (3, column)


def test_a_file_without_a_known_header_is_refused_at_line_1() -> None:
    with pytest.raises(MalformedTradeFile, match="line 1, column header"):
        rows("a,b,c\n1,2,3\n")
    with pytest.raises(MalformedTradeFile, match="empty"):
        rows("")


def test_an_eu_member_state_trades_as_the_eu_where_the_region_lists_it() -> None:
    assert kp_code("BE", {"EU": "ADMITTED"}) == "EU"
    assert kp_code("BE", {}) == "BE"
    assert kp_code("BW", {"EU": "ADMITTED"}) == "BW"


Q1 = (date(2026, 1, 1), date(2026, 3, 31))


def test_a_code_with_no_history_is_no_participant() -> None:
    found = standing_during([], *Q1)
    assert found == ("NO_PARTICIPANT", None)
    assert non_participant_sentence("SO", found) == "SO is no KP participant"


def test_a_suspension_during_the_period_counts_from_its_date() -> None:
    history = [StatusChange(None, "ADMITTED"), StatusChange(date(2026, 3, 31), "SUSPENDED")]
    assert standing_during(history, *Q1) == ("SUSPENDED", date(2026, 3, 31))
    assert standing_during(history, date(2026, 1, 1), date(2026, 3, 30)) is None


def test_a_participant_reinstated_before_the_period_is_in_good_standing() -> None:
    history = [
        StatusChange(None, "ADMITTED"),
        StatusChange(date(2025, 5, 1), "SUSPENDED"),
        StatusChange(date(2026, 1, 1), "REINSTATED"),
    ]
    assert standing_during(history, *Q1) is None
    assert standing_during(history, date(2025, 12, 1), date(2025, 12, 31)) == ("SUSPENDED", None)


def test_a_withdrawn_participant_is_no_participant_in_good_standing() -> None:
    found = standing_during([StatusChange(None, "WITHDRAWN")], *Q1)
    assert found == ("WITHDRAWN", None)
    assert "in good standing (WITHDRAWN)" in non_participant_sentence("VE", found)
