"""The real thing: `comments-api serve` (gunicorn master + 2 workers) over HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from .support import ServiceProcess, missing, wait_until


@pytest.fixture(params=["sqlite", "postgres"])
def serve_env(request, tmp_path) -> dict[str, str]:
    if request.param == "sqlite":
        # serve refuses a SQLite file in a directory that does not exist (a mistyped path).
        (tmp_path / "data").mkdir()
        url = f"sqlite:///{tmp_path / 'data' / 'comments.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    # Walkthrough traffic comes from one address: keep the anonymous write limit out of it.
    return {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false"}


def curl(*args: str) -> tuple[int, object]:
    """Run curl exactly as the README's walkthrough does; return (status, parsed JSON)."""
    if not shutil.which("curl"):
        missing("curl")
    result = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), json.loads(body)


# The original README's walkthrough, in order.
WALKTHROUGH = [
    ("alice@example.com", "first post!", 1),
    ("alice@example.com", "ok, now I am going to say something more useful", 1),
    ("bob@example.com", "I agree", 1),
    ("bob@example.com", "I guess this is a good thing", 2),
    ("charlie@example.com", "Indeed, dear Bob, I believe so as well", 2),
]


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_walkthrough_survives_a_restart(serve_env, tmp_path):
    service = ServiceProcess(serve_env, tmp_path).start()
    try:
        base = service.base
        status, body = curl(
            "-X",
            "POST",
            f"{base}/api/comment/new",
            "-H",
            "Content-Type: application/json",
            "-d",
            '{"email":"alice@example.com","comment":"first post!","content_id":1}',
        )
        assert (status, body) == (
            200,
            {"status": "SUCCESS", "message": "comment created and associated with content_id 1"},
        )
        for email, text, content_id in WALKTHROUGH[1:]:
            body = json.dumps({"email": email, "comment": text, "content_id": content_id})
            status, _ = curl(
                "-X", "POST", f"{base}/api/comment/new",
                "-H", "Content-Type: application/json", "-d", body,
            )  # fmt: skip
            assert status == 200
        status, first = curl(f"{base}/api/comment/list/1")
        assert status == 200
        assert [c["comment"] for c in first] == [
            "first post!",
            "ok, now I am going to say something more useful",
            "I agree",
        ]
        status, second = curl(f"{base}/api/comment/list/2")
        assert status == 200
        assert len(second) == 2
        assert curl(f"{base}/api/comment/list/3") == (
            404,
            {"status": "NOT-FOUND", "message": "content_id 3 not found"},
        )
    finally:
        assert service.stop() == 0, service.log()

    restarted = ServiceProcess(serve_env, tmp_path).start()
    try:
        assert curl(f"{restarted.base}/api/comment/list/1") == (200, first)
        assert curl(f"{restarted.base}/api/comment/list/2") == (200, second)
    finally:
        assert restarted.stop() == 0, restarted.log()


def test_comments_posted_through_one_worker_are_listed_by_every_worker(serve_env, tmp_path):
    with ServiceProcess(serve_env, tmp_path, workers=2) as service:
        assert service.proc is not None
        pid = service.proc.pid
        assert wait_until(lambda: len(worker_pids(pid)) == 2, timeout=10)
        workers = worker_pids(pid)
        url = f"{service.base}/api/comment/new"
        # Freeze one worker so the other must take the write, then swap.
        for writer, frozen in ((0, 1), (1, 0)):
            os.kill(workers[frozen], signal.SIGSTOP)
            try:
                response = requests.post(
                    url,
                    json={
                        "email": f"w{writer}@example.com",
                        "comment": f"via worker {writer}",
                        "content_id": "shared",
                    },
                    timeout=5,
                )
                assert response.status_code == 200
            finally:
                os.kill(workers[frozen], signal.SIGCONT)
        for reader in (0, 1):
            os.kill(workers[1 - reader], signal.SIGSTOP)
            try:
                listed = requests.get(f"{service.base}/api/comment/list/shared", timeout=5).json()
            finally:
                os.kill(workers[1 - reader], signal.SIGCONT)
            assert [c["comment"] for c in listed] == ["via worker 0", "via worker 1"]


def test_sigterm_turns_readiness_off_then_drains(serve_env, tmp_path):
    env = {**serve_env, "SHUTDOWN_DELAY": "2"}
    service = ServiceProcess(env, tmp_path).start()
    assert service.proc is not None
    service.proc.send_signal(signal.SIGTERM)
    assert wait_until(
        lambda: requests.get(f"{service.base}/readyz", timeout=1).status_code == 503, timeout=2
    )
    # Still serving while the load balancer notices: liveness and writes keep working.
    assert requests.get(f"{service.base}/healthz", timeout=1).status_code == 200
    write = requests.post(
        f"{service.base}/api/v1/contents/drain/comments", json={"body": "during drain"}, timeout=2
    )
    assert write.status_code in (201, 202)
    started = time.monotonic()
    assert service.proc.wait(15) == 0
    assert time.monotonic() - started < 10
    service.stop()
