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
