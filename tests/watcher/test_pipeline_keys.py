"""Whatever a dropped file is called, its S3 key stays under `<prefix>/<node>/` (watcher level).

tests/common/test_keys.py covers the key functions one by one; this checks the composition
the pipeline uses (`watcher.pipeline.submission_key`) with the watcher's own settings.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from hybrid_common.keys import InputKey
from watcher.journal import new_submission_id
from watcher.pipeline import submission_key
from watcher.settings import WatcherSettings

SEGMENT = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")
# Any text a file system could hand us, and more: separators, dots, controls, surrogates aside.
FILE_NAMES = st.text(st.characters(exclude_categories=["Cs"]), max_size=300)


@settings(max_examples=300, deadline=None)
@given(name=FILE_NAMES, node=SEGMENT, prefix=st.lists(SEGMENT, min_size=1, max_size=3))
@example(name="../../etc/passwd", node="node-a", prefix=["videos"])
@example(name="..", node="node-a", prefix=["videos"])
@example(name="a/../../b.mp4", node="n", prefix=["videos"])
@example(name="\\..\\..\\win.mp4", node="n", prefix=["videos"])
@example(name="line\nbreak.mp4", node="n", prefix=["videos"])
@example(name="-rf.mp4", node="n", prefix=["videos"])
@example(name="é" * 200 + ".mp4", node="n", prefix=["videos"])
@example(name="", node="n", prefix=["videos"])
def test_key_never_escapes_the_node_prefix(name: str, node: str, prefix: list[str]) -> None:
    config = WatcherSettings(
        staging_root=Path("/nonexistent"), node_id=node, key_prefix="/".join(prefix)
    )
    key = submission_key(config, new_submission_id(), name)

    assert key.startswith(f"{config.key_prefix}/{node}/")
    segments = key.split("/")
    assert len(segments) == len(prefix) + 3  # prefix, node, submission, name: nothing more
    assert all(s and s not in {".", ".."} for s in segments)
    assert posixpath.normpath(key) == key  # nothing for a resolver to collapse
    assert not segments[-1].startswith(("-", "."))
    assert len(key.encode()) <= 1024  # S3's limit
    parsed = InputKey.parse(key)
    assert (parsed.prefix, parsed.node_id) == (config.key_prefix, node)


def test_default_settings_give_exactly_four_segments() -> None:
    config = WatcherSettings(staging_root=Path("/nonexistent"), node_id="vm-1")
    key = submission_key(config, new_submission_id(), "../x/../../y z.MP4")
    prefix, node, _submission, name = key.split("/")
    assert (prefix, node, name) == ("videos", "vm-1", "y_z.mp4")
