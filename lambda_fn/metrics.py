"""The function's CloudWatch metrics, in Embedded Metric Format through aws-lambda-powertools.

EMF is a JSON line on stdout with an `_aws` block: CloudWatch Logs turns it into metrics with
no API call and no extra latency (a PutMetricData per video would add a request and a failure
mode to every invocation). Namespace `HybridSphere`, dimension `service=face-recognition`.

Per invocation (one EMF document, flushed when the invocation ends):
  Videos, PeopleFound, UnknownFaces (Count: unknown groups, one per stranger) and one
  `<stage>Duration` (Milliseconds) per stage the handler timed (download,
  recognise_decode, recognise_detect, …, lookup, total);
  MessagesHandedBack (Count) for SQS messages returned for redelivery.
Separately, with a dimension of their own:
  VideoErrors by `ErrorCode` (the code in `<stem>.error.json`), one document per error;
  KnownFacesLoaded by `KnownFacesVersion` (a digest of the file's content) when a container
  starts or rolls out a new version, so a graph shows which known-faces file the fleet runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from lambda_fn.known_faces import KnownFaces

NAMESPACE = "HybridSphere"
SERVICE = "face-recognition"


def known_faces_version(known: KnownFaces) -> str:
    """A short digest of the known faces' canonical bytes: equal files, equal versions."""
    return hashlib.sha256(known.to_bytes()).hexdigest()[:12]


def duration_metric(stage: str) -> str:
    """`recognise_decode` -> `RecogniseDecodeDuration`."""
    return "".join(part.capitalize() for part in stage.split("_")) + "Duration"


class FunctionMetrics:
    """What the handler counts; emitted as EMF on stdout."""

    def __init__(self, known: KnownFaces | None = None) -> None:
        self._metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
        self.known_version = ""
        if known is not None:
            self.known_faces_loaded(known)

    def known_faces_loaded(self, known: KnownFaces) -> None:
        """A container loaded its known faces (at start, or once a missing file appeared),
        or rolled out a new version."""
        self.known_version = known_faces_version(known)
        with single_metric(
            name="KnownFacesLoaded",
            unit=MetricUnit.Count,
            value=len(known),
            namespace=NAMESPACE,
            default_dimensions={"service": SERVICE},
        ) as metric:
            metric.add_dimension(name="KnownFacesVersion", value=self.known_version)

    def video_processed(
        self, people: int, unknown_faces: int, timings_s: Mapping[str, float]
    ) -> None:
        m = self._metrics
        m.add_metric(name="Videos", unit=MetricUnit.Count, value=1)
        m.add_metric(name="PeopleFound", unit=MetricUnit.Count, value=people)
        m.add_metric(name="UnknownFaces", unit=MetricUnit.Count, value=unknown_faces)
        for stage, seconds in timings_s.items():
            m.add_metric(
                name=duration_metric(stage),
                unit=MetricUnit.Milliseconds,
                value=round(seconds * 1000, 3),
            )

    def video_failed(self, code: str) -> None:
        with single_metric(
            name="VideoErrors",
            unit=MetricUnit.Count,
            value=1,
            namespace=NAMESPACE,
            default_dimensions={"service": SERVICE},
        ) as metric:
            metric.add_dimension(name="ErrorCode", value=code)

    def messages_handed_back(self, count: int) -> None:
        if count:
            self._metrics.add_metric(name="MessagesHandedBack", unit=MetricUnit.Count, value=count)

    def flush(self, request_id: str) -> None:
        """Emit what this invocation recorded (nothing, if it recorded nothing)."""
        if self._metrics.metric_set:
            # Metadata is logged with the metrics (not a dimension): ties them to the request.
            self._metrics.add_metadata(key="request_id", value=request_id)
            self._metrics.add_metadata(key="known_faces_version", value=self.known_version)
            self._metrics.flush_metrics()
