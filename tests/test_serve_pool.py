"""Threads never queue for a pooled connection: serve raises DB_POOL_SIZE to THREADS."""

from __future__ import annotations

from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from .support import ServiceProcess


def pool_size(base: str) -> float:
    text = requests.get(f"{base}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "comments_api_db_pool_size":
                return sample.value
    raise AssertionError("comments_api_db_pool_size not exported")


def test_pool_is_at_least_one_connection_per_thread(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "THREADS": "4",
        "DB_POOL_SIZE": "1",
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert pool_size(service.base) == 4


def test_a_larger_pool_is_kept(tmp_path: Path) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "THREADS": "2",
        "DB_POOL_SIZE": "3",
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert pool_size(service.base) == 3
