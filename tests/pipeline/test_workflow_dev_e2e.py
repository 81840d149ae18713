"""dev.yml's E2E job, the step that runs the walkthrough and k6 through `kubectl
port-forward`, run as GitHub's runner runs it (`bash -eo pipefail`,
tests/deploy/test_tools.run_step).

No cluster can run here: kubectl is a stand-in whose `port-forward` is a long-lived process
(as the real one is), and curl a stand-in for the service behind it, which answers the
step's readiness probe and then fails the walkthrough's first check (503)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from ..deploy.test_tools import run_step, workflows
from ..deploy.workflow_steps import step_of

pytestmark = pytest.mark.k8s


def walkthrough_step() -> dict[str, Any]:
    return step_of(workflows()["dev.yml"]["jobs"]["e2e"], run="walkthrough.sh")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"


def test_a_failed_walkthrough_ends_the_steps_port_forward(tmp_path: Path):
    # The step killed the port-forward on its last line only: a failed walkthrough or k6
    # run (bash -e) left the tunnel into the cluster running for the rest of the job.
    pid_file = tmp_path / "port-forward.pid"
    stand_ins = {
        "kubectl": f'case "$*" in *port-forward*) echo $$ >"{pid_file}"; exec sleep 300 ;; esac',
        # `curl -w '%{http_code}'` is the walkthrough's: the service is not ready.
        "curl": 'case "$*" in *"-w "*) printf 503 ;; esac',
    }
    forward = 0
    try:
        proc = run_step(walkthrough_step(), tmp_path, {}, stand_ins)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "GET /readyz -> 503" in out, out
        assert "expected 200" in out, out
        calls = (tmp_path / "calls.log").read_text()
        assert "kubectl -n comments-staging port-forward service/comments-api 8080:80" in calls
        forward = int(pid_file.read_text())
        deadline = time.monotonic() + 5
        while alive(forward) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(forward), f"the port-forward (pid {forward}) outlived the failed step"
    finally:
        if forward and alive(forward):
            os.kill(forward, signal.SIGKILL)
