"""A restricted unpickler for the course's known-faces pickle: numpy arrays, lists, dicts, strings.

`pickle.load` on an untrusted file runs whatever callable the file names (os.system, eval…).
An allow-list of numpy's own callables is not enough either: `numpy.ndarray(shape,
dtype('O'), buffer=bytes)` turns attacker bytes into object pointers (a segfault, or worse,
on first use). So no numpy callable is ever reachable from the pickle: the names numpy's
pickles use resolve to inert stand-ins of this module, which only record and check what
they are given; once the whole pickle is read, the checked records become numpy values —
arrays and scalars of plain numeric dtypes, built from bytes of exactly the right length.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

# The course file is 12 KB (11 faces); 16 MiB holds ~15,000 faces. Reading is all in memory.
MAX_PICKLE_BYTES = 16 * 2**20
# Nesting of lists/dicts/tuples; the course file nests 2 deep.
MAX_DEPTH = 64
# numpy's own limit is 64 dimensions; a face encoding has 1.
MAX_DIMENSIONS = 32

# The dtypes an array or scalar may have, as numpy's pickles spell them (`dtype('f8', ...)`):
# booleans, integers, floats and complex numbers — nothing that holds pointers (object,
# structured or void dtypes), nothing with a variable size.
NUMERIC_DTYPES = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "c8", "c16"}
)
_BYTE_ORDERS = {"<": "<", ">": ">", "|": "=", "=": "="}


class UnsafePickleError(ValueError):
    """The pickle names something other than numpy arrays, lists, dicts and strings."""


class _Global:
    """What a name in the pickle resolves to: a callable that builds a stand-in, never numpy.

    `__slots__` and a refusing `__setstate__`: a BUILD opcode on it cannot set attributes.
    """

    __slots__ = ("_build", "name")

    def __init__(self, name: str, build: Callable[..., Any] | None) -> None:
        self.name = name
        self._build = build

    def __call__(self, *args: Any) -> Any:
        if self._build is None:
            raise UnsafePickleError(
                f"refused: the pickle calls {self.name}(...); arrays are accepted only as "
                "numpy pickles them (_reconstruct or _frombuffer)"
            )
        return self._build(*args)

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"refused: the pickle sets the state of {self.name}")


class _StandIn:
    """A value numpy's pickle protocol asked for, checked; `value()` is the numpy object."""

    __slots__ = ()

    def value(self) -> Any:
        raise NotImplementedError

    def __setstate__(self, state: Any) -> None:
        raise UnsafePickleError(f"refused: the pickle sets the state of {self} twice")


class _Dtype(_StandIn):
    """`numpy.dtype(spec, align, copy)`, then BUILD with the byte order."""

    __slots__ = ("_built", "byte_order", "spec")

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        if not isinstance(spec, str) or spec not in NUMERIC_DTYPES:
            raise UnsafePickleError(
                f"refused: dtype {spec!r}; only numeric dtypes are accepted "
                f"({', '.join(sorted(NUMERIC_DTYPES))})"
            )
        if align not in (0, 1) or copy not in (0, 1):  # numpy writes False/True (or 0/1)
            raise UnsafePickleError(f"refused: dtype arguments {align!r}, {copy!r}")
        self.spec = spec
        self.byte_order = "="
        self._built = False

    def __setstate__(self, state: Any) -> None:
        # numpy writes (3, order, None, None, None, -1, -1, 0) for a plain numeric dtype
        # (version 4 adds metadata: None). Subarrays, field names, fields, sizes and flags
        # are what structured and object dtypes are made of: refused.
        if self._built:
            super().__setstate__(state)
        if (
            not isinstance(state, tuple)
            or len(state) not in (8, 9)
            or state[0] not in (3, 4)
            or state[1] not in _BYTE_ORDERS
            or state[2:] not in ((None, None, None, -1, -1, 0), (None, None, None, -1, -1, 0, None))
        ):
            raise UnsafePickleError(f"refused: dtype state {_short(state)}")
        self.byte_order = _BYTE_ORDERS[state[1]]
        self._built = True

    def value(self) -> np.dtype[Any]:
        dtype = np.dtype(self.byte_order + self.spec)
        if dtype.hasobject or dtype.kind not in "biufc":  # cannot be, by NUMERIC_DTYPES
            raise UnsafePickleError(f"refused: dtype {dtype}")
        return dtype

    def __str__(self) -> str:
        return f"dtype {self.spec!r}"


class _Array(_StandIn):
    """`_reconstruct(ndarray, (0,), b'b')`, BUILD with (version, shape, dtype, fortran, data)."""

    __slots__ = ("_array",)

    def __init__(self, array: np.ndarray | None = None) -> None:
        self._array = array

    def __setstate__(self, state: Any) -> None:
        if self._array is not None:
            super().__setstate__(state)
        if not isinstance(state, tuple):
            raise UnsafePickleError(f"refused: array state {_short(state)}")
        if len(state) == 5 and state[0] == 1:
            state = state[1:]  # numpy writes version 1 first; it still reads the 4-tuple
        if len(state) != 4:
            raise UnsafePickleError(f"refused: array state {_short(state)}")
        shape, dtype, fortran, data = state
        if fortran not in (0, 1):
            raise UnsafePickleError(f"refused: array order {fortran!r}")
        self._array = _array_from_bytes(data, dtype, shape, "F" if fortran else "C")

    def value(self) -> np.ndarray:
        if self._array is None:
            raise UnsafePickleError("refused: an array whose data never came (no BUILD)")
        return self._array

    def __str__(self) -> str:
        return "an array"


class _Scalar(_StandIn):
    """`scalar(dtype, bytes)`: one numpy number."""

    __slots__ = ("_value",)

    def __init__(self, dtype: Any, data: Any = None) -> None:
        self._value = _array_from_bytes(data, dtype, (), "C")[()]

    def value(self) -> Any:
        return self._value

    def __str__(self) -> str:
        return "a scalar"


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _Array:
    # numpy's pickles always say _reconstruct(ndarray, (0,), b'b'): an empty array to BUILD.
    if subtype is not _NDARRAY or shape != (0,) or typecode not in (b"b", "b"):
        raise UnsafePickleError(f"refused: _reconstruct{_short((subtype, shape, typecode))}")
    return _Array()


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any, axis_order: Any = None) -> _Array:
    """Protocol 5 writes arrays as `_frombuffer(bytearray, dtype, shape, order[, axes])`."""
    if order == "K" and axis_order is not None:
        # A non-contiguous array: C-order data, then its axes permuted (numpy's own recipe).
        array = _array_from_bytes(buffer, dtype, shape, "C")
        axes = list(range(array.ndim))
        if not isinstance(axis_order, tuple) or sorted(axis_order, key=_order_key) != axes:
            raise UnsafePickleError(f"refused: axis order {_short(axis_order)}")
        return _Array(array.transpose(axis_order))
    if order not in ("C", "F") or axis_order is not None:
        raise UnsafePickleError(f"refused: array order {_short(order)}")
    return _Array(_array_from_bytes(buffer, dtype, shape, order))


def _order_key(axis: Any) -> int:
    if type(axis) is not int:
        raise UnsafePickleError(f"refused: axis {_short(axis)}")
    return axis


def _array_from_bytes(data: Any, dtype: Any, shape: Any, order: Literal["C", "F"]) -> np.ndarray:
    """The only place numpy sees the pickle's data: a numeric dtype and an exact size."""
    if not isinstance(dtype, _Dtype):
        raise UnsafePickleError(f"refused: {_short(dtype)} is not a numpy dtype")
    if not isinstance(shape, tuple) or len(shape) > MAX_DIMENSIONS:
        raise UnsafePickleError(f"refused: array shape {_short(shape)}")
    for size in shape:
        # Bounded by the data's length below; checked first so the product stays small.
        if type(size) is not int or not 0 <= size <= MAX_PICKLE_BYTES:
            raise UnsafePickleError(f"refused: array shape {_short(shape)}")
    if not isinstance(data, bytes | bytearray):
        raise UnsafePickleError(f"refused: array data of type {type(data).__name__}")
    resolved = dtype.value()
    if math.prod(shape) * resolved.itemsize != len(data):
        raise UnsafePickleError(
            f"refused: {len(data)} bytes of data for a {shape} array of {resolved}"
        )
    # A copy: the array owns its memory and is writable, like numpy's own unpickling.
    flat: np.ndarray = np.frombuffer(data, dtype=resolved)
    return flat.reshape(tuple(shape), order=order).copy(order="K")


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """Protocols 0-2 spell bytes as `_codecs.encode(str, 'latin1')`; admit only that codec."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refused: _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """Protocols 0-2 spell b'' (the data of an empty array) as `bytes()`: no argument allowed."""
    if args:  # bytes(10**10) would allocate 10 GB
        raise UnsafePickleError(f"refused: bytes{_short(args)}")
    return b""


# `numpy.ndarray` is only ever an argument of _reconstruct: calling it is refused.
_NDARRAY = _Global("numpy.ndarray", None)
# numpy 1.x pickles name `numpy.core.*`, numpy 2 `numpy._core.*`.
_ALLOWED: dict[tuple[str, str], _Global] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Global("numpy.dtype", _Dtype),
    ("_codecs", "encode"): _Global("_codecs.encode", _latin1_bytes),
    ("__builtin__", "bytes"): _Global("bytes", _empty_bytes),
    ("builtins", "bytes"): _Global("bytes", _empty_bytes),
}
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[(f"{_core}.multiarray", "_reconstruct")] = _Global("_reconstruct", _reconstruct)
    _ALLOWED[(f"{_core}.multiarray", "scalar")] = _Global("scalar", _Scalar)
    _ALLOWED[(f"{_core}.numeric", "_frombuffer")] = _Global("_frombuffer", _frombuffer)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused: the pickle asks for {module}.{name}; only numpy arrays, lists, "
                "dicts and strings are accepted (a pickle naming other callables can run code)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refused: the pickle uses persistent ids")


def _check_memo_indexes(data: bytes) -> None:
    """Refuse memo indexes no pickler writes: CPython sizes its memo table by the index.

    `LONG_BINPUT 2**28` — a 9-byte pickle — makes `pickle.loads` allocate and zero 4 GB.
    Picklers number memo entries from 0, one per opcode at most.
    """
    for count, (opcode, argument, _) in enumerate(pickletools.genops(data)):
        if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT") and int(argument or 0) > count:
            raise UnsafePickleError(f"refused: memo index {argument} at opcode {count}")


def _materialize(obj: Any, seen: dict[int, Any], depth: int = 0) -> Any:
    """The unpickled graph with every stand-in replaced by its numpy value (sharing kept)."""
    if depth > MAX_DEPTH:
        raise UnsafePickleError(f"refused: nested deeper than {MAX_DEPTH}")
    kind = type(obj)
    if obj is None or kind in (bool, int, float, complex, str, bytes, bytearray):
        return obj
    if id(obj) in seen:
        done = seen[id(obj)]
        if done is _IN_PROGRESS:  # a tuple that contains itself (through a list)
            raise UnsafePickleError("refused: a tuple that contains itself")
        return done
    if isinstance(obj, _StandIn):
        seen[id(obj)] = value = obj.value()
        return value
    if kind is list:
        seen[id(obj)] = obj  # before the items: a list may contain itself
        obj[:] = [_materialize(item, seen, depth + 1) for item in obj]
        return obj
    if kind is dict:
        seen[id(obj)] = obj
        for key in obj:
            if _materialize(key, seen, depth + 1) is not key:
                raise UnsafePickleError("refused: a numpy value as a dictionary key")
            obj[key] = _materialize(obj[key], seen, depth + 1)
        return obj
    if kind in (tuple, set, frozenset):
        seen[id(obj)] = _IN_PROGRESS
        items = [_materialize(item, seen, depth + 1) for item in obj]
        changed = any(new is not old for new, old in zip(items, obj, strict=True))
        if changed and kind is not tuple:
            raise UnsafePickleError("refused: numpy values in a set")
        seen[id(obj)] = result = tuple(items) if changed else obj
        return result
    if isinstance(obj, _Global):
        raise UnsafePickleError(f"refused: a bare reference to {obj.name}")
    raise UnsafePickleError(f"refused: a value of type {kind.__name__}")


_IN_PROGRESS = object()


def loads(data: bytes) -> Any:
    """Unpickle `data`, admitting only numeric numpy arrays/scalars/dtypes and builtin values."""
    if len(data) > MAX_PICKLE_BYTES:
        raise UnsafePickleError(
            f"refused: {len(data)} bytes is larger than the limit of {MAX_PICKLE_BYTES}"
        )
    try:
        _check_memo_indexes(data)
        return _materialize(_RestrictedUnpickler(io.BytesIO(data)).load(), {})
    except UnsafePickleError:
        raise
    except Exception as error:  # a corrupt pickle raises many types; report them as one
        raise UnsafePickleError(f"not a readable pickle: {error}") from error


def load(path: Path) -> Any:
    """Unpickle a file with the restricted unpickler."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_PICKLE_BYTES:
        raise UnsafePickleError(
            f"{path}: refused: {size} bytes is larger than the limit of {MAX_PICKLE_BYTES}"
        )
    return loads(path.read_bytes())


def load_course_encodings(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """The course pickle: {'name': [str], 'encoding': [array(128)]} → (names, encodings)."""
    data = load(path)
    if not isinstance(data, dict) or not {"name", "encoding"} <= set(data):
        raise UnsafePickleError(f"{path}: expected a dict with 'name' and 'encoding' lists")
    names, encodings = data["name"], data["encoding"]
    if not isinstance(names, list) or not isinstance(encodings, list):
        raise UnsafePickleError(f"{path}: 'name' and 'encoding' must be lists")
    if not all(isinstance(name, str) for name in names):
        raise UnsafePickleError(f"{path}: 'name' must hold strings")
    if not all(isinstance(e, np.ndarray) and e.dtype.kind in "fiu" for e in encodings):
        raise UnsafePickleError(f"{path}: 'encoding' must hold numpy arrays of numbers")
    return names, encodings


def _short(value: Any, limit: int = 80) -> str:
    """A value for an error message, cut short (a refusal must stay one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
