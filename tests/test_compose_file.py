"""compose.yaml read as a file (tests/container/test_compose.py runs it, with Docker)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


def test_compose_app_sets_its_workers_rather_than_count_the_hosts_cpus():
    # WORKERS' default is max(2, os.cpu_count()): the host's CPUs, whatever mem_limit says.
    # On a 16-core host that was 16 workers, ~360 MiB in a 256m container (~21 MiB each).
    app = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["app"]
    assert app["environment"].get("WORKERS") == "2"
    assert app["mem_limit"] == "256m", "the 2 workers' budget was measured against 256m"
