"""scripts/pipeline_e2e.py, the staging gate and production smoke test of deploy.sh, against
real servers on 127.0.0.1: `comments-api serve`, and the wrong answers a gate meets (an HTML
page where the API should be, a connection cut before any answer, a port nobody serves).

A failure is one FAIL line naming the check, the request's URL and what came back; it was a
Python traceback (AttributeError on an HTML body, URLError on a refused connection)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ..support import ServiceProcess, free_port

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pipeline_e2e.py"


def gate(kind: str, base: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), kind, base],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fail_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line.strip() for line in proc.stdout.splitlines() if line.strip().startswith("FAIL")]


@pytest.fixture
def html_server() -> Iterator[str]:
    """A web server that answers every request with a 200 HTML page (a default site, a
    login page of a proxy): not the API."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            page = b"<html><body>Welcome to nginx!</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        do_GET = do_POST = do_PATCH = do_DELETE = answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closing_server() -> Iterator[str]:
    """Accepts each connection, reads the request, and closes it without an answer (a
    proxy whose backend died)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.mark.parametrize("kind", ["smoke", "e2e"])
def test_an_html_answer_is_a_named_fail_line_not_a_traceback(html_server: str, kind: str):
    proc = gate(kind, html_server)
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    fails = fail_lines(proc)
    assert fails, proc.stdout
    # Every failed check says which request and what came back.
    for line in fails:
        assert f"{html_server}/" in line, line
        assert "200 text/html: '<html><body>Welcome to nginx!" in line, line
    if kind == "smoke":
        assert fails[0].startswith(
            f"FAIL GET /readyz is 200 ready: unexpected answer: GET {html_server}/readyz -> 200"
        ), fails
    assert proc.returncode == len(fails)
    assert f"{kind}: {len(fails)} failed check(s)" in proc.stdout


@pytest.mark.parametrize("kind", ["smoke", "e2e"])
def test_a_connection_closed_without_an_answer_is_one_fail_line(closing_server: str, kind: str):
    proc = gate(kind, closing_server)
    assert "Traceback" not in proc.stderr, proc.stderr
    first = {"smoke": "GET /healthz is 200", "e2e": "legacy create (alice)"}[kind]
    method = {"smoke": "GET", "e2e": "POST"}[kind]
    url = closing_server + {"smoke": "/healthz", "e2e": "/api/comment/new"}[kind]
    assert fail_lines(proc) == [
        f"FAIL {first}: {method} {url} -> no answer: RemoteDisconnected: "
        "Remote end closed connection without response"
    ], proc.stdout
    assert "the remaining checks did not run" in proc.stdout
    assert proc.returncode == 1


def test_a_port_nobody_serves_is_one_fail_line():
    base = f"http://127.0.0.1:{free_port()}"
    proc = gate("smoke", base)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert fail_lines(proc) == [
        f"FAIL GET /healthz is 200: GET {base}/healthz -> no answer: "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    ], proc.stdout
    assert proc.returncode == 1


def test_a_real_server_passes_every_check_and_a_wrong_prefix_fails_them_by_name(
    tmp_path: Path,
):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}", "RATELIMIT_ENABLED": "false"}
    with ServiceProcess(env, tmp_path, workers=1) as service:
        for kind in ("e2e", "smoke"):
            proc = gate(kind, service.base)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert not fail_lines(proc), proc.stdout
        # The API's own JSON 404s, under a prefix the server does not have: failed checks,
        # each named with its URL and the answer, and no traceback.
        wrong = f"{service.base}/nope"
        proc = gate("smoke", wrong)
        assert "Traceback" not in proc.stderr, proc.stderr
        fails = fail_lines(proc)
        assert fails, proc.stdout
        assert proc.returncode == len(fails), proc.stdout
        assert fails[0].startswith(f"FAIL GET /healthz is 200: GET {wrong}/healthz -> 404 "), fails
