"""A child process that dies with its parent, however the parent ends.

A parent killed with SIGKILL runs no cleanup, so the child must notice by itself: on
Linux the kernel sends it a signal (prctl PR_SET_PDEATHSIG) the moment its parent
goes; elsewhere, and to close the race where the parent died before the call, it
compares its parent's pid with the one it was started under."""

import ctypes
import ctypes.util
import os
import signal
import sys

PARENT_PID_ENV = "PM_OPS_PARENT_PID"
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int, signum: int = signal.SIGTERM) -> None:
    """Ask for `signum` when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    if not parent_alive(parent_pid):
        os.kill(os.getpid(), signum)


def parent_alive(parent_pid: int) -> bool:
    """True while the process that started us is still our parent."""
    return os.getppid() == parent_pid


def expected_parent() -> int | None:
    """The parent pid a supervisor passed down, if this process was started by one."""
    value = os.environ.get(PARENT_PID_ENV, "")
    return int(value) if value.isdigit() else None
