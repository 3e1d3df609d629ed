"""A restricted unpickler for the course's known-faces pickle: numpy arrays, lists, dicts, strings.

`pickle.load` on an untrusted file runs whatever callable the file names (os.system, eval…).
This unpickler resolves only the few globals numpy needs to rebuild arrays, scalars and
dtypes; lists, dicts, strings and numbers are plain opcodes and need no global at all.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core import multiarray, numeric

# numpy 1.x pickles name `numpy.core.*`, numpy 2 `numpy._core.*`; both map to the same
# objects here (importing `numpy.core` itself would raise numpy 2's DeprecationWarning).
_ALLOWED: dict[tuple[str, str], Any] = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = multiarray._reconstruct
    _ALLOWED[(_module, "scalar")] = multiarray.scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    # Protocol 5 pickles of arrays rebuild them from a buffer.
    _ALLOWED[(_module, "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
# dtype pickles of numpy 2 name the dtype class, e.g. numpy.dtypes.Float64DType.
for _name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType"):
    _ALLOWED[("numpy.dtypes", _name)] = getattr(np.dtypes, _name)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Protocols 0-2 spell bytes as `_codecs.encode(str, 'latin1')`; admit only that codec."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError(f"refused: _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


_ALLOWED[("_codecs", "encode")] = _latin1_bytes


class UnsafePickleError(ValueError):
    """The pickle names something other than numpy arrays, lists, dicts and strings."""


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


def loads(data: bytes) -> Any:
    """Unpickle `data`, admitting only numpy arrays/scalars/dtypes and builtin containers."""
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError:
        raise
    except Exception as error:  # a corrupt pickle raises many types; report them as one
        raise UnsafePickleError(f"not a readable pickle: {error}") from error


def load(path: Path) -> Any:
    """Unpickle a file with the restricted unpickler."""
    return loads(Path(path).read_bytes())


def load_course_encodings(path: Path) -> tuple[list[str], list[np.ndarray]]:
    """The course pickle: {'name': [str], 'encoding': [array(128)]} → (names, encodings)."""
    data = load(path)
    if not isinstance(data, dict) or not {"name", "encoding"} <= set(data):
        raise UnsafePickleError(f"{path}: expected a dict with 'name' and 'encoding' lists")
    names, encodings = list(data["name"]), list(data["encoding"])
    if not all(isinstance(name, str) for name in names):
        raise UnsafePickleError(f"{path}: 'name' must hold strings")
    if not all(isinstance(e, np.ndarray) for e in encodings):
        raise UnsafePickleError(f"{path}: 'encoding' must hold numpy arrays")
    return names, encodings
