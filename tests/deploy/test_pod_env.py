"""The rendered pod settings boot the real service (real PostgreSQL, Redis, gunicorn).

The environment is the image's ENV (Dockerfile) with the pod's on top, as a container gets
it. Only addresses are swapped for local ones: HOST/PORT, the Service names in the URLs, and
the container paths (/tmp, the Secret mount) for directories that play the same role. Checks
the claims the manifests rely on: a pod with MIGRATE_ON_START=false stays unready until the
migration Job's command has run, then becomes ready without a restart; the worker count of
the budget; the database connections one pod holds under load (CONNECTIONS_PER_POD, which
sizes max_connections); rate limits through Redis; and the drain order on SIGTERM.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from secrets import token_hex
from typing import Any

import pytest
import redis as redis_client
import requests

from ..support import VENV_BIN, PostgresServer, free_port, missing, wait_until
from .conftest import (
    CONNECTIONS_PER_POD,
    Secrets,
    image_env,
    one,
    pod_env,
    write_secret_volume,
)

pytestmark = [pytest.mark.k8s, pytest.mark.postgres, pytest.mark.redis]


class PodRedis:
    """redis-server with the Redis pod's arguments and its Secret's config file (only the
    address is swapped for a free loopback port)."""

    def __init__(self, docs: list[dict[str, Any]], root: Path, secrets: Secrets) -> None:
        binary = shutil.which("redis-server")
        if not binary:
            missing("redis-server")
        pod = one(docs, "Deployment", "comments-redis")["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        args = list(container["args"])
        for mount in container["volumeMounts"]:
            if "secret" in volumes[mount["name"]]:
                local = root / mount["mountPath"].strip("/").replace("/", "_")
                local.mkdir(parents=True)
                write_secret_volume(volumes[mount["name"]], local, secrets)
                args = [a.replace(mount["mountPath"], str(local)) for a in args]
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary, *args, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def answers() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return self.proc.poll() is not None  # exited: stop waiting, the test fails

        wait_until(answers, 10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def test_pod_settings_boot_migrate_and_drain(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    docs = rendered["staging"]
    # The Secrets as docs/deployment.md creates them (the Service name swapped for loopback).
    password = token_hex(16)
    secrets: Secrets = {"comments-redis": {"redis.conf": f"requirepass {password}\n"}}
    pg, redis = PostgresServer(), PodRedis(docs, tmp_path / "redis", secrets)
    try:
        database = pg.create_database("app")
        secrets["comments-api"] = {"database-url": database, "client-ip-hash-salt": "0" * 64}
        secrets["comments-redis"]["url"] = f"redis://:{password}@127.0.0.1:{redis.port}/0"
        # What the image sets, then the pod's own settings (PATH stays the test's).
        image = {k: v for k, v in image_env().items() if k != "PATH"}
        app = pod_env(docs, "Deployment", "comments-api", tmp_path / "app", secrets, image)
        migrate = pod_env(docs, "Job", "comments-api-migrate", tmp_path / "job", secrets, image)
        # The password-bearing URL reaches the app only as a file, never in the ConfigMap.
        assert "RATELIMIT_STORAGE_URL" not in app
        url_file = Path(app["RATELIMIT_STORAGE_URL_FILE"])
        assert url_file.read_text() == secrets["comments-redis"]["url"]

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log_path = tmp_path / "serve.log"
        env = {"PATH": "/usr/bin:/bin", **app, "HOST": "127.0.0.1", "PORT": str(port)}
        # Started before the migration Job, as a new pod may be.
        log = open(log_path, "ab")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [str(VENV_BIN / "comments-api"), "serve"],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def answers() -> bool:
                try:
                    return requests.get(f"{base}/healthz", timeout=1).status_code == 200
                except requests.RequestException:
                    return False

            assert wait_until(answers, 30), log_path.read_text()
            before = requests.get(f"{base}/readyz", timeout=2)
            assert before.status_code == 503, before.text

            # The Job's command, with the Job's environment.
            job = one(docs, "Job", "comments-api-migrate")["spec"]["template"]["spec"]
            subprocess.run(
                [str(VENV_BIN / "comments-api"), *job["containers"][0]["args"]],
                env={"PATH": "/usr/bin:/bin", **migrate},
                cwd=tmp_path,
                check=True,
                capture_output=True,
                timeout=120,
            )

            def ready() -> bool:
                return requests.get(f"{base}/readyz", timeout=2).status_code == 200

            assert wait_until(ready, 15), "the pod did not become ready after the migration"
            metrics = requests.get(f"{base}/metrics", timeout=2).text
            assert f"comments_api_workers {float(app['WORKERS'])}" in metrics
            assert list((tmp_path / "app" / "tmp" / "metrics").glob("*.db")), "metrics not on /tmp"

            created = requests.post(
                f"{base}/api/comment/new",
                json={"email": "k8s@example.com", "comment": "from the pod env", "content_id": 7},
                timeout=5,
            )
            assert created.status_code == 200, created.text
            peak = peak_connections_under_load(pg, base, tmp_path)
            assert 0 < peak <= CONNECTIONS_PER_POD, f"one pod held {peak} connections"
            # In the Redis that only the password opens: the limiter used the Secret's URL.
            owner = redis_client.Redis(host="127.0.0.1", port=redis.port, password=password)
            assert owner.keys("*"), "rate limits not in Redis"
            with pytest.raises(redis_client.AuthenticationError):
                redis_client.Redis(host="127.0.0.1", port=redis.port).keys("*")

            # SIGTERM (after preStop): /readyz 503 at once, still serving, exit 0 in time.
            delay = float(app["SHUTDOWN_DELAY"])
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert requests.get(f"{base}/readyz", timeout=2).status_code == 503
            assert requests.get(f"{base}/api/comment/list/7", timeout=2).status_code == 200
            code = proc.wait(delay + float(app["GRACEFUL_TIMEOUT"]))
            assert code == 0, log_path.read_text()
            assert time.monotonic() - started >= delay
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    finally:
        redis.stop()
        pg.stop()


def peak_connections_under_load(pg: PostgresServer, base: str, tmp_path: Path) -> int:
    """The most PostgreSQL connections the server held while 32 clients sent reads, creates
    and readiness checks for 3 s (sampled every 20 ms from pg_stat_activity). Each request
    comes from its own reader address (X-Forwarded-For, as ingress-nginx appends it; the pod
    trusts one proxy), so the rate limits let it through to the database."""
    peak = 0
    done = threading.Event()
    statuses: list[int] = []

    def sample() -> None:
        nonlocal peak
        with pg.superuser() as conn:
            conn.autocommit = True
            while not done.is_set():
                (count,) = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = 'app' AND backend_type = 'client backend'"
                ).fetchone()
                peak = max(peak, count)
                time.sleep(0.02)

    def client(n: int) -> None:
        session = requests.Session()
        end = time.monotonic() + 3
        i = 0
        while time.monotonic() < end:
            i += 1
            headers = {"X-Forwarded-For": f"10.{n}.{i // 250 % 250}.{i % 250 + 1}"}
            if i % 5 == 0:
                body = {"email": f"load{n}-{i}@example.com", "comment": f"load {n} {i}"}
                answer = session.post(
                    f"{base}/api/comment/new",
                    json={**body, "content_id": n % 5 + 1},
                    headers=headers,
                    timeout=10,
                )
            else:
                path = f"/api/comment/list/{i % 5 + 1}" if i % 2 else "/readyz"
                answer = session.get(f"{base}{path}", headers=headers, timeout=10)
            statuses.append(answer.status_code)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(client, range(32)))
    finally:
        done.set()
        sampler.join()
    # The load reached the database: no rate limit, no failure (a 404 is the list of a
    # content with no comment yet, read from the database like the others).
    assert len(statuses) > 200
    assert set(statuses) <= {200, 404}, sorted(set(statuses))
    return peak
