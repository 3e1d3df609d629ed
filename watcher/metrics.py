"""Prometheus metrics of the daemon, served on `metrics_port` when it is set.

Names follow Prometheus' conventions: the `hybrid_watcher_` prefix, the unit at the end
(`_seconds`, `_bytes`), `_total` on counters (prometheus_client adds it), `_info` on the build
labels, and the standard `process_*` metrics (CPU, memory, open files) of this process.
deploy/grafana/hybrid-watcher.json graphs them; a test holds its queries to this registry.
A private registry, so a test process can create several services without clashing names.
"""

from __future__ import annotations

import threading
from importlib import metadata
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    start_http_server,
)

# Drop→result latency: seconds to an hour, the range a function's cold start to a long queue spans.
LATENCY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)
PREFIX = "hybrid_watcher_"
# The series a metric family of each type exposes, after its name.
SAMPLE_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "info": ("_info",),
}


def build_version() -> str:
    """The installed package's version (what install-venv.sh put in the VM's venv)."""
    try:
        return metadata.version("hybridsphere")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """The daemon's counters and gauges (always updated; served only if asked)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.build = Info(f"{PREFIX}build", "The running watcher's version", registry=r)
        self.build.info({"version": build_version()})
        self.queue_depth = Gauge(
            f"{PREFIX}upload_queue_submissions", "Submissions waiting to upload", registry=r
        )
        self.waiting = Gauge(
            f"{PREFIX}inbox_waiting_files", "Inbox files seen but not yet complete", registry=r
        )
        self.pending_results = Gauge(
            f"{PREFIX}pending_results_submissions",
            "Uploaded submissions waiting for a result",
            registry=r,
        )
        self.uploads = Counter(f"{PREFIX}uploads", "Uploads completed", registry=r)
        self.upload_bytes = Counter(f"{PREFIX}uploaded_bytes", "Bytes uploaded", registry=r)
        self.retries = Counter(
            f"{PREFIX}retries",
            "Cloud calls retried after a transient error, by operation",
            ["operation"],
            registry=r,
        )
        self.failures = Counter(
            f"{PREFIX}failures", "Submissions failed, by stage", ["stage"], registry=r
        )
        self.results = Counter(
            f"{PREFIX}results", "Results received, by outcome", ["outcome"], registry=r
        )
        self.last_result = Gauge(
            f"{PREFIX}last_result_timestamp_seconds",
            "When the latest result (any outcome) was recorded, Unix time",
            registry=r,
        )
        self.rejected = Counter(
            f"{PREFIX}rejected_files", "Inbox entries rejected", ["reason"], registry=r
        )
        self.requests = Counter(
            f"{PREFIX}cloud_requests",
            "Cloud API calls made (each retry counts), by service and operation",
            ["service", "operation"],
            registry=r,
        )
        self.result_notifications = Counter(
            f"{PREFIX}result_notifications",
            "Final results named by the result queue (duplicates and early ones included)",
            registry=r,
        )
        self.result_latency = Histogram(
            f"{PREFIX}result_latency_seconds",
            "From the file's discovery to its result",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def retried(self, operation: str) -> None:
        """A retry is about to wait (watcher.retry's observer)."""
        self.retries.labels(operation=operation).inc()

    def names(self) -> set[str]:
        """Every series name this registry can expose (e.g. `hybrid_watcher_uploads_total`),
        including labelled ones that have no sample yet."""
        return {
            family.name + suffix
            for family in self.registry.collect()
            for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))
        }

    def serve(self, port: int, address: str) -> None:
        self._server, self._thread = start_http_server(port, address, registry=self.registry)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
