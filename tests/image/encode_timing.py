"""Time HOG detection and one 128-d face descriptor with the dlib an image carries.

Used to choose DLIB_VARIANT: compare `bin` (dlib-bin wheel) with `blas` (built against
OpenBLAS) side by side on the same machine, e.g.

    buildah run -v ../shared/data:/data:ro CONTAINER -- python /opt/app/encode_timing.py \
        /data/faces/probes/obama-720p.jpg
"""

from __future__ import annotations

import statistics
import sys
import time

import dlib
import face_recognition_models as fr_models
import numpy as np
from PIL import Image


def main(path: str, repeats: int = 15) -> None:
    image = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))
    detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(fr_models.pose_predictor_five_point_model_location())
    encoder = dlib.face_recognition_model_v1(fr_models.face_recognition_model_location())
    face = detector(image, 1)[0]
    detect_times = []
    for _ in range(max(3, repeats // 3)):
        started = time.perf_counter()
        detector(image, 1)
        detect_times.append(time.perf_counter() - started)
    shape = landmarks(image, face)
    encoder.compute_face_descriptor(image, shape, 1)  # first call allocates
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        encoder.compute_face_descriptor(image, shape, 1)
        times.append(time.perf_counter() - started)
    median_ms, min_ms = statistics.median(times) * 1000, min(times) * 1000
    print(
        f"DLIB_USE_BLAS={dlib.DLIB_USE_BLAS} encode median {median_ms:.1f} ms "
        f"min {min_ms:.1f} ms over {repeats}; HOG detection (upsample 1, "
        f"{image.shape[1]}x{image.shape[0]}) median {statistics.median(detect_times) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 15)
