"""Plans of the Terraform roots, as `terraform show -json` writes them.

scripts/terraform-check.sh writes them and runs these tests with TF_PLAN_DIR set. Run on
their own (`pytest -m terraform tests/terraform`), they plan into a temporary directory
first through the same script, so they never read a stale plan.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..support import missing

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("bootstrap", "staging", "production")


@pytest.fixture(scope="session")
def plan_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("TF_PLAN_DIR")
    if given:
        return Path(given)
    if shutil.which("terraform") is None:
        missing("terraform")
    out = tmp_path_factory.mktemp("plans")
    proc = subprocess.run(
        [str(REPO / "scripts" / "terraform-check.sh"), "--plans", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"planning failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    return out


@pytest.fixture(scope="session")
def plans(plan_dir: Path) -> dict[str, dict[str, Any]]:
    loaded = {}
    for root in ROOTS:
        path = plan_dir / f"plan-{root}.json"
        if not path.is_file():
            pytest.fail(f"{path} missing: run scripts/terraform-check.sh", pytrace=False)
        loaded[root] = json.loads(path.read_text())
    return loaded
