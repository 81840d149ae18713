"""compose.yaml's app and Redis, run as compose would start them (issue: no Redis in compose).

The registry is out of reach, so the redis image cannot be pulled: its service's entrypoint,
command and healthcheck run here with the host's redis-server and redis-cli, and the app
service runs from the image built by `make image-test` with every setting compose gives it.
The file goes through `docker-compose config` first, so its interpolation is compose's own.
Only addresses are swapped: free loopback ports for the app and PostgreSQL.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_client
import requests
import yaml

from ..support import PostgresServer, free_port, missing, wait_until
from .conftest import IMAGE, docker

pytestmark = [pytest.mark.docker, pytest.mark.postgres, pytest.mark.redis]
ROOT = Path(__file__).resolve().parents[2]
# The app service's settings this test knows: all but the last three are passed on to
# `docker run` (those concern starting, restarting and stopping, not the container). A
# setting outside this list fails the test rather than being left out silently.
APP_KEYS = {
    "image", "network_mode", "environment", "read_only", "tmpfs", "user", "cap_drop",
    "security_opt", "mem_limit", "pids_limit", "stop_grace_period", "depends_on", "restart",
}  # fmt: skip


def resolved_compose(env: dict[str, str]) -> dict[str, Any]:
    if not shutil.which("docker-compose"):
        missing("docker-compose (make image-test installs it)")
    done = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "compose.yaml"), "config"],
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return yaml.safe_load(done.stdout)["services"]


def unescaped(text: str) -> str:
    # `config` prints `$$` (compose's literal dollar) as written; the container gets `$`.
    return text.replace("$$", "$")


@pytest.fixture
def compose_redis(tmp_path: Path) -> Iterator[tuple[dict[str, Any], subprocess.Popen[bytes]]]:
    for binary in ("redis-server", "redis-cli"):
        if not shutil.which(binary):
            missing(binary)
    password = secrets.token_urlsafe(24)
    env = {
        "POSTGRES_PASSWORD": secrets.token_urlsafe(24),
        "REDIS_PASSWORD": password,
        "GRAFANA_ADMIN_PASSWORD": secrets.token_urlsafe(24),
        "REDIS_PORT": str(free_port()),
        "COMMENTS_API_IMAGE": IMAGE,
    }
    services = resolved_compose(env)
    redis = services["redis"]
    command = [*redis["entrypoint"], *map(unescaped, redis["command"])]
    # redis-server overwrites its own arguments in /proc (its process title), so a shim
    # first on PATH records the arguments it is given, then becomes the real server.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "redis-server").write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "argv"}\n'
        f'exec {shutil.which("redis-server")} "$@"\n'
    )
    (shim / "redis-server").chmod(0o755)
    proc = subprocess.Popen(
        command,
        env={"PATH": f"{shim}:/usr/bin:/bin", **redis["environment"]},
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = int(redis["environment"]["REDIS_PORT"])

    def answers() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return proc.poll() is not None  # exited: stop waiting, the test fails

    try:
        assert wait_until(answers, 10), "redis service did not start"
        assert proc.poll() is None, "redis service exited"
        yield {"services": services, "env": env, "port": port, "tmp": tmp_path}, proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_compose_redis_wants_its_password_and_keeps_it_out_of_its_arguments(compose_redis):
    stack, proc = compose_redis
    password, port = stack["env"]["REDIS_PASSWORD"], stack["port"]
    # `exec`: redis-server itself is the service's process, so a stop's SIGTERM reaches it.
    assert Path(f"/proc/{proc.pid}/exe").resolve() == Path(shutil.which("redis-server")).resolve()
    argv = (stack["tmp"] / "argv").read_text().splitlines()
    assert argv[0] == "-", argv  # its configuration, with the password, read from stdin
    assert password not in " ".join(argv)
    assert argv[argv.index("--bind") + 1] == "127.0.0.1"  # loopback only (host network)
    with pytest.raises(redis_client.AuthenticationError):
        redis_client.Redis(host="127.0.0.1", port=port).ping()
    assert redis_client.Redis(host="127.0.0.1", port=port, password=password).ping()

    healthcheck = stack["services"]["redis"]["healthcheck"]["test"]
    assert healthcheck[0] == "CMD-SHELL"
    env = {"PATH": "/usr/bin:/bin", **stack["services"]["redis"]["environment"]}
    probe = ["sh", "-c", unescaped(healthcheck[1])]
    assert subprocess.run(probe, env=env, capture_output=True, timeout=10).returncode == 0
    wrong = {**env, "REDIS_PASSWORD": "not-the-password"}
    assert subprocess.run(probe, env=wrong, capture_output=True, timeout=10).returncode != 0


def test_compose_app_counts_rate_limits_in_the_compose_redis(compose_redis, image, tmp_path):
    stack, _ = compose_redis
    services, env = stack["services"], stack["env"]
    app = services["app"]
    assert set(app) <= APP_KEYS, f"settings this test does not pass on: {set(app) - APP_KEYS}"
    assert {"postgres", "redis"} <= set(app["depends_on"])
    # The PostgreSQL service as compose's app expects it: role, database and password.
    pg = PostgresServer()
    name = "comments"
    try:
        with pg.superuser() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        pg.add_password_role(name, env["POSTGRES_PASSWORD"], name)
        with pg.superuser(name) as conn:
            conn.execute(f'ALTER DATABASE "{name}" OWNER TO {name}')
        port = free_port()
        environment = dict(app["environment"])
        # Addresses only: compose's 8000 and 5432 may be taken on this machine.
        environment["PORT"] = str(port)
        environment["DATABASE_URL"] = environment["DATABASE_URL"].replace(
            "@127.0.0.1:5432/", f"@127.0.0.1:{pg.port}/"
        )
        assert str(pg.port) in environment["DATABASE_URL"]
        args = ["run", "--detach", "--network", app["network_mode"], "--user", app["user"]]
        if app.get("read_only"):
            args.append("--read-only")
        for mount in app.get("tmpfs", []):
            args += ["--tmpfs", mount]
        for cap in app.get("cap_drop", []):
            args += ["--cap-drop", cap]
        for option in app.get("security_opt", []):
            args += ["--security-opt", option]
        args += ["--memory", str(app["mem_limit"]), "--pids-limit", str(app["pids_limit"])]
        for key, value in environment.items():
            args += ["--env", f"{key}={value}"]
        container = docker(*args, app["image"]).stdout.strip()
        try:
            base = f"http://127.0.0.1:{port}"

            def ready() -> bool:
                try:
                    return requests.get(f"{base}/readyz", timeout=1).status_code == 200
                except requests.RequestException:
                    return False

            logs = lambda: docker("logs", container, check=False).stderr[-3000:]  # noqa: E731
            assert wait_until(ready, 60), logs()

            # The default anonymous limit (10 a minute per address) is one count for every
            # worker: the 11th create is refused whichever worker takes it.
            codes = [
                requests.post(
                    f"{base}/api/comment/new",
                    json={"email": "c@example.com", "comment": f"n{i}", "content_id": i},
                    timeout=10,
                ).status_code
                for i in range(12)
            ]
            assert codes == [200] * 10 + [429, 429], logs()
            owner = redis_client.Redis(
                host="127.0.0.1", port=stack["port"], password=env["REDIS_PASSWORD"]
            )
            assert owner.keys("*"), "the limiter's counters are not in the compose Redis"
        finally:
            docker("rm", "--force", "--volumes", container, check=False)
    finally:
        pg.stop()
