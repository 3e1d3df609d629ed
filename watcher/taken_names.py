"""Which group stems a results folder already uses, without listing the folder per file.

A stem is taken when a file is named exactly so or starts with it and a dot (`clip` is taken
by `clip`, `clip.mp4`, `clip.csv`, and also `clip.tar.gz`); the index holds the second kind.
Finding that out by listing the folder made each conclusion cost a scan of done/, which grows
for as long as the node runs (10,000 results = 40,000 names to read per file). Instead each
folder is listed once, then kept up to date with what this process moves in, and listed again
after `RESCAN_S` to learn what others changed. Deletions only make the index cautious (a freed
name looks taken: `clip_2` instead of `clip`); a name someone else adds in between is caught by
the exact-name checks of the caller.

A claimed name is *reserved* until its group is on disk: a group concluded while done/ refuses
writes has a name in the journal and no file yet, and a second `clip.mp4` handed the same name
would replace the first once done/ is writable. Reservations outlive rescans; after a restart
they are made again from the journal's undelivered rows.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

RESCAN_S = 60.0


def stems_of(name: str) -> Iterator[str]:
    """The stems `name` takes through a dot: each prefix ending before one.

    `a.b.mp4` → `a.b`, `a` (a leading dot, as in `.hidden`, starts no stem). The name itself
    is left out: whether a candidate is exactly an existing name, the caller asks the file
    system, and leaving it out keeps the index to about two strings per group.
    """
    end = name.rfind(".")
    while end > 0:
        yield name[:end]
        end = name.rfind(".", 0, end)


class TakenStems:
    """The stems in use per folder, shared by every caller in this process (thread-safe)."""

    def __init__(self, rescan_s: float = RESCAN_S) -> None:
        self.rescan_s = rescan_s
        self.lock = threading.RLock()
        self.scans = 0  # how many folder listings so far (tests count them)
        self._stems: dict[Path, set[str]] = {}
        self._scanned_at: dict[Path, float] = {}
        self._reserved: dict[Path, dict[str, set[str]]] = {}  # folder → name → its stems

    def stems(self, folder: Path) -> set[str]:
        """The folder's taken stems, listing it first if unknown or older than `rescan_s`."""
        with self.lock:
            now = time.monotonic()
            if folder not in self._stems or now - self._scanned_at[folder] >= self.rescan_s:
                self._stems[folder] = self._scan(folder)
                self._scanned_at[folder] = now
            return self._stems[folder]

    def held(self, folder: Path) -> set[str]:
        """The stems reserved in `folder` (kept apart from the listing: a release frees them)."""
        with self.lock:
            return {stem for stems in self._reserved.get(folder, {}).values() for stem in stems}

    def reserve(self, folder: Path, name: str) -> None:
        """Hold `name` (and the stems it takes) for a group not yet moved into `folder`."""
        with self.lock:
            stems = {*stems_of(name), name.rpartition(".")[0] or name}
            self._reserved.setdefault(folder, {})[name] = stems

    def release(self, folder: Path, name: str) -> None:
        """The group is in `folder` (a listing sees it now), or went elsewhere."""
        with self.lock:
            self._reserved.get(folder, {}).pop(name, None)

    def reserved(self, folder: Path) -> set[str]:
        """The names held in `folder` for groups not moved there yet."""
        with self.lock:
            return set(self._reserved.get(folder, {}))

    def add(self, folder: Path, names: Iterable[str]) -> None:
        """Record names this process just put into `folder` (nothing if it is not indexed)."""
        with self.lock:
            known = self._stems.get(folder)
            if known is not None:
                for name in names:
                    known.update(stems_of(name))

    def _scan(self, folder: Path) -> set[str]:
        self.scans += 1
        taken: set[str] = set()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    taken.update(stems_of(entry.name))
        except FileNotFoundError:
            pass
        return taken
