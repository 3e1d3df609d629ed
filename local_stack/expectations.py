"""Expected results for a workload, how an answer is judged, and the course's test_case_2.

Two file formats, one expectation per line (blank lines and `#` comments ignored):
  - the course's `mapping`: `video.mp4:major,year`, judged on the CSV's first row (the
    classic answer);
  - names: `video.mp4<TAB>name+name`, judged on the set of names in the CSV, `-` meaning
    nobody known.
Fields compare exactly after trimming spaces and folding case; nothing else is normalised
(the course's table says `freshmen` where its mapping says `freshman`: `expected_from_table`
writes expectations from the table and says where the two disagree).
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hybrid_common.results import PersonRow
from hybrid_common.students import Student


class ExpectationError(ValueError):
    """An expected-results file cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """What one video should produce: a first row's (major, year), or a set of names."""

    video: str
    major_year: tuple[str, str] | None = None
    names: frozenset[str] | None = None

    def describe(self) -> str:
        if self.major_year is not None:
            return ",".join(self.major_year)
        return "+".join(sorted(self.names or ())) or "-"


def _fold(value: str) -> str:
    return value.strip().casefold()


def parse_expectations(text: str, source: str = "expectations") -> dict[str, Expectation]:
    """Read either format (decided per line: a tab means names, else `video:major,year`)."""
    expected: dict[str, Expectation] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "\t" in raw:
            video, _, names = raw.strip("\r\n").partition("\t")
            members = {n for n in names.strip().split("+") if n.strip()} - {"-"}
            expectation = Expectation(video.strip(), names=frozenset(map(_fold, members)))
        else:
            video, colon, value = line.partition(":")
            major, comma, year = value.partition(",")
            if not colon or not comma or not major.strip():
                raise ExpectationError(
                    f"{source}:{number}: expected `video:major,year` or `video<TAB>names`, "
                    f"got {raw!r}"
                )
            expectation = Expectation(video.strip(), major_year=(_fold(major), _fold(year)))
        if not expectation.video:
            raise ExpectationError(f"{source}:{number}: no video name")
        if expectation.video in expected:
            raise ExpectationError(f"{source}:{number}: {expectation.video} listed twice")
        expected[expectation.video] = expectation
    return expected


def read_expectations(path: Path) -> dict[str, Expectation]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ExpectationError(f"{path}: {error}") from error
    return parse_expectations(text, str(path))


def judge(expectation: Expectation, rows: list[PersonRow]) -> tuple[bool, str]:
    """(correct?, what the answer was, in the expectation's own terms)."""
    if expectation.major_year is not None:
        got = (_fold(rows[0].major), _fold(rows[0].year)) if rows else None
        return got == expectation.major_year, ",".join(got) if got else "(nobody known)"
    names = frozenset(_fold(row.name) for row in rows)
    return names == expectation.names, "+".join(sorted(names)) or "-"


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (p50 of 1..100 is 50); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    # round() first: 0.95 * 20 is 19.000000000000004 in floating point, whose ceil is 20.
    rank = max(1, math.ceil(round(fraction * len(ordered), 9)))
    return ordered[min(rank, len(ordered)) - 1]


# --- the course's 100-video workload ---


def read_index(path: Path) -> list[tuple[str, str]]:
    """`test_case_2.index`: `target.mp4 source.mp4` per line."""
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ExpectationError(f"{path}:{number}: expected `target source`, got {line!r}")
        pairs.append((parts[0], parts[1]))
    return pairs


def build_case2(index: Path, source_dir: Path, out_dir: Path) -> int:
    """Make the 100 videos of test_case_2 from test_case_1's clips; returns how many.

    Hard links when on the same file system (no copy of the bytes), copies otherwise.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = read_index(index)
    for target, source in pairs:
        if "/" in target or target.startswith("."):
            raise ExpectationError(f"{index}: refusing target name {target!r}")
        src, dst = source_dir / source, out_dir / target
        if not src.is_file():
            raise ExpectationError(f"{index}: source clip {src} not found")
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return len(pairs)


def expected_from_table(
    mapping: dict[str, Expectation], students: list[Student]
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """Rewrite a course mapping with the table's own major and year for each video.

    The person behind each expected (major, year) is the one student with exactly that
    pair; if none has it, the one student with that major (if there is exactly one), and
    the disagreement is reported. Returns ({video: (major, year)}, notes).
    """
    by_pair = {(_fold(s.major), _fold(s.year)): s for s in students}
    by_major: dict[str, list[Student]] = {}
    for student in students:
        by_major.setdefault(_fold(student.major), []).append(student)
    rewritten: dict[str, tuple[str, str]] = {}
    disagreements: dict[tuple[str, str], tuple[Student, list[str]]] = {}
    for video, expectation in mapping.items():
        if expectation.major_year is None:
            raise ExpectationError(f"{video}: a names expectation has no major/year to map")
        exact = by_pair.get(expectation.major_year)
        if exact is not None:
            student = exact
        else:
            candidates = by_major.get(expectation.major_year[0], [])
            if len(candidates) != 1:
                raise ExpectationError(
                    f"{video}: no student has {expectation.describe()} and the major does not "
                    "name exactly one student"
                )
            student = candidates[0]
            disagreements.setdefault(expectation.major_year, (student, []))[1].append(video)
        rewritten[video] = (student.major, student.year)
    notes = [
        f"the mapping says {','.join(pair)} for {len(videos)} videos ({videos[0]}, ...); "
        f"the table's only {student.major} is {student.name} with year {student.year!r}: "
        "expecting the table's values"
        for pair, (student, videos) in disagreements.items()
    ]
    return rewritten, notes


def render_mapping(expected: dict[str, tuple[str, str]]) -> str:
    return "".join(f"{video}:{major},{year}\n" for video, (major, year) in expected.items())
