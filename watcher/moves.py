"""Moving one file to a name that must not exist yet, on one file system or across two.

`rename()` replaces whatever sits at the target: a result moved into done/ under a name someone
(or something) took since it was claimed would silently destroy that file. Here a move either
lands under a free name or raises `FileExistsError` and changes nothing at the target:

- same file system: `renameat2(RENAME_NOREPLACE)` (atomic; Linux ≥ 3.15, ext4/xfs/btrfs/tmpfs),
  or, where the file system does not support the flag, `link()` then `unlink()`;
- across file systems (done/ on a share mounted there: `EXDEV`): copy to a hidden temporary in
  the target folder, fsync, link it to the name (never replacing), fsync the folder, then
  unlink the source. The target folder never shows a partial file under the real name.

A kill -9 may leave the source *and* the target (after the link, before the unlink), or a
partial temporary. Moving again then finishes the job: a target that is the same file (inode)
or has the same bytes is ours; the source is unlinked and nothing is duplicated. A temporary
from an interrupted copy is overwritten by the next one.
"""

from __future__ import annotations

import ctypes
import errno
import filecmp
import os
import shutil
import stat
from pathlib import Path

RENAME_NOREPLACE = 1  # <linux/fs.h>
_AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)  # glibc ≥ 2.28
# Errors saying "this file system (or kernel) cannot do a no-replace rename": link instead.
_NO_FLAG_SUPPORT = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP}
TEMP_SUFFIX = ".moving"


def temporary_for(target: Path) -> Path:
    """The hidden name a copy is written under before it takes `target`'s name."""
    return target.with_name(f".{target.name}{TEMP_SUFFIX}")


def rename_no_replace(src: Path, dst: Path) -> None:
    """Rename `src` to `dst` unless `dst` exists (FileExistsError); EXDEV is raised as is."""
    if _renameat2 is not None:
        done = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                          RENAME_NOREPLACE)  # fmt: skip
        if done == 0:
            return
        code = ctypes.get_errno()
        if code not in _NO_FLAG_SUPPORT:
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    # link() never replaces either; a crash before the unlink leaves two names for one inode.
    os.link(src, dst, follow_symlinks=False)
    src.unlink()


def same_file(a: Path, b: Path) -> bool:
    """`b` is `a` itself (one inode) or a complete copy of it (same type, size and bytes)."""
    try:
        sa, sb = a.lstat(), b.lstat()
    except FileNotFoundError:
        return False
    if (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino):
        return True
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if stat.S_ISLNK(sa.st_mode):
        return a.readlink() == b.readlink()
    if not stat.S_ISREG(sa.st_mode) or sa.st_size != sb.st_size:
        return False
    return filecmp.cmp(a, b, shallow=False)


def move_no_replace(src: Path, dst: Path) -> None:
    """Move `src` to `dst`, never replacing a different file there (FileExistsError).

    `dst` already holding this very file (a move a crash interrupted) completes the move.
    """
    try:
        rename_no_replace(src, dst)
        return
    except FileExistsError:
        if not same_file(src, dst):
            raise
        src.unlink()  # the link (or copy) landed; only the unlink was lost
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    _copy_across(src, dst)


def _copy_across(src: Path, dst: Path) -> None:
    if os.path.lexists(dst):
        if not same_file(src, dst):
            raise FileExistsError(errno.EEXIST, "target exists", str(dst))
        src.unlink()
        return
    temp = temporary_for(dst)
    temp.unlink(missing_ok=True)  # a copy a crash cut short
    if src.is_symlink():
        temp.symlink_to(src.readlink())
    else:
        # copy2 keeps the mtime (and raises SpecialFileError for a FIFO rather than block).
        shutil.copy2(src, temp, follow_symlinks=False)
        with temp.open("rb+") as copied:
            os.fsync(copied.fileno())
    try:
        rename_no_replace(temp, dst)
    except FileExistsError:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(dst.parent)  # the new name is durable before the source goes
    src.unlink()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
