"""The image run hardened, as Kubernetes will: walkthrough, probes, metrics, budgets."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
import requests

from .conftest import RUNTIME_UID, Container, docker

pytestmark = pytest.mark.docker

READY_BUDGET_S = 3.0
RSS_BUDGET_BYTES = 150e6


def test_original_curl_walkthrough(app_container: Container):
    base = app_container.base
    created = requests.post(
        f"{base}/api/comment/new",
        json={"email": "alice@example.com", "comment": "first post!", "content_id": 1},
        timeout=5,
    )
    assert created.status_code == 200
    assert created.json()["status"] == "SUCCESS"
    listed = requests.get(f"{base}/api/comment/list/1", timeout=5)
    assert listed.status_code == 200
    [comment] = listed.json()
    assert comment["comment"] == "first post!"
    assert set(comment) == {"email", "comment"}
    missing = requests.get(f"{base}/api/comment/list/404", timeout=5)
    assert missing.status_code == 404
    assert missing.headers["Content-Type"].startswith("application/")
    assert "json" in missing.headers["Content-Type"]


def test_probes_metrics_and_shell_free_healthcheck(app_container: Container):
    base = app_container.base
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{base}/readyz", timeout=5)
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    requests.get(f"{base}/api/comment/list/1", timeout=5)
    metrics = requests.get(f"{base}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert metrics.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE " in metrics.text
    assert re.search(r"^comments_api_\w+(\{[^}]*\})? [0-9.e+-]+$", metrics.text, re.M)
    # The image's HEALTHCHECK command, run inside the container (no shell, no curl).
    check = app_container.exec("/venv/bin/comments-api", "healthcheck")
    assert check.returncode == 0, check.stderr


def test_runs_as_non_root_without_capabilities_on_a_read_only_root(app_container: Container):
    probe = app_container.python(
        "import json, os\n"
        "status = dict(l.split(':\\t', 1) for l in open('/proc/1/status').read().splitlines()"
        " if ':\\t' in l)\n"
        "try:\n    open('/venv/probe', 'w'); writable = True\n"
        "except OSError as e:\n    writable = e.strerror\n"
        "print(json.dumps({'uid': status['Uid'].split()[0], 'cap': status['CapEff'].strip(),"
        " 'nnp': status['NoNewPrivs'].strip(), 'root_write': writable}))"
    )
    assert probe.returncode == 0, probe.stderr
    facts = json.loads(probe.stdout)
    assert facts["uid"] == str(RUNTIME_UID)
    assert int(facts["cap"], 16) == 0
    assert facts["nnp"] == "1"
    assert facts["root_write"] == "Read-only file system"


def test_ready_within_budget_and_idle_memory_with_default_workers(start_container, budgets):
    container = start_container()  # WORKERS unset: the default, max(2, CPUs)
    elapsed = container.wait_ready()
    budgets["ready_seconds"] = round(elapsed, 2)
    assert elapsed <= READY_BUDGET_S

    cpus = int(container.python("import os; print(os.cpu_count())").stdout)
    workers = max(2, cpus)
    processes = docker("top", container.id).stdout.strip().splitlines()[1:]
    assert len(processes) == 1 + workers, processes

    time.sleep(3)  # idle: workers booted, nothing in flight
    stats = docker("stats", "--no-stream", "--format", "{{.MemUsage}}", container.id).stdout
    used = stats.split("/")[0].strip()
    number, unit = re.fullmatch(r"([0-9.]+)\s*([KMG]i?B)", used).groups()
    scale = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "kB": 1e3, "MB": 1e6, "GB": 1e9}
    rss = float(number) * scale[unit]
    budgets["idle_memory_mb"] = round(rss / 1e6, 1)
    budgets["workers"] = workers
    assert rss < RSS_BUDGET_BYTES


def test_postgresql_through_psycopg_binary(start_container, pg_server):
    url = pg_server.create_database("container_walkthrough")
    container = start_container({"DATABASE_URL": url})
    container.wait_ready()
    body = {"email": "bob@example.com", "comment": "on postgres", "content_id": 7}
    assert requests.post(f"{container.base}/api/comment/new", json=body, timeout=5).ok
    listed = requests.get(f"{container.base}/api/comment/list/7", timeout=5).json()
    assert [c["comment"] for c in listed] == ["on postgres"]


def test_sigterm_during_traffic_drops_nothing_and_exits_zero(start_container):
    # SHUTDOWN_DELAY: readiness turns 503 while the pod keeps serving, as in Kubernetes.
    # Rate limits off: this test is about shutdown, not abuse protection.
    env = {
        "SHUTDOWN_DELAY": "2",
        "WORKERS": "2",
        "THREADS": "2",
        "RATELIMIT_ENABLED": "false",
        "THREAD_AUTHOR_MAX": "100000",
    }
    container = start_container(env)
    container.wait_ready()
    base = container.base
    stop = threading.Event()
    ok: list[int] = []
    failures: list[str] = []

    def client(n: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set() and i < 2000:  # bounded
            i += 1
            try:
                if i % 2:
                    payload = {"email": f"u{n}@example.com", "comment": f"c{i}", "content_id": n}
                    response = session.post(f"{base}/api/comment/new", json=payload, timeout=5)
                else:
                    response = session.get(f"{base}/api/comment/list/{n}", timeout=5)
                if response.status_code == 200:
                    ok.append(1)
                else:
                    failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except requests.RequestException as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(1, 5)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    before_term = len(ok)
    stopper = threading.Thread(target=docker, args=("stop", "--time", "30", container.id))
    stopper.start()
    # Like a load balancer: keep sending until readiness says "shutting down", then a
    # little longer (endpoint removal lag), then stop routing to this pod.
    deadline = time.monotonic() + 10
    draining = False
    while time.monotonic() < deadline and not draining:
        try:
            draining = requests.get(f"{base}/readyz", timeout=2).status_code == 503
        except requests.RequestException:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    stopper.join(60)

    assert draining, "readiness never reported shutting down"
    assert failures == []
    assert len(ok) > before_term  # traffic kept flowing after SIGTERM
    assert container.state("{{.State.Running}}") == "false"
    assert container.state("{{.State.ExitCode}}") == "0", container.logs()[-2000:]


def test_image_defaults_serve_on_all_interfaces_and_report_healthy(image):
    # `docker run -p 8000:8000 -e PORT=8000 comments-api` relies on these defaults. No
    # port publishing here: --network none, probed from inside with the HEALTHCHECK. /data
    # is the image's anonymous VOLUME, writable by UID 65532 despite --read-only.
    run = docker(
        "run",
        "--detach",
        "--network",
        "none",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--env",
        "PORT=8000",
        image,
    )
    container_id = run.stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while True:
            check = docker(
                "exec", container_id, "/venv/bin/comments-api", "healthcheck", check=False
            )
            if check.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert check.returncode == 0, check.stderr + docker("logs", container_id).stderr[-2000:]
        assert "127.0.0.1:8000/readyz" in check.stdout
        logs = docker("logs", container_id)
        assert "0.0.0.0:8000" in logs.stdout + logs.stderr
        # Docker's own HEALTHCHECK run (first one after the 10 s interval) agrees.
        deadline = time.monotonic() + 40
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            time.sleep(1)
            health = docker("inspect", "-f", "{{.State.Health.Status}}", container_id).stdout
            health = health.strip()
        assert health == "healthy"
    finally:
        docker("rm", "--force", "--volumes", container_id, check=False)
