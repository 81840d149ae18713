"""Run the built image the way Kubernetes will, with loopback-only networking.

Every container here is hardened (read-only root, tmpfs /tmp and /data, all
capabilities dropped, no-new-privileges, memory and pids limits) and uses the host's
network namespace with the app bound to 127.0.0.1 on a free port: never `-p`, never a
bridge network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from ..support import free_port, missing

IMAGE = os.environ.get("COMMENTS_API_IMAGE", "comments-api:dev")
RUNTIME_UID = 65532
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def docker(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=check
    )


class Container:
    def __init__(
        self,
        env: dict[str, str] | None = None,
        memory: str = "256m",
        volumes: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {"HOST": "127.0.0.1", "PORT": str(self.port), **(env or {})}
        self.memory = memory
        self.volumes = volumes  # docker --volume values, e.g. a secret file read-only
        self.id = ""
        self.started_at = 0.0

    def run_args(self) -> list[str]:
        args = [
            "run",
            "--detach",
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp:rw,nosuid,nodev,size=64m",
            "--tmpfs",
            f"/data:rw,nosuid,nodev,size=64m,uid={RUNTIME_UID},gid={RUNTIME_UID},mode=0700",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "--memory",
            self.memory,
            "--pids-limit",
            "128",
        ]
        for key, value in self.env.items():
            args += ["--env", f"{key}={value}"]
        for volume in self.volumes:
            args += ["--volume", volume]
        return [*args, IMAGE]

    def start(self) -> Container:
        self.started_at = time.monotonic()
        self.id = docker(*self.run_args()).stdout.strip()
        return self

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Seconds from `docker run` until /readyz answered 200."""
        deadline = self.started_at + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return time.monotonic() - self.started_at
            except requests.RequestException:
                pass
            if self.state("{{.State.Running}}") == "false":
                raise AssertionError(f"container exited early:\n{self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"never ready within {timeout}s:\n{self.logs()}")

    def state(self, template: str) -> str:
        return docker("inspect", "-f", template, self.id, check=False).stdout.strip()

    def exec(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return docker("exec", self.id, *cmd, timeout=timeout, check=False)

    def python(self, code: str) -> subprocess.CompletedProcess:
        return self.exec("/venv/bin/python", "-c", code)

    def logs(self) -> str:
        result = docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def remove(self) -> None:
        if self.id:
            docker("rm", "--force", "--volumes", self.id, check=False)


@pytest.fixture(scope="session")
def image() -> str:
    if shutil.which("docker") is None:
        missing("docker client")
    if docker("info", check=False).returncode != 0:
        missing("a running Docker engine (make image-test starts one)")
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        missing(f"image {IMAGE} (build it with make image-test)")
    return IMAGE


@pytest.fixture
def start_container(image: str) -> Iterator:
    started: list[Container] = []

    def start(env: dict[str, str] | None = None, **kwargs: Any) -> Container:
        container = Container(env, **kwargs)
        started.append(container)
        return container.start()

    yield start
    for container in started:
        container.remove()


@pytest.fixture
def app_container(start_container) -> Container:
    container = start_container()
    container.wait_ready()
    return container


@pytest.fixture(scope="session")
def budgets() -> Iterator[dict[str, float]]:
    """Measured budget figures, written to artifacts/container-budgets.json for the log."""
    measured: dict[str, float] = {}
    yield measured
    if measured:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "container-budgets.json").write_text(
            json.dumps({"image": IMAGE, **measured}, indent=2) + "\n", encoding="utf-8"
        )
