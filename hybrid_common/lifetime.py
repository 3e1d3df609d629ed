"""Child processes that die with their parent, however the parent dies (even SIGKILL).

Linux's `prctl(PR_SET_PDEATHSIG)` asks the kernel to signal a process when its parent goes;
nothing else covers a parent killed with -9. Two traps: the signal fires when the *thread*
that forked the child exits, not the process (fork from a thread that lives as long as the
parent), and a parent that died before the call is never signalled (so check `getppid`).
Elsewhere than Linux these are no-ops.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved once, before any fork: a preexec_fn should do as little as possible.
_PRCTL = _load_prctl()


def die_with_parent(signum: int, parent_pid: int) -> None:
    """Have the kernel send `signum` to this process when its parent exits.

    `parent_pid` is the parent as it was at fork time: if it is already gone (we were
    reparented before the call), the signal is sent now.
    """
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), signum)


def preexec_die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A `subprocess.Popen(preexec_fn=...)` that ties the child to this process's life.

    Call it in the thread that starts the child: that thread's exit is what the kernel sees.
    """
    parent = os.getpid()

    def preexec() -> None:
        die_with_parent(signum, parent)

    return preexec
