"""The restricted unpickler: the course pickle loads, a pickle that would run a command does not."""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import pickle
import pickletools
import resource
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lambda_fn import safe_pickle
from lambda_fn.safe_pickle import UnsafePickleError


class _RunsCommand:
    """Unpickling this calls os.system(command): the classic pickle exploit."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


class _Evaluates:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (eval, ("__import__('os').getcwd()",))


def malicious_pickle(marker: Path) -> bytes:
    """Looks like the course file, but its first encoding runs `touch marker`."""
    payload = {"name": ["mr_bean"], "encoding": [_RunsCommand(f"touch {marker}")]}
    return pickle.dumps(payload, protocol=3)


def test_course_pickle_loads_like_pickle_does(shared_data: Path) -> None:
    path = shared_data / "cse546" / "encoding"
    names, encodings = safe_pickle.load_course_encodings(path)
    with path.open("rb") as handle:
        trusted = pickle.load(handle)  # noqa: S301 - the reference: the trusted course file
    assert names == trusted["name"]
    assert len(names) == 11 and "floki" in names
    for ours, reference in zip(encodings, trusted["encoding"], strict=True):
        assert ours.dtype == np.float64 and ours.shape == (128,)
        np.testing.assert_array_equal(ours, reference)


def test_the_malicious_payload_is_real(tmp_path: Path) -> None:
    """Plain pickle.loads of the same bytes does run the command (in a throwaway process)."""
    marker = tmp_path / "plain_pickle_ran"
    data = malicious_pickle(marker)
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=data, check=True)
    assert marker.exists()


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = malicious_pickle(marker)
    assert "system" in str(list(pickletools.genops(data)))
    with pytest.raises(UnsafePickleError, match=r"refused: the pickle asks for posix\.system"):
        safe_pickle.loads(data)
    assert not marker.exists()


def test_malicious_course_file_is_refused_by_load_course_encodings(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "encoding"
    path.write_bytes(malicious_pickle(marker))
    with pytest.raises(UnsafePickleError):
        safe_pickle.load_course_encodings(path)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_eval_is_refused_at_every_protocol(protocol: int) -> None:
    with pytest.raises(UnsafePickleError, match=r"(__builtin__|builtins)\.eval"):
        safe_pickle.loads(pickle.dumps(_Evaluates(), protocol=protocol))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_numpy_values_load_at_every_protocol(protocol: int) -> None:
    value = {"a": [np.arange(4.0), np.float64(1.5), np.int64(3)], "b": ("x", 2, None)}
    loaded = safe_pickle.loads(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(loaded["a"][0], value["a"][0])
    assert loaded["a"][1:] == value["a"][1:] and loaded["b"] == value["b"]


def test_codecs_encode_admits_latin1_only() -> None:
    # Protocol 2 spells bytes as _codecs.encode(text, 'latin1'); any other codec is refused.
    data = b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R."
    with pytest.raises(UnsafePickleError, match="rot13"):
        safe_pickle.loads(data)


def test_corrupt_pickle_is_a_clear_error() -> None:
    with pytest.raises(UnsafePickleError, match="not a readable pickle"):
        safe_pickle.loads(b"\x80\x03}q\x00(X\x04\x00")


def test_wrong_shape_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "encoding"
    path.write_bytes(pickle.dumps({"names": []}, protocol=3))
    with pytest.raises(UnsafePickleError, match="'name' and 'encoding'"):
        safe_pickle.load_course_encodings(path)


# --- Hostile pickles built from the allowed names themselves -----------------------------
# Each is written opcode by opcode (the pickler cannot produce them) and loaded in a forked
# child: a crash there is a segfault, which must fail the test, not kill the test runner.


@dataclass(frozen=True)
class Global:
    """GLOBAL (protocol 0) or STACK_GLOBAL (protocol 4) naming module.name."""

    module: str
    name: str
    stack: bool = False


@dataclass(frozen=True)
class Call:
    """REDUCE: callee(*args)."""

    callee: Any
    args: tuple[Any, ...]


@dataclass(frozen=True)
class NewObj:
    """NEWOBJ: cls.__new__(cls, *args)."""

    cls: Any
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Build:
    """BUILD: obj.__setstate__(state), the object then stays on the stack."""

    obj: Any
    state: Any


@dataclass(frozen=True)
class Ref:
    """BINGET of an earlier call's result (its MEMOIZE), e.g. to BUILD an object twice."""

    index: int


class _Assembler:
    def __init__(self) -> None:
        self.out = bytearray(pickle.PROTO + b"\x04")
        self.memoized = 0

    def emit(self, node: Any) -> None:
        if isinstance(node, tuple | list | dict):
            self.container(node)
        elif isinstance(node, Global | Call | NewObj | Build | Ref):
            self.operation(node)
        else:
            self.value(node)

    def value(self, node: bool | int | float | str | bytes | None) -> None:
        if node is None:
            self.out += pickle.NONE
        elif isinstance(node, bool):
            self.out += pickle.NEWTRUE if node else pickle.NEWFALSE
        elif isinstance(node, int):
            body = node.to_bytes((node.bit_length() + 8) // 8 or 1, "little", signed=True)
            self.out += pickle.LONG4 + struct.pack("<I", len(body)) + body
        elif isinstance(node, float):
            self.out += pickle.BINFLOAT + struct.pack(">d", node)
        elif isinstance(node, str):
            self.text(node)
        else:
            self.out += pickle.BINBYTES + struct.pack("<I", len(node)) + node

    def container(self, node: tuple[Any, ...] | list[Any] | dict[Any, Any]) -> None:
        start, end = {tuple: (b"", pickle.TUPLE), list: (pickle.EMPTY_LIST, pickle.APPENDS)}.get(
            type(node), (pickle.EMPTY_DICT, pickle.SETITEMS)
        )
        self.out += start + pickle.MARK
        items = [x for pair in node.items() for x in pair] if isinstance(node, dict) else node
        for item in items:
            self.emit(item)
        self.out += end

    def operation(self, node: Global | Call | NewObj | Build | Ref) -> None:
        if isinstance(node, Global) and node.stack:
            self.text(node.module)
            self.text(node.name)
            self.out += pickle.STACK_GLOBAL
        elif isinstance(node, Global):
            self.out += pickle.GLOBAL + f"{node.module}\n{node.name}\n".encode()
        elif isinstance(node, Ref):
            index = node.index % min(self.memoized, 256) if self.memoized else None
            self.out += pickle.NONE if index is None else pickle.BINGET + bytes([index])
        else:
            if isinstance(node, Build):
                self.emit(node.obj)
                self.emit(node.state)
                self.out += pickle.BUILD
            else:
                self.emit(node.callee if isinstance(node, Call) else node.cls)
                self.emit(node.args)
                self.out += pickle.REDUCE if isinstance(node, Call) else pickle.NEWOBJ
            self.out += pickle.MEMOIZE
            self.memoized += 1

    def text(self, text: str) -> None:
        body = text.encode("utf-8", "surrogatepass")
        self.out += pickle.BINUNICODE + struct.pack("<I", len(body)) + body


def assemble(node: Any) -> bytes:
    assembler = _Assembler()
    assembler.emit(node)
    return bytes(assembler.out + pickle.STOP)


RECONSTRUCT = Global("numpy._core.multiarray", "_reconstruct")
NDARRAY = Global("numpy", "ndarray")
DTYPE = Global("numpy", "dtype")
SCALAR = Global("numpy.core.multiarray", "scalar")
FROMBUFFER = Global("numpy._core.numeric", "_frombuffer")
ALLOWED_NAMES = [
    RECONSTRUCT,
    NDARRAY,
    DTYPE,
    SCALAR,
    FROMBUFFER,
    Global("numpy.core.multiarray", "_reconstruct", stack=True),
    Global("numpy", "ndarray", stack=True),
    Global("numpy", "dtype", stack=True),
    Global("_codecs", "encode"),
    Global("builtins", "bytes"),
]
F8_STATE = (3, "<", None, None, None, -1, -1, 0)


def dtype(spec: Any, state: Any = F8_STATE) -> Build:
    return Build(Call(DTYPE, (spec, False, True)), state)


def course_file(encoding: Any) -> dict[str, Any]:
    return {"name": ["mr_bean"], "encoding": [encoding]}


# `ndarray(shape, dtype('O'), buffer)`: 128 bytes read as 16 object pointers.
OBJECT_ARRAY = course_file(Call(NDARRAY, ((16,), Call(DTYPE, ("O",)), b"A" * 128)))


@dataclass
class ChildOutcome:
    """What a forked child saw loading a pickle; `signal` is set if it died of one."""

    status: str  # "loaded", "refused", "memory", "escaped" (another exception), "crashed"
    detail: str


# The child may not grow by more than this (RLIMIT_AS): a bomb is a MemoryError, not an OOM.
CHILD_MEMORY_BYTES = 512 * 2**20


def _describe_plain(value: Any, depth: int = 0) -> str:
    """Walk a loaded value, touching every array element; raise if anything is not plain."""
    if depth > 100:
        raise AssertionError("nested too deep")
    if value is None or isinstance(value, bool | int | float | complex | str | bytes | bytearray):
        return type(value).__name__
    if isinstance(value, list | tuple | set | frozenset):
        return "[" + ",".join(_describe_plain(item, depth + 1) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{_describe_plain(k)}:{_describe_plain(v, depth + 1)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if type(value) is np.ndarray or isinstance(value, np.generic):
        assert not value.dtype.hasobject and value.dtype.kind in "biufc", value.dtype
        np.asarray(value).tolist()  # reads every element, as KnownFaces does
        return f"array{value.shape}{value.dtype.str}"
    if isinstance(value, np.dtype):
        assert not value.hasobject and value.kind in "biufc", value
        return f"dtype{value.str}"
    raise AssertionError(f"not a plain value: {type(value)}")


def _child_load(data: bytes) -> ChildOutcome:
    try:
        value = safe_pickle.loads(data)
    except UnsafePickleError as error:
        if isinstance(error.__cause__, MemoryError):
            return ChildOutcome("memory", str(error))
        return ChildOutcome("refused", str(error))
    except BaseException as error:  # any other escape is the finding
        return ChildOutcome("escaped", repr(error))
    try:
        detail = _describe_plain(value)
        del value
        gc.collect()  # frees the arrays: an object array of garbage pointers dies here too
    except MemoryError as error:
        return ChildOutcome("memory", repr(error))
    except AssertionError as error:
        return ChildOutcome("escaped", f"loaded a value that is not plain: {error}")
    return ChildOutcome("loaded", detail[:200])


def run_in_child(function: Callable[[], ChildOutcome], timeout: float = 30.0) -> ChildOutcome:
    """`function()` in a forked child with bounded memory; a crash or a hang is reported."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            page = os.sysconf("SC_PAGE_SIZE")
            vm_size = int(Path("/proc/self/statm").read_text().split()[0]) * page
            limit = vm_size + CHILD_MEMORY_BYTES
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            outcome = function()
            os.write(write_end, json.dumps([outcome.status, outcome.detail]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    received = bytearray()
    deadline = time.monotonic() + timeout
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while (left := deadline - time.monotonic()) > 0 and select.select([pipe], [], [], left)[0]:
            chunk = pipe.read(65536)
            if not chunk:
                break
            received += chunk
    if time.monotonic() >= deadline:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return ChildOutcome("crashed", f"killed by {signal.Signals(os.WTERMSIG(status)).name}")
    if not received:
        return ChildOutcome("crashed", f"exited {os.WEXITSTATUS(status)} with nothing to say")
    status_name, detail = json.loads(received.decode())
    return ChildOutcome(status_name, detail)


def load_in_child(data: bytes) -> ChildOutcome:
    return run_in_child(lambda: _child_load(data))


def assert_loads_plain_or_refuses(data: bytes) -> ChildOutcome:
    outcome = load_in_child(data)
    assert outcome.status in ("loaded", "refused"), (outcome, data)
    if outcome.status == "refused":
        assert outcome.detail.startswith(("refused", "not a readable pickle")), outcome
    return outcome


def test_the_child_harness_reports_a_crash_and_a_memory_bomb() -> None:
    """The harness itself: a child that segfaults is reported, and memory is bounded."""

    def segfault() -> ChildOutcome:
        faulthandler.disable()  # no traceback dump: this crash is on purpose
        os.kill(os.getpid(), signal.SIGSEGV)
        return ChildOutcome("loaded", "not reached")

    def allocate() -> ChildOutcome:
        try:
            np.ones(2 * CHILD_MEMORY_BYTES, dtype=np.uint8)
        except MemoryError as error:
            return ChildOutcome("memory", repr(error))
        return ChildOutcome("loaded", "allocated")

    assert run_in_child(segfault) == ChildOutcome("crashed", "killed by SIGSEGV")
    assert run_in_child(allocate).status == "memory"
    assert load_in_child(pickle.dumps(course_file(0))).status == "loaded"


def test_an_object_array_over_pickle_bytes_is_refused() -> None:
    """`ndarray(shape, dtype('O'), buffer=bytes)` made pointers of attacker bytes: a segfault."""
    outcome = load_in_child(assemble(OBJECT_ARRAY))
    assert outcome.status == "refused", outcome
    assert "dtype 'O'" in outcome.detail


@pytest.mark.parametrize(
    "node",
    [
        # the object array, spelt as numpy's own pickles spell arrays
        Build(Call(RECONSTRUCT, (NDARRAY, (0,), b"b")), (1, (16,), dtype("O"), False, b"A" * 128)),
        Build(
            Call(RECONSTRUCT, (NDARRAY, (0,), b"b")),
            (
                1,
                (16,),
                dtype("f8", (3, "|", None, ("a",), {"a": (Call(DTYPE, ("O",)), 0)}, 8, 1, 63)),
                False,
                b"A" * 128,
            ),
        ),
        Call(SCALAR, (Call(DTYPE, ("O",)), b"A" * 8)),
        Call(SCALAR, (dtype("V8"), b"A" * 8)),
        Call(FROMBUFFER, (b"A" * 128, dtype("O"), (16,), "C")),
        NewObj(NDARRAY, ((16,), Call(DTYPE, ("O",)), b"A" * 128)),
        # huge shapes over little data, and no data at all
        Call(NDARRAY, ((10**5, 10**5), "f8")),
        Build(
            Call(RECONSTRUCT, (NDARRAY, (0,), b"b")), (1, (10**5, 10**5), dtype("f8"), False, b"")
        ),
        Call(NDARRAY, ((10**9,), dtype("f8"), b"A" * 8, 0, (0,))),
        # a second BUILD of an array already built
        [
            Build(
                Call(RECONSTRUCT, (NDARRAY, (0,), b"b")), (1, (1,), dtype("f8"), False, b"A" * 8)
            ),
            Build(Ref(0), (1, (16,), dtype("O"), False, b"A" * 128)),
        ],
    ],
    ids=[
        "object-dtype-via-reconstruct",
        "structured-dtype-state-with-object-field",
        "object-scalar",
        "void-scalar",
        "object-dtype-via-frombuffer",
        "ndarray-via-newobj",
        "ndarray-call-allocating-80-GB",
        "reconstruct-shape-of-80-GB",
        "zero-strides-over-8-bytes",
        "build-twice",
    ],
)
def test_hostile_uses_of_the_allowed_names_are_refused(node: Any) -> None:
    outcome = load_in_child(assemble(node))
    assert outcome.status == "refused", outcome


def test_a_memo_index_bomb_is_refused_before_allocating() -> None:
    """`LONG_BINPUT 2**28`: 9 bytes that make CPython's unpickler allocate and zero 4 GB."""
    bomb = pickle.PROTO + b"\x02" + pickle.NONE + pickle.LONG_BINPUT + struct.pack("<I", 2**28)
    outcome = load_in_child(bomb + pickle.STOP)
    assert outcome.status == "refused", outcome
    assert "memo index" in outcome.detail


def test_numpy_pickles_of_every_numeric_dtype_and_layout_load() -> None:
    values = [
        np.arange(6).astype(dtype_).reshape(2, 3)
        for dtype_ in (
            "b1",
            "i1",
            "<i2",
            ">i4",
            "i8",
            "u1",
            "u2",
            "u4",
            "u8",
            "f2",
            "f4",
            ">f8",
            "c8",
            "c16",
        )
    ]
    values += [np.asfortranarray(np.ones((2, 3))), np.ones((4, 6))[::2, ::3], np.ones((3, 2)).T]
    values += [np.zeros((0, 5)), np.float64(2.5), np.complex64(1j), np.dtype(">i4")]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        loaded = safe_pickle.loads(pickle.dumps(values, protocol=protocol))
        for ours, original in zip(loaded, values, strict=True):
            assert type(ours) is type(original)
            if isinstance(original, np.ndarray):
                assert ours.dtype == original.dtype and ours.flags.writeable
                np.testing.assert_array_equal(ours, original)
            else:
                assert ours == original


def test_shared_and_recursive_structures_keep_their_shape() -> None:
    array = np.arange(3.0)
    shared: list[Any] = [array, array, (array, "x")]
    shared.append(shared)
    loaded = safe_pickle.loads(pickle.dumps(shared, protocol=4))
    assert loaded[0] is loaded[1] is loaded[2][0] and loaded[3] is loaded
    np.testing.assert_array_equal(loaded[0], array)


_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, -1, 3, 8, 16, 128, 2**31, 2**63, -(2**63), 10**12]),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.binary(max_size=64),
    st.sampled_from(["f8", "<f8", "O", "V8", "b", "C", "F", "K", "<", ">", "|", "latin1", "U4"]),
    st.text(max_size=8),
    st.sampled_from(ALLOWED_NAMES),
    st.builds(Ref, st.integers(min_value=0, max_value=20)),
)


def _compound(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    args = st.lists(children, max_size=5).map(tuple)
    return st.one_of(
        args,
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=4), children, max_size=3),
        st.builds(Call, st.one_of(st.sampled_from(ALLOWED_NAMES), children), args),
        st.builds(NewObj, st.one_of(st.sampled_from(ALLOWED_NAMES), children), args),
        st.builds(Build, children, children),
    )


# deferred: its repr stays one line (a recursive strategy's repr, nested in the ones below,
# runs to megabytes, and Hypothesis warns about it).
_anything = st.deferred(lambda: st.recursive(_leaves, _compound, max_leaves=24))
_shapes = st.one_of(st.lists(st.integers(0, 20), max_size=3).map(tuple), _anything)
_dtype_specs = st.one_of(st.sampled_from(["f8", "i4", "u1", "O", "V8", "c16", "b1"]), _anything)
_dtype_states = st.one_of(
    st.just(F8_STATE),
    st.tuples(
        st.sampled_from([3, 4]),
        st.sampled_from("<>|="),
        _anything,
        _anything,
        _anything,
        st.sampled_from([-1, 0, 8]),
        st.sampled_from([-1, 1, 8]),
        st.sampled_from([0, 1, 63]),
    ),
    _anything,
)
_dtypes = st.one_of(
    st.builds(dtype, _dtype_specs, _dtype_states),
    st.builds(lambda spec: Call(DTYPE, (spec,)), _dtype_specs),
    _anything,
)
_data = st.one_of(st.binary(max_size=256), _anything)
# Optional trailing arguments (offset, strides; axis order): absent as often as present.
_tails = st.lists(st.one_of(st.integers(-8, 64), _anything), max_size=2)
# Near-misses of numpy's own spellings, so the search reaches the array-building code.
_arrays = st.one_of(
    st.builds(
        lambda shape, dtype_, fortran, data, version: Build(
            Call(RECONSTRUCT, (NDARRAY, (0,), b"b")), (version, shape, dtype_, fortran, data)
        ),
        _shapes,
        _dtypes,
        st.one_of(st.booleans(), _anything),
        _data,
        st.sampled_from([1, 0, 2]),
    ),
    st.builds(
        lambda shape, dtype_, data, tail: Call(NDARRAY, (shape, dtype_, data, *tail)),
        _shapes,
        _dtypes,
        _data,
        _tails,
    ),
    st.builds(
        lambda data, dtype_, shape, order, tail: Call(
            FROMBUFFER, (data, dtype_, shape, order, *tail)
        ),
        _data,
        _dtypes,
        _shapes,
        st.sampled_from(["C", "F", "K", "A"]),
        _tails,
    ),
    st.builds(lambda *args: Call(SCALAR, args), _dtypes, _data),
    st.builds(lambda *args: Call(RECONSTRUCT, args), _anything, _shapes, _anything),
)
_hostile = st.recursive(
    st.one_of(_arrays, _leaves),
    lambda kids: st.one_of(_compound(kids), st.builds(course_file, kids)),
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(OBJECT_ARRAY)
@example(Call(NDARRAY, ((10**5, 10**5), "f8")))
@given(_hostile)
def test_any_pickle_of_the_allowed_names_loads_plain_values_or_is_refused(node: Any) -> None:
    """Property: numeric arrays, numbers and strings come out, or a refusal — never a crash."""
    assert_loads_plain_or_refuses(assemble(node))


def test_the_cli_refuses_an_object_array_pickle_in_one_line(tmp_path: Path) -> None:
    """`hybrid-lambda faces import-pickle` segfaulted (exit 139 in a shell) on this file."""
    evil = tmp_path / "encoding"
    evil.write_bytes(assemble(OBJECT_ARRAY))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_fn",
            "faces",
            "import-pickle",
            evil,
            "-o",
            tmp_path / "out.json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.splitlines() == [
        "hybrid-lambda: error: refused: dtype 'O'; only numeric dtypes are accepted "
        "(b1, c16, c8, f2, f4, f8, i1, i2, i4, i8, u1, u2, u4, u8)"
    ]
    assert not (tmp_path / "out.json").exists()
