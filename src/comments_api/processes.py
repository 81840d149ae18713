"""Process-level facts and settings: the pid hot paths ask for, timer slack, and the
signal mask around a worker's fork."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator


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


# A new worker runs with its master's signal handlers from fork until gunicorn installs
# its own (init_signals). A stop signal in that window goes to the master's handler, which
# only queues it for a master loop the child never runs: the worker then serves on, and
# the master SIGKILLs it at GRACEFUL_TIMEOUT. Blocked over that window, the signal waits
# and reaches the worker's own handler once unblocked.
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGQUIT})


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Block the stop signals for the block's duration (a child forked inside inherits the
    block until ``unblock_stop_signals``); signals that came meanwhile are then delivered."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def block_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def unblock_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
