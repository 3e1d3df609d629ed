"""`hybrid-watcher report`: what this node did over a period, from the journal.

Videos done/failed/timed out/rejected, people seen (videos per person), drop→result latency
(p50/p95), failures by code and rejections by reason. The journal is opened read-only (WAL
lets it be read while the daemon writes), so the report runs beside the live daemon.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from watcher.journal import TERMINAL, JournalStore, State, Submission
from watcher.settings import WatcherSettings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_SPAN = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
# Cells a spreadsheet would run as a formula (OWASP's CSV injection list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def parse_span(text: str) -> float:
    """`24h`, `7d`, `90m`, `1h30m` → seconds; ValueError with the accepted forms otherwise."""
    parts = _SPAN.findall(text.strip().lower())
    if not parts or "".join(a + b for a, b in parts) != text.strip().lower():
        raise ValueError(f"not a duration: {text!r} (use e.g. 90m, 24h, 7d, 1h30m)")
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: always one of the measured values (None without any)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def failure_code(sub: Submission) -> str:
    """The code of a failure: the function's or watcher's error code, else the error's head."""
    error = (sub.result or {}).get("error")
    if isinstance(error, dict) and error.get("code"):
        return str(error["code"])
    if sub.state is State.TIMED_OUT:
        return "timed_out"
    return (sub.error or "unknown").split(":", 1)[0].strip() or "unknown"


@dataclass
class Report:
    """The figures of one period."""

    node: str
    since: float
    until: float
    videos: dict[str, int] = field(default_factory=dict)
    people: dict[str, int] = field(default_factory=dict)
    latency_s: dict[str, float | int | None] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)


def build_report(subs: list[Submission], node: str, since: float, until: float) -> Report:
    """Figures over the submissions that concluded in [since, until]."""
    period = [
        s for s in subs
        if s.state in TERMINAL and since <= (s.finished_at or s.updated_at) <= until
    ]  # fmt: skip
    states = Counter(s.state.value for s in period)
    people: Counter[str] = Counter()
    latencies: list[float] = []
    failures: Counter[str] = Counter()
    rejections: Counter[str] = Counter()
    for sub in period:
        result = sub.result or {}
        if sub.state is State.DONE:
            people.update(set(result.get("people") or []))  # videos per person
            latency = result.get("latency_s")
            if isinstance(latency, int | float) and not result.get("reused_from"):
                latencies.append(float(latency))
        elif sub.state is State.REJECTED:
            rejections[(sub.error or "unknown").split(":", 1)[0].strip()] += 1
        else:
            failures[failure_code(sub)] += 1
    return Report(
        node=node,
        since=since,
        until=until,
        videos={s.value: states.get(s.value, 0) for s in State if s in TERMINAL},
        people=dict(people.most_common()),
        latency_s={
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "count": len(latencies),
        },
        failures=dict(failures.most_common()),
        rejections=dict(rejections.most_common()),
    )


def _cell(value: object) -> str:
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def render_csv(report: Report) -> str:
    """`section,name,value` rows: one table a spreadsheet can pivot."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "name", "value"])
    for section in ("videos", "people", "latency_s", "failures", "rejections"):
        for name, value in getattr(report, section).items():
            writer.writerow([section, _cell(name), "" if value is None else _cell(value)])
    return out.getvalue()


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def render_text(report: Report) -> str:
    v, lat = report.videos, report.latency_s
    lines = [
        f"hybrid-watcher report for node {report.node}: "
        f"{_when(report.since)} → {_when(report.until)}",
        f"videos: {v['done']} done, {v['failed']} failed, {v['timed_out']} timed out, "
        f"{v['rejected']} rejected",
    ]
    if lat["count"]:
        lines.append(
            f"drop→result latency: p50 {lat['p50']:.1f} s, p95 {lat['p95']:.1f} s "
            f"({lat['count']} videos)"
        )
    for title, figures in (
        ("people seen (videos)", report.people),
        ("failures by code", report.failures),
        ("rejections by reason", report.rejections),
    ):
        if figures:
            lines.append(f"{title}:")
            width = max(len(name) for name in figures)
            lines += [f"  {name:<{width}}  {count}" for name, count in figures.items()]
    return "\n".join(lines)


def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", default="24h", help="period to cover, e.g. 90m, 24h, 7d")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="machine-readable output")
    output.add_argument("--csv", action="store_true", help="section,name,value rows")


def load_subs(settings: WatcherSettings) -> list[Submission] | None:
    if not settings.journal_path.exists():
        return None
    journal = JournalStore(settings.journal_path, readonly=True)
    try:
        return journal.in_states(TERMINAL)
    except sqlite3.OperationalError:  # the daemon has created the file, not yet its tables
        return None
    finally:
        journal.close()


def cmd_report(args: argparse.Namespace) -> int:
    from watcher import cli  # the CLI's settings lookup (config discovery lives there)

    try:
        span = parse_span(args.since)
    except ValueError as error:
        print(f"report: {error}", file=sys.stderr)
        return 2
    settings = cli._settings()  # one settings lookup shared by every command
    subs = load_subs(settings)
    if subs is None:
        print(f"no journal yet at {settings.journal_path}: nothing to report", file=sys.stderr)
        subs = []
    now = time.time()
    report = build_report(subs, settings.node_id, now - span, now)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    elif args.csv:
        sys.stdout.write(render_csv(report))
    else:
        print(render_text(report))
    return 0


__all__ = ["Report", "add_report_arguments", "build_report", "cmd_report", "parse_span"]
