"""Worker processes created once and reused: many videos in parallel, or one long video split.

dlib's face descriptor holds the GIL, so threads cannot use a second core: processes can.
Workers are forked after the models are loaded, so they share them (copy on write) and
start in milliseconds. Built on plain Process + Pipe rather than multiprocessing.Pool /
ProcessPoolExecutor: those need POSIX semaphores (/dev/shm), which AWS Lambda lacks.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Iterable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import TracebackType
from typing import Any

from hybrid_common.lifetime import die_with_parent
from hybrid_common.logs import get_logger
from lambda_fn.faces import warm_up
from lambda_fn.frames import VideoReader, warm_up_decoder
from lambda_fn.known_faces import KnownFaces
from lambda_fn.recognition import Recognition, VideoError, merge_segments, recognise
from lambda_fn.settings import RecognitionOptions

log = get_logger(__name__)

VideoOutcome = Recognition | VideoError
# ("video", path, segment or None, deadline or None): the deadline is a time.monotonic() value.
Task = tuple[str, Path, tuple[float, float] | None, float | None]
# A video is split only if every worker gets at least this many samples: each segment costs
# a seek, up to one GOP decoded before its start, and a re-encoding of the faces it starts on.
MIN_SEGMENT_SAMPLES = 4


def worker_count(requested: int) -> int:
    """`requested` processes, or one per usable CPU core for 0."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _serve(
    parent_pid: int,
    conn: Connection,
    known: KnownFaces,
    options: RecognitionOptions,
    parent_ends: list[Connection],
) -> None:
    """Worker loop: ("video", path, segment) in; ("ok", Recognition) | ("error", ...) out."""
    # Mid-video nobody reads the pipe: the kernel kills us if the parent dies meanwhile.
    die_with_parent(signal.SIGKILL, parent_pid)
    # fork copied the parent's ends of this worker's pipe and of its siblings' pipes: close
    # them, so that when the parent dies (even by SIGKILL) recv() sees EOF and we exit.
    for end in parent_ends:
        end.close()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        _, path, segment, deadline = message
        try:
            conn.send(("ok", recognise(path, known, options, segment=segment, deadline=deadline)))
        except VideoError as error:
            conn.send(("error", error.code, error.message))
        except Exception as error:  # report, keep serving: one bad video must not kill the pool
            conn.send(("error", "internal_error", f"{error!r}\n{traceback.format_exc()}"))


class _Worker:
    def __init__(
        self,
        known: KnownFaces,
        options: RecognitionOptions,
        siblings: Sequence[_Worker] = (),
    ) -> None:
        context = multiprocessing.get_context("fork")
        self.conn, child = context.Pipe()
        parent_ends = [self.conn, *(sibling.conn for sibling in siblings)]
        self.process: BaseProcess = context.Process(
            target=_serve, args=(os.getpid(), child, known, options, parent_ends), daemon=True
        )
        self.process.start()
        child.close()

    def send(self, message: tuple[Any, ...]) -> None:
        self.conn.send(message)

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # already gone
            self.conn.send(None)
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class RecognitionPool:
    """Spreads videos, or segments of one long video, over worker processes.

    With one worker (or where fork is unavailable) everything runs in this process.
    """

    def __init__(self, known: KnownFaces, options: RecognitionOptions) -> None:
        self.known = known
        self.options = options
        self.size = worker_count(options.workers)
        # Load and warm up before forking, so every worker shares the result.
        warm_up()
        warm_up_decoder()
        self._workers: list[_Worker] = []
        self._start()

    def _start(self) -> None:
        if self.size > 1 and "fork" in multiprocessing.get_all_start_methods():
            for _ in range(self.size):
                self._workers.append(_Worker(self.known, self.options, self._workers))

    def use(self, known: KnownFaces) -> None:
        """Recognise with `known` from now on (a new known-faces version was rolled out).

        The workers got the known faces when they were forked, so they are replaced by new
        ones forked now: milliseconds, the models stay shared, and no video is in flight
        (the handler calls this between videos).
        """
        if known is self.known:
            return
        self.close()
        self.known = known
        self._start()
        log.info("pool.restarted", workers=len(self._workers), known_faces=len(known))

    def __enter__(self) -> RecognitionPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        for worker in self._workers:
            worker.stop()
        self._workers = []

    def run(self, paths: Iterable[Path]) -> Iterator[tuple[Path, VideoOutcome]]:
        """Recognise every video; yields (path, Recognition or VideoError) in input order."""
        paths = list(paths)
        if len(paths) == 1 or not self._workers:
            for path in paths:
                yield path, self._outcome(path)
            return
        tasks: list[Task] = [("video", path, None, None) for path in paths]
        done: dict[int, VideoOutcome] = {}
        next_out = 0
        for index, outcome in self._dispatch(tasks):
            done[index] = outcome
            while next_out in done:
                yield paths[next_out], done.pop(next_out)
                next_out += 1

    def _outcome(self, path: Path) -> VideoOutcome:
        try:
            return self.recognise(path)
        except VideoError as error:
            return error

    def recognise(self, path: Path, deadline: float | None = None) -> Recognition:
        """One video, split over the workers when it is long enough; raises VideoError.

        `deadline` (`time.monotonic()`) ends every segment with `too_slow` when reached.

        first-match is not split: its answer is usually in the first samples, and a second
        segment would only compete for the CPU (measured on the Hamilton clip: 0.58 s split,
        0.31 s not; `all` mode: 1.3 s split, 3.1 s not).
        """
        started = time.perf_counter()
        split = self._workers and self.options.mode == "all"
        segments = self._segments(path) if split else []
        if len(segments) < 2:
            return recognise(path, self.known, self.options, deadline=deadline)
        parts: dict[int, VideoOutcome] = {}
        tasks: list[Task] = [("video", path, segment, deadline) for segment in segments]
        for index, outcome in self._dispatch(tasks):
            parts[index] = outcome
        errors = [o for o in parts.values() if isinstance(o, VideoError)]
        if errors:
            raise errors[0]
        results = [o for _, o in sorted(parts.items()) if isinstance(o, Recognition)]
        log.debug("video.split", path=str(path), segments=len(segments))
        return merge_segments(results, time.perf_counter() - started, self.known)

    def _segments(self, path: Path) -> list[tuple[float, float]]:
        """Consecutive time ranges, one per worker, each with enough samples to be worth it."""
        options = self.options
        with VideoReader(
            path,
            sample_fps=options.sample_fps,
            max_duration_s=options.max_duration_s,
            max_frames=options.max_frames,
        ) as reader:
            duration = reader.info.duration_s
        samples = math.floor(duration * options.sample_fps) + 1
        count = min(len(self._workers), samples // MIN_SEGMENT_SAMPLES)
        if count < 2:
            return []
        bounds = [round(samples * i / count) / options.sample_fps for i in range(count + 1)]
        bounds[-1] = math.inf
        return list(itertools.pairwise(bounds))

    def _dispatch(self, tasks: list[Task]) -> Iterator[tuple[int, VideoOutcome]]:
        """Run tasks on idle workers; yields (task index, outcome) as they finish.

        Largest files first (a fair guess at the longest work), so that a big video does
        not start last and keep one core busy while the others wait.
        """
        pending = sorted(enumerate(tasks), key=lambda item: _size(item[1][1]))
        busy: dict[Connection, tuple[_Worker, int]] = {}
        idle = list(self._workers)
        while pending or busy:
            while idle and pending:
                index, task = pending.pop()
                worker = idle.pop()
                worker.send(task)
                busy[worker.conn] = (worker, index)
            for ready in wait(list(busy)):
                assert isinstance(ready, Connection)  # noqa: S101 - wait() returns what it got
                worker, index = busy.pop(ready)
                outcome, worker = self._receive(worker)
                idle.append(worker)
                yield index, outcome

    def _receive(self, worker: _Worker) -> tuple[VideoOutcome, _Worker]:
        """The worker's answer, and the worker to use next (a new one if it died)."""
        try:
            message: Any = worker.conn.recv()
        except (EOFError, OSError):
            # The worker died (e.g. killed for memory): replace it, fail only this video.
            log.error("pool.worker_died", exitcode=worker.process.exitcode)
            worker.stop()
            siblings = [w for w in self._workers if w is not worker]
            replacement = _Worker(self.known, self.options, siblings)
            self._workers[self._workers.index(worker)] = replacement
            return VideoError(
                "internal_error", "the worker process died on this video"
            ), replacement
        if message[0] == "ok":
            result: Recognition = message[1]
            return result, worker
        return VideoError(message[1], message[2]), worker


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
