"""Slow clients vs. normal requests (issue 8): not a timed test, a measurement.

Starts the server on loopback with gunicorn's stock sync and gthread (THREADS=4) workers
and with ours in both modes, opens N
connections that trickle their headers or a body one byte every 0.2 s, and meanwhile
times sequential normal requests for a few seconds. Prints one line per run.

    .venv/bin/python bench/slow_clients.py [N] [WORKERS]
"""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    worker_class: str | None, slow: int, workers: int, threads: int = 1, seconds: float = 5.0
) -> str:
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="slow-bench-")
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp}/c.db",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": str(workers),
        "THREADS": str(threads),
        "LOG_LEVEL": "error",
        "RATELIMIT_ENABLED": "false",
    }
    subprocess.run([str(BIN / "comments-api"), "migrate"], env=env, check=True, capture_output=True)
    cmd = [str(BIN / "gunicorn"), "-c", "python:comments_api.gunicorn_conf"]
    if worker_class:
        cmd += ["--worker-class", worker_class]
    proc = subprocess.Popen([*cmd, "comments_api.wsgi:app"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        socks = []
        for i in range(slow):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(
                b"GET /healthz HTTP/1.1\r\nHost: a\r\n"
                if i % 2
                else b"POST /api/v1/contents/x/comments HTTP/1.1\r\nHost: a\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
            )
            socks.append(sock)
        stop = threading.Event()

        def trickle() -> None:
            while not stop.wait(0.2):
                for sock in socks:
                    with contextlib.suppress(OSError):
                        sock.send(b"X")

        threading.Thread(target=trickle, daemon=True).start()
        times, errors = [], 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                requests.get(f"{base}/api/comment/list/1", timeout=5)
                times.append(time.monotonic() - t0)
            except requests.RequestException:
                errors += 1
        stop.set()
        for sock in socks:
            sock.close()
    finally:
        proc.terminate()
        proc.wait(30)
    times.sort()
    name = f"{worker_class or 'comments_api.worker'} threads={threads}"
    if not times:
        return f"{name:42} slow={slow} workers={workers}: {errors} failed, none answered"
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    return (
        f"{name:42} slow={slow} workers={workers}: "
        f"{len(times)} ok, {errors} failed in {seconds:.0f}s; "
        f"p50 {statistics.median(times) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {times[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    w = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    # Without slow clients first: what the buffering costs a normal request.
    print(run("sync", 0, w))
    print(run(None, 0, w))
    print(run("sync", n, w))
    print(run(None, n, w))
    print(run("gthread", n, w, threads=4))
    print(run(None, n, w, threads=4))
