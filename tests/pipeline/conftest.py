"""One real `deploy.sh --target local` stack shared by the pipeline tests of a module.

The first release is built from the real Dockerfile (once per run: the `--image` flag makes
later releases reuse it) and goes through every stage; the stack (registries, PostgreSQL,
Redis, haproxy, replicas) is kept up with --keep for the following tests and torn down with
--down at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..support import missing

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "scripts" / "deploy.sh"
LABEL = "org.example.pipeline"
ARTIFACTS = ROOT / "artifacts"
# The staging load test of every run in these tests: short, the machine is shared.
QUICK_LOAD = ["--load-vus", "2", "--load-duration", "3s"]
# Set to an existing local image to skip the build while working on these tests.
PREBUILT = os.environ.get("PIPELINE_IMAGE", "")


def sh(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=check)


@dataclass
class Run:
    """One deploy.sh invocation: exit status and everything it printed."""

    rc: int
    out: str
    seconds: float


@dataclass
class Stack:
    state: Path
    first: Run
    first_release: dict[str, str] = field(default_factory=dict)
    images: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        lines = (self.state / "stack.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def release(self) -> dict[str, str]:
        """The last release deploy.sh built or took and pushed (good or not)."""
        lines = (self.state / "release").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines)

    def serving(self, env: str) -> str:
        """The digest deploy.sh records as what ENV runs."""
        return (self.state / env / "digest").read_text().strip()

    @property
    def base_image(self) -> str:
        """The image the first run built: every later release is made FROM it."""
        return f"comments-api:{self.first_release['tag']}"

    def registry(self, which: str) -> str:
        return f"127.0.0.1:{self.env[f'{which.upper()}_PORT']}"

    def lb(self, env: str) -> str:
        return f"http://127.0.0.1:{self.env[f'{env}_LB']}"

    def deploy(
        self, *args: str, timeout: float = 400, label: str = "", env: dict[str, str] | None = None
    ) -> Run:
        for i, arg in enumerate(args):  # deploy.sh names its release comments-api:TAG
            if arg == "--tag" or arg.startswith("--tag="):
                tag = args[i + 1] if arg == "--tag" else arg.split("=", 1)[1]
                self.images.append(f"comments-api:{tag}")
        started = time.monotonic()
        proc = subprocess.run(
            [str(DEPLOY), "--target", "local", "--state-dir", str(self.state), "--keep", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )
        run = Run(proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started)
        print(run.out)  # shown by pytest when a test fails
        if label:
            self.figures[f"{label}_seconds"] = round(run.seconds, 1)
            logs = ARTIFACTS / "pipeline-logs"
            logs.mkdir(parents=True, exist_ok=True)
            (logs / f"{label}.log").write_text(run.out)
        return run

    def release_image(
        self, image: str, tag: str, *args: str, quick: bool = True, **kwargs: Any
    ) -> Run:
        """A run that releases an image already built (CI has tested and scanned it) as
        comments-api:TAG, with the short load test unless ``quick=False``."""
        load = QUICK_LOAD if quick else []
        return self.deploy(
            "--skip-tests", "--skip-scans", "--image", image, "--tag", tag, *load, *args, **kwargs
        )

    def registry_digest(self, which: str, ref: str) -> str | None:
        """Manifest digest of comments-api:TAG or @DIGEST in a registry (None: absent)."""
        sep = "@" if ref.startswith("sha256:") else ":"
        result = sh(
            "skopeo",
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            f"docker://{self.registry(which)}/comments-api{sep}{ref}",
            check=False,
        )
        return result.stdout.strip() if result.returncode == 0 else None

    def replicas(self, env: str) -> list[dict[str, str]]:
        """The running replicas of an environment, as Docker reports them."""
        ids = sh(
            "docker",
            "ps",
            "-q",
            "--filter",
            f"label={LABEL}.stack={self.env['STACK']}",
            "--filter",
            f"label={LABEL}.env={env}",
        ).stdout.split()
        found = []
        for cid in ids:
            info = json.loads(sh("docker", "inspect", cid).stdout)[0]
            image = json.loads(sh("docker", "image", "inspect", info["Image"]).stdout)[0]
            found.append(
                {
                    "id": cid,
                    "name": info["Name"].lstrip("/"),
                    "ref": info["Config"]["Image"],
                    "image_id": info["Image"],
                    "repo_digests": " ".join(image.get("RepoDigests") or []),
                }
            )
        return found

    def derived_image(self, name: str, dockerfile: str) -> str:
        """A small image FROM the built release (built offline, removed at teardown)."""
        tag = f"comments-api-pipeline-test:{name}-{self.env['STACK']}"
        proc = subprocess.run(
            ["docker", "build", "--quiet", "--network", "none", "-t", tag, "-"],
            input=dockerfile,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        self.images.append(tag)
        return tag


def _require_tools() -> None:
    for tool in ("docker", "skopeo", "haproxy", "docker-registry", "redis-server", "gpg"):
        if shutil.which(tool) is None:
            missing(tool)
    if not (ROOT / ".venv" / "bin" / "k6").exists():
        missing("k6 in .venv (make venv)")
    if sh("docker", "info", check=False).returncode != 0:
        missing("a running Docker engine (make pipeline-test starts one)")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory for a local run's --state-dir: deploy.sh refuses one whose haproxy socket
    path (STATE/production/haproxy.sock) is longer than haproxy takes, 97 characters, and a
    tmp_path under pytest-xdist (.../popen-gwN/test_name0/) is long enough for that."""
    parent = Path(tempfile.mkdtemp(prefix="cpl-"))
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    _require_tools()
    state = Path(tempfile.mkdtemp(prefix="cpl-"))
    stack = Stack(state=state, first=Run(-1, "", 0.0))
    args = ["--skip-tests", "--skip-scans", *QUICK_LOAD]
    if PREBUILT:
        args += ["--image", PREBUILT]
    try:
        stack.first = stack.deploy(*args, timeout=900, label="first_release_with_build")
        if (state / "release").exists():
            stack.first_release = stack.release()
        yield stack
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "pipeline-figures.json").write_text(json.dumps(stack.figures, indent=2) + "\n")
        subprocess.run(
            [str(DEPLOY), "--down", "--state-dir", str(state)],
            capture_output=True,
            timeout=180,
            check=False,
        )
        for tag in stack.images:
            sh("docker", "rmi", "--force", tag, check=False)
        shutil.rmtree(state, ignore_errors=True)
