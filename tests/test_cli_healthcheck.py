"""`comments-api healthcheck`: the container HEALTHCHECK (no shell or curl in the image)."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

from .support import VENV_BIN, ServiceProcess, free_port


def healthcheck(port: int, *args: str, host: str = "127.0.0.1") -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "comments-api"), "healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOST": host, "PORT": str(port)},
        check=False,
    )


def test_healthy_server_exits_zero_and_wildcard_bind_is_probed_on_loopback(tmp_path: Path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    with ServiceProcess(env, tmp_path) as server:
        ok = healthcheck(server.port)
        assert ok.returncode == 0, ok.stderr
        assert f"127.0.0.1:{server.port}/readyz" in ok.stdout
        # The image binds 0.0.0.0; the probe must still reach the server.
        assert healthcheck(server.port, host="0.0.0.0").returncode == 0
        missing = healthcheck(server.port, "--path", "/no-such-page")
        assert missing.returncode == 1
        assert "HTTP 404" in missing.stderr


def test_the_exit_status_is_the_answer_whatever_stdout_and_stderr_take(tmp_path: Path):
    # A full stdout (a log on a full disk) turned a healthy server's exit 0 into a
    # traceback and exit 1: the container went unhealthy and was restarted.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    command = [str(VENV_BIN / "comments-api"), "healthcheck"]
    with ServiceProcess(env, tmp_path) as server:
        probe_env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(server.port)}
        for streams in ({"stdout": "/dev/full"}, {"stdout": "/dev/full", "stderr": "/dev/full"}):
            files = {name: open(path, "w") for name, path in streams.items()}  # noqa: SIM115
            try:
                healthy = subprocess.run(command, env=probe_env, timeout=60, check=False, **files)
                unhealthy = subprocess.run(
                    [*command, "--path", "/no-such-page"],
                    env=probe_env,
                    timeout=60,
                    check=False,
                    **files,
                )
            finally:
                for f in files.values():
                    f.close()
            assert healthy.returncode == 0, streams
            assert unhealthy.returncode == 1, streams


# The console script's own entry point (comments_api.cli:main), run in process, then what
# it loaded.
LOADED_BY_A_PROBE = """
import sys
from comments_api.cli import main
try:
    main(["healthcheck"])
except SystemExit as exc:
    print("exit", exc.code)
print(" ".join(sorted(sys.modules)))
"""


def test_a_probe_loads_neither_the_app_nor_the_database_layer(tmp_path: Path):
    # Docker runs it every 10 s in every container: it loaded Flask, SQLAlchemy, gunicorn
    # and msgspec (through the logging setup) to send one GET, ~0.4 s of CPU and ~50 MB
    # each time; then still limits (with asyncio) and importlib.metadata, ~0.15 s.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    with ServiceProcess(env, tmp_path) as server:
        probe = subprocess.run(
            [str(VENV_BIN / "python"), "-c", LOADED_BY_A_PROBE],
            capture_output=True,
            text=True,
            timeout=60,
            # The limits' notation is the server's to check (it would not start on a
            # typo), so the probe does not read it.
            env={**os.environ, "PORT": str(server.port), "RATELIMIT_READ": "not a limit"},
            check=False,
        )
    assert probe.returncode == 0, probe.stderr
    lines = probe.stdout.splitlines()
    assert lines[0] == f"healthy: http://127.0.0.1:{server.port}/readyz", probe.stdout
    assert lines[1] == "exit 0", probe.stdout
    modules = set(lines[2].split())
    loaded = {name.split(".")[0] for name in modules}
    assert {"click", "comments_api", "urllib"} <= loaded
    heavy = {"flask", "werkzeug", "sqlalchemy", "prometheus_client", "msgspec", "gunicorn"}
    heavy |= {"limits", "asyncio"}
    assert not heavy & loaded, sorted(heavy & loaded)
    assert "importlib.metadata" not in modules


def test_version_is_the_installed_distributions():
    from importlib.metadata import version

    result = subprocess.run(
        [str(VENV_BIN / "comments-api"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"comments-api, version {version('comments-api')}\n"


def test_the_module_runs_the_cli_as_the_script_does():
    """``python -m comments_api.cli`` (no script on PATH, a debugging session) ran the
    module's definitions and exited 0 having done nothing."""
    script = subprocess.run(
        [str(VENV_BIN / "comments-api"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    module = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "comments_api.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert module.returncode == 0, module.stderr
    assert module.stdout == script.stdout != ""
    bad = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "comments_api.cli", "no-such-command"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "No such command" in bad.stderr


def test_no_server_exits_one_with_a_reason():
    result = healthcheck(free_port(), "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr.startswith("unhealthy:")
    assert "Traceback" not in result.stderr


def test_a_path_or_timeout_it_cannot_probe_is_a_usage_error():
    # Each was a traceback from urllib or the socket (or, for a full URL, a probe of
    # another host glued to this port).
    port = free_port()
    for args in (
        ["--path", "readyz"],
        ["--path", "http://other.example/readyz"],
        ["--path", "//other.example/readyz"],
        ["--path", "/readyz now"],
        ["--path", "/é"],
        ["--timeout", "-1"],
        ["--timeout", "0"],
        # The socket refused or overflowed on these: a traceback, exit 1 as if unhealthy.
        ["--timeout", "nan"],
        ["--timeout", "inf"],
        ["--timeout", "1e300"],
    ):
        result = healthcheck(port, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert f"Invalid value for {args[0]}" in result.stderr.replace("'", "")
        assert "Traceback" not in result.stderr


def test_a_host_it_cannot_probe_is_a_configuration_error():
    # HOST is put before ':PORT': these ended in a traceback from urllib or ipaddress.
    for host in ("[::1]", "localhost:99", " "):
        result = healthcheck(free_port(), host=host)
        assert result.returncode == 2, (host, result.stderr)
        assert "Error: configuration error: HOST must be an IP address" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_port_that_answers_something_other_than_http_is_unhealthy_not_a_traceback():
    # Another service on PORT (a TLS port, Redis): http.client's BadStatusLine and
    # LineTooLong are no OSError, and ended the probe in a traceback.
    for answer in (b"-ERR unknown command\r\n", b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
            port = listener.getsockname()[1]

            def reply(listener=listener, answer=answer) -> None:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(answer)

            thread = threading.Thread(target=reply, daemon=True)
            thread.start()
            result = healthcheck(port, "--timeout", "5")
            thread.join(timeout=10)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"unhealthy: http://127.0.0.1:{port}/readyz: not an HTTP")
        assert "Traceback" not in result.stderr


def test_an_egress_proxy_in_the_environment_is_not_used_for_the_probe(tmp_path: Path):
    # HTTP(S)_PROXY set for the app's outbound calls (PyJWKClient honours them): the probe
    # of the container's own loopback address went to that proxy and failed.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}"}
    with ServiceProcess(env, tmp_path) as server:
        dead_proxy = f"http://127.0.0.1:{free_port()}"
        probe = subprocess.run(
            [str(VENV_BIN / "comments-api"), "healthcheck"],
            capture_output=True,
            text=True,
            timeout=60,
            env={
                **os.environ,
                "PORT": str(server.port),
                "HTTP_PROXY": dead_proxy,
                "http_proxy": dead_proxy,
                "HTTPS_PROXY": dead_proxy,
                "NO_PROXY": "",
                "no_proxy": "",
            },
            check=False,
        )
    assert probe.returncode == 0, probe.stderr
