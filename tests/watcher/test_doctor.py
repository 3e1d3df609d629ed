"""`hybrid-watcher doctor` against the local cloud (moto's server, provisioned by the project's
own provisioning): all ok on a healthy node, and one broken thing at a time makes its line fail."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import threading
import time
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from local_stack.provision import KNOWN_FACES_KEY, Resources
from tests.mounts import small_tmpfs
from tests.servers import free_port, provision_stack, s3_client
from tests.watcher_daemon import REPO
from watcher.doctor import DEFAULT_KNOWN_FACES_KEY, Status, notification_covers, skew_status

WATCHER = REPO / ".venv" / "bin" / "hybrid-watcher"


@pytest.fixture
def stack(moto_endpoint: str, unique_name: str) -> Resources:
    resources = provision_stack(moto_endpoint, unique_name, function_timeout_s=30)
    s3_client(moto_endpoint).put_object(
        Bucket=resources.input_bucket, Key=KNOWN_FACES_KEY, Body=b'{"people": []}'
    )
    return resources


def node_env(stack: Resources, root: Path, **settings: str) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "HYBRID_ENDPOINT_URL": stack.endpoint_url or "",
        "HYBRID_INPUT_BUCKET": stack.input_bucket,
        "HYBRID_OUTPUT_BUCKET": stack.output_bucket,
        "HYBRID_STAGING_ROOT": str(root),
        "HYBRID_NODE_ID": "node-a",
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask a metadata service for credentials
    }
    env.update({f"HYBRID_{k.upper()}": v for k, v in settings.items()})
    return env


def doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run the real command; its exit status, its checks by name, and its text output."""
    ran = subprocess.run(
        [str(WATCHER), "doctor", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    doc = json.loads(ran.stdout)
    text = subprocess.run(
        [str(WATCHER), "doctor"], env=env, capture_output=True, text=True, timeout=60
    )
    assert text.returncode == ran.returncode
    return ran.returncode, {c["name"]: c for c in doc["checks"]}, text.stdout


def test_a_healthy_node_passes_every_check(stack: Resources, tmp_path: Path) -> None:
    code, checks, text = doctor(node_env(stack, tmp_path / "staging"))
    assert code == 0, text
    assert {c["status"] for c in checks.values()} <= {"ok", "skip"}, text
    assert set(checks) >= {
        "config valid", "credentials", "input bucket writable", "output bucket readable",
        "trigger covers extensions", "known faces", "clock skew", "staging writable",
        "staging one file system", "staging free space",
    }  # fmt: skip
    assert KNOWN_FACES_KEY in checks["known faces"]["detail"]
    assert text.splitlines()[0].startswith("ok")
    # The probe object is gone again.
    listed = s3_client(stack.endpoint_url).list_objects_v2(Bucket=stack.input_bucket)
    assert [o["Key"] for o in listed.get("Contents", [])] == [KNOWN_FACES_KEY]


def test_a_missing_output_bucket_fails_its_line(stack: Resources, tmp_path: Path) -> None:
    env = node_env(stack, tmp_path / "staging", output_bucket=f"{stack.output_bucket}-gone")
    code, checks, text = doctor(env)
    assert code == 1
    line = checks["output bucket readable"]
    assert line["status"] == "fail" and "NoSuchBucket" in line["detail"]
    assert "create bucket" in line["fix"]
    assert checks["input bucket writable"]["status"] == "ok"
    assert "fix: create bucket" in text


def test_a_notification_lacking_m4v_fails_the_trigger_line(
    stack: Resources, tmp_path: Path
) -> None:
    s3 = s3_client(stack.endpoint_url)
    configs = [
        {
            "Id": f"video-{ext}",
            "QueueArn": stack.queue_arn,
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": f".{ext}"}]}},
        }
        for ext in ("mp4", "mov")
    ]
    s3.put_bucket_notification_configuration(
        Bucket=stack.input_bucket, NotificationConfiguration={"QueueConfigurations": configs}
    )
    env = node_env(stack, tmp_path / "staging", allowed_extensions='["mp4", "M4V", "mov"]')
    code, checks, _ = doctor(env)
    assert code == 1
    line = checks["trigger covers extensions"]
    assert line["status"] == "fail"
    assert ".m4v" in line["detail"] and ".mp4" not in line["detail"]
    assert ".m4v" in line["fix"]


def test_a_bucket_that_notifies_nothing_fails_the_trigger_line(
    stack: Resources, tmp_path: Path
) -> None:
    s3_client(stack.endpoint_url).put_bucket_notification_configuration(
        Bucket=stack.input_bucket, NotificationConfiguration={}
    )
    code, checks, _ = doctor(node_env(stack, tmp_path / "staging"))
    assert code == 1
    assert "notifies nothing" in checks["trigger covers extensions"]["detail"]


def test_missing_known_faces_fail_their_line(stack: Resources, tmp_path: Path) -> None:
    s3_client(stack.endpoint_url).delete_object(Bucket=stack.input_bucket, Key=KNOWN_FACES_KEY)
    code, checks, _ = doctor(node_env(stack, tmp_path / "staging"))
    assert code == 1
    line = checks["known faces"]
    assert line["status"] == "fail" and KNOWN_FACES_KEY in line["detail"]
    assert "hybrid-lambda faces build" in line["fix"]


def test_done_on_another_file_system_fails_the_one_file_system_line(
    stack: Resources, tmp_path: Path
) -> None:
    root = tmp_path / "staging"
    root.mkdir()
    with small_tmpfs(root / "done", "4m"):
        code, checks, _ = doctor(node_env(stack, root))
    assert code == 1
    line = checks["staging one file system"]
    assert line["status"] == "fail" and str(root / "done") in line["detail"]
    assert checks["staging writable"]["status"] == "ok"


def test_little_free_space_warns(stack: Resources, tmp_path: Path) -> None:
    root = tmp_path / "staging"
    with small_tmpfs(root, "100m"):
        code, checks, _ = doctor(node_env(stack, root))
    assert code == 0  # a warning is not a failure
    assert checks["staging free space"]["status"] == "warn"


def test_no_credentials_against_aws_fail_and_skip_the_cloud(tmp_path: Path) -> None:
    env = node_env(
        Resources(None, "us-east-1", "hybrid-in-x", "hybrid-out-x", "t", "q"), tmp_path / "s"
    )
    del env["HYBRID_ENDPOINT_URL"]  # AWS itself: never contacted without credentials
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    code, checks, text = doctor(env)
    assert code == 1
    assert checks["credentials"]["status"] == "fail"
    assert "/etc/hybrid-watcher/credentials.env" in checks["credentials"]["fix"]
    assert checks["cloud checks"]["status"] == "skip"
    assert "Traceback" not in text


def test_no_credentials_are_needed_for_a_loopback_endpoint(
    stack: Resources, tmp_path: Path
) -> None:
    env = node_env(stack, tmp_path / "staging")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        env.pop(name)
    code, checks, _ = doctor(env)
    assert code == 0
    assert "local" in checks["credentials"]["detail"]


def test_an_invalid_config_fails_the_first_line(tmp_path: Path) -> None:
    env = {**os.environ, "HYBRID_STAGING_ROOT": str(tmp_path), "HYBRID_UPLOAD_CONCURRENCY": "0"}
    code, checks, _ = doctor(env)
    assert code == 1
    assert checks["config valid"]["status"] == "fail"
    assert "upload_concurrency" in checks["config valid"]["detail"]


def test_an_unreachable_function_fails_in_invoke_mode(stack: Resources, tmp_path: Path) -> None:
    env = node_env(
        stack, tmp_path / "staging", trigger_mode="invoke",
        lambda_endpoint_url=f"http://127.0.0.1:{free_port()}",
    )  # fmt: skip
    code, checks, _ = doctor(env)
    assert code == 1
    assert checks["function reachable"]["status"] == "fail"
    assert checks["trigger covers extensions"]["status"] == "ok"


# --- the pure parts ---


def test_skew_thresholds() -> None:
    assert skew_status(59) is Status.OK
    assert skew_status(-61) is Status.WARN
    assert skew_status(301) is Status.FAIL


def test_a_notification_counts_only_for_keys_it_matches_and_creations_it_hears() -> None:
    rules = [{"Name": "prefix", "Value": "videos/"}, {"Name": "suffix", "Value": ".mp4"}]
    config = {"Events": ["s3:ObjectCreated:*"], "Filter": {"Key": {"FilterRules": rules}}}
    assert notification_covers(config, "videos/n/id/a.mp4")
    assert not notification_covers(config, "other/n/id/a.mp4")
    assert not notification_covers(config, "videos/n/id/a.mov")
    put_only = {**config, "Events": ["s3:ObjectCreated:Put"]}  # misses multipart uploads
    assert not notification_covers(put_only, "videos/n/id/a.mp4")


def test_the_default_known_faces_key_is_the_templates_and_provisionings() -> None:
    text = (REPO / "deploy" / "aws" / "template.yaml").read_text()
    template = yaml.load(text, Loader=_CfnLoader)  # noqa: S506 -- our own template, tags ignored
    default = template["Parameters"]["KnownFacesKey"]["Default"]
    assert DEFAULT_KNOWN_FACES_KEY == default == KNOWN_FACES_KEY


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation's short-form tags (!Ref, !Sub, ...) as plain data."""


_CfnLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


class _SkewedDateProxy(http.server.BaseHTTPRequestHandler):
    """Forwards every request to moto and answers with moto's response, its Date header moved
    by `skew_s`: a cloud whose clock is off, as the node would see it."""

    upstream = ""
    skew_s = 0.0

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        target = urlsplit(self.upstream)
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        connection.request(self.command, self.path, body=body, headers=headers)
        answer = connection.getresponse()
        payload = answer.read()
        self.send_response_only(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in {"date", "transfer-encoding", "connection", "server"}:
                self.send_header(name, value)
        self.send_header("Date", formatdate(time.time() + self.skew_s, usegmt=True))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        connection.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

    def log_message(self, *_: object) -> None:  # quiet
        pass


@pytest.mark.parametrize(("skew_s", "status"), [(-600.0, "fail"), (-120.0, "warn")])
def test_a_clock_off_from_s3s_is_reported(
    stack: Resources, tmp_path: Path, skew_s: float, status: str
) -> None:
    handler = type("Proxy", (_SkewedDateProxy,), {"upstream": stack.endpoint_url,
                                                  "skew_s": skew_s})  # fmt: skip
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        env = node_env(stack, tmp_path / "staging", endpoint_url=endpoint)
        code, checks, _ = doctor(env)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    line = checks["clock skew"]
    assert line["status"] == status, line
    assert f"{-skew_s:+.0f} s" in line["detail"] or f"{-skew_s + 1:+.0f} s" in line["detail"]
    assert code == (1 if status == "fail" else 0)
