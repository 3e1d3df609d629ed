"""Which cloud errors are worth retrying, and the one retry policy every cloud call shares.

Throttling (SlowDown, 503, 429), server errors and broken connections are transient: retried
with exponential backoff and full jitter. Anything else (AccessDenied, NoSuchBucket, a file
that vanished) fails at once, because waiting cannot fix it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from hybrid_common.logs import get_logger

T = TypeVar("T")
log = get_logger(__name__)

# Told of every retry before it waits (the service sets its metrics' `retried`): a context
# variable, so the tasks a service starts inherit its observer and several services in one
# test process keep their own.
RETRY_OBSERVER: ContextVar[Callable[[str], None] | None] = ContextVar(
    "RETRY_OBSERVER", default=None
)

# Error codes AWS documents as "slow down / try again", across S3 and Lambda.
TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceException",
        "EC2ThrottledException",
    }
)


def error_code(error: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(error: BaseException) -> int:
    if isinstance(error, ClientError):
        return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return 0


def is_transient(error: BaseException) -> bool:
    """True if the same request may well succeed later."""
    if isinstance(error, ClientError):
        status = http_status(error)
        return error_code(error) in TRANSIENT_CODES or status >= 500 or status == 429
    # botocore wraps aiohttp's failures (reset, refused, timeouts) into these; the raw
    # aiohttp/asyncio ones are listed for errors raised while streaming a body.
    return isinstance(
        error,
        BotoConnectionError
        | HTTPClientError
        | aiohttp.ClientError
        | asyncio.TimeoutError
        | ConnectionError,
    )


def describe(error: BaseException) -> str:
    """A one-line reason for logs and the journal: 'Code: message' or 'Type: text'."""
    if isinstance(error, ClientError):
        message = error.response.get("Error", {}).get("Message", "") or str(error)
        return f"{error_code(error) or http_status(error)}: {message}"
    return f"{type(error).__name__}: {error}"


@dataclass
class RetryBudget:
    """Retries allowed for one unit of work (a file): attempts per request and a deadline."""

    attempts_per_call: int
    deadline: float
    base_delay: float
    max_delay: float
    retries: int = field(default=0)

    @classmethod
    def start(
        cls, attempts: int, seconds: float, base_delay: float, max_delay: float
    ) -> RetryBudget:
        return cls(attempts, time.monotonic() + seconds, base_delay, max_delay)

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number >= self.attempts_per_call:
            return True
        # Do not start a wait that would end past the deadline.
        upcoming = state.upcoming_sleep or 0.0
        return time.monotonic() + upcoming >= self.deadline

    async def call(self, what: str, call: Callable[[], Awaitable[T]], **fields: Any) -> T:
        """Run `call`, retrying transient errors within the budget; re-raise the last error."""

        def before_sleep(state: RetryCallState) -> None:
            self.retries += 1
            if (observer := RETRY_OBSERVER.get()) is not None:
                observer(what)
            error = state.outcome.exception() if state.outcome else None
            log.warning(
                f"{what}.retrying",
                attempt=state.attempt_number,
                wait_s=round(state.upcoming_sleep, 3),
                error=describe(error) if error else "",
                **fields,
            )

        retrying = AsyncRetrying(
            stop=self._stop,
            wait=wait_random_exponential(multiplier=self.base_delay, max=self.max_delay),
            retry=retry_if_exception(is_transient),
            before_sleep=before_sleep,
            reraise=True,
        )
        result: T = await retrying(call)
        return result
