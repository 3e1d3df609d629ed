"""The restricted unpickler: the course pickle loads, a pickle that would run a command does not."""

from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

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
