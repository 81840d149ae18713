"""The master's own /healthz on LIVENESS_PORT: answered while the workers' queue is stuck."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from comments_api.liveness import LivenessListener

from .support import (
    VENV_BIN,
    ServiceProcess,
    free_port,
    requests_in_flight,
    server_socket_inodes,
    socket_owners,
    wait_until,
)


def _raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_the_master_answers_liveness_while_every_worker_waits_on_the_database(
    tmp_path: Path,
) -> None:
    """The SQLite write lock held elsewhere: the only worker waits out DB_STATEMENT_TIMEOUT
    in a create whose client still waits, so the workers' /healthz waits too (a kubelet
    timeout, then a restart). The master's listener answers at once."""
    db = tmp_path / "comments.db"
    liveness_port = free_port()
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        "DB_STATEMENT_TIMEOUT": "6",
        "LIVENESS_PORT": str(liveness_port),
        "RATELIMIT_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            held: dict[str, int] = {}
            create = threading.Thread(
                target=lambda: held.update(
                    status=requests.post(
                        f"{service.base}/api/v1/contents/live/comments",
                        json={"body": "waits", "email": "w@example.com"},
                        timeout=30,
                    ).status_code
                )
            )
            create.start()
            # The worker is in that create now (a scrape would queue behind it).
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 1, 10)
            with pytest.raises(requests.Timeout):
                requests.get(f"{service.base}/healthz", timeout=2)
            started = time.monotonic()
            answer = requests.get(f"http://127.0.0.1:{liveness_port}/healthz", timeout=2)
            assert time.monotonic() - started < 1.0
            assert answer.status_code == 200
            assert answer.json()["status"] == "ok"
            assert answer.headers["Cache-Control"] == "no-store"
            holder.execute("ROLLBACK")
            create.join(30)
        finally:
            holder.close()
        assert held["status"] == 201  # stored once the lock was released
        # Only the master holds the listener: a worker left behind by a killed master must
        # not keep the port answering.
        master = service.proc.pid
        workers = [
            int(p) for p in Path(f"/proc/{master}/task/{master}/children").read_text().split()
        ]
        assert workers
        listening = server_socket_inodes(liveness_port)[0]
        assert socket_owners([master, *workers]).get(listening) == master


def test_the_liveness_port_answers_only_healthz_with_the_apis_error_shape(
    tmp_path: Path,
) -> None:
    liveness_port = free_port()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "LIVENESS_PORT": str(liveness_port)}
    with ServiceProcess(env, tmp_path, workers=1):
        status, headers, body = _raw(liveness_port, b"HEAD /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
        assert (status, body) == (200, b"")
        assert int(headers["content-length"]) > 0
        status, headers, body = _raw(liveness_port, b"GET /readyz HTTP/1.1\r\nHost: k\r\n\r\n")
        assert status == 404
        assert headers["content-type"] == "application/problem+json"
        assert b'"status":404' in body
        status, headers, body = _raw(
            liveness_port, b"POST /healthz HTTP/1.1\r\nHost: k\r\nContent-Length: 0\r\n\r\n"
        )
        assert status == 405
        assert headers["allow"] == "GET, HEAD"
        # A client that connects and sends nothing costs a second, then the next is served.
        with socket.create_connection(("127.0.0.1", liveness_port), timeout=5):
            status, _, _ = _raw(liveness_port, b"GET /healthz?x=1 HTTP/1.0\r\n\r\n")
            assert status == 200


def test_a_client_trickling_its_request_does_not_hold_the_liveness_port(
    tmp_path: Path,
) -> None:
    """READ_TIMEOUT bounds the whole request head, not each read: a client sending a byte
    every half second held the master's listener (one connection at a time) for as long
    as it kept sending, up to 8 KiB of head, and every kubelet probe behind it timed out
    (3 in a row restart the pod)."""
    liveness_port = free_port()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}", "LIVENESS_PORT": str(liveness_port)}
    with ServiceProcess(env, tmp_path, workers=1):
        stop = threading.Event()
        cut_off: list[float] = []

        def trickle() -> None:
            with socket.create_connection(("127.0.0.1", liveness_port), timeout=5) as sock:
                started = time.monotonic()
                try:
                    for byte in b"GET /healthz HTTP/1.1\r\nHost: k\r\nX-Slow: " + b"a" * 100:
                        if stop.is_set():
                            return
                        sock.send(bytes([byte]))
                        time.sleep(0.3)
                except OSError:
                    cut_off.append(time.monotonic() - started)

        trickler = threading.Thread(target=trickle)
        trickler.start()
        try:
            time.sleep(0.5)  # the trickler's connection is the one being read
            for _ in range(3):
                status, _, _ = _raw(liveness_port, b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
                assert status == 200
            assert wait_until(lambda: bool(cut_off), timeout=10)
        finally:
            stop.set()
            trickler.join()


def test_a_stuck_master_loop_fails_liveness_unless_the_server_is_stopping() -> None:
    now = time.monotonic()
    stopping = threading.Event()
    listener = LivenessListener(
        "127.0.0.1", 0, last_turn=lambda: now - 11, stopping=stopping.is_set
    )
    listener.start()
    try:
        status, _, body = _raw(listener.port, b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
        assert status == 503
        assert b"master loop stuck" in body
        stopping.set()  # the loop waits for the workers to drain; a restart helps nothing
        status, _, _ = _raw(listener.port, b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n")
        assert status == 200
    finally:
        listener.close()
    fresh = LivenessListener("127.0.0.1", 0, last_turn=time.monotonic, stopping=lambda: False)
    fresh.start()
    try:
        assert _raw(fresh.port, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200
    finally:
        fresh.close()


def test_close_ends_the_listener_and_a_forked_child_leaves_it_serving() -> None:
    listener = LivenessListener("127.0.0.1", 0, last_turn=time.monotonic, stopping=lambda: False)
    listener.start()
    try:
        # A forked worker drops its copy of the descriptor; the master's listener serves on.
        child = os.fork()
        if child == 0:
            os._exit(0)
        assert os.waitpid(child, 0)[1] == 0
        assert _raw(listener.port, b"GET /healthz HTTP/1.1\r\n\r\n")[0] == 200
    finally:
        listener.close()
    # close() alone left the thread in accept() and the port answering.
    deadline = time.monotonic() + 5
    while any(t.name == "liveness" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "liveness" for t in threading.enumerate())
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", listener.port), timeout=2).close()


def test_a_liveness_port_in_use_stops_serve_with_a_clear_error(tmp_path: Path) -> None:
    taken = socket.create_server(("127.0.0.1", 0))
    try:
        port = taken.getsockname()[1]
        env = {
            "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "LIVENESS_PORT": str(port),
        }
        done = subprocess.run(
            [str(VENV_BIN / "comments-api"), "serve"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        taken.close()
    assert done.returncode != 0
    assert f"LIVENESS_PORT: cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
