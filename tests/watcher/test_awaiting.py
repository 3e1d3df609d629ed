"""`AwaitedResults`: which submissions wait for a result, and which result is whose."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from hybrid_common.keys import InputKey, ResultKind, result_key
from watcher.awaiting import AwaitedResults
from watcher.journal import State, Submission, new_submission_id
from watcher.results import ResultReady


def submission(name: str = "clip.mp4", *, at: float = 1_000.0, **fields: object) -> Submission:
    sub_id = new_submission_id(at)
    sub = Submission(
        id=sub_id, original_name=name, source_path=f"/in/{name}", staged_path=f"/p/{name}",
        key=InputKey("videos", "node-a", sub_id, name).key, size=10, state=State.UPLOADED,
        created_at=at, updated_at=at, uploaded_at=at,
    )  # fmt: skip
    return dataclasses.replace(sub, **fields)


def ready(input_key: str, kind: ResultKind = ResultKind.CSV) -> ResultReady:
    key = result_key(input_key, kind)
    return ResultReady(key[: -len(kind.value)], kind, key, datetime.now(UTC))


def test_a_result_is_matched_to_its_own_submission_only() -> None:
    awaited = AwaitedResults()
    mine = submission("clip.mp4")
    awaited.add(mine)
    assert awaited.match(ready(mine.key)) == mine
    assert awaited.match(ready(mine.key, ResultKind.ERROR)) == mine
    # Another node's result for the same id and name, and another file of the same id.
    other_node = mine.key.replace("/node-a/", "/node-b/")
    assert awaited.match(ready(other_node)) is None
    assert awaited.match(ready(mine.key.replace("clip.mp4", "other.mp4"))) is None
    assert awaited.match(ResultReady("clip", ResultKind.CSV, "clip.csv", datetime.now(UTC))) is None


def test_whoever_pops_a_submission_owns_its_conclusion() -> None:
    awaited = AwaitedResults()
    sub = submission()
    awaited.add(sub)
    assert sub.id in awaited and len(awaited) == 1
    assert awaited.pop(sub.id) == sub
    assert awaited.pop(sub.id) is None  # a second taker (a deadline, a duplicate listing)
    assert awaited.match(ready(sub.key)) is None and len(awaited) == 0


def test_a_newer_row_replaces_an_awaited_one_but_does_not_bring_one_back() -> None:
    awaited = AwaitedResults()
    sub = submission()
    awaited.add(sub)
    awaited.refresh(dataclasses.replace(sub, overdue=True))
    assert awaited.match(ready(sub.key)) == dataclasses.replace(sub, overdue=True)
    awaited.pop(sub.id)
    awaited.refresh(sub)
    assert len(awaited) == 0


@given(st.lists(st.integers(0, 4_000_000_000), min_size=1, max_size=20, unique=True))
def test_the_listing_starts_at_the_oldest_awaited_submission(seconds: list[int]) -> None:
    awaited = AwaitedResults()
    assert awaited.oldest() is None
    subs = sorted((submission(f"v{at}.mp4", at=at) for at in seconds), key=lambda s: s.created_at)
    for sub in reversed(subs):
        awaited.add(sub)
    for n, sub in enumerate(subs):  # oldest first, whatever order they were added in
        assert awaited.oldest() == sub.id
        awaited.pop(sub.id)
        assert len(awaited) == len(subs) - n - 1
    assert awaited.oldest() is None


def test_waited_yields_those_past_a_time_since_their_upload() -> None:
    awaited = AwaitedResults()
    early, late = submission("a.mp4", at=100.0), submission("b.mp4", at=150.0)
    never_uploaded = submission("c.mp4", at=120.0, uploaded_at=None)  # found at recovery
    for sub in (early, late, never_uploaded):
        awaited.add(sub)
    assert {(s.original_name, w) for s, w in awaited.waited(200.0, 60.0)} == {
        ("a.mp4", 100.0), ("c.mp4", 80.0),
    }  # fmt: skip
    for sub, _ in awaited.waited(200.0, 0.0):  # a snapshot: popping while iterating is fine
        awaited.pop(sub.id)
    assert len(awaited) == 0


def test_an_input_known_present_is_not_checked_again_while_awaited() -> None:
    awaited = AwaitedResults()
    sub = submission()
    assert not awaited.needs_input_check(sub.id)  # not awaited
    awaited.add(sub)
    assert awaited.needs_input_check(sub.id)
    awaited.input_present(sub.id)
    assert not awaited.needs_input_check(sub.id)
    awaited.pop(sub.id)
    awaited.add(sub)  # awaited again (a collect that failed): asked again
    assert awaited.needs_input_check(sub.id)
    awaited.input_present("someone-else")
    assert not awaited.needs_input_check("someone-else")


def test_untriggered_lists_those_whose_invoke_is_pending() -> None:
    awaited = AwaitedResults()
    pending, accepted = submission("a.mp4"), submission("b.mp4", triggered=True)
    awaited.add(pending)
    awaited.add(accepted)
    assert awaited.untriggered() == [pending]
