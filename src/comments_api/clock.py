"""Time for the rules: services take a ``Clock`` so tests can move time instead of sleeping."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

# A callable returning an aware UTC datetime; the app factory passes it to every service.
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock, the default ``Clock``."""
    return datetime.now(UTC)
