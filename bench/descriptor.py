#!/usr/bin/env python3
"""Face descriptor benchmark: dlib-bin's ResNet and the numpy one, on the same faces.

For each BLAS thread count (default 1 and 2) this runs itself as a subprocess with
OPENBLAS_NUM_THREADS/OMP_NUM_THREADS set (they must be set before numpy loads OpenBLAS); the
subprocess finds the faces of the shared photos (HOG detector, 5-point landmarks, as
lambda_fn.faces does), checks the two engines agree, then times both, warm, in rounds (each
engine over all faces in turn, the order reversed every other round, so both see the same
machine load), and reports medians:
  full  compute_face_descriptor(image, landmarks, 1) vs lambda_fn.resnet_descriptor's
        compute_descriptor (both extract the same chip, then run the network)
  net   the network alone on the 150x150 chip
plus the one-time loading cost of each model. dlib-bin is built without BLAS, so the thread
count only changes the numpy engine.

Usage: python bench/descriptor.py [--rounds N] [--threads 1,2] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HYBRID_SHARED_DATA", REPO.parent / "shared" / "data"))
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def find_faces(models: Any) -> list[tuple[str, Any, Any]]:
    """(photo, image, landmarks) for every face the HOG detector finds in the shared photos."""
    import numpy as np
    from PIL import Image

    found: list[tuple[str, Any, Any]] = []
    photos = sorted((SHARED / "faces").rglob("*"))
    for photo in (p for p in photos if p.suffix.lower() in PHOTO_SUFFIXES):
        with Image.open(photo) as opened:
            image = np.ascontiguousarray(opened.convert("RGB"))
        rects = list(models.detector(image, 0)) or list(models.detector(image, 1))
        found.extend((photo.name, image, models.landmarks(image, rect)) for rect in rects)
    return found


def timed(call: Any) -> tuple[float, float]:
    """(wall ms, CPU ms of this process) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def worker(rounds: int) -> dict[str, Any]:
    """One thread setting: load both models, check agreement, time both engines."""
    import dlib
    import numpy as np

    from lambda_fn.faces import models
    from lambda_fn.resnet_descriptor import DescriptorNetwork, compile_steps, face_chip
    from lambda_fn.resnet_weights import default_weights_path, load_network

    path = default_weights_path()
    path.read_bytes()  # both loads below then read from the page cache
    wall = time.perf_counter()
    encoder = dlib.face_recognition_model_v1(str(path))
    dlib_load = time.perf_counter() - wall
    wall = time.perf_counter()
    weights = load_network(path)
    ours = DescriptorNetwork(weights, compile_steps(weights))
    numpy_load = time.perf_counter() - wall

    faces = find_faces(models())
    chips = [face_chip(image, landmarks) for _, image, landmarks in faces]

    theirs = np.array([encoder.compute_face_descriptor(i, lm, 1) for _, i, lm in faces])
    mine = np.array([ours.describe_chip(chip).astype(np.float64) for chip in chips])
    distance_gap = max(
        abs(np.linalg.norm(theirs[i] - theirs[j]) - np.linalg.norm(mine[i] - mine[j]))
        for i, j in itertools.combinations(range(len(faces)), 2)
    )

    engines = {
        "dlib full": lambda i, m, c: encoder.compute_face_descriptor(i, m, 1),
        "numpy full": lambda i, m, c: ours.describe_chip(face_chip(i, m)),
        "dlib net": lambda i, m, c: encoder.compute_face_descriptor(c),
        "numpy net": lambda i, m, c: ours.describe_chip(c),
    }
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
    # Each round runs every engine over all faces in turn (the order reversed every other
    # round), not face by face: OpenBLAS's idle threads spin for a while after a product, and
    # interleaving let that spin land in dlib's timings (measured: dlib 180 ms CPU per face
    # beside 2 BLAS threads, 115 ms alone).
    for round_number in range(rounds + 1):  # round 0 warms up and is not counted
        order = list(engines) if round_number % 2 else list(reversed(engines))
        for name in order:
            for (_, image, landmarks), chip in zip(faces, chips, strict=True):
                measured = timed(lambda e=engines[name], i=image, m=landmarks, c=chip: e(i, m, c))
                if round_number:
                    samples[name].append(measured)
    return {
        "faces": len(faces),
        "photos": len({photo for photo, _, _ in faces}),
        "max_abs_difference": float(np.abs(theirs - mine).max()),
        "max_distance_difference": float(distance_gap),
        "load_seconds": {"dlib": dlib_load, "numpy": numpy_load},
        "median_ms": {k: statistics.median(w for w, _ in v) for k, v in samples.items()},
        "cpu_ms": {k: statistics.mean(c for _, c in v) for k, v in samples.items()},
        "samples_per_engine": len(samples["dlib full"]),
        "numpy": np.__version__,
        "dlib": dlib.__version__,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds over all faces")
    parser.add_argument("--threads", default="1,2", help="BLAS thread counts to measure")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.rounds)))
        return 0
    if not (SHARED / "faces").is_dir():
        print(f"shared data not found at {SHARED} (set HYBRID_SHARED_DATA)", file=sys.stderr)
        return 2

    load_before = os.getloadavg()[0]
    results: dict[int, dict[str, Any]] = {}
    for threads in (int(t) for t in args.threads.split(",")):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
        argv = [sys.executable, __file__, "--worker", "--rounds", str(args.rounds)]
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=True)
        results[threads] = json.loads(done.stdout.splitlines()[-1])
    if args.json:
        print(json.dumps(results, indent=2))
        return 0

    first = next(iter(results.values()))
    print(
        f"conditions: {os.cpu_count()} CPUs, load average {load_before:.2f} before, "
        f"{os.getloadavg()[0]:.2f} after; "
        f"dlib {first['dlib']} (dlib-bin, no BLAS), numpy {first['numpy']} (OpenBLAS); "
        f"{first['faces']} faces from {first['photos']} photos, warm, median of "
        f"{first['samples_per_engine']} timings per engine (faces x {args.rounds} rounds, "
        "engines taking turns)"
    )
    print(
        f"agreement: max |numpy - dlib| = {first['max_abs_difference']:.2g}, "
        f"max pairwise distance difference = {first['max_distance_difference']:.2g}"
    )
    print(
        f"load once: dlib face_recognition_model_v1 {first['load_seconds']['dlib'] * 1000:.0f} ms, "
        f"numpy reader + compile {first['load_seconds']['numpy'] * 1000:.0f} ms"
    )
    print(
        f"{'BLAS threads':>12} {'path':>5} {'dlib ms/face':>13} {'numpy ms/face':>14} "
        f"{'speed-up':>9} {'dlib CPU ms':>12} {'numpy CPU ms':>13}"
    )
    # CPU ms: this process's CPU time per face (all its threads), mean. It does not depend on
    # how busy the machine is, and shows what the BLAS threads cost beside the wall time.
    for threads, result in results.items():
        for path in ("full", "net"):
            theirs, ours = result["median_ms"][f"dlib {path}"], result["median_ms"][f"numpy {path}"]
            print(
                f"{threads:>12} {path:>5} {theirs:>13.1f} {ours:>14.1f} {theirs / ours:>8.1f}x "
                f"{result['cpu_ms'][f'dlib {path}']:>12.1f} "
                f"{result['cpu_ms'][f'numpy {path}']:>13.1f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
