"""The staging area: inbox/ → processing/ → done/ | failed/ | rejected/ under one root.

A video and its results travel as a group sharing one stem (`clip.mp4`, `clip.csv`,
`clip.json`, `clip.faces.jpg`, `clip.error.json`); names are de-duplicated per group, so a
second `clip.mp4` becomes `clip_2.mp4` with `clip_2.csv` beside it. A claimed name is reserved
until its group has arrived, and a move never replaces a file (`watcher/moves.py`): a group
whose name was taken meanwhile stays whole in processing/ and is given another. done/ and
failed/ may be other file systems (a share mounted there): the move copies then.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hybrid_common.keys import ResultKind
from watcher.moves import TEMP_SUFFIX, move_no_replace, rename_no_replace, same_file
from watcher.taken_names import TakenStems

# The bytes of a result file the watcher could not read, kept beside the video in failed/.
RAW_RESULT_SUFFIX = ".result.raw"
# Every suffix a group can hold besides the video's own extension.
RESULT_SUFFIXES: tuple[str, ...] = (*(kind.value for kind in ResultKind), RAW_RESULT_SUFFIX)
FOLDERS = ("inbox", "processing", "done", "failed", "rejected")
REASON_SUFFIX = ".reason.json"
# Linux allows 255 bytes per name. A video's name must leave room for the longest thing added
# to it: `_99999` (de-duplication) and `.reason.json` (appended to the whole name).
NAME_BUDGET = 255 - len("_99999") - len(REASON_SUFFIX)


def split_stem(name: str) -> tuple[str, str]:
    """`clip.mp4` → (`clip`, `.mp4`); a name without an extension keeps it empty."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return name, ""
    return stem, f".{ext}"


def fit_name(name: str, limit: int = NAME_BUDGET) -> str:
    """`name` cut to `limit` UTF-8 bytes (on a character boundary), keeping a short extension."""
    if len(name.encode()) <= limit:
        return name
    stem, ext = split_stem(name)
    if len(ext.encode()) > limit // 4:  # an "extension" this long is part of the name
        stem, ext = name, ""
    room = limit - len(ext.encode())
    return stem.encode()[:room].decode(errors="ignore") + ext


def flat_name(relative: str) -> str:
    """A subfolder path flattened to one file name (`a/b.mp4` → `a__b.mp4`)."""
    return relative.replace(os.sep, "__")


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (the directory entry, not just the file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a hidden temp name, fsync, rename: readers see all of it or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def write_new(path: Path, data: bytes) -> None:
    """As `write_atomic`, but never replacing a file at `path` (FileExistsError)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    try:
        rename_no_replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True, slots=True)
class Staging:
    """The folders under `root`, and the few operations the daemon and the CLI need on them."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def rejected(self) -> Path:
        return self.root / "rejected"

    def ensure(self) -> None:
        """Create the folders (group-writable inbox is the operator's choice, not ours)."""
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def processing_path(self, submission_id: str, relative_name: str) -> Path:
        """Where a taken file waits: the id prefix makes it unique whatever its name."""
        prefix = f"{submission_id}_"
        return self.processing / (
            prefix + fit_name(flat_name(relative_name), NAME_BUDGET - len(prefix))
        )

    def companion(self, video: Path, suffix: str) -> Path:
        """The file beside `video` with the same stem and `suffix` (e.g. `.csv`)."""
        stem, _ = split_stem(video.name)
        return video.with_name(stem + suffix)

    def claim_group_name(self, folder: Path, original_name: str) -> Path:
        """A free video path in `folder` whose whole group (video + results) is unused.

        The name stays reserved (no other claim gets it) until `release`: until its group has
        arrived, even if `folder` refuses writes for days.
        """
        # Long names are shortened so that every companion of the group fits too.
        stem, ext = split_stem(fit_name(flat_name(original_name)))
        with _TAKEN.lock:
            # Any `<candidate>.*` taken (another container's video, an orphan result) would make
            # the group ambiguous. The index knows the folder without listing it each time.
            taken, held = _TAKEN.stems(folder), _TAKEN.held(folder)
            for n in range(1, 100_000):
                candidate = stem if n == 1 else f"{stem}_{n}"
                if candidate in taken or candidate in held:
                    continue
                # What others added since the index was listed: the group's own names.
                group = (
                    candidate, candidate + ext, candidate + ext + REASON_SUFFIX,
                    *(candidate + s for s in RESULT_SUFFIXES),
                )  # fmt: skip
                found = [name for name in group if os.path.lexists(folder / name)]
                if found:
                    _TAKEN.add(folder, found)
                    continue
                _TAKEN.reserve(folder, candidate + ext)
                return folder / (candidate + ext)
        raise FileExistsError(f"no free name for {original_name!r} in {folder}")

    def reserve(self, final_video: Path) -> None:
        """Hold a group's name claimed before (by an earlier run: the journal says which)."""
        _TAKEN.reserve(final_video.parent, final_video.name)

    def release(self, final_video: Path) -> None:
        """The group is in place (or was given another name): no need to hold this one."""
        _TAKEN.release(final_video.parent, final_video.name)

    def move_group(self, staged_video: Path, final_video: Path) -> list[Path]:
        """Move a video and whichever result files sit beside it; idempotent after a crash.

        Results move first and the video last, so a video in done/ always has its results.
        Raises FileExistsError, having moved nothing, if a file of someone else's holds one of
        the group's names: the caller claims another name. A member already at its target (a
        move a crash interrupted) is completed, not duplicated.
        """
        pairs = [
            (self.companion(staged_video, suffix), self.companion(final_video, suffix))
            for suffix in RESULT_SUFFIXES
        ]
        pairs.append((staged_video, final_video))
        pending = [(src, dst) for src, dst in pairs if os.path.lexists(src)]
        taken = [dst for src, dst in pending if os.path.lexists(dst) and not same_file(src, dst)]
        if taken:
            raise FileExistsError(errno.EEXIST, "name taken since it was claimed", str(taken[0]))
        moved = []
        try:
            for src, dst in pending:
                move_no_replace(src, dst)
                moved.append((src, dst))
        except FileExistsError:
            # Taken between the check and the move: put back what moved, so the group stays
            # whole under one name.
            for src, dst in reversed(moved):
                move_no_replace(dst, src)
            raise
        fsync_dir(final_video.parent)
        _TAKEN.add(final_video.parent, (dst.name for _, dst in moved))
        return [dst for _, dst in moved]

    def reject(self, path: Path, reason: str, detail: str = "") -> Path:
        """Move anything (even a symlink or FIFO: rename never opens it) to rejected/."""
        relative = os.path.relpath(path, self.inbox)
        with _TAKEN.lock:  # no other claim between this one and the rename
            while True:
                target = self.claim_group_name(self.rejected, relative)
                try:
                    rename_no_replace(path, target)
                    break
                except FileExistsError:
                    continue  # taken since the claim (by someone else): the next name
            _TAKEN.add(self.rejected, [target.name, target.name + REASON_SUFFIX])
            _TAKEN.release(self.rejected, target.name)
        doc = {"file": relative, "reason": reason, "detail": detail, "at": _utc_now()}
        write_new(
            target.with_name(target.name + REASON_SUFFIX),
            (json.dumps(doc, indent=2) + "\n").encode(),
        )
        return target

    def clear_temporaries(self) -> int:
        """Remove half-written files a killed process left: `.<name>.<pid>.tmp` in
        processing/, `.<name>.moving` (a copy into another file system) in done/ and failed/."""
        removed = 0
        for entry in _walk_files(self.processing):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                Path(entry.path).unlink(missing_ok=True)
                removed += 1
        for folder in (self.done, self.failed):
            for entry in _walk_files(folder):
                if entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX):
                    try:
                        Path(entry.path).unlink(missing_ok=True)
                    except OSError:
                        continue  # a locked done/ must not stop start-up; the next copy redoes it
                    removed += 1
        return removed

    def purge_older_than(self, folder: Path, max_age_s: float, now: float | None = None) -> int:
        """Delete files whose last move into `folder` (ctime) is older than `max_age_s`."""
        if max_age_s <= 0:
            return 0
        cutoff = (now or time.time()) - max_age_s
        removed = 0
        for entry in _walk_files(folder):
            try:
                if entry.stat(follow_symlinks=False).st_ctime < cutoff:
                    Path(entry.path).unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


# One index per process: the daemon's pipeline and intake claim names in the same folders.
_TAKEN = TakenStems()


def _walk_files(folder: Path) -> Iterable[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    yield from _walk_files(Path(entry.path))
                else:
                    yield entry
    except FileNotFoundError:
        return


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
