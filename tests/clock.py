"""A clock the tests move by hand: rules with a time window are tested without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """A ``Clock`` (see comments_api.clock): returns ``now`` until told to move."""

    def __init__(self, start: datetime | None = None) -> None:
        # Starts at the wall clock's time, so stored rows look like real ones.
        self.now = start or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
