"""Facts about the running process that hot paths ask for."""

from __future__ import annotations

import os
from collections.abc import Callable


def pid_at_fork() -> Callable[[], int]:
    """This process's pid, read again only in a forked child (``os.register_at_fork``):
    ``os.getpid()`` is a system call, and some callers ask on every request."""
    pid = os.getpid()

    def forked() -> None:
        nonlocal pid
        pid = os.getpid()

    os.register_at_fork(after_in_child=forked)
    return lambda: pid


# Linux lets a sleeping thread's timer fire up to its "timer slack" late, to batch wake-ups:
# 50 us by default, so the writer turn's 25-50 us polls (store/repository.py) slept ~105 us
# here, and a worker waited for a turn long after it was free. 1 us: the same polls end
# after ~60 us. Inherited by threads and forked children.
PR_SET_TIMERSLACK = 29
WAIT_SLACK_NS = 1000


def tighten_timer_slack(nanoseconds: int = WAIT_SLACK_NS) -> bool:
    """Set this thread's timer slack (Linux ``prctl``); False where that is unavailable."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_TIMERSLACK, nanoseconds, 0, 0, 0) == 0)
    except (ImportError, OSError, AttributeError):
        return False
