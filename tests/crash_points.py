"""`python -m tests.crash_points run`: the watcher daemon, killed (SIGKILL) at one step.

The step is named by WATCHER_TEST_KILL_AT (`tests.watcher_daemon.Daemon.start` runs this module
instead of `python -m watcher` when it is set). The daemon's own code has no test hook: this
module wraps the journal and the folder moves from outside before handing over to
`watcher.cli.main`, and kills the process right after the commit that a step names, so nothing
after it (a move, an upload, an announcement) runs, exactly as a power cut there would.

| step                       | killed                                                       |
| -------------------------- | ------------------------------------------------------------ |
| discovered                 | after a taken file's row is committed, before it is moved    |
| uploading                  | after an upload attempt is committed, before a byte is sent  |
| sent                       | after S3 stored the video, before `uploaded` is committed    |
| uploaded                   | after `uploaded` is committed, before the invoke / the wait  |
| invoked                    | after Lambda accepted the invoke, before `triggered` commits |
| done, failed, timed_out    | after the conclusion is committed, before the group moves    |
| moved                      | after the group moved (or, for a re-run, replaced the old    |
|                            | result and recorded it), before it is announced              |
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybrid_common.logs import get_logger
from watcher.journal import AsyncJournal, State, Submission
from watcher.staging import Staging

KILL_AT_ENV = "WATCHER_TEST_KILL_AT"
STEPS = frozenset({"discovered", "uploading", "sent", "uploaded", "invoked", "moved"}) | {
    str(state) for state in (State.DONE, State.FAILED, State.TIMED_OUT)
}

log = get_logger("tests.crash_points")


def kill(step: str) -> None:
    log.warning("test.kill", step=step)
    os.kill(os.getpid(), signal.SIGKILL)


def install(step: str) -> None:
    """Wrap the journal's commits and the group moves so the process dies at `step`."""
    if step not in STEPS:
        raise SystemExit(f"{KILL_AT_ENV}={step!r}: not a step ({', '.join(sorted(STEPS))})")
    create, transition, update = AsyncJournal.create, AsyncJournal.transition, AsyncJournal.update
    record = AsyncJournal.record
    move_group = Staging.move_group

    async def create_then_kill(self: AsyncJournal, **kwargs: Any) -> Submission:
        sub = await create(self, **kwargs)
        if sub.state == step:
            kill(step)
        return sub

    async def transition_then_kill(
        self: AsyncJournal, submission_id: str, to: State, **kwargs: Any
    ) -> Submission:
        if step == "sent" and to is State.UPLOADED:
            kill(step)  # the upload returned: the object is stored, the journal does not say so
        sub = await transition(self, submission_id, to, **kwargs)
        if to == step:
            kill(step)
        return sub

    async def update_then_kill(self: AsyncJournal, submission_id: str, **kwargs: Any) -> Submission:
        if step == "invoked" and kwargs.get("triggered"):
            kill(step)  # the invoke returned (accepted); `triggered` is not committed
        return await update(self, submission_id, **kwargs)

    async def record_then_kill(
        self: AsyncJournal, submission_id: str, event: str, detail: Mapping[str, Any]
    ) -> None:
        await record(self, submission_id, event, detail)
        if step == "moved" and event == "result.replaced":
            kill(step)  # a re-run's files replaced the old result's: not announced yet

    def move_group_then_kill(self: Staging, staged_video: Path, final_video: Path) -> list[Path]:
        moved = move_group(self, staged_video, final_video)
        if step == "moved":
            kill(step)
        return moved

    AsyncJournal.create = create_then_kill  # type: ignore[method-assign]
    AsyncJournal.transition = transition_then_kill  # type: ignore[method-assign]
    AsyncJournal.update = update_then_kill  # type: ignore[method-assign]
    AsyncJournal.record = record_then_kill  # type: ignore[method-assign]
    Staging.move_group = move_group_then_kill  # type: ignore[method-assign]


if __name__ == "__main__":
    from watcher.cli import main

    install(os.environ.get(KILL_AT_ENV, ""))
    raise SystemExit(main())
