"""The PIDs of a kept stack (haproxy, registries, Redis) and who `--down` may kill.

stack.env named them by PID alone: once a kept stack's processes were gone (a reboot, an
OOM kill) and their numbers taken by other processes, `--down` (or a later run's teardown)
SIGTERMed those, as root, and a later run took them for the stack ("reusing the running
stack"). A PID is the stack's only with the start time recorded when it was started (or,
in a record without start times, while it runs the stack's command). No Docker, no root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import DEPLOY, ROOT
from .test_engine_ownership import alive, start_time

pytestmark = pytest.mark.pipeline


@pytest.fixture
def other(tmp_path: Path) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(["sleep", "120"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def down(tmp_path: Path, state: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DEPLOY), "--down", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "DEPLOY_PORTS_DIR": str(tmp_path / "ports")},
    )


@pytest.mark.parametrize("record", ["start time of another process", "no start time"])
def test_down_leaves_a_recorded_pid_that_another_process_holds_now(
    tmp_path: Path, other: subprocess.Popen, record: str
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    lines = [
        "STACK=pidtest0",
        f"REDIS_PID={other.pid}",
        f"DEV_PID={other.pid}",
        f"staging_HAPROXY_PID={other.pid}",
    ]
    if record != "no start time":
        start = int(start_time(other.pid)) - 1  # the stack's process started before it
        lines += [f"{v}_START={start}" for v in ("REDIS_PID", "DEV_PID", "staging_HAPROXY_PID")]
    (state / "stack.env").write_text("\n".join(lines) + "\n")
    result = down(tmp_path, state)
    assert result.returncode == 0, result.stdout + result.stderr
    assert other.poll() is None, "--down killed a process the stack did not start"
    assert f"pid {other.pid} (REDIS_PID of this stack) is another process now" in result.stderr


def test_down_still_stops_the_stacks_own_process(tmp_path: Path) -> None:
    # A process the stack started (its command redis-server, at the recorded start time).
    fake = tmp_path / "bin" / "redis-server"
    fake.parent.mkdir()
    fake.symlink_to(shutil.which("sleep"))
    own = subprocess.Popen([str(fake), "120"])
    try:
        state = tmp_path / "state"
        state.mkdir()
        (state / "stack.env").write_text(
            f"STACK=pidtest1\nREDIS_PID={own.pid}\nREDIS_PID_START={start_time(own.pid)}\n"
        )
        result = down(tmp_path, state)
        assert result.returncode == 0, result.stdout + result.stderr
        own.wait(timeout=10)
        assert not alive(own.pid)
    finally:
        own.kill()
        own.wait()
