"""The results page the daemon keeps in its staging root, looked at in a real browser.

A daemon (subprocess) collects results from a stand-in function that writes real contact
sheets; Debian's chromium, driven headless by Playwright, opens index.html from the file
system and the test asserts what a person sees: names, people, loaded images, reasons, and
hostile file names and result fields shown as text, never run. Pagination and the render
cost of a large journal are checked on the module directly.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from hybrid_common.keys import ResultKind, result_key
from hybrid_common.results import PersonRow, render_csv
from tests.watcher_daemon import Cloud, Daemon, StandInFunction, drop, video_bytes
from watcher.journal import JournalStore, State
from watcher.results_page import LISTED_MAX, PAGE_SIZE, ResultsPage

CHROMIUM = Path("/usr/bin/chromium")
HOSTILE_NAME = "<script>window.pwned=1<\\script>.mp4"  # no '/' can be in a file name
ATTRIBUTE_BREAKER = 'a"b\' onerror="window.pwned=2".mp4'
IMG_INJECTION = '<img src=x onerror="window.pwned=3">.mp4'
HOSTILE_PERSON = '<b onmouseover="window.pwned=4">mallory</b>'
# Where to keep the screenshot for the README when asked (not HYBRID_*: conftest clears those).
SCREENSHOT_ENV = "RESULTS_PAGE_SCREENSHOT"


def contact_sheet(names: list[str]) -> bytes:
    """A real JPEG with one labelled tile per person, like the function's."""
    sheet = Image.new("RGB", (170 * len(names) + 6, 190), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for n, name in enumerate(names):
        x = 6 + n * 170
        draw.rectangle((x, 6, x + 160, 166), fill=(60 + 60 * n % 200, 120, 160))
        draw.ellipse((x + 40, 30, x + 120, 130), fill=(230, 200, 170))
        draw.text((x, 170), name, fill=(240, 240, 240))
    out = io.BytesIO()
    sheet.save(out, format="JPEG", quality=80)
    return out.getvalue()


class FacesFunction(StandInFunction):
    """Answers like the real function: details with first/last seen, a real contact sheet."""

    def answer(self, key: str) -> None:
        name = key.rsplit("/", 1)[-1]
        if "broken" in name:
            super().answer(key)
            return
        people = [
            {"name": "alice", "major": "physics", "year": "2026", "first_seen_s": 0.5,
             "last_seen_s": 3.25, "frames": 4, "distance": 0.41},
            {"name": HOSTILE_PERSON, "major": '"><script>window.pwned=5</script>',
             "year": "2027", "first_seen_s": 1.0, "last_seen_s": 2.0, "frames": 2,
             "distance": 0.5},
        ]  # fmt: skip
        out = self.cloud.output_bucket
        details = {"people": people, "timings": {"total": 0.02}}
        self._s3.put_object(
            Bucket=out, Key=result_key(key, ResultKind.DETAILS), Body=json.dumps(details)
        )
        self._s3.put_object(
            Bucket=out, Key=result_key(key, ResultKind.FACES),
            Body=contact_sheet(["alice", "mallory"]),
        )  # fmt: skip
        rows = [PersonRow(p["name"], p["major"], p["year"]) for p in people]
        self._s3.put_object(Bucket=out, Key=result_key(key, ResultKind.CSV), Body=render_csv(rows))


@pytest.fixture
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.mark.slow
def test_the_page_shows_results_and_keeps_hostile_names_as_text(
    tmp_path: Path, cloud: Cloud, daemons: list[Daemon], browser: Any
) -> None:
    daemon = Daemon(tmp_path / "node", cloud)
    daemons.append(daemon)
    with FacesFunction(cloud):
        daemon.start()
        names = ["lecture.mp4", HOSTILE_NAME, ATTRIBUTE_BREAKER, IMG_INJECTION, "broken.mp4"]
        for name in names:
            drop(daemon.inbox, name, video_bytes(name))
        drop(daemon.inbox, "notes.mp4", b"just some text, not a video at all" * 10)
        daemon.wait_until(lambda: daemon.concluded(len(names)) and daemon.counts().get("rejected"))
        index = daemon.root / "index.html"
        deadline = time.monotonic() + 15  # the page follows within a refresh tick
        while "broken.mp4" not in (index.read_text() if index.exists() else ""):
            assert time.monotonic() < deadline, "index.html did not show every result"
            time.sleep(0.2)
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(index.as_uri())
    page.wait_for_load_state("load")
    text = page.inner_text("body")
    # What a person sees: each file, its people and when they were seen, reasons.
    for name in names:
        assert name in text, name
    assert "alice" in text and "physics" in text and "0.5 s" in text and "3.2 s" in text
    assert HOSTILE_PERSON in text and '"><script>window.pwned=5</script>' in text
    assert "decode_failed" in text  # the stand-in's error for broken.mp4
    assert "notes.mp4" in text and "not a video" in text  # rejected, with its reason
    # Escaping held: nothing ran, no element came from a name or a result field.
    assert page.evaluate("window.pwned") is None
    assert page.evaluate("document.querySelectorAll('script, b, img[src=x]').length") == 0
    assert errors == []
    # Contact sheets load (relative links beside the videos in done/, percent-encoded).
    images = page.evaluate(
        "[...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert len(images) == len(names) - 1  # every done video; broken.mp4 has none
    assert all(complete and width > 0 for _, complete, width in images), images
    assert all(src.startswith("done/") for src, _, _ in images)
    # Newest first: the times under the names never increase down the page.
    times = page.evaluate("[...document.querySelectorAll('article .meta')].map(m => m.innerText)")
    stamps = [t.split(" · ")[0] for t in times if t != "nobody known"]
    assert len(stamps) == len(names) + 1 and stamps == sorted(stamps, reverse=True)
    shot = os.environ.get(SCREENSHOT_ENV)
    page.screenshot(path=shot or str(tmp_path / "results-page.png"), full_page=False)
    page.close()


def _journal_with(root: Path, count: int) -> None:
    done = root / "done"
    done.mkdir(parents=True)
    store = JournalStore(root / "journal.sqlite3")
    # Test data only: no flush per commit (10,000 rows x 3 commits would take minutes).
    store._db.execute("PRAGMA synchronous = OFF")
    for n in range(count):
        sid = f"20261130T{n // 3600:02d}{n // 60 % 60:02d}{n % 60:02d}Z-{n:08x}"
        video = done / f"v{n:05d}.mp4"
        store.create(
            submission_id=sid, original_name=video.name, source_path=f"/in/{video.name}",
            staged_path=f"/p/{sid}", key=f"videos/n/{sid}/{video.name}", size=1,
        )  # fmt: skip
        store.transition(sid, State.FAILED, final_path=str(video), error=f"code_{n}: why",
                         finished_at=1_700_000_000 + n)  # fmt: skip
        store.update(sid, delivered=True)
    store.close()


def test_the_page_is_paginated_newest_first(tmp_path: Path, browser: Any) -> None:
    _journal_with(tmp_path, 450)
    page_writer = ResultsPage(tmp_path, tmp_path / "journal.sqlite3")
    assert page_writer.refresh() is True
    assert page_writer.refresh() is False  # nothing changed: no render
    pages = sorted(p.name for p in tmp_path.glob("*.html"))
    assert pages == ["index.html", "page-2.html", "page-3.html"]
    page = browser.new_page()
    page.goto((tmp_path / "index.html").as_uri())
    first = page.inner_text("body")
    assert "v00449.mp4" in first and "v00250.mp4" in first and "v00249.mp4" not in first
    page.click("nav >> text=3")
    assert page.url.endswith("page-3.html")
    last = page.inner_text("body")
    assert "v00049.mp4" in last and "v00000.mp4" in last and "page 3 of 3" in last
    page.close()


def test_pages_no_longer_needed_are_removed(tmp_path: Path) -> None:
    _journal_with(tmp_path, 5)
    (tmp_path / "page-2.html").write_text("old")
    (tmp_path / "page-3.html").write_text("old")
    ResultsPage(tmp_path, tmp_path / "journal.sqlite3").refresh()
    assert sorted(p.name for p in tmp_path.glob("*.html")) == ["index.html"]


def test_ten_thousand_results_cost_what_the_newest_thousand_cost(tmp_path: Path) -> None:
    """A node's journal keeps months of results; the page lists the newest LISTED_MAX.

    Rendering every result on every tick made the daemon's memory and CPU grow with the
    journal: the 10,000-file soak peaked at 169 MiB (bound 150) and concluded 14 files/s
    instead of 40, the page's thread re-reading 10,000 rows every few seconds.
    """
    _journal_with(tmp_path, 10_000)
    page_writer = ResultsPage(tmp_path, tmp_path / "journal.sqlite3")
    tracemalloc.start()
    started = time.monotonic()
    page_writer.refresh()
    seconds = time.monotonic() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"10,000 results: pages in {seconds:.2f} s, peak {peak / 2**20:.1f} MiB traced")
    pages = LISTED_MAX // PAGE_SIZE
    assert (tmp_path / f"page-{pages}.html").exists()
    assert not (tmp_path / f"page-{pages + 1}.html").exists()
    index = (tmp_path / "index.html").read_text()
    assert "v09999.mp4" in index and "newest 1000 of 10000 videos" in index
    assert "hybrid-watcher show" in index  # where the older ones are
    assert "v08999.mp4" not in (tmp_path / f"page-{pages}.html").read_text()
    assert peak < 4 * 2**20  # all 10,000 rows: 10.6 MiB
    assert seconds < 5  # a sanity bound only: CI machines are busy
    shutil.rmtree(tmp_path / "done")
