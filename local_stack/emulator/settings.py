"""Settings of `hybrid-local serve`, the local stand-in for Lambda's service side.

Environment variables HYBRID_* (names shared with the watcher where they mean the same thing:
endpoint_url, region, queue, function_name), overridden by command-line flags. The handler's
own settings (output bucket, table, known faces) stay in `lambda_fn.settings`: the workers
inherit this process's environment, as a Lambda function inherits its configuration.
"""

from __future__ import annotations

import os

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from hybrid_common.config import ENV_PREFIX, LogFormat, LogLevel


def default_concurrency() -> int:
    """One execution environment per CPU core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class RuntimeSettings(BaseSettings):
    """How the local runtime polls, scales and serves the Invoke API."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    endpoint_url: str | None = Field(
        default=None, description="SQS endpoint (moto's server locally); unset for AWS."
    )
    region: str = Field(default="us-east-1", min_length=1)
    queue: str = Field(
        default="hybridsphere-input-events",
        min_length=1,
        description="Queue the input bucket notifies: a name or a queue URL.",
    )
    input_bucket: str = Field(
        default="hybridsphere-input",
        min_length=3,
        description="The only bucket whose objects the Invoke API runs the function for (the "
        "watcher's input_bucket): the API has no authentication, and the function's "
        "credentials may reach other buckets.",
    )
    function_name: str = Field(
        default="hybridsphere-face-recognition",
        min_length=1,
        description="Name the Invoke API answers to (the watcher's function_name).",
    )
    handler: str = Field(
        default="lambda_fn.handler.handler",
        description="Import path of the handler, `package.module.function` or `module:function`.",
    )
    max_concurrency: int = Field(
        default_factory=default_concurrency,
        ge=1,
        le=256,
        description="Most execution environments (worker processes) alive at once.",
    )
    idle_scale_down_s: float = Field(
        default=30.0, gt=0, description="An environment idle this long is shut down."
    )
    function_timeout_s: int = Field(
        default=900,
        ge=1,
        le=900,
        description="Invocation time limit; also the visibility timeout of received messages.",
    )
    init_timeout_s: float = Field(
        default=60.0, gt=0, description="Time allowed to import the handler in a new environment."
    )
    memory_mb: int = Field(
        default=3008, ge=128, le=10240, description="Reported to the handler as its memory size."
    )
    batch_size: int = Field(
        default=1,
        ge=1,
        le=10,
        description="SQS messages per invocation. One, because a video is seconds of CPU: "
        "spreading videos over environments beats batching them.",
    )
    poll_wait_s: int = Field(
        default=2,
        ge=0,
        le=20,
        description="SQS long-poll wait per receive call; shutdown waits for the current one, "
        "so it is short (AWS's own event source uses 20).",
    )
    invoke_api: bool = Field(default=True, description="Serve Lambda's Invoke API.")
    invoke_host: str = Field(
        default="127.0.0.1",
        description="Invoke API address; loopback unless inside a private container network "
        "(the API has no authentication).",
    )
    invoke_port: int = Field(default=9001, ge=0, le=65535, description="0 picks a free port.")
    async_retry_delay_s: float = Field(
        default=60.0,
        ge=0,
        description="Delay before retrying a failed Event invocation (Lambda: 1 then 2 minutes).",
    )
    dedupe_capacity: int = Field(
        default=10_000, ge=1, description="Object versions remembered to drop duplicate events."
    )
    shutdown_grace_s: float = Field(
        default=30.0, ge=0, description="On SIGTERM, running invocations get this long to finish."
    )
    log_level: LogLevel = "info"
    log_format: LogFormat = "auto"

    @field_validator("handler")
    @classmethod
    def _handler_is_an_import_path(cls, value: str) -> str:
        module, _, function = value.replace(":", ".").rpartition(".")
        if not module or not function.isidentifier():
            raise ValueError(f"expected `package.module.function`, got {value!r}")
        return value
