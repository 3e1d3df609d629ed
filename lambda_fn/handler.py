"""The Lambda entry point: S3 (or SQS-wrapped S3) events in, result files in the output bucket.

A thin shell around the recognition core. Per record: HEAD the object (refuse it above
max_input_bytes), stream it to a private file in tmp_dir, recognise, look the people up,
write the outputs, and always remove the file. Failure policy:
- a video that cannot be processed gets `<stem>.error.json` and counts as handled — a retry
  would fail the same way;
- an infrastructure error (S3 or DynamoDB unreachable, throttled, denied) raises for plain S3
  events, so Lambda retries the invocation, and marks only that message as failed in an SQS
  batch (`batchItemFailures`), so SQS redelivers it alone;
- an SQS message that is not an S3 event is reported as failed, to end in the dead-letter queue;
- no usable known-faces file at start (absent, denied, not the format) is
  `known_faces_unavailable` in each video's error.json — retrying would only fill the
  dead-letter queue — while a transient error fetching it (throttling, 5xx, no connection)
  raises like any infrastructure error. A container without known faces looks again at each
  invocation, so uploading the file heals it.
Settings, AWS clients, dlib's models and the known faces are loaded once per container; the
known faces are checked for a new version at most every `known_faces_check_s` seconds and
swapped between videos (`lambda_fn.known_faces.LiveKnownFaces`), so a pushed file is rolled
out without a redeploy. Every `<stem>.json` names the version it was computed with.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import boto3
import structlog
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from hybrid_common.aws_credentials import use_local_credentials_for_loopback
from hybrid_common.keys import split_result_key
from hybrid_common.logs import configure_logging, get_logger
from hybrid_common.results import ErrorDoc, InputDetails, KnownFacesDetails
from lambda_fn.contact_sheet import render_contact_sheet
from lambda_fn.directory import DirectoryUnavailable, StudentDirectory
from lambda_fn.faces import models
from lambda_fn.known_faces import (
    KNOWN_FACES_UNAVAILABLE,
    KnownFaces,
    KnownFacesError,
    LiveKnownFaces,
)
from lambda_fn.metrics import FunctionMetrics
from lambda_fn.outputs import ResultWriter, build_details, settings_used
from lambda_fn.recognition import VideoError
from lambda_fn.recognition_pool import RecognitionPool
from lambda_fn.s3_events import (
    EventFormatError,
    S3Event,
    S3ObjectRef,
    Source,
    SQSEvent,
    source_of,
)
from lambda_fn.settings import FunctionSettings, RecognitionOptions

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient
    from mypy_boto3_s3.client import S3Client

log = get_logger(__name__)

TMP_PREFIX = "hybrid-input-"
SAFE_SUFFIX = re.compile(r"\.[a-z0-9]{1,10}")
CHUNK_BYTES = 1 << 20
# Errors a retry may cure; anything else raised while recognising is the video's fault.
INFRASTRUCTURE_ERRORS = (ClientError, BotoCoreError, DirectoryUnavailable)


class LambdaContext(Protocol):
    """The parts of Lambda's context object the handler reads."""

    aws_request_id: str
    function_version: str

    def get_remaining_time_in_millis(self) -> int: ...


class InputRefused(Exception):
    """The object is not processed (too large, gone); like VideoError, it gets an error.json."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one object: `ok` (CSV written), `error` (error.json) or `skipped`."""

    key: str
    status: str
    result_key: str = ""
    code: str = ""


def code_version() -> str:
    """The build's version: set by the image build, else the installed package's."""
    try:
        return metadata.version("hybridsphere")
    except metadata.PackageNotFoundError:
        return "unknown"


def make_clients(settings: FunctionSettings) -> tuple[S3Client, DynamoDBClient]:
    """Clients with short connect timeouts and standard retries (throttling, 5xx)."""
    config = Config(
        region_name=settings.region,
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=5,
        read_timeout=60,
    )
    session = boto3.session.Session()
    s3 = session.client("s3", endpoint_url=settings.endpoint_url, config=config)
    dynamodb = session.client("dynamodb", endpoint_url=settings.endpoint_url, config=config)
    return s3, dynamodb


class Runtime:
    """What a warm container keeps between invocations, and the per-record work."""

    def __init__(
        self,
        settings: FunctionSettings,
        options: RecognitionOptions,
        *,
        clients: tuple[S3Client, DynamoDBClient] | None = None,
    ) -> None:
        started = time.perf_counter()
        self.settings = settings
        self.options = options
        self.s3, dynamodb = clients or make_clients(settings)
        models()  # dlib's models, in the init phase rather than the first invocation
        self.known_faces: LiveKnownFaces | None = None
        self.known_problem = ""
        self.pool: RecognitionPool | None = None
        # CloudWatch metrics as EMF (lambda_fn/metrics.py); one per container.
        self.metrics = FunctionMetrics()
        self._start_known_faces()
        self.directory = StudentDirectory(
            dynamodb, settings.table, ttl_s=settings.students_cache_ttl_s
        )
        self.writer = ResultWriter(
            self.s3, settings.output_bucket, naming=settings.naming, csv_header=settings.csv_header
        )
        self.version = settings.function_version or code_version()
        settings.tmp_dir.mkdir(parents=True, exist_ok=True)
        # A timed-out invocation's process is killed and the environment re-initialised with
        # /tmp kept: its input file is swept here, when no other invocation can be running.
        self.sweep_tmp()
        log.info(
            "runtime.ready",
            known_faces=len(self.known) if self.known else None,
            known_faces_version=self.known_faces.current.version if self.known_faces else None,
            output_bucket=settings.output_bucket,
            table=settings.table,
            version=self.version,
            seconds=round(time.perf_counter() - started, 3),
        )

    @property
    def known(self) -> KnownFaces | None:
        """The known faces in use now (None: no usable file yet)."""
        return self.known_faces.current.faces if self.known_faces else None

    def _start_known_faces(self) -> None:
        """First load and the pool; a lasting fault is kept as known_problem (no pool).

        Transient errors (ClientError, BotoCoreError) propagate: init or invocation is retried.
        """
        try:
            live = LiveKnownFaces(
                self.settings.known_faces, self.s3, self.settings.known_faces_check_s
            )
        except KnownFacesError as error:
            self.known_problem = str(error)
            log.error("known_faces.unavailable", reason=self.known_problem)
            return
        self.known_faces, self.known_problem = live, ""
        known = live.current.faces
        self.metrics.known_faces_loaded(known)
        # Forked once, in the init phase when the file is there, after the models are loaded:
        # a long video is split over the container's cores (a 3008 MB function has two vCPUs).
        self.pool = RecognitionPool(known, self.options)

    def _refresh_known_faces(
        self, live: LiveKnownFaces, pool: RecognitionPool
    ) -> KnownFacesDetails:
        """Switch to a new known-faces version if one was pushed; the version to report."""
        current, changed = live.refresh()
        if changed:
            pool.use(current.faces)
            self.metrics.known_faces_loaded(current.faces)
        return KnownFacesDetails(current.version, current.source)

    # -- invocation ----------------------------------------------------------------------------

    def handle(self, event: Any, context: LambdaContext) -> dict[str, Any]:
        """One invocation: dispatch on the event's kind."""
        request_id = getattr(context, "aws_request_id", "") or ""
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            if self.known_faces is None:
                self._start_known_faces()  # uploaded since? (transient errors: retried)
            try:
                source = source_of(event)
            except EventFormatError as error:
                log.error("event.unsupported", reason=str(error))
                raise
            if source is Source.TEST:
                log.info("event.test_ignored")
                return {"ignored": "s3:TestEvent"}
            if source is Source.SQS:
                return self._handle_sqs(event, context)
            outcomes = [self.process(ref, context) for ref in S3Event(event).objects]
            return {"results": [outcome_dict(o) for o in outcomes]}
        finally:
            self.metrics.flush(request_id)
            structlog.contextvars.unbind_contextvars("request_id")

    def _handle_sqs(self, event: Any, context: LambdaContext) -> dict[str, Any]:
        failures: list[str] = []
        # The margin work_deadline keeps, from the invocation's start: a message is not begun
        # in it. (The full deadline_margin_s would defer every message of a function whose
        # timeout is under it: 30 s, the template's minimum.)
        margin_s = effective_margin(context, self.settings.deadline_margin_s)
        for record in SQSEvent(event).records:
            message_id = record.message_id
            remaining_s = context.get_remaining_time_in_millis() / 1000
            if remaining_s < margin_s:
                # Not started: hand it back for redelivery rather than be cut off mid-video.
                log.warning("message.deferred", message_id=message_id, remaining_s=remaining_s)
                failures.append(message_id)
                continue
            if record.is_test_event:
                log.info("event.test_ignored", message_id=message_id)
                continue
            try:
                for ref in record.s3_event.objects:
                    self.process(ref, context)
            except EventFormatError as error:
                log.error("message.unsupported", message_id=message_id, reason=str(error))
                failures.append(message_id)
            except INFRASTRUCTURE_ERRORS as error:
                log.error("message.failed", message_id=message_id, error=repr(error))
                failures.append(message_id)
        self.metrics.messages_handed_back(len(failures))
        return {"batchItemFailures": [{"itemIdentifier": m} for m in failures]}

    # -- one object ----------------------------------------------------------------------------

    def process(self, ref: S3ObjectRef, context: LambdaContext) -> Outcome:
        """Recognise one object and write its result; infrastructure errors propagate."""
        with structlog.contextvars.bound_contextvars(key=ref.key, bucket=ref.bucket):
            if not ref.is_object_created:
                log.info("object.ignored", event_name=ref.event_name)
                return Outcome(ref.key, "skipped")
            if ref.bucket == self.settings.output_bucket and split_result_key(ref.key):
                # Input and output bucket mixed up: answering our own results would loop.
                log.warning("object.ignored", reason="a result file in the output bucket")
                return Outcome(ref.key, "skipped")
            request_id = getattr(context, "aws_request_id", "") or ""
            pool, live = self.pool, self.known_faces
            if pool is None or live is None:
                log.error("video.refused", code=KNOWN_FACES_UNAVAILABLE)
                return self._fail(ref, KNOWN_FACES_UNAVAILABLE, self.known_problem, request_id)
            deadline = work_deadline(context, self.settings.deadline_margin_s)
            try:
                version = getattr(context, "function_version", "")
                return self._process(ref, request_id, version, deadline, live=live, pool=pool)
            except (VideoError, InputRefused) as error:
                return self._fail(ref, error.code, error.message, request_id)
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as error:
                # Unexpected, yet raised while handling this video: answer with an error rather
                # than have Lambda retry a video that will fail the same way.
                log.exception("video.crashed")
                return self._fail(ref, "internal_error", repr(error), request_id)

    def _process(
        self,
        ref: S3ObjectRef,
        request_id: str,
        lambda_version: str,
        deadline: float,
        *,
        live: LiveKnownFaces,
        pool: RecognitionPool,
    ) -> Outcome:
        started = time.perf_counter()
        head = self._head(ref)
        size, etag = head["ContentLength"], head.get("ETag", "")
        if size > self.settings.max_input_bytes:
            raise InputRefused(
                "input_too_large",
                f"{size} bytes is over the limit of {self.settings.max_input_bytes}",
            )
        if time.monotonic() >= deadline:
            raise VideoError("too_slow", "no time left in this invocation to start the video")
        timings: dict[str, float] = {}
        known_faces = self._refresh_known_faces(live, pool)
        path = self._download(ref, etag, size)
        try:
            timings["download"] = time.perf_counter() - started
            recognition = pool.recognise(path, deadline=deadline)
        finally:
            path.unlink(missing_ok=True)
        timings.update({f"recognise_{k}": v for k, v in recognition.timings.items()})
        mark = time.perf_counter()
        students = self.directory.lookup(recognition.names)
        timings["lookup"] = time.perf_counter() - mark
        sheet = render_contact_sheet(recognition) if self.settings.contact_sheet else None
        version = f"{self.version} ({lambda_version})" if lambda_version else self.version
        details = build_details(
            recognition,
            students,
            input_ref=InputDetails(ref.key, etag, size),
            timings={**timings, "total": time.perf_counter() - started},
            settings=settings_used(
                self.options,
                contact_sheet=self.settings.contact_sheet,
                max_input_bytes=self.settings.max_input_bytes,
            ),
            function_version=version,
            request_id=request_id,
            known_faces=known_faces,
        )
        csv_key = self.writer.write_success(details, sheet)
        log.info(
            "video.processed",
            people=recognition.names,
            unknown_faces=len(recognition.unknown_faces),
            known_faces_version=known_faces.version,
            frames_sampled=recognition.frames_sampled,
            bytes=size,
            seconds=round(time.perf_counter() - started, 3),
        )
        self.metrics.video_processed(
            len(recognition.names),
            len(recognition.unknown_faces),
            {**timings, "total": time.perf_counter() - started},
        )
        return Outcome(ref.key, "ok", csv_key)

    def _head(self, ref: S3ObjectRef) -> Mapping[str, Any]:
        try:
            return self.s3.head_object(Bucket=ref.bucket, Key=ref.key)
        except ClientError as error:
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404 and self._bucket_exists(ref.bucket):
                raise InputRefused("input_missing", "the object no longer exists") from error
            if status == 403:
                # Not taken for "missing": with s3:ListBucket (the template grants it) S3 says
                # 404 for that, so a 403 is a denial; raised, so Lambda retries, then records it.
                log.error(
                    "input.forbidden",
                    hint="the function role needs s3:GetObject on the key and s3:ListBucket on "
                    "the bucket (without ListBucket a missing key answers 403), and kms:Decrypt "
                    "if the object is SSE-KMS encrypted",
                )
            raise

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.s3.head_bucket(Bucket=bucket)
        except ClientError:
            return False
        return True

    def _download(self, ref: S3ObjectRef, etag: str, size: int) -> Path:
        """Stream the object to a new private file; IfMatch pins the version HEAD saw."""
        # The extension is kept for people reading logs; FFmpeg probes the content anyway.
        suffix = Path(ref.key).suffix.lower()
        suffix = suffix if SAFE_SUFFIX.fullmatch(suffix) else ""
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=self.settings.tmp_dir)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                kwargs: dict[str, Any] = {"IfMatch": etag} if etag else {}
                body = self.s3.get_object(Bucket=ref.bucket, Key=ref.key, **kwargs)["Body"]
                with body:
                    for chunk in body.iter_chunks(CHUNK_BYTES):
                        out.write(chunk)
        except OSError as error:
            path.unlink(missing_ok=True)
            if error.errno == errno.ENOSPC:
                raise InputRefused(
                    "input_too_large", f"{size} bytes do not fit in {self.settings.tmp_dir}"
                ) from error
            raise
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path

    def _fail(self, ref: S3ObjectRef, code: str, message: str, request_id: str) -> Outcome:
        error_key = self.writer.write_failure(ErrorDoc(code, message, request_id, ref.key))
        self.metrics.video_failed(code)
        return Outcome(ref.key, "error", error_key, code)

    def sweep_tmp(self) -> None:
        """Remove input files an earlier, killed invocation left in tmp_dir."""
        for stale in self.settings.tmp_dir.glob(f"{TMP_PREFIX}*"):
            stale.unlink(missing_ok=True)


def work_deadline(context: LambdaContext, margin_s: float) -> float:
    """When a video's work must stop (`time.monotonic()`) so its error.json is still written.

    Lambda kills an invocation at its timeout with no output, then retries it twice; stopping
    `margin_s` before (half the time left, if that is less: a short timeout still gets half
    its time) turns a too-slow video into a `too_slow` answer instead. `max_seconds` still
    applies when it comes first.
    """
    remaining_s = context.get_remaining_time_in_millis() / 1000
    return time.monotonic() + remaining_s - effective_margin(context, margin_s)


def effective_margin(context: LambdaContext, margin_s: float) -> float:
    """`margin_s`, or half the invocation's remaining time if that is less."""
    return min(margin_s, context.get_remaining_time_in_millis() / 1000 / 2)


def outcome_dict(outcome: Outcome) -> dict[str, str]:
    """The outcome as the invocation's JSON response, empty fields left out."""
    return {k: v for k, v in dataclasses.asdict(outcome).items() if v}


@functools.cache
def get_runtime() -> Runtime:
    """The container's runtime, built on first use from the environment (HYBRID_*)."""
    settings = FunctionSettings()
    configure_logging(settings.log_level, json=True)
    use_local_credentials_for_loopback(settings.endpoint_url)  # the emulator on a laptop
    return Runtime(settings, settings.recognition)


def handler(event: Any, context: LambdaContext) -> dict[str, Any]:
    """Lambda's entry point (`lambda_fn.handler.handler`)."""
    return get_runtime().handle(event, context)


if os.environ.get("AWS_LAMBDA_RUNTIME_API") or os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # Inside Lambda, the image test or the local runtime (`hybrid-lambda serve-local`, which
    # sets Lambda's variables): load everything during the init phase, so a bad configuration
    # fails the init with a clear message and no invocation pays for loading out of its time
    # limit (a first invocation that did would start with seconds less than it is told).
    get_runtime()
