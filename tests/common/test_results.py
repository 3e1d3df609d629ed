"""The CSV answer and error document formats."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hybrid_common.results import ErrorDoc, PersonRow, parse_csv, render_csv

field = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20).filter(
    lambda s: s.strip() != ""
)


@given(st.lists(st.builds(PersonRow, field, field, field), max_size=5))
def test_csv_round_trip(rows: list[PersonRow]) -> None:
    assert parse_csv(render_csv(rows)) == rows


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
