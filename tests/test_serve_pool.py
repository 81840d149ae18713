"""Threads never queue for a pooled connection: serve raises DB_POOL_SIZE to THREADS."""

from __future__ import annotations

from pathlib import Path

import pytest

from .support import ServiceProcess, scrape, value


@pytest.mark.parametrize(
    ("threads", "configured", "expected"),
    [
        ("4", "1", 4),  # raised to one connection per thread
        ("2", "3", 3),  # a larger pool is kept
    ],
)
def test_pool_is_at_least_one_connection_per_thread(
    tmp_path: Path, threads: str, configured: str, expected: int
) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "THREADS": threads,
        "DB_POOL_SIZE": configured,
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert value(scrape(service.base), "comments_api_db_pool_size") == expected
