"""A reader for dlib's serialized face-recognition ResNet (dlib_face_recognition_resnet_model_v1).

The file is dlib's own serialization of the network type in dlib's
examples/dnn_face_recognition_ex.cpp (`anet_type`). It is not self-describing: the wrappers
(add_layer, add_tag_layer, add_skip_layer) write only a version number, and which is which
follows from the C++ type. So the reader walks that fixed architecture (`FACE_NET`) and checks
every name, version, size and shape it meets against it. The file is untrusted input: sizes are
bounded before anything is allocated, nothing is evaluated, and anything unexpected raises a
ValueError that says what was being read and at which byte.

Formats (dlib sources): integers, floats and strings in dlib/serialize.h and
dlib/float_details.h; tensors and alias tensors in dlib/cuda/tensor.h (`resizable_tensor`
version 2: raw little-endian float32); wrappers in dlib/dnn/core.h; layers in
dlib/dnn/layers.h (con_4, affine_, relu_, max_pool_2, avg_pool_2, add_prev_, fc_2);
loss_metric_2 in dlib/dnn/loss.h; input_rgb_image_sized in dlib/dnn/input.h.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
# The shipped file is 22.4 MB; anything far larger is not this network.
MAX_FILE_BYTES = 64 * 1024 * 1024
# The largest tensor of the network is a 256x256x3x3 convolution (590,080 floats with biases).
MAX_TENSOR_ELEMENTS = 1 << 22
MAX_STRING_BYTES = 64
# float_details marks infinities and NaN with these exponents (dlib/float_details.h).
FLOAT_SPECIAL_EXPONENT = 32000
CONV_MODE = 0  # dlib's layer_mode for an affine_ after a convolution (per channel)
FC_NO_BIAS = 1  # dlib's fc_bias_mode


# --- the layers, in forward order --------------------------------------------------------


@dataclass(frozen=True, eq=False)  # holds numpy arrays: no field-wise ==
class Conv:
    """dlib con_: filters (num_filters, channels, rows, cols), one bias per filter."""

    filters: FloatArray
    biases: FloatArray
    stride: int
    padding: int


@dataclass(frozen=True, eq=False)
class Affine:
    """dlib affine_ in CONV_MODE: batch norm folded into a per-channel scale and shift."""

    gamma: FloatArray
    beta: FloatArray


@dataclass(frozen=True)
class Relu:
    pass


@dataclass(frozen=True)
class MaxPool:
    window: int  # 0: the whole input (dlib's max_pool_everything)
    stride: int


@dataclass(frozen=True)
class AvgPool:
    window: int  # 0: the whole input (dlib's avg_pool_everything)
    stride: int


@dataclass(frozen=True)
class Tag:
    """Remembers the current output under `id` (dlib tagN)."""

    id: int


@dataclass(frozen=True)
class Skip:
    """Continues from the output last tagged `id` (dlib skipN)."""

    id: int


@dataclass(frozen=True)
class AddPrev:
    """Adds the output last tagged `tag`, zero-padding the smaller one (dlib add_prevN)."""

    tag: int


@dataclass(frozen=True, eq=False)
class FullyConnected:
    """dlib fc_ without bias: output = input (flattened) @ weights (inputs, outputs)."""

    weights: FloatArray


Layer = Conv | Affine | Relu | MaxPool | AvgPool | Tag | Skip | AddPrev | FullyConnected


@dataclass(frozen=True, eq=False)
class ResnetWeights:
    """The whole network: the input layer's settings, then the layers in forward order."""

    input_size: int  # the chip is input_size x input_size RGB
    input_means: FloatArray  # subtracted from R, G, B before dividing by 256
    layers: tuple[Layer, ...]
    margin: float  # loss_metric_: kept for completeness, not used to compute descriptors
    distance_threshold: float


# --- the architecture: dnn_face_recognition_ex.cpp, outermost layer first ----------------


@dataclass(frozen=True)
class _Expected:
    """One element of the expected network: what the file must hold at that place."""

    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, tag, skip, fc
    size: int = 0  # con: filters; fc: outputs; pools: window (0 = everything)
    kernel: int = 0
    stride: int = 1
    id: int = 0  # tag, skip, add_prev: the tag number

    @property
    def is_wrapper(self) -> bool:
        """Tags and skips are wrappers with no layer details of their own."""
        return self.kind in ("tag", "skip")


def _block(filters: int, stride: int) -> list[_Expected]:
    # block<N,BN,stride> = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>
    return [
        _Expected("affine"),
        _Expected("con", filters, 3, 1),
        _Expected("relu"),
        _Expected("affine"),
        _Expected("con", filters, 3, stride),
    ]


def _ares(filters: int) -> list[_Expected]:
    # relu<add_prev1<block<N,affine,1,tag1<SUBNET>>>>
    return [
        _Expected("relu"),
        _Expected("add_prev", id=1),
        *_block(filters, 1),
        _Expected("tag", id=1),
    ]


def _ares_down(filters: int) -> list[_Expected]:
    # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,affine,2,tag1<SUBNET>>>>>>>
    return [
        _Expected("relu"),
        _Expected("add_prev", id=2),
        _Expected("avg_pool", 2, stride=2),
        _Expected("skip", id=1),
        _Expected("tag", id=2),
        *_block(filters, 2),
        _Expected("tag", id=1),
    ]


FACE_NET: tuple[_Expected, ...] = (
    _Expected("fc", 128),
    _Expected("avg_pool", 0, stride=1),
    *_ares_down(256),  # alevel0
    *_ares(256),  # alevel1
    *_ares(256),
    *_ares_down(256),
    *_ares(128),  # alevel2
    *_ares(128),
    *_ares_down(128),
    *_ares(64),  # alevel3
    *_ares(64),
    *_ares(64),
    *_ares_down(64),
    *_ares(32),  # alevel4
    *_ares(32),
    *_ares(32),
    _Expected("max_pool", 3, stride=2),
    _Expected("relu"),
    _Expected("affine"),
    _Expected("con", 32, 7, 2),
)
INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128


# --- dlib's serialization primitives ------------------------------------------------------


class _Reader:
    """dlib's serialization primitives over bytes, with the byte offset in every error."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, what: str, problem: str, at: int | None = None) -> ValueError:
        where = self.pos if at is None else at
        return ValueError(f"dlib weights: {what} at byte {where}: {problem}")

    def take(self, count: int, what: str) -> bytes:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail(what, f"needs {count} bytes, the file ends at {len(self.data)}")
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def integer(self, what: str) -> int:
        """dlib's integer: a control byte (sign 0x80, byte count 0x0F), then the magnitude
        in little-endian order. The bits 0x70 are never set (serialize.h relies on that to
        tell this format from the old ASCII one)."""
        start = self.pos
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size > 8:
            raise self.fail(what, f"invalid integer control byte 0x{control:02x}", start)
        magnitude = int.from_bytes(self.take(size, what), "little")
        return -magnitude if control & 0x80 else magnitude

    def count(self, what: str, limit: int) -> int:
        start = self.pos
        value = self.integer(what)
        if not 0 <= value <= limit:
            raise self.fail(what, f"{value} is outside 0..{limit}", start)
        return value

    def expect(self, expected: int, what: str) -> None:
        start = self.pos
        value = self.integer(what)
        if value != expected:
            raise self.fail(what, f"expected {expected}, found {value}", start)

    def real(self, what: str) -> float:
        """dlib's float_details: mantissa (int64) then exponent (int16), value m * 2**e."""
        start = self.pos
        mantissa = self.integer(what)
        exponent = self.integer(what)
        if not -(2**63) <= mantissa < 2**63 or not -(2**15) <= exponent < 2**15:
            raise self.fail(what, "mantissa or exponent out of range", start)
        if exponent >= FLOAT_SPECIAL_EXPONENT:
            raise self.fail(what, "infinity or NaN where a finite number belongs", start)
        try:
            return math.ldexp(mantissa, exponent)
        except OverflowError:
            raise self.fail(what, "float out of range", start) from None

    def boolean(self, what: str) -> bool:
        start = self.pos
        byte = self.take(1, what)
        if byte not in (b"0", b"1"):
            raise self.fail(what, f"expected '0' or '1', found {byte!r}", start)
        return byte == b"1"

    def name(self, what: str, expected: str) -> None:
        """A layer's version string, which names the layer type and its format."""
        start = self.pos
        length = self.count(f"{what} name length", MAX_STRING_BYTES)
        found = self.take(length, what)
        if found != expected.encode():
            raise self.fail(what, f"expected {expected!r}, found {found!r}", start)

    def dims(self, what: str) -> tuple[int, int, int, int]:
        """(num_samples, k, nr, nc), each bounded so their product is bounded too."""
        values = tuple(self.count(what, MAX_TENSOR_ELEMENTS) for _ in range(4))
        n, k, nr, nc = values
        if n * k * nr * nc > MAX_TENSOR_ELEMENTS:
            raise self.fail(what, f"{values} holds more than {MAX_TENSOR_ELEMENTS} floats")
        return n, k, nr, nc

    def tensor(self, what: str) -> tuple[tuple[int, int, int, int], FloatArray]:
        """resizable_tensor version 2: dims, then the floats as raw little-endian float32."""
        self.expect(2, f"{what} tensor version")
        shape = self.dims(f"{what} tensor dims")
        start = self.pos
        raw = self.take(4 * math.prod(shape), f"{what} tensor data")
        values = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if not np.isfinite(values).all():
            raise self.fail(what, "tensor holds infinities or NaN", start)
        return shape, values

    def alias(self, what: str) -> tuple[int, int, int, int]:
        """alias_tensor: a view's dims into the layer's params (version 1)."""
        self.expect(1, f"{what} alias version")
        return self.dims(f"{what} alias dims")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail("end of network", f"{len(self.data) - self.pos} unexpected bytes")


# --- layers ---------------------------------------------------------------------------------


def _con(reader: _Reader, expected: _Expected, what: str) -> Conv:
    reader.name(what, "con_4")
    _, params = reader.tensor(f"{what} params")
    reader.expect(expected.size, f"{what} num_filters")
    reader.expect(expected.kernel, f"{what} rows")
    reader.expect(expected.kernel, f"{what} cols")
    reader.expect(expected.stride, f"{what} stride_y")
    reader.expect(expected.stride, f"{what} stride_x")
    # dlib's default padding (layers.h con_): kernel/2 when the stride is 1, otherwise none.
    padding = expected.kernel // 2 if expected.stride == 1 else 0
    reader.expect(padding, f"{what} padding_y")
    reader.expect(padding, f"{what} padding_x")
    start = reader.pos
    filters, channels, rows, cols = reader.alias(f"{what} filters")
    if (filters, rows, cols) != (expected.size, expected.kernel, expected.kernel):
        raise reader.fail(what, f"filters alias {(filters, channels, rows, cols)}", start)
    start = reader.pos
    if reader.alias(f"{what} biases") != (1, filters, 1, 1):
        raise reader.fail(what, "biases alias is not (1, num_filters, 1, 1)", start)
    weights_count = filters * channels * rows * cols
    if params.size != weights_count + filters:
        raise reader.fail(what, f"params hold {params.size} floats, the aliases say otherwise")
    for multiplier in ("learning rate", "weight decay", "bias learning rate", "bias decay"):
        reader.real(f"{what} {multiplier} multiplier")
    return Conv(
        filters=params[:weights_count].reshape(filters, channels, rows, cols),
        biases=params[weights_count:],
        stride=expected.stride,
        padding=padding,
    )


def _affine(reader: _Reader, what: str) -> Affine:
    reader.name(what, "affine_")
    _, params = reader.tensor(f"{what} params")
    start = reader.pos
    gamma = reader.alias(f"{what} gamma")
    beta = reader.alias(f"{what} beta")
    channels = gamma[1]
    if gamma != (1, channels, 1, 1) or beta != gamma or params.size != 2 * channels:
        raise reader.fail(what, f"gamma {gamma} / beta {beta} / {params.size} params", start)
    reader.expect(CONV_MODE, f"{what} mode")
    return Affine(gamma=params[:channels], beta=params[channels:])


def _pool(reader: _Reader, expected: _Expected, what: str) -> MaxPool | AvgPool:
    reader.name(what, "max_pool_2" if expected.kind == "max_pool" else "avg_pool_2")
    for field in ("rows", "cols"):
        reader.expect(expected.size, f"{what} {field}")
    for field in ("stride_y", "stride_x"):
        reader.expect(expected.stride, f"{what} {field}")
    # dlib's default pooling padding is window/2 only for stride 1; for this network (windows
    # 2 and 3 with stride 2, and the whole input) it is 0, so every window lies inside the input.
    for field in ("padding_y", "padding_x"):
        reader.expect(0, f"{what} {field}")
    if expected.kind == "max_pool":
        return MaxPool(window=expected.size, stride=expected.stride)
    return AvgPool(window=expected.size, stride=expected.stride)


def _fc(reader: _Reader, expected: _Expected, what: str) -> FullyConnected:
    reader.name(what, "fc_2")
    reader.expect(expected.size, f"{what} num_outputs")
    inputs = reader.count(f"{what} num_inputs", MAX_TENSOR_ELEMENTS)
    _, params = reader.tensor(f"{what} params")
    start = reader.pos
    if reader.alias(f"{what} weights") != (inputs, expected.size, 1, 1):
        raise reader.fail(what, "weights alias is not (num_inputs, num_outputs)", start)
    if params.size != inputs * expected.size:
        raise reader.fail(what, f"params hold {params.size} floats, expected weights only")
    start = reader.pos
    if reader.alias(f"{what} biases") != (0, 0, 0, 0):
        raise reader.fail(what, "an fc_no_bias layer with a biases alias", start)
    reader.expect(FC_NO_BIAS, f"{what} bias mode")
    for multiplier in ("learning rate", "weight decay", "bias learning rate", "bias decay"):
        reader.real(f"{what} {multiplier} multiplier")
    return FullyConnected(weights=params.reshape(inputs, expected.size))


def _details(reader: _Reader, expected: _Expected, what: str) -> Layer:
    if expected.kind == "con":
        return _con(reader, expected, what)
    if expected.kind == "affine":
        return _affine(reader, what)
    if expected.kind == "relu":
        reader.name(what, "relu_")
        return Relu()
    if expected.kind in ("max_pool", "avg_pool"):
        return _pool(reader, expected, what)
    if expected.kind == "add_prev":
        reader.name(what, "add_prev_")
        return AddPrev(tag=expected.id)
    if expected.kind == "fc":
        return _fc(reader, expected, what)
    raise AssertionError(f"no reader for {expected.kind}")  # FACE_NET names only the above


def _layer_state(reader: _Reader, what: str, *, on_input: bool, version: int) -> None:
    """What add_layer writes after its details: 3 flags and buffers (empty once cleaned)."""
    for flag in ("setup called", "gradient stale", "output disabled"):
        reader.boolean(f"{what} {flag} flag")
    buffers = ("x_grad", "cached_output", "grad_final" if on_input else "params_grad")
    # A non-input add_layer of version 1 predates params_grad.
    for buffer in buffers if on_input or version == 2 else buffers[:2]:
        reader.tensor(f"{what} {buffer}")
    if on_input and version == 3:
        reader.expect(1, f"{what} sample expansion factor")


def _input_layer(reader: _Reader) -> tuple[int, FloatArray]:
    reader.name("input layer", "input_rgb_image_sized")
    means = np.array(
        [reader.real(f"input layer {colour} mean") for colour in ("red", "green", "blue")],
        dtype=np.float32,
    )
    reader.expect(INPUT_SIZE, "input layer rows")
    reader.expect(INPUT_SIZE, "input layer cols")
    return INPUT_SIZE, means


def parse_network(data: bytes, architecture: tuple[_Expected, ...] = FACE_NET) -> ResnetWeights:
    """The network in `data` (the bytes of dlib's .dat file), checked against `architecture`."""
    reader = _Reader(data)
    reader.expect(1, "add_loss_layer version")
    reader.name("loss layer", "loss_metric_2")
    margin = reader.real("loss margin")
    threshold = reader.real("loss distance threshold")
    # Each wrapper writes its version and then its subnetwork, so the versions come first,
    # outermost to innermost; each add_layer's details follow its subnetwork's, innermost first.
    versions = []
    for index, expected in enumerate(architecture):
        what = f"layer {index} ({expected.kind}) version"
        on_input = index == len(architecture) - 1
        start = reader.pos
        version = reader.integer(what)
        allowed = (1,) if expected.is_wrapper else (2, 3) if on_input else (1, 2)
        if version not in allowed:
            raise reader.fail(what, f"expected one of {allowed}, found {version}", start)
        versions.append(version)
    input_size, means = _input_layer(reader)
    layers: list[Layer] = []
    for index in reversed(range(len(architecture))):
        expected = architecture[index]
        if expected.kind == "tag":
            layers.append(Tag(expected.id))
            continue
        if expected.kind == "skip":
            layers.append(Skip(expected.id))
            continue
        what = f"layer {index} ({expected.kind})"
        layers.append(_details(reader, expected, what))
        on_input = index == len(architecture) - 1
        _layer_state(reader, what, on_input=on_input, version=versions[index])
    reader.end()
    weights = ResnetWeights(input_size, means, tuple(layers), margin, threshold)
    check_shapes(weights)
    return weights


def check_shapes(weights: ResnetWeights) -> None:
    """Propagate (channels, rows, cols) through the layers: every size must agree."""
    shape = (3, weights.input_size, weights.input_size)
    tagged: dict[int, tuple[int, int, int]] = {}
    for index, layer in enumerate(weights.layers):
        shape = _next_shape(layer, shape, tagged, index)
    if shape != (DESCRIPTOR_SIZE, 1, 1):
        raise ValueError(f"dlib weights: the network outputs {shape}, not a descriptor")


def _next_shape(
    layer: Layer, shape: tuple[int, int, int], tagged: dict[int, tuple[int, int, int]], at: int
) -> tuple[int, int, int]:
    channels, rows, cols = shape

    def window_out(size: int, window: int, stride: int, padding: int) -> int:
        if window > size + 2 * padding:
            raise ValueError(f"dlib weights: layer {at}: window {window} exceeds input {size}")
        return 1 + (size + 2 * padding - window) // stride

    match layer:
        case Conv(filters=filters, stride=stride, padding=padding):
            if filters.shape[1] != channels:
                raise ValueError(
                    f"dlib weights: forward layer {at}: a convolution over "
                    f"{filters.shape[1]} channels gets {channels}"
                )
            kernel = filters.shape[2]
            return (
                filters.shape[0],
                window_out(rows, kernel, stride, padding),
                window_out(cols, kernel, stride, padding),
            )
        case Affine(gamma=gamma) if gamma.size != channels:
            raise ValueError(f"dlib weights: forward layer {at}: affine of {gamma.size} channels")
        case MaxPool(window=window, stride=stride) | AvgPool(window=window, stride=stride):
            return (
                channels,
                window_out(rows, window or rows, stride, 0),
                window_out(cols, window or cols, stride, 0),
            )
        case Tag(id=tag):
            tagged[tag] = shape
        case Skip(id=tag) | AddPrev(tag=tag) if tag not in tagged:
            raise ValueError(f"dlib weights: forward layer {at}: tag{tag} was never set")
        case Skip(id=tag):
            return tagged[tag]
        case AddPrev(tag=tag):
            other = tagged[tag]
            return (max(channels, other[0]), max(rows, other[1]), max(cols, other[2]))
        case FullyConnected(weights=matrix) if matrix.shape[0] != channels * rows * cols:
            raise ValueError(f"dlib weights: forward layer {at}: fc over {matrix.shape[0]}")
        case FullyConnected(weights=matrix):
            return (matrix.shape[1], 1, 1)
    return shape


def load_network(path: Path) -> ResnetWeights:
    """Read and check the network file at `path` (size-checked before it is read)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"dlib weights: {path} is {size} bytes, over {MAX_FILE_BYTES}")
    return parse_network(path.read_bytes())


def default_weights_path() -> Path:
    """The .dat shipped in face_recognition_models (located as lambda_fn.faces.models does)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
