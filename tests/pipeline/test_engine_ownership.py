"""The Docker engine deploy.sh starts when none answers, and who stops it.

A `--keep` run that started its own dockerd left it running after `--down` had torn the
stack down: nothing remembered that the run had started it. The runs here are real: in a
mount namespace of their own with a private /run, no engine answers on the default socket
(whatever runs on the host's), so deploy.sh starts a real dockerd, on a data root of the
test's, exactly as on a machine without Docker running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..support import missing
from .conftest import DEPLOY, ROOT

pytestmark = pytest.mark.pipeline

RECORD = "dockerd.started"  # deploy.sh's record of the engine a run started
PORTS_REGISTRY = Path.home() / ".cache" / "comments-api" / "ports"  # scripts/free_ports.py


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose (reaped by its parent later).
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat: with the PID, it names one process."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19]


def stop(pid: int, timeout: float = 30) -> None:
    """SIGTERM a process this test started, and wait for it."""
    if alive(pid):
        os.kill(pid, 15)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)


class Namespace:
    """A mount namespace with a private /run: the default Docker socket is free there."""

    def __init__(self, tmp: Path) -> None:
        self.holder = subprocess.Popen(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                "mount -t tmpfs tmpfs /run && echo ready && exec sleep 900",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "ready":
            self.holder.kill()
            _, err = self.holder.communicate()
            missing(f"a mount namespace with a private /run (unshare, mount: {err.strip()})")
        self.data_root = tmp / "docker"

    def run(
        self, *args: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["nsenter", "--target", str(self.holder.pid), "--mount", "--", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env={**os.environ, "DOCKER_DATA_ROOT": str(self.data_root), **(env or {})},
        )
        print(proc.stdout + proc.stderr)  # shown by pytest when a test fails
        return proc

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()


@pytest.fixture
def namespace(tmp_path: Path) -> Iterator[Namespace]:
    for tool in ("unshare", "nsenter", "dockerd", "docker"):
        if shutil.which(tool) is None:
            missing(tool)
    if os.geteuid() != 0:
        missing("root (a mount namespace, and dockerd)")
    ns = Namespace(tmp_path)
    try:
        yield ns
    finally:
        ns.close()


@pytest.fixture
def state(short_tmp: Path) -> Path:
    """The runs' --state-dir, on a short path (conftest's short_tmp)."""
    return short_tmp / "state"


def kept_run(ns: Namespace, state: Path, image: str) -> subprocess.CompletedProcess:
    return ns.run(
        str(DEPLOY),
        "--target=local",
        "--keep",
        "--skip-tests",
        "--skip-scans",
        f"--image={image}",
        "--tag=engine-test",
        f"--state-dir={state}",
    )


def test_down_stops_the_engine_a_kept_run_started(
    namespace: Namespace, state: Path, tmp_path: Path
):
    started: list[int] = []
    try:
        # 1. No engine answers: the run starts one, and stops at the build (no such image in
        # the new engine). --keep: the engine stays, recorded in the state directory.
        first = kept_run(namespace, state, "local/engine-test:none")
        assert first.returncode == 1, first.stdout[-2000:] + first.stderr
        match = re.search(r"started dockerd \(pid (\d+)", first.stdout)
        assert match, first.stdout[-2000:]
        pid = int(match.group(1))
        started.append(pid)
        assert alive(pid)
        assert f"--down --state-dir {state} stops it" in first.stdout
        record = (state / RECORD).read_text()
        assert record == f"pid={pid}\nstart={start_time(pid)}\n"

        # 2. A later kept run on the same state directory finds that engine running, brings
        # the stack up (registries, PostgreSQL, Redis, haproxy), pushes a one-file image
        # and stops at its staging migration (the image has no comments-api to run). The
        # record is still the first run's.
        tiny = tmp_path / "tiny"
        tiny.mkdir()
        (tiny / "hello").write_text("hello\n")
        imported = namespace.run(
            "sh", "-c", f"tar -C {tiny} -cf - . | docker import - local/engine-test:1"
        )
        assert imported.returncode == 0, imported.stderr
        second = kept_run(namespace, state, "local/engine-test:1")
        assert second.returncode == 1, second.stdout[-2000:] + second.stderr
        assert "using the running Docker engine" in second.stdout
        assert "staging: migration failed" in second.stderr
        assert (state / RECORD).read_text() == record
        stack = dict(line.split("=", 1) for line in (state / "stack.env").read_text().splitlines())
        services = [int(stack[name]) for name in ("DEV_PID", "PROD_PID", "REDIS_PID")]
        assert all(alive(p) for p in services)
        # Its ports are reserved on this machine (scripts/free_ports.py) until --down.
        reservation = PORTS_REGISTRY / f"{stack['STACK']}.ports"
        fields = dict(line.split("=", 1) for line in reservation.read_text().splitlines())
        assert fields["state"] == str(state)
        reserved = {int(p) for p in fields["ports"].split()}
        assert len(reserved) == 6 + 4 * 3
        own = ("DEV_PORT", "PROD_PORT", "PG_PORT", "REDIS_PORT", "staging_LB", "production_LB")
        assert {int(stack[name]) for name in own} <= reserved

        # 3. --down: the stack, then the engine the first run started.
        down = namespace.run(str(DEPLOY), "--down", f"--state-dir={state}")
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"stopping the Docker engine this script started (pid {pid})" in down.stdout
        assert not alive(pid), "--down left the engine the kept run started"
        assert not any(alive(p) for p in services)
        assert not state.exists()
        assert not reservation.exists()
    finally:
        if state.exists():
            namespace.run(str(DEPLOY), "--down", f"--state-dir={state}", timeout=180)
        for pid in started:
            stop(pid)
        shutil.rmtree(namespace.data_root, ignore_errors=True)


def test_down_leaves_an_engine_the_run_found_running(
    namespace: Namespace, state: Path, tmp_path: Path
):
    # The engine here is the test's own, started before deploy.sh: never deploy.sh's to stop.
    data_root = namespace.data_root
    data_root.mkdir()
    engine = namespace.run(
        "sh",
        "-c",
        f"dockerd --data-root {data_root} --bridge=none --iptables=false --ip6tables=false "
        f">{tmp_path / 'dockerd.log'} 2>&1 & echo $!",
    )
    pid = int(engine.stdout.strip())
    try:
        deadline = time.monotonic() + 60
        while namespace.run("docker", "info", timeout=30).returncode != 0:
            assert time.monotonic() < deadline, (tmp_path / "dockerd.log").read_text()[-2000:]
            time.sleep(0.5)
        run = kept_run(namespace, state, "local/engine-test:none")
        assert run.returncode == 1, run.stdout[-2000:] + run.stderr
        assert "using the running Docker engine" in run.stdout
        assert not (state / RECORD).exists()
        down = namespace.run(str(DEPLOY), "--down", f"--state-dir={state}")
        assert down.returncode == 0, down.stdout + down.stderr
        assert "stopping the Docker engine" not in down.stdout
        assert alive(pid)
        assert namespace.run("docker", "info", timeout=30).returncode == 0
    finally:
        stop(pid)
        shutil.rmtree(data_root, ignore_errors=True)


def test_a_recorded_pid_that_is_no_longer_the_engine_is_left_alone(tmp_path: Path):
    # The PID of the engine a kept run started, taken since by another process (here: a
    # `sleep`, at its real start time): --down must not kill it.
    state = tmp_path / "state"
    state.mkdir()
    other = subprocess.Popen(["sleep", "120"])
    try:
        (state / RECORD).write_text(f"pid={other.pid}\nstart={start_time(other.pid)}\n")
        down = subprocess.run(
            [str(DEPLOY), "--down", "--state-dir", str(state)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"(pid {other.pid}) is no longer running" in down.stdout
        assert other.poll() is None, "--down killed a process that is not its engine"
        assert not (state / RECORD).exists()
    finally:
        other.kill()
        other.wait()


def test_an_engine_that_outlives_its_sigterm_is_reported():
    # docker_engine_stop waits 20 s for the engine it started; one still running then
    # holds the data root and socket the next run starts on, so it must say so.
    stubborn = subprocess.Popen(
        [
            "python3",
            "-c",
            "import signal, time; signal.signal(15, signal.SIG_IGN); print('ready', flush=True);"
            " time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert stubborn.stdout is not None
        assert stubborn.stdout.readline().strip() == "ready"  # SIGTERM is ignored from here
        stopped = subprocess.run(
            [
                "bash",
                "-c",
                '. scripts/lib/docker-engine.sh; DOCKER_ENGINE_PID="$1"; docker_engine_stop',
                "test",
                str(stubborn.pid),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert stubborn.poll() is None
        assert f"the Docker engine (pid {stubborn.pid}) is still running" in stopped.stderr
    finally:
        stubborn.kill()
        stubborn.wait()
