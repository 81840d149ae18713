"""A SIGTERM stop that runs past GRACEFUL_TIMEOUT leaves a trace where operators look.

The listener closes when gunicorn's stop begins, so no scrape reads a counter written after
it: a request still in the app when GRACEFUL_TIMEOUT runs out (its connection closed
without an answer: the sync worker is SIGKILLed by the master, the threaded worker exits
around its thread) was in no metric and in no log line. It now has an error line (the
master's at its SIGKILL, or the threaded worker's as it exits), which says how many.
A request the worker was still reading gets its JSON 503 before the master's SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import threading
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from .support import ServiceProcess, requests_in_flight, server_sockets_read, wait_until
from .test_serve_response_headers import problems_with


def _exchange(port: int, data: bytes, into: dict[str, bytes], key: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except OSError:
            pass
        into[key] = got


def _stopping_service_env(db: Path, metrics: Path, threads: str) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{db}",
        "THREADS": threads,
        "SHUTDOWN_DELAY": "0",
        # 0.5 s of stop margin (stop_margin): room for a loaded machine to send the 503s
        "GRACEFUL_TIMEOUT": "3",
        "DB_STATEMENT_TIMEOUT": "20",  # the create waits for the lock longer than the stop
        "RATELIMIT_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }


def _create_and_unfinished() -> tuple[bytes, bytes]:
    """A whole create, and a create whose body never ends (read by the worker until the stop)."""
    body = json.dumps({"body": uuid.uuid4().hex, "email": "s@example.com"}).encode()
    head = b"POST /api/v1/contents/stop/comments HTTP/1.1\r\nHost: a\r\n"
    head += b"Content-Type: application/json\r\n"
    create = head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    return create, head + b'Content-Length: 100\r\n\r\n{"bo'


@pytest.mark.parametrize("threads", ["1", "2"])
def test_requests_cut_off_past_graceful_timeout_leave_an_error_line(
    tmp_path: Path, threads: str
) -> None:
    db, metrics = tmp_path / "comments.db", tmp_path / "metrics"
    env = _stopping_service_env(db, metrics, threads)
    create, unfinished = _create_and_unfinished()
    got: dict[str, bytes] = {}
    service = ServiceProcess(env, tmp_path, workers=1).start()
    holder = sqlite3.connect(db, isolation_level=None, timeout=5)
    try:
        holder.execute("BEGIN IMMEDIATE")
        clients = [threading.Thread(target=_exchange, args=(service.port, create, got, "create"))]
        clients[0].start()
        assert wait_until(lambda: requests_in_flight(metrics) >= 1, 10)
        if threads != "1":  # the sync worker reads nothing while it is in the app
            clients.append(
                threading.Thread(
                    target=_exchange, args=(service.port, unfinished, got, "unfinished")
                )
            )
            clients[1].start()
            # Accepted and read so far by the worker: both connections.
            assert wait_until(lambda: len(server_sockets_read(service.port)) >= 2, 5)
        assert service.stop(signal.SIGTERM, timeout=15) == 0
        for client in clients:
            client.join(10)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        service.stop()
    assert got["create"] == b""  # cut off: no answer
    if threads != "1":
        # The worker's 503, before the master's SIGKILL: the worker finishes its stop a
        # margin before GRACEFUL_TIMEOUT (both ran out at the same time, a race it lost).
        assert got["unfinished"].startswith(b"HTTP/1.1 503 "), service.log()[-3000:]
    cut = []
    for line in service.log().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("message", "").startswith("stop: GRACEFUL_TIMEOUT ran out"):
            cut.append(entry)
    assert cut, service.log()[-3000:]
    assert all(entry["level"] == "error" for entry in cut)
    assert max(entry["in_flight"] for entry in cut) == 1


@pytest.mark.parametrize("threads", ["1", "2"])
def test_requests_still_being_read_get_their_503_before_the_sigkill(
    tmp_path: Path, threads: str
) -> None:
    """The stop began while a request was in the app, which then finished: the requests
    the worker is still reading get their 503 before the master's SIGKILL. The sync
    worker counted its GRACEFUL_TIMEOUT from when its loop saw the stop (after that
    request), and both workers from the same moment as the master, so the SIGKILL came
    first (the sync worker's every time)."""
    db, metrics = tmp_path / "comments.db", tmp_path / "metrics"
    env = _stopping_service_env(db, metrics, threads)
    create, unfinished = _create_and_unfinished()
    got: dict[str, bytes] = {}
    service = ServiceProcess(env, tmp_path, workers=1).start()
    spec = requests.get(f"{service.base}/openapi.json", timeout=10).json()
    holder = sqlite3.connect(db, isolation_level=None, timeout=5, check_same_thread=False)
    released = threading.Event()

    def release() -> None:
        holder.execute("ROLLBACK")
        released.set()

    # The create ends 0.3 s into the stop, well within GRACEFUL_TIMEOUT.
    timer = threading.Timer(0.3, release)

    try:
        holder.execute("BEGIN IMMEDIATE")
        # First the one never finished, read by the idle worker (the sync worker reads
        # nothing while it is in the app), then the create, held in the app by the lock.
        clients = [
            threading.Thread(target=_exchange, args=(service.port, unfinished, got, "unfinished"))
        ]
        clients[0].start()
        assert wait_until(lambda: len(server_sockets_read(service.port)) >= 1, 5)
        clients.append(
            threading.Thread(target=_exchange, args=(service.port, create, got, "create"))
        )
        clients[1].start()
        assert wait_until(lambda: requests_in_flight(metrics) >= 1, 10)
        timer.start()
        assert service.stop(signal.SIGTERM, timeout=15) == 0
        timer.join(5)
        for client in clients:
            client.join(10)
    finally:
        timer.cancel()
        if timer.is_alive():
            timer.join(5)
        if not released.is_set():
            with contextlib.suppress(sqlite3.Error):
                holder.execute("ROLLBACK")
        holder.close()
        service.stop()
    assert got["create"].startswith(b"HTTP/1.1 201 "), got["create"][:200]
    assert got["unfinished"].startswith(b"HTTP/1.1 503 "), service.log()[-3000:]
    assert b'"status":503' in got["unfinished"]
    # With a wait to retry after, as the app's 503s have (the worker's had none), and
    # every header as the document declares it on this 503 (Retry-After now required).
    answer = _answer(got["unfinished"])
    assert answer.headers["Retry-After"] == "1"
    assert problems_with(spec, "/api/v1/contents/{content_id}/comments", "post", answer) == []


def _answer(raw: bytes) -> SimpleNamespace:
    """A raw HTTP/1.1 answer's status and headers, as requests gives them."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = CaseInsensitiveDict(line.split(": ", 1) for line in head[1:])
    return SimpleNamespace(status_code=int(head[0].split()[1]), headers=headers)


# gunicorn 27.0.1's ThreadWorker.run, of which BufferedThreadWorker._run_loop is a copy
# with its own stop deadline.
GTHREAD_RUN_SHA256 = "f92c7394d85715a4aae1efe7a0b40f839ef85528df8ab21bb768079c46956b60"


@pytest.mark.unit
def test_the_threaded_workers_loop_is_a_copy_of_this_gunicorns():
    """_run_loop copies gthread's run for its stop deadline: a gunicorn whose run changed
    (an upgrade) fails here until the copy is compared with it again and this hash moved."""
    import hashlib
    import inspect

    from gunicorn.workers.gthread import ThreadWorker

    source = inspect.getsource(ThreadWorker.run).encode()
    assert hashlib.sha256(source).hexdigest() == GTHREAD_RUN_SHA256, (
        "gunicorn's ThreadWorker.run changed: compare it with BufferedThreadWorker._run_loop "
        "(worker.py), carry the change over, then update GTHREAD_RUN_SHA256"
    )
