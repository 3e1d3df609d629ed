"""The numpy ResNet descriptor: dlib's descriptors on real faces, and a reader that refuses
damaged weights files with a ValueError (never a crash or a hang)."""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

from lambda_fn.faces import encode_face, models, warm_up
from lambda_fn.resnet_descriptor import compute_descriptor, face_chip, network
from lambda_fn.resnet_weights import default_weights_path, load_network, parse_network
from lambda_fn.settings import RecognitionOptions
from tests.lambda_fn.clips import load_picture

# float32 rounding only: dlib sums its products in another order (measured on the 15 faces
# of the shared photos: max 3.6e-7 per component, descriptors of norm ~1.4; pairwise
# distances within 4.7e-7). The match tolerance is 0.6 and one true match sits 0.034 under
# it, so distances must agree far below 0.001; 1e-5 leaves a 30x margin over what we measure.
DESCRIPTOR_TOLERANCE = 1e-5
DISTANCE_TOLERANCE = 1e-5
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass(frozen=True, eq=False)
class Face:
    photo: str
    image: np.ndarray
    landmarks: Any


@pytest.fixture(scope="module")
def faces(shared_data: Path) -> list[Face]:
    """Every face dlib's HOG detector finds in the shared photos, with its 5-point landmarks
    (as lambda_fn.faces does: upsampled once only where nothing is found at full size)."""
    found: list[Face] = []
    photos = sorted((shared_data / "faces").rglob("*"))
    for photo in (path for path in photos if path.suffix.lower() in PHOTO_SUFFIXES):
        image = load_picture(photo)
        rects = list(models().detector(image, 0)) or list(models().detector(image, 1))
        for rect in rects:
            found.append(Face(photo.name, image, models().landmarks(image, rect)))
    assert len(found) >= 10, "the shared photos should hold at least 10 detectable faces"
    return found


@pytest.fixture(scope="module")
def descriptors(faces: list[Face]) -> tuple[np.ndarray, np.ndarray]:
    """(dlib's, ours) for every face, one row each."""
    encoder = models().encoder
    theirs = np.array([encoder.compute_face_descriptor(f.image, f.landmarks, 1) for f in faces])
    ours = np.array([compute_descriptor(f.image, f.landmarks) for f in faces])
    return theirs, ours


@pytest.mark.shared_data
@pytest.mark.slow
def test_descriptors_equal_dlibs_on_every_face(
    descriptors: tuple[np.ndarray, np.ndarray],
) -> None:
    theirs, ours = descriptors
    assert ours.shape == theirs.shape == (len(theirs), 128)
    worst = float(np.abs(ours - theirs).max())
    assert worst <= DESCRIPTOR_TOLERANCE, f"max |ours - dlib| = {worst:.3g}"


@pytest.mark.shared_data
@pytest.mark.slow
def test_distances_between_faces_equal_dlibs(descriptors: tuple[np.ndarray, np.ndarray]) -> None:
    """What matching sees: every pairwise distance, so no match can flip at tolerance 0.6."""
    theirs, ours = descriptors
    worst = 0.0
    for i, j in itertools.combinations(range(len(theirs)), 2):
        dlib_distance = float(np.linalg.norm(theirs[i] - theirs[j]))
        our_distance = float(np.linalg.norm(ours[i] - ours[j]))
        worst = max(worst, abs(dlib_distance - our_distance))
    assert worst <= DISTANCE_TOLERANCE, f"max |distance difference| = {worst:.3g}"


@pytest.mark.shared_data
@pytest.mark.slow
def test_the_chip_is_the_one_dlib_describes(faces: list[Face]) -> None:
    """dlib describing our chip gives exactly what it gives for the image and landmarks."""
    encoder = models().encoder
    face = faces[0]
    from_image = np.array(encoder.compute_face_descriptor(face.image, face.landmarks, 1))
    from_chip = np.array(encoder.compute_face_descriptor(face_chip(face.image, face.landmarks)))
    np.testing.assert_array_equal(from_image, from_chip)


def test_a_chip_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="150x150x3"):
        network().describe_chip(np.zeros((100, 100, 3), dtype=np.uint8))


# --- damaged weights files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_bytes() -> bytes:
    return default_weights_path().read_bytes()


def test_the_shipped_file_parses_into_the_face_network(weights_bytes: bytes) -> None:
    parsed = parse_network(weights_bytes)
    assert parsed.input_size == 150
    np.testing.assert_allclose(parsed.input_means, [122.782, 117.001, 104.298], rtol=1e-6)
    assert math.isclose(parsed.distance_threshold, 0.6, rel_tol=1e-6)
    assert len(parsed.layers) == 130


# Every truncation in the headers, the input layer and the first convolution's start, then
# some deep inside the file and the very last byte.
TRUNCATIONS = [*range(0, 420, 7), 19_000, 5_000_000, 22_334_900, -1]


@pytest.mark.timeout(60)
def test_a_truncated_file_is_a_value_error(weights_bytes: bytes) -> None:
    for end in TRUNCATIONS:
        with pytest.raises(ValueError, match="dlib weights"):
            parse_network(weights_bytes[:end])


def replaced(data: bytes, old: bytes, new: bytes) -> bytes:
    assert old in data
    return data.replace(old, new, 1)


def test_a_wrong_layer_name_is_a_value_error_naming_the_layer(weights_bytes: bytes) -> None:
    damaged = replaced(weights_bytes, b"\x05relu_", b"\x05sig__")
    with pytest.raises(ValueError, match=r"layer \d+ \(relu\) at byte \d+: expected 'relu_'"):
        parse_network(damaged)


def test_a_huge_tensor_size_is_refused_before_any_allocation(weights_bytes: bytes) -> None:
    # The first convolution's params: version 2, then 4736 samples (0x1280) -> 2**62.
    damaged = replaced(
        weights_bytes, b"con_4\x01\x02\x02\x80\x12", b"con_4\x01\x02\x08" + bytes(7) + b"\x40"
    )
    with pytest.raises(ValueError, match=r"is outside 0\.\."):
        parse_network(damaged)


def test_a_nan_weight_is_refused(weights_bytes: bytes) -> None:
    start = weights_bytes.index(b"con_4") + len(
        b"con_4\x01\x02\x02\x80\x12\x01\x01\x01\x01\x01\x01"
    )
    damaged = weights_bytes[:start] + b"\x00\x00\xc0\x7f" + weights_bytes[start + 4 :]
    with pytest.raises(ValueError, match="NaN"):
        parse_network(damaged)


def test_trailing_bytes_are_refused(weights_bytes: bytes) -> None:
    with pytest.raises(ValueError, match="unexpected bytes"):
        parse_network(weights_bytes + b"\x00")


def test_a_file_too_large_to_be_the_network_is_not_read(tmp_path: Path) -> None:
    big = tmp_path / "big.dat"
    with big.open("wb") as out:
        out.truncate(65 * 1024 * 1024)  # sparse: no disk used
    with pytest.raises(ValueError, match="over"):
        load_network(big)


LAYER_NAMES = (b"con_4", b"affine_", b"relu_", b"max_pool_2", b"avg_pool_2", b"add_prev_", b"fc_2")


def structural_offsets(data: bytes) -> list[int]:
    """Where the file holds structure rather than weights: the headers and the input layer,
    the bytes around every layer name, and the end (flipping a weight proves little)."""
    offsets = set(range(420)) | set(range(len(data) - 200, len(data)))
    for name in LAYER_NAMES:
        at = data.find(name)
        while at != -1:
            offsets.update(range(max(0, at - 24), at + len(name) + 24))
            at = data.find(name, at + 1)
    return sorted(offsets)


@pytest.mark.timeout(120)
@settings(max_examples=25, deadline=None)
@given(choice=st.data(), value=st.integers(0, 255))
def test_any_changed_structure_byte_parses_or_is_a_value_error(
    weights_bytes: bytes, choice: st.DataObject, value: int
) -> None:
    """Never another exception, never a hang: a changed byte may still be a valid network
    (a flag, a learning-rate multiplier), anything else must be a ValueError."""
    position = choice.draw(st.sampled_from(structural_offsets(weights_bytes)))
    damaged = bytearray(weights_bytes)
    damaged[position] = value
    with contextlib.suppress(ValueError):
        parse_network(bytes(damaged))


def test_the_pipeline_encodes_with_the_numpy_engine_by_default(faces: list[Face]) -> None:
    """encode_face, and so recognition and enrolment, use the numpy engine unless told."""
    face = faces[0]
    assert RecognitionOptions().descriptor == "numpy"
    default = encode_face(face.image, face.landmarks)
    assert np.array_equal(default, compute_descriptor(face.image, face.landmarks))
    chosen = encode_face(face.image, face.landmarks, "dlib")
    reference = models().encoder.compute_face_descriptor(face.image, face.landmarks, 1)
    assert np.array_equal(chosen, np.array(reference))
    assert np.abs(default - chosen).max() < DESCRIPTOR_TOLERANCE


def test_numpy_blas_runs_on_one_thread_once_the_network_is_loaded() -> None:
    """Two BLAS threads were slower than one beside other work (bench/descriptor.py); a
    forked pool worker inherits the limit."""
    warm_up()
    blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
    assert blas and all(pool["num_threads"] == 1 for pool in blas)
