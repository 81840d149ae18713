"""`serve` mounted under a prefix (the SCRIPT_NAME environment variable), and request
headers that would move the mount: real gunicorn processes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import requests

from .support import VENV_BIN, ServiceProcess


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
        **extra,
    }


def test_a_path_outside_the_mount_prefix_is_a_json_404(tmp_path: Path) -> None:
    # gunicorn raised ConfigurationProblem for it, and the worker answered 500 with a
    # traceback in the log: a client's wrong path, not a server fault.
    with ServiceProcess(_env(tmp_path, SCRIPT_NAME="/c"), tmp_path, workers=1) as service:
        root = service.base.removesuffix("/c")
        outside = requests.get(f"{root}/api/v1/contents/a/comments", timeout=5)
        assert outside.status_code == 404
        assert outside.headers["Content-Type"] == "application/problem+json"
        assert "SCRIPT_NAME" in outside.json()["detail"]
        inside = requests.get(f"{service.base}/api/v1/contents/a/comments", timeout=5)
        assert inside.status_code == 200
        assert inside.json()["items"] == []
        assert "Traceback" not in service.log()


def test_the_servers_own_errors_below_the_mount_prefix_keep_the_legacy_shape(
    tmp_path: Path,
) -> None:
    # The app answers /c/api/comment/… in the legacy shape; the worker's own 414 (and 408,
    # 413, 400) judged the shape by the raw target, and answered problem+json there.
    with ServiceProcess(_env(tmp_path, SCRIPT_NAME="/c"), tmp_path, workers=1) as service:
        for prefix in ("/api/comment/list/", "//api/comment/list/"):
            url = f"{service.base}{prefix}{'a' * 60_000}"
            answer = requests.get(url, timeout=5)
            assert answer.status_code == 414
            assert answer.headers["Content-Type"] == "application/json"
            assert answer.json() == {
                "message": "the request line is too long",
                "status": "URI-TOO-LONG",
            }
        v1 = requests.get(f"{service.base}/api/v1/contents/{'a' * 60_000}/comments", timeout=5)
        assert v1.status_code == 414
        assert v1.headers["Content-Type"] == "application/problem+json"


def test_the_container_healthcheck_probes_below_the_mount_prefix(tmp_path: Path) -> None:
    # The image's HEALTHCHECK runs `comments-api healthcheck` in the container's own
    # environment: it probed /readyz at the root, a 404, so the container never turned
    # healthy under a SCRIPT_NAME.
    with ServiceProcess(_env(tmp_path, SCRIPT_NAME="/c"), tmp_path, workers=1) as service:
        probe = subprocess.run(
            [str(VENV_BIN / "comments-api"), "healthcheck"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**service.env},
            check=False,
        )
        assert probe.returncode == 0, probe.stderr
        assert f"127.0.0.1:{service.port}/c/readyz" in probe.stdout
    unusable = subprocess.run(
        [str(VENV_BIN / "comments-api"), "healthcheck"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SCRIPT_NAME": "c/"},
        check=False,
    )
    assert unusable.returncode == 2
    assert "SCRIPT_NAME must be a path" in unusable.stderr


@pytest.mark.parametrize("threads", ["1", "2"])
def test_request_headers_do_not_move_the_mount(tmp_path: Path, threads: str) -> None:
    """gunicorn takes SCRIPT_NAME and PATH_INFO from request headers of a trusted
    forwarder, loopback by default: any sidecar, or any local client. A SCRIPT_NAME header
    outside the path answered 500; PATH_INFO routed the request elsewhere than its line
    said (and than the access line and the rate limits saw)."""
    with ServiceProcess(_env(tmp_path, THREADS=threads), tmp_path, workers=1) as service:
        created = requests.post(
            f"{service.base}/api/v1/contents/a/comments", json={"body": "hello"}, timeout=5
        )
        assert created.status_code == 201
        url = f"{service.base}/api/v1/contents/a/comments"
        for headers in ({"SCRIPT_NAME": "/evil"}, {"PATH_INFO": "/api/v1/contents/b/comments"}):
            response = requests.get(url, headers=headers, timeout=5)
            assert response.status_code == 200, (headers, response.text)
            assert [c["body"] for c in response.json()["items"]] == ["hello"], headers
        assert "Traceback" not in service.log()
