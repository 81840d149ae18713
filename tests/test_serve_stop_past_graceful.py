"""A SIGTERM stop that runs past GRACEFUL_TIMEOUT leaves a trace where operators look.

The listener closes when gunicorn's stop begins, so no scrape reads a counter written after
it: a request still in the app when GRACEFUL_TIMEOUT runs out (its connection closed
without an answer: the sync worker is SIGKILLed by the master, the threaded worker exits
around its thread) was in no metric and in no log line. It now has an error line (the
master's at its SIGKILL, or the threaded worker's as it exits), which says how many.
"""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest

from .support import ServiceProcess, requests_in_flight, server_sockets_read, wait_until


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


@pytest.mark.parametrize("threads", ["1", "2"])
def test_requests_cut_off_past_graceful_timeout_leave_an_error_line(
    tmp_path: Path, threads: str
) -> None:
    db = tmp_path / "comments.db"
    metrics = tmp_path / "metrics"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        "THREADS": threads,
        "SHUTDOWN_DELAY": "0",
        "GRACEFUL_TIMEOUT": "1",
        "DB_STATEMENT_TIMEOUT": "20",  # the create waits for the lock longer than the stop
        "RATELIMIT_ENABLED": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    body = json.dumps({"body": uuid.uuid4().hex, "email": "s@example.com"}).encode()
    head = b"POST /api/v1/contents/stop/comments HTTP/1.1\r\nHost: a\r\n"
    head += b"Content-Type: application/json\r\n"
    create = head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    unfinished = head + b'Content-Length: 100\r\n\r\n{"bo'  # the rest never comes
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
        # The worker's 503, unless the master's SIGKILL came first: the worker's deadline
        # and the master's are the same GRACEFUL_TIMEOUT (a race, both workers).
        assert got["unfinished"] in (b"",) or got["unfinished"].startswith(b"HTTP/1.1 503 ")
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
