"""The submissions waiting for their result: uploaded (or found uploaded at start-up), not yet
concluded. `AwaitedResults` is the one owner of that set.

The pipeline adds a submission once it is uploaded and takes it out when it concludes it (a
result, a deadline, an input object that vanished); the poll asks where the listing starts and
which awaited submission a listed result belongs to. Nothing here does I/O: what needs S3 or the
journal stays in the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator

from hybrid_common.keys import stem_of
from watcher.journal import Submission
from watcher.results import ResultReady


class AwaitedResults:
    """Awaited submissions by id, with what is known of their input objects."""

    def __init__(self) -> None:
        self._subs: dict[str, Submission] = {}
        # Overdue submissions whose input object S3 still holds: not asked about again.
        self._input_present: set[str] = set()

    def __len__(self) -> int:
        return len(self._subs)

    def __contains__(self, submission_id: object) -> bool:
        return submission_id in self._subs

    def add(self, sub: Submission) -> None:
        """Wait for `sub`'s result (again); this row replaces any older one of it."""
        self._subs[sub.id] = sub

    def refresh(self, sub: Submission) -> None:
        """A newer row of a submission, kept only while it is still awaited."""
        if sub.id in self._subs:
            self._subs[sub.id] = sub

    def pop(self, submission_id: str) -> Submission | None:
        """Stop waiting for a submission; its row, or None if it was not awaited (another step
        concluded it first: whoever pops it owns its conclusion)."""
        self._input_present.discard(submission_id)
        return self._subs.pop(submission_id, None)

    def untriggered(self) -> list[Submission]:
        """Awaited submissions whose invoke has not been accepted yet (trigger_mode invoke)."""
        return [sub for sub in self._subs.values() if not sub.triggered]

    def oldest(self) -> str | None:
        """The oldest awaited submission's id (ids sort by time), None if none is awaited."""
        return min(self._subs, default=None)

    def match(self, ready: ResultReady) -> Submission | None:
        """The awaited submission a listed result belongs to (by the id segment of its key and
        the whole stem); None for anyone else's."""
        parts = ready.stem.split("/")
        sub = self._subs.get(parts[-2]) if len(parts) >= 2 else None
        if sub is None or stem_of(sub.key) != ready.stem:
            return None
        return sub

    def waited(self, now: float, at_least_s: float) -> Iterator[tuple[Submission, float]]:
        """Each submission awaited `at_least_s` seconds or more since its upload, with how long.

        A snapshot: the caller may add and pop while it iterates.
        """
        for sub in list(self._subs.values()):
            waited = now - (sub.uploaded_at or sub.created_at)
            if waited >= at_least_s:
                yield sub, waited

    def input_present(self, submission_id: str) -> None:
        """S3 holds this awaited submission's input object: do not ask again while awaited."""
        if submission_id in self._subs:
            self._input_present.add(submission_id)

    def needs_input_check(self, submission_id: str) -> bool:
        """Still awaited and its input object not yet known to be in S3."""
        return submission_id in self._subs and submission_id not in self._input_present
