"""Prometheus metrics of the daemon, served on `metrics_port` when it is set.

A private registry, so a test process can create several services without clashing names.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Drop→result latency: seconds to an hour, the range a function's cold start to a long queue spans.
LATENCY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class Metrics:
    """The daemon's counters and gauges (always updated; served only if asked)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge("watcher_queue_depth", "Submissions waiting to upload", registry=r)
        self.waiting = Gauge(
            "watcher_inbox_waiting", "Inbox files seen but not yet complete", registry=r
        )
        self.pending_results = Gauge(
            "watcher_pending_results", "Uploaded submissions waiting for a result", registry=r
        )
        self.uploads = Counter("watcher_uploads", "Uploads completed", registry=r)
        self.upload_bytes = Counter("watcher_upload_bytes", "Bytes uploaded", registry=r)
        self.failures = Counter(
            "watcher_failures", "Submissions failed, by stage", ["stage"], registry=r
        )
        self.results = Counter(
            "watcher_results", "Results received, by outcome", ["outcome"], registry=r
        )
        self.rejected = Counter(
            "watcher_rejected", "Inbox entries rejected", ["reason"], registry=r
        )
        self.result_latency = Histogram(
            "watcher_result_latency_seconds",
            "From the file's discovery to its result",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

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
