"""The recognition pool's worker processes never outlive the process that made them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

# Makes a 2-worker pool, prints the workers' pids, then waits to be killed.
CHILD = """
import sys, time
import numpy as np
from lambda_fn.known_faces import KnownFaces
from lambda_fn.recognition_pool import RecognitionPool
from lambda_fn.settings import RecognitionOptions
known = KnownFaces(names=["a"], encodings=np.zeros((1, 128)), sources=["test"])
pool = RecognitionPool(known, RecognitionOptions(workers=2))
print(" ".join(str(w.process.pid) for w in pool._workers), flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_workers_exit_when_their_parent_is_killed() -> None:
    """Regression: each worker inherited its siblings' pipe ends, so after a SIGKILL of the
    parent (a Lambda init timeout, the image test's runtime) no pipe ever closed and the
    workers lived on as orphans."""
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    assert parent.stdout is not None
    with parent.stdout:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(pids) == 2
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
        time.sleep(0.1)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert alive == [], "pool workers outlived their parent"
