"""`deploy.sh --target minikube` on its failure paths, for real up to the cluster.

No Kubernetes control plane can run here, so `kubectl` is the one stand-in: a script that
answers the readiness probe, refuses `kubectl apply` (as an API server refusing the
manifests, or an expired credential, would) and logs every call. Docker, the dev registry
(`docker-registry` on 127.0.0.1), skopeo and the image are real.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from ..support import missing
from .conftest import DEPLOY, PREBUILT, ROOT, sh

pytestmark = pytest.mark.pipeline

KUBECTL = """#!/bin/sh
printf '%s\\n' "$*" >>"{log}"
case " $* " in
  *" get --raw /readyz "*) echo ok ;;
  *" apply "*) echo 'error: You must be logged in to the server (Unauthorized)' >&2; exit 1 ;;
esac
exit 0
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_failure_before_kubectl_apply_rolls_nothing_back(tmp_path: Path):
    # kubectl apply refused: staging never changed. `kubectl rollout undo` then took staging
    # back to the release BEFORE the one it was serving.
    for tool in ("docker", "docker-registry", "skopeo"):
        if shutil.which(tool) is None:
            missing(tool)
    if sh("docker", "info", check=False).returncode != 0:
        missing("a running Docker engine")
    image = PREBUILT or "comments-api:dev"
    if sh("docker", "image", "inspect", image, check=False).returncode != 0:
        missing(f"a built image {image} (PIPELINE_IMAGE)")
    port = free_port()
    (tmp_path / "registry").mkdir()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path / 'registry'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    registry = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "kubectl.log"
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(KUBECTL.format(log=log))
    kubectl.chmod(0o755)
    tag = f"mk-{uuid.uuid4().hex[:8]}"
    try:
        deadline = time.monotonic() + 20
        while sh("curl", "-fsS", f"http://127.0.0.1:{port}/v2/", check=False).returncode:
            assert time.monotonic() < deadline, "the registry never answered"
            time.sleep(0.2)
        proc = subprocess.run(
            [
                str(DEPLOY),
                "--target",
                "minikube",
                "--skip-tests",
                "--skip-scans",
                "--image",
                image,
                "--tag",
                tag,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env={
                **os.environ,
                "PATH": f"{bin_dir}:{os.environ['PATH']}",
                "DEV_REGISTRY": f"127.0.0.1:{port}",
            },
        )
        out = proc.stdout + proc.stderr
        print(out)
        calls = log.read_text()
        assert " apply -k " in calls, calls  # it did get as far as the cluster
        assert proc.returncode == 1, out[-3000:]
        assert "rollout undo" not in calls, calls
        assert "ROLLBACK staging" not in out
        assert "staging was not changed by this run (it serves nothing): no rollback" in out
    finally:
        registry.terminate()
        registry.wait(timeout=30)
        for ref in (f"comments-api:{tag}", f"127.0.0.1:{port}/comments-api:{tag}"):
            sh("docker", "rmi", ref, check=False)
