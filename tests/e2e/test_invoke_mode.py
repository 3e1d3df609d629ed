"""trigger_mode "invoke" on one machine: S3 on moto's server, Lambda's Invoke API served by
`hybrid-local serve` (two endpoints: `endpoint_url` and `lambda_endpoint_url`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import ServeLocal, provision_stack, s3_client
from tests.watcher_daemon import Cloud, Daemon, drop, video_bytes
from watcher.journal import State


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_invoke_mode_reaches_serve_local_while_s3_stays_on_moto(
    moto_endpoint: str, unique_name: str, tmp_path: Path
) -> None:
    resources = provision_stack(moto_endpoint, unique_name, 30)
    # Only the watcher's invokes may start the function: no bucket notification.
    s3_client(moto_endpoint).put_bucket_notification_configuration(
        Bucket=resources.input_bucket, NotificationConfiguration={}
    )
    runtime = ServeLocal(resources, tmp_path / "stand-in")
    cloud = Cloud(moto_endpoint, resources.input_bucket, resources.output_bucket)
    daemon = Daemon(
        tmp_path / "node", cloud, trigger_mode="invoke", lambda_endpoint_url=runtime.invoke_url
    )
    try:
        daemon.start()
        drop(daemon.inbox, "clip one.mp4", video_bytes("clip one"))
        daemon.wait_until(lambda: daemon.concluded(1), timeout=60)
    finally:
        daemon.stop()
        assert runtime.stop() == 0
    [sub] = daemon.submissions()
    assert sub.state is State.DONE and sub.triggered
    assert (daemon.done / "clip one.csv").exists()
    # (Provisioning's s3:TestEvent also reached the queue before the notification was removed:
    # an invocation without a key.)
    [invocation] = [e for e in runtime.named("invocation.completed") if "key" in e]
    assert invocation["source"] == "invoke-event"
    assert invocation["key"] == sub.key
