"""The results page: static `index.html` (+ `page-2.html`, …) in the staging root.

Per video its contact sheet, the people (name, major, year, first/last seen), latency and
time; failed and rejected files with their reasons; newest first. No server, no scripts, no
external assets: it opens from a file share. Every name and result field is escaped (text
with `html.escape`, links percent-encoded), and a Content-Security-Policy forbids scripts as
a second line of defence.

The daemon calls `ResultsPage.refresh()` every couple of seconds; it renders only when the
journal changed (a cheap COUNT), so a burst of 10,000 deliveries costs one render per tick,
not 10,000, and details files are parsed once per video (they never change after delivery).
The pages list the newest LISTED_MAX results: a node's journal keeps months of them, and
reading them all at every tick made the daemon's memory and CPU grow with the journal (the
10,000-file soak: 169 MiB, 14 files/s). Older ones are a `hybrid-watcher show`/`report` away.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from watcher.journal import JournalStore, State, Submission
from watcher.staging import Staging

PAGE_SIZE = 200
LISTED_MAX = 1000  # five pages
REFRESH_S = 2.0
DETAILS_MAX_BYTES = 1024 * 1024  # a details file larger than this is not shown, not parsed
INDEX = "index.html"


@dataclass(frozen=True, slots=True)
class Person:
    name: str
    major: str
    year: str
    first_seen_s: float | None
    last_seen_s: float | None


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of the page."""

    name: str
    state: str
    at: float
    latency_s: float | None
    video_href: str | None
    sheet_href: str | None
    people: tuple[Person, ...]
    reason: str


def page_name(number: int) -> str:
    return INDEX if number == 1 else f"page-{number}.html"


def href(root: Path, path: Path) -> str | None:
    """A link relative to the staging root, percent-encoded; None if outside it."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        return None
    return quote(relative.as_posix(), safe="/")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def people_from_details(path: Path) -> tuple[Person, ...] | None:
    """The people of a details JSON (`<stem>.json` beside the video); None if unreadable."""
    try:
        if path.stat().st_size > DETAILS_MAX_BYTES:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    people = doc.get("people") if isinstance(doc, dict) else None
    if not isinstance(people, list):
        return None
    found = []
    for person in people:
        if isinstance(person, dict):
            found.append(
                Person(
                    str(person.get("name", "")),
                    str(person.get("major", "")),
                    str(person.get("year", "")),
                    _number(person.get("first_seen_s")),
                    _number(person.get("last_seen_s")),
                )
            )
        elif isinstance(person, str):  # an older details file: names only
            found.append(Person(person, "", "", None, None))
    return tuple(found)


class ResultsPage:
    """Keeps the pages in `staging_root` in step with the journal."""

    def __init__(
        self,
        staging_root: Path,
        journal_path: Path,
        page_size: int = PAGE_SIZE,
        listed_max: int = LISTED_MAX,
    ):
        self.staging = Staging(staging_root)
        self.journal_path = journal_path
        self.page_size = page_size
        self.listed_max = listed_max
        self._signature: tuple[object, ...] | None = None
        self._people: dict[str, tuple[Person, ...] | None] = {}  # final path → details

    def refresh(self) -> bool:
        """Render if the journal changed since the last render; True if it rendered."""
        if not self.journal_path.exists():
            return False
        journal = JournalStore(self.journal_path, readonly=True)
        try:
            # A delivery flips `delivered` without changing the state: both are counted.
            signature = (tuple(journal.counts().values()), journal.concluded_count())
            if signature == self._signature:
                return False
            subs, total = journal.newest_listed(self.listed_max)
        finally:
            journal.close()
        self.write(subs, total)
        self._signature = signature
        return True

    def entries(self, subs: Iterable[Submission]) -> list[Entry]:
        root = self.staging.root
        entries = []
        for sub in subs:
            if sub.state is not State.REJECTED and not sub.delivered:
                continue  # still in processing/: its files are not where the page links
            path = Path(sub.final_path or sub.staged_path)
            result = sub.result or {}
            sheet: str | None = None
            people: tuple[Person, ...] = ()
            if sub.state is State.DONE:
                sheet_path = self.staging.companion(path, ".faces.jpg")
                sheet = href(root, sheet_path) if sheet_path.exists() else None
                people = self._people_of(path, result)
            entries.append(
                Entry(
                    name=sub.original_name,
                    state=sub.state.value,
                    at=sub.finished_at or sub.updated_at,
                    latency_s=_number(result.get("latency_s")),
                    video_href=href(root, path) if path.exists() else None,
                    sheet_href=sheet,
                    people=people,
                    reason="" if sub.state is State.DONE else sub.error or "",
                )
            )
        entries.sort(key=lambda e: e.at, reverse=True)
        return entries

    def _people_of(self, video: Path, result: dict[str, Any]) -> tuple[Person, ...]:
        key = str(video)
        if key not in self._people:
            self._people[key] = people_from_details(self.staging.companion(video, ".json"))
        found = self._people[key]
        if found is not None:
            return found
        # No details file: the rows the journal kept (name, major, year; no times).
        rows = result.get("rows") or [[name, "", ""] for name in result.get("people") or []]
        return tuple(Person(str(r[0]), str(r[1]), str(r[2]), None, None) for r in rows)

    def write(self, subs: Iterable[Submission], total: int | None = None) -> int:
        """Write every page atomically, remove pages no longer needed; returns the count.

        `total`: how many results there are in all, when `subs` are only the newest.
        """
        subs = list(subs)
        entries = self.entries(subs)
        # Details of videos no longer listed are not kept (this dict would grow for ever).
        listed = {str(Path(sub.final_path or sub.staged_path)) for sub in subs}
        self._people = {k: v for k, v in self._people.items() if k in listed}
        size = self.page_size
        chunks = [entries[i : i + size] for i in range(0, len(entries), size)] or [[]]
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        total = max(total or 0, len(entries))
        for number, chunk in enumerate(chunks, start=1):
            page = render_page(chunk, number, len(chunks), total, generated, listed=len(entries))
            _write_atomic(self.staging.root / page_name(number), page)
        stale = len(chunks) + 1
        while (self.staging.root / page_name(stale)).exists():
            (self.staging.root / page_name(stale)).unlink()
            stale += 1
        return len(chunks)


def _write_atomic(path: Path, text: str) -> None:
    # No fsync: the page is derived from the journal and rewritten at the next change.
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="utf-8")
    temp.replace(path)


# --- rendering (pure) ---


def e(text: str) -> str:
    """Escaped for HTML text and attribute values (quotes included)."""
    return html.escape(text, quote=True)


_CSS = """
body{font:15px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em;margin:0 0 .2em} .meta{color:#666;margin-bottom:1em}
nav a,nav span{margin-right:.6em} nav span{font-weight:bold}
article{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.8em;margin:.8em 0;
display:flex;gap:1em;align-items:flex-start}
article>div{flex:1;min-width:0} article img{max-width:320px;height:auto;border:1px solid #ccc}
.name{font-weight:bold;word-break:break-all} .state{font-size:.8em;padding:.1em .5em;
border-radius:3px;color:#fff} .done{background:#2a7} .failed,.timed_out{background:#c33}
.rejected{background:#888} .reason{color:#a22;white-space:pre-wrap;word-break:break-word}
table{border-collapse:collapse;margin-top:.4em} td,th{padding:.15em .6em;text-align:left;
border-bottom:1px solid #eee;overflow-wrap:anywhere;vertical-align:top}
td.n,th.n{white-space:nowrap;overflow-wrap:normal} th{color:#555;font-weight:normal}
"""


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} s"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _entry(entry: Entry) -> str:
    parts = ["<article>"]
    if entry.sheet_href:
        parts.append(
            f'<a href="{e(entry.sheet_href)}"><img src="{e(entry.sheet_href)}" '
            f'alt="faces in {e(entry.name)}" loading="lazy"></a>'
        )
    parts.append("<div>")
    name = e(entry.name)
    if entry.video_href:
        name = f'<a href="{e(entry.video_href)}">{name}</a>'
    parts.append(
        f'<div><span class="name">{name}</span> '
        f'<span class="state {e(entry.state)}">{e(entry.state)}</span></div>'
    )
    facts = [_when(entry.at)]
    if entry.latency_s is not None:
        facts.append(f"latency {_seconds(entry.latency_s)}")
    parts.append(f'<div class="meta">{e(" · ".join(facts))}</div>')
    if entry.reason:
        parts.append(f'<div class="reason">{e(entry.reason)}</div>')
    if entry.people:
        parts.append(
            "<table><tr><th>name</th><th>major</th><th class=n>year</th>"
            "<th class=n>first seen</th><th class=n>last seen</th></tr>"
        )
        for p in entry.people:
            parts.append(
                f"<tr><td>{e(p.name)}</td><td>{e(p.major)}</td><td class=n>{e(p.year)}</td>"
                f"<td class=n>{_seconds(p.first_seen_s)}</td>"
                f"<td class=n>{_seconds(p.last_seen_s)}</td></tr>"
            )
        parts.append("</table>")
    elif entry.state == State.DONE:
        parts.append('<div class="meta">nobody known</div>')
    parts.append("</div></article>")
    return "".join(parts)


def _nav(number: int, pages: int) -> str:
    if pages == 1:
        return ""
    links = [
        f"<span>{n}</span>" if n == number else f'<a href="{page_name(n)}">{n}</a>'
        for n in range(1, pages + 1)
    ]
    return f"<nav>pages: {''.join(links)}</nav>"


def render_page(
    entries: list[Entry],
    number: int,
    pages: int,
    total: int,
    generated: str,
    *,
    listed: int | None = None,
) -> str:
    """One page of the results, as a complete HTML document; `listed` of `total` are shown."""
    shown = (
        f"{total} videos"
        if listed is None or listed >= total
        else f"newest {listed} of {total} videos (the others: <code>hybrid-watcher show "
        f"NAME</code>, <code>hybrid-watcher report</code>)"
    )
    nav = _nav(number, pages)
    body = "\n".join(_entry(entry) for entry in entries) or "<p>No results yet.</p>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>HybridSphere results{f" (page {number})" if number > 1 else ""}</title>
<style>{_CSS}</style></head><body>
<h1>HybridSphere results</h1>
<div class="meta">{shown}, newest first · page {number} of {pages} ·
generated {e(generated)}</div>
{nav}
{body}
{nav}
</body></html>
"""
