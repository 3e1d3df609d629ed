"""dlib's 128-d face descriptor computed in numpy: dlib's own weights, float32 matrix products.

The `dlib-bin` wheel is built without BLAS; here each convolution is one im2col copy and one
float32 matrix product through numpy's OpenBLAS. The chip is dlib's (get_face_chip with the
size and padding compute_face_descriptor uses), so the descriptors equal dlib's up to float32
rounding: max 3.6e-7 on the shared photos' 15 faces (tests/lambda_fn/test_resnet_descriptor.py).
Measured (bench/descriptor.py, 2 CPUs under a parallel CI run, 1 BLAS thread): 16 ms a face
against dlib-bin's 111 ms, 6.9x. The 29 matrix products (542 MFLOP) are ~70% of it, at
~45 GFLOP/s on one AMD EPYC core: more speed would need fewer operations (batching faces,
Winograd), not tighter numpy. Two BLAS threads were slower on that busy machine (OpenBLAS's
threads spin waiting for a core), so BLAS runs on one thread: a Lambda container handles one
video at a time and `recognition_pool` already runs one process per core.
`lambda_fn.faces.encode_face` uses it unless the `descriptor` option says 'dlib'.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Any

import dlib
import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from threadpoolctl import threadpool_limits

from lambda_fn.resnet_weights import (
    AddPrev,
    Affine,
    AvgPool,
    Conv,
    FullyConnected,
    MaxPool,
    Relu,
    ResnetWeights,
    Skip,
    Tag,
    default_weights_path,
    load_network,
)

FloatArray = npt.NDArray[np.float32]
# compute_face_descriptor's chip: get_face_chip_details(shape, 150, 0.25) (dlib's python
# binding, face_recognition.cpp).
CHIP_SIZE = 150
CHIP_PADDING = 0.25


@dataclass(frozen=True, eq=False)
class _ConvStep:
    """A convolution ready for im2col: weights (rows*cols*channels, filters), with a
    following affine folded in. The column order is (row, col, channel), not dlib's
    (channel, row, col): on our (rows, cols, channels) activations each copied piece is then
    a contiguous channel vector, which made im2col ~10x faster (0.8 -> 0.08 ms, 35x35x32)."""

    weights: FloatArray
    biases: FloatArray
    kernel: int
    stride: int
    padding: int


Step = _ConvStep | Affine | Relu | MaxPool | AvgPool | Tag | Skip | AddPrev | FullyConnected


def compile_steps(network: ResnetWeights) -> tuple[Step, ...]:
    """The layers as steps: convolution weights reshaped once, each affine that follows a
    convolution folded into it (g*(Wx+b)+beta = (g*W)x + (g*b+beta): one pass fewer over
    the activations, a change of float32 rounding only)."""
    steps: list[Step] = []
    layers = network.layers
    index = 0
    while index < len(layers):
        layer = layers[index]
        if isinstance(layer, Conv):
            filters, kernel = layer.filters, layer.filters.shape[2]
            matrix = filters.transpose(2, 3, 1, 0).reshape(-1, filters.shape[0])
            biases = layer.biases
            following = layers[index + 1] if index + 1 < len(layers) else None
            if isinstance(following, Affine):
                matrix = matrix * following.gamma
                biases = biases * following.gamma + following.beta
                index += 1
            steps.append(
                _ConvStep(
                    weights=np.ascontiguousarray(matrix, dtype=np.float32),
                    biases=biases.astype(np.float32),
                    kernel=kernel,
                    stride=layer.stride,
                    padding=layer.padding,
                )
            )
        else:
            steps.append(layer)
        index += 1
    return tuple(steps)


def _convolve(x: FloatArray, step: _ConvStep) -> FloatArray:
    """x (rows, cols, channels) -> (out_rows, out_cols, filters), dlib's output size
    1 + (size + 2*padding - kernel) // stride and zero padding."""
    if step.padding:
        pad = step.padding
        # A zeroed buffer and one copy: ~5x cheaper than np.pad's general code.
        padded = np.zeros((x.shape[0] + 2 * pad, x.shape[1] + 2 * pad, x.shape[2]), np.float32)
        padded[pad:-pad, pad:-pad] = x
        x = padded
    windows = sliding_window_view(x, (step.kernel, step.kernel), axis=(0, 1))
    windows = windows[:: step.stride, :: step.stride].transpose(0, 1, 3, 4, 2)
    rows, cols = windows.shape[:2]
    columns = windows.reshape(rows * cols, -1)  # copies: the im2col matrix
    out: FloatArray = columns @ step.weights
    out += step.biases
    return out.reshape(rows, cols, -1)


def _pool(x: FloatArray, window: int, stride: int, *, average: bool) -> FloatArray:
    """dlib's pooling without padding (the only kind this network has): every window lies
    inside the input; window 0 pools the whole input. One strided slice per window offset,
    combined with max or summed: ~4x cheaper than reducing a window view."""
    if window == 0:
        whole: FloatArray = (
            x.mean(axis=(0, 1), keepdims=True, dtype=np.float32)
            if average
            else x.max(axis=(0, 1), keepdims=True)
        )
        return whole
    rows = 1 + (x.shape[0] - window) // stride
    cols = 1 + (x.shape[1] - window) // stride

    def offset(dy: int, dx: int) -> FloatArray:
        last_row, last_col = dy + stride * (rows - 1), dx + stride * (cols - 1)
        return x[dy : last_row + 1 : stride, dx : last_col + 1 : stride]

    result = offset(0, 0).copy()
    for dy, dx in itertools.product(range(window), range(window)):
        if (dy, dx) == (0, 0):
            continue
        if average:
            result += offset(dy, dx)
        else:
            np.maximum(result, offset(dy, dx), out=result)
    if average:
        result /= np.float32(window * window)
    return result


def _add_zero_padded(a: FloatArray, b: FloatArray) -> FloatArray:
    """dlib's tt::add(dest, src1, src2): dest takes the larger size in every dimension and
    a value missing from either side counts as 0. The downsampling blocks meet this: a
    stride-2 3x3 convolution of an even size is one row and column smaller than the 2x2
    average pool beside it, and has twice the channels."""
    if a.shape == b.shape:
        return a + b
    shape = tuple(max(p, q) for p, q in zip(a.shape, b.shape, strict=True))
    out = np.zeros(shape, dtype=np.float32)
    out[: a.shape[0], : a.shape[1], : a.shape[2]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2]] += b
    return out


def _apply(  # noqa: PLR0911 - one return per step type: a flat match reads better than a table
    step: Step, x: FloatArray, tagged: dict[int, FloatArray]
) -> FloatArray:
    """One step on the activations `x` (rows, cols, channels); `tagged` holds tag outputs."""
    match step:
        case _ConvStep():
            return _convolve(x, step)
        case Affine(gamma=gamma, beta=beta):
            return x * gamma + beta
        case Relu():
            # In place unless a tag still holds this very array.
            if any(x is held for held in tagged.values()):
                return np.maximum(x, 0)
            return np.maximum(x, 0, out=x)
        case MaxPool(window=window, stride=stride):
            return _pool(x, window, stride, average=False)
        case AvgPool(window=window, stride=stride):
            return _pool(x, window, stride, average=True)
        case Tag(id=tag):
            tagged[tag] = x
            return x
        case Skip(id=tag):
            return tagged[tag]
        case AddPrev(tag=tag):
            return _add_zero_padded(x, tagged[tag])
        case FullyConnected(weights=weights):
            # dlib flattens a sample as (channels, rows, cols); ours are (rows, cols, channels).
            flat = np.ascontiguousarray(x.transpose(2, 0, 1)).reshape(1, -1)
            return (flat @ weights).reshape(1, 1, -1)
    raise AssertionError(f"no step {step!r}")  # every Step type is matched above


def forward(steps: tuple[Step, ...], network: ResnetWeights, chip: npt.NDArray[Any]) -> FloatArray:
    """The network's output (128 float32) for a chip (size x size x 3 RGB uint8)."""
    size = network.input_size
    if chip.shape != (size, size, 3):
        raise ValueError(f"a face chip is {size}x{size}x3, got {chip.shape}")
    # input_rgb_image_sized: (pixel - mean) / 256 in float32, as dlib/dnn/input.h does.
    x: FloatArray = (chip.astype(np.float32) - network.input_means) / np.float32(256)
    tagged: dict[int, FloatArray] = {}
    for step in steps:
        x = _apply(step, x, tagged)
    result: FloatArray = x.reshape(-1)
    return result


@dataclass(frozen=True, eq=False)
class DescriptorNetwork:
    """The parsed weights and their compiled steps, loaded once per process."""

    weights: ResnetWeights
    steps: tuple[Step, ...]

    def describe_chip(self, chip: npt.NDArray[Any]) -> FloatArray:
        return forward(self.steps, self.weights, chip)


@functools.cache
def network() -> DescriptorNetwork:
    """The process-wide network, from face_recognition_models' .dat file.

    Also holds numpy's BLAS to one thread for the rest of the process (see the module's
    docstring): set here, at run time, because OPENBLAS_NUM_THREADS only counts if it is in
    the environment before numpy is first imported.
    """
    threadpool_limits(1, user_api="blas")
    weights = load_network(default_weights_path())
    return DescriptorNetwork(weights, compile_steps(weights))


def describe_chip(chip: npt.NDArray[Any]) -> FloatArray:
    """The descriptor of an already aligned 150x150 RGB chip (warm-up, benchmarks)."""
    return network().describe_chip(chip)


def face_chip(image: npt.NDArray[Any], landmarks: Any) -> npt.NDArray[np.uint8]:
    """The aligned 150x150 chip dlib's compute_face_descriptor extracts for these landmarks."""
    chip: npt.NDArray[np.uint8] = dlib.get_face_chip(
        image, landmarks, size=CHIP_SIZE, padding=CHIP_PADDING
    )
    return chip


def compute_descriptor(image: npt.NDArray[Any], landmarks: Any) -> npt.NDArray[np.float64]:
    """The 128-d descriptor of the face at `landmarks` (dlib's 5-point shape) in `image` (RGB),
    as float64 like dlib's compute_face_descriptor (which casts its float32 output)."""
    return network().describe_chip(face_chip(image, landmarks)).astype(np.float64)
