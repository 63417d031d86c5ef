"""Processes that die with the process that started them, whatever state they are in.  [shell]

A runner killed with SIGKILL cannot stop its workers. A thread in the worker that waits for the
runner to go (fabric.runner.local) is not enough: a worker inside a long C call that holds the
GIL (a source read by connectorx or ADBC) never lets that thread run, and goes on holding the
pipeline's lock and its source cursor. Linux can deliver a signal when a process's parent dies
(`prctl(PR_SET_PDEATHSIG)`), with no help from the dying process or the GIL. The chain is: the
runner dies -> its forkserver gets SIGKILL -> every worker forked from it gets SIGKILL.
Elsewhere (macOS) this does nothing and the watching thread is the only guard.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent exits; True if it will.

    A parent that is already gone (this process was re-parented before the call) ends this
    process at once.
    """
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return False
    if parent == 1 or os.getppid() != parent:  # the parent died before the call took effect
        os.kill(os.getpid(), signal.SIGKILL)
    return True


def _in_forkserver() -> bool:
    """multiprocessing starts its forkserver as `python -c "from multiprocessing.forkserver
    import main; ..."`, importing its preload modules (this one first) from that `main`."""
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules


if _in_forkserver():
    die_with_parent()
