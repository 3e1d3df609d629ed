"""Loopback HTTP helpers for tests: a fault-injecting proxy and a request recorder.

`FaultProxy` sits between a client and moto's server, forwards every request, records what
it saw (method, path, query, body size) and can fail chosen requests: answer with an S3 error
(503 SlowDown, 403 AccessDenied, ...) or drop the connection without answering. With `chaos`
it also fails a set share of all requests at random (seeded): latency, connection resets,
503 SlowDown, 500 InternalError and truncated answers. Tests point the client's `endpoint_url`
at the proxy, so nothing in the client is patched.
"""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn

import aiohttp
from aiohttp import web

# Headers that belong to one hop, not to the request being forwarded.
_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "expect"}


@dataclass(frozen=True)
class Seen:
    """One request the proxy received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body_bytes: int
    body: bytes = field(repr=False, default=b"")

    @property
    def is_part_upload(self) -> bool:
        return self.method == "PUT" and "partNumber" in self.query and "uploadId" in self.query

    @property
    def is_object_put(self) -> bool:
        return self.method == "PUT" and not self.query and self.path.count("/") >= 2


Match = Callable[[Seen], bool]


@dataclass
class Fault:
    """Fail the next `remaining` requests that `match`: with an S3 error, or a dropped socket."""

    remaining: int
    match: Match
    status: int = 503
    code: str = "SlowDown"
    drop: bool = False


# The random faults `Chaos` draws from. "reset" drops the connection before forwarding (the
# request never reaches moto); "truncate" forwards it (moto acts on it) and then cuts the answer
# short, so the client cannot tell whether its request took effect: retries must be idempotent.
CHAOS_KINDS = ("latency", "reset", "slowdown", "internal", "truncate")


@dataclass(frozen=True)
class Chaos:
    """Fail `rate` of the requests that `match`, each with a kind drawn evenly from `kinds`.

    Seeded: the same run of draws every time, though which request meets which draw depends on
    the order concurrent requests arrive in.
    """

    rate: float
    seed: int = 0
    kinds: tuple[str, ...] = CHAOS_KINDS
    latency_s: tuple[float, float] = (0.05, 0.5)
    match: Match = lambda seen: True


def s3_error(status: int, code: str, message: str = "injected by the test proxy") -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        "<RequestId>FAULTPROXY</RequestId></Error>"
    )
    return web.Response(status=status, body=body.encode(), content_type="application/xml")


def _hang_up(request: web.Request) -> NoReturn:
    """Drop the client's connection without (the rest of) an answer."""
    assert request.transport is not None
    request.transport.abort()
    raise asyncio.CancelledError


class FaultProxy:
    """A loopback reverse proxy in front of `upstream`, run on the test's event loop."""

    def __init__(self, upstream: str, *, keep_bodies: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.seen: list[Seen] = []
        self.faults: list[Fault] = []
        self.injected = 0
        self.chaos: Chaos | None = None
        self.chaos_injected: Counter[str] = Counter()  # kind → how many requests met it
        self._rng = random.Random(0)
        self._keep_bodies = keep_bodies
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    def fail(
        self,
        times: int,
        match: Match = lambda seen: True,
        *,
        status: int = 503,
        code: str = "SlowDown",
        drop: bool = False,
    ) -> Fault:
        fault = Fault(times, match, status, code, drop)
        self.faults.append(fault)
        return fault

    def start_chaos(self, chaos: Chaos) -> None:
        """From now on, fail requests at random as `chaos` says."""
        self._rng = random.Random(chaos.seed)
        self.chaos = chaos

    def stop_chaos(self) -> None:
        self.chaos = None

    async def __aenter__(self) -> FaultProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        seen = Seen(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body_bytes=len(body),
            body=body if self._keep_bodies else b"",
        )
        self.seen.append(seen)
        for fault in self.faults:
            if fault.remaining > 0 and fault.match(seen):
                fault.remaining -= 1
                self.injected += 1
                if fault.drop:
                    # Drop the connection with the request read and no answer: the client
                    # sees a reset / server disconnect, as with a crashed load balancer.
                    assert request.transport is not None
                    request.transport.abort()
                    raise asyncio.CancelledError
                return s3_error(fault.status, fault.code)
        chaos = self.chaos
        try:
            if chaos is not None and chaos.match(seen) and self._rng.random() < chaos.rate:
                kind = self._rng.choice(chaos.kinds)
                self.chaos_injected[kind] += 1
                delay_s = self._rng.uniform(*chaos.latency_s)
                return await self._misbehave(request, body, kind, delay_s)
            return await self._forward(request, body)
        except aiohttp.ClientError:
            # The upstream is down or died mid-answer (a stopped moto): the client's connection
            # drops too, rather than getting an answer moto never gave.
            _hang_up(request)

    async def _misbehave(
        self, request: web.Request, body: bytes, kind: str, delay_s: float
    ) -> web.StreamResponse:
        if kind == "latency":
            await asyncio.sleep(delay_s)
            return await self._forward(request, body)
        if kind == "slowdown":
            return s3_error(503, "SlowDown", "Please reduce your request rate.")
        if kind == "internal":
            return s3_error(500, "InternalError", "We encountered an internal error.")
        if kind == "truncate":
            answer = await self._forward(request, body)
            payload = answer.body if isinstance(answer.body, bytes) else b""
            if len(payload) >= 2:
                # Promise the whole body, send half, hang up: the client reads a short body.
                cut = web.StreamResponse(status=answer.status, headers=answer.headers)
                cut.content_length = len(payload)
                await cut.prepare(request)
                await cut.write(payload[: len(payload) // 2])
        elif kind != "reset":
            raise ValueError(f"unknown chaos kind {kind!r}")
        # A reset, or a truncation with no body to cut: hang up without (more of) an answer.
        _hang_up(request)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        # The client's Host goes on unchanged: it is part of what SigV4 signs, and a server
        # that checks signatures (SeaweedFS, AWS; not moto) refuses a request whose Host
        # was rewritten to the upstream's.
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Host"] = request.host
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=io.BytesIO(body),
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out_headers = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in _HOP and k.lower() != "content-encoding"
            }
            if request.method == "HEAD" and "Content-Length" in upstream.headers:
                # A HEAD answer's length is the object's, not of the (empty) body.
                out_headers["Content-Length"] = upstream.headers["Content-Length"]
                return web.Response(status=upstream.status, headers=out_headers)
            return web.Response(status=upstream.status, headers=out_headers, body=payload)


class Recorder:
    """A loopback HTTP server that records every request and answers `status` with `body`."""

    def __init__(self, status: int = 202, body: bytes = b"") -> None:
        self.status = status
        self.body = body
        self.seen: list[Seen] = []
        # Answers used (first in, first out) before the default one: (status, body, headers).
        self.queued: list[tuple[int, bytes, dict[str, str]]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Recorder:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                len(body),
                body,
            )
        )
        status, payload, extra = self.queued.pop(0) if self.queued else (self.status, self.body, {})
        headers = {"x-amzn-RequestId": "recorder", "Content-Type": "application/json"} | extra
        return web.Response(status=status, body=payload, headers=headers)
