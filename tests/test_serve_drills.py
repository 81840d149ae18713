"""Fault drills against real `comments-api serve` processes on SQLite and PostgreSQL.

Every drill that writes checks the same promise: each comment acknowledged with a 2xx is
stored, and no comment is stored twice (the load never retries, so a duplicate could only
come from the server). Loads are bounded in count and time, on loopback only.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from .support import (
    VENV_BIN,
    ServiceProcess,
    flock_held,
    free_port,
    requests_in_flight,
    scrape,
    server_socket_inodes,
    server_sockets_read,
    socket_owners,
    value,
    wait_until,
)
from .test_serve_server import BUNDLE, read_body, read_response, slow_reader

CONTENT = "drill"


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> tuple[str, dict[str, str]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'comments.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    env = {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false", "LOG_LEVEL": "warning"}
    return request.param, env


def stored_bodies(database_url: str) -> Counter[str]:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute("SELECT body FROM comments").fetchall()
    else:
        import psycopg

        with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://")) as c:
            rows = c.execute("SELECT body FROM comments").fetchall()
    return Counter(body for (body,) in rows if body)


class WriteLoad:
    """A few clients posting unique comments, never retrying; bounded in count and time."""

    def __init__(self, base: str, clients: int = 4, max_total: int = 600, max_seconds=20.0):
        self.base = base
        self.clients = clients
        self.max_total = max_total
        self.max_seconds = max_seconds
        self.acked: list[str] = []
        self.failed: list[str] = []  # sent, outcome unknown (error, reset, 5xx)
        self.refused = 0  # never sent: connection refused
        self.errors: Counter[str] = Counter()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._sent = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> WriteLoad:
        self._started = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set() and time.monotonic() - self._started < self.max_seconds:
            with self._lock:
                if self._sent >= self.max_total:
                    return
                self._sent += 1
            body = f"drill-{uuid.uuid4().hex}"
            try:
                response = session.post(
                    f"{self.base}/api/v1/contents/{CONTENT}/comments",
                    json={"body": body},
                    timeout=10,
                )
            except requests.RequestException as exc:
                with self._lock:
                    self.errors[type(exc).__name__] += 1
                    if isinstance(exc, requests.ConnectionError) and "refused" in str(exc):
                        self.refused += 1  # never reached the server
                    else:
                        self.failed.append(body)  # outcome unknown
                time.sleep(0.05)
                continue
            with self._lock:
                if 200 <= response.status_code < 300:
                    self.acked.append(body)
                else:
                    self.failed.append(body)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)


def assert_acked_stored_once(load: WriteLoad, database_url: str) -> None:
    stored = stored_bodies(database_url)
    missing = [b for b in load.acked if stored[b] != 1]
    assert not missing, (
        f"{len(missing)} acknowledged comments not stored exactly once ({load.errors})"
    )
    duplicated = [b for b, n in stored.items() if n > 1]
    assert not duplicated, f"{len(duplicated)} comments stored more than once"
    unknown = set(stored) - set(load.acked) - set(load.failed)
    assert not unknown, "stored comments nobody sent"


def post(base: str, n: int, tag: str) -> None:
    for i in range(n):
        response = requests.post(
            f"{base}/api/v1/contents/{CONTENT}/comments", json={"body": f"{tag}-{i}"}, timeout=10
        )
        assert response.status_code == 201, response.text


def wait_replaced(master: int, old: set[int], workers: int, gone: set[int]) -> list[int]:
    def replaced() -> bool:
        now = set(children(master))
        return len(now) == workers and not (now & gone)

    assert wait_until(replaced, timeout=20), f"workers not replaced: {children(master)}"
    return children(master)


@pytest.mark.parametrize(
    "case",
    # The variants exercise the server, not the database: SQLite is enough for them.
    ["sqlite-default", "sqlite-threads-explicit-metrics-dir", "postgres-default"],
)
def test_one_worker_exiting_is_replaced_and_the_master_still_drains(request, tmp_path, case):
    """SIGTERM to one worker, SIGHUP reload, SIGABRT (what gunicorn's master sends on a
    worker timeout): each time the worker is replaced, the server keeps serving, the
    counters keep the dead workers' counts, and SIGTERM to the master still drains."""
    name, variant = case.split("-", 1)
    url = request.getfixturevalue(f"{name}_url")
    env = {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false", "LOG_LEVEL": "warning"}
    env = {**env, "SHUTDOWN_DELAY": "1"}
    if variant == "threads-explicit-metrics-dir":
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")
        env["THREADS"] = "2"
    service = ServiceProcess(env, tmp_path, workers=2).start()
    assert service.proc is not None
    master = service.proc.pid
    base = service.base
    try:
        post(base, 3, "before")
        workers = children(master)
        os.kill(workers[0], signal.SIGTERM)
        workers = wait_replaced(master, set(workers), 2, {workers[0]})
        post(base, 3, "after-term")
        os.kill(master, signal.SIGHUP)
        workers = wait_replaced(master, set(workers), 2, set(workers))
        post(base, 3, "after-hup")
        os.kill(workers[1], signal.SIGABRT)
        workers = wait_replaced(master, set(workers), 2, {workers[1]})
        post(base, 3, "after-abort")
        samples = scrape(base)
        created = value(
            samples, "comments_api_comments_created_total", api="v1", status="published"
        )
        assert created == 12
        requests_201 = value(
            samples,
            "comments_api_http_requests_total",
            method="POST",
            route="/api/v1/contents/<content_id>/comments",
            status="201",
        )
        assert requests_201 == 12
        assert "comments_api_workers 2.0" in requests.get(f"{base}/metrics", timeout=5).text
        # Graceful stop still works: readiness off first, then exit 0.
        service.proc.send_signal(signal.SIGTERM)
        assert wait_until(
            lambda: requests.get(f"{base}/readyz", timeout=1).status_code == 503, timeout=3
        )
        assert service.proc.wait(20) == 0, service.log()
    finally:
        service.stop()
    assert "Worker failed to boot" not in service.log()


FREEZE_TWICE = """
import gc, weakref
from comments_api import gunicorn_conf

class Node:
    pass

gunicorn_conf.pre_fork(None, None)  # the first worker
frozen = gc.get_freeze_count()
cycle = Node()
cycle.self = cycle  # what a reload leaves behind: garbage only the collector frees
left = weakref.ref(cycle)
del cycle
gunicorn_conf.pre_fork(None, None)  # a replaced worker, or a SIGHUP's new ones
gc.collect()
print(frozen, gc.get_freeze_count(), left() is None)
"""


def test_the_master_freezes_what_it_built_once_and_never_its_garbage(tmp_path: Path) -> None:
    # gc.freeze() at every fork froze the master's garbage of the moment for good: the
    # configuration, parser and logging objects each SIGHUP replaces. The master grew
    # ~7 KiB per reload under `serve` and ~50 KiB under plain `gunicorn -c` (bench/README.md).
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "METRICS_ENABLED": "false",
    }
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-c", FREEZE_TWICE],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    frozen, frozen_after, collected = done.stdout.split()
    assert int(frozen) > 1000  # the preloaded modules, frozen before the first fork
    assert int(frozen_after) == int(frozen)
    assert collected == "True"


def test_worker_timeout_is_replaced(backend, tmp_path):
    """A worker stuck longer than WORKER_TIMEOUT is aborted by the master and replaced;
    on PostgreSQL the stuck request (waiting on a lock) gets a JSON 500."""
    name, env = backend
    env = {**env, "WORKER_TIMEOUT": "2"}
    with ServiceProcess(env, tmp_path, workers=2) as service:
        assert service.proc is not None
        master, base = service.proc.pid, service.base
        post(base, 2, "before")
        workers = children(master)
        if name == "sqlite":
            # Frozen: no heartbeat, so gunicorn's timeout fires (SIGABRT, then SIGKILL).
            os.kill(workers[0], signal.SIGSTOP)
            wait_replaced(master, set(workers), 2, {workers[0]})
        else:
            import psycopg

            url = env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
            with psycopg.connect(url) as lock_conn:
                lock_conn.execute("LOCK TABLE comments IN ACCESS EXCLUSIVE MODE")
                started = time.monotonic()
                response = requests.post(
                    f"{base}/api/v1/contents/{CONTENT}/comments", json={"body": "x"}, timeout=15
                )
                lock_conn.rollback()
            assert response.status_code == 500
            assert response.headers["Content-Type"] == "application/problem+json"
            assert response.json()["detail"] == "the request took too long and was aborted"
            assert time.monotonic() - started < 5
            assert wait_until(lambda: len(children(master)) == 2, timeout=10)
        post(base, 2, "after")
        created = value(
            scrape(base), "comments_api_comments_created_total", api="v1", status="published"
        )
        assert created == 4
    assert "WORKER TIMEOUT" in service.log()


def test_a_thread_held_past_the_worker_timeout_gets_the_500_and_its_worker_is_replaced(
    tmp_path: Path,
) -> None:
    """THREADS=2: gthread's main loop heartbeats while a thread is stuck, so the master
    never timed the worker out; a create waiting on SQLite's write lock (held by the test)
    waited out DB_STATEMENT_TIMEOUT (30 s). It now gets the sync worker's JSON 500 within
    WORKER_TIMEOUT, with its request id and an error line; the worker stops and is
    replaced, after sending the other thread's answer whole to a slow reader; the aborted
    create is never stored."""
    db = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        **ABANDONING,
        "LOG_LEVEL": "info",
        "THREADS": "2",
        "WORKER_TIMEOUT": "2",
        "DB_STATEMENT_TIMEOUT": "30",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        master = service.proc.pid
        (first,) = children(master)
        bundle = requests.get(service.base + BUNDLE, timeout=10).content
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            stuck, result = _in_thread(
                lambda: requests.post(
                    service.base + path,
                    json={"body": "stuck", "email": "s@example.com"},
                    headers={"X-Request-ID": "stuck-1"},
                    timeout=15,
                )
            )
            started = time.monotonic()
            # A thread is in that create now, waiting for the lock.
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 1, 10)
            # The other thread answers; most of the answer waits in the main loop.
            with slow_reader(
                service.port, f"GET {BUNDLE} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
            ) as reader:
                time.sleep(0.3)
                assert requests.get(service.base + "/healthz", timeout=5).status_code == 200
                stuck.join(15)
                assert "value" in result, "no answer within 15 s"
                answer = result["value"]
                assert answer.status_code == 500
                assert result["at"] - started < 4  # WORKER_TIMEOUT 2 s, checked every 0.25 s
                assert answer.headers["Content-Type"] == "application/problem+json"
                assert answer.json()["detail"] == "the request took too long and was aborted"
                assert answer.headers["X-Request-ID"] == "stuck-1"
                assert answer.headers["Connection"] == "close"
                status, headers, _ = read_response(reader, body=False)
                assert status == 200
                assert read_body(reader, int(headers["content-length"])) == bundle
            # Replaced: the stuck thread ended with its worker.
            assert wait_until(lambda: first not in children(master), 15), service.log()[-3000:]
            assert wait_until(lambda: len(children(master)) == 1, 15)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        after = requests.post(
            service.base + path, json={"body": "after", "email": "a@example.com"}, timeout=10
        )
        assert after.status_code == 201
        log = service.log()
    assert stored_bodies(env["DATABASE_URL"]) == Counter({"after": 1})
    aborted = [
        json.loads(line)
        for line in log.splitlines()
        if "request aborted: the worker exceeded its timeout" in line
    ]
    assert [(line["level"], line["request_id"]) for line in aborted] == [("error", "stuck-1")]


def test_a_threaded_timeout_abort_leaves_one_access_line_and_one_count(tmp_path: Path) -> None:
    """THREADS=2: the request the main loop aborts at WORKER_TIMEOUT (its thread stuck on
    SQLite's write lock) is a 500 that operators see where they count 500s, as the sync
    worker's abort is: one access line (status 500, its request id, its duration) and one
    comments_api_http_requests_total sample. The main loop answered it, and the thread
    never came back to the app's teardown, so neither existed."""
    db = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        **ABANDONING,
        "LOG_LEVEL": "info",
        "THREADS": "2",
        "WORKER_TIMEOUT": "2",
        "DB_STATEMENT_TIMEOUT": "30",
    }
    route = "/api/v1/contents/<content_id>/comments"
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        master = service.proc.pid
        (first,) = children(master)
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            answer = requests.post(
                service.base + path,
                json={"body": "stuck", "email": "s@example.com"},
                headers={"X-Request-ID": "stuck-2"},
                timeout=15,
            )
            assert answer.status_code == 500
            assert answer.headers["X-Request-ID"] == "stuck-2"
            assert wait_until(lambda: first not in children(master), 15), service.log()[-3000:]
            assert wait_until(lambda: len(children(master)) == 1, 15)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        counted = value(
            scrape(service.base),
            "comments_api_http_requests_total",
            method="POST",
            route=route,
            status="500",
        )
        log = service.log()
    lines = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("message") == "request" and entry.get("request_id") == "stuck-2":
                lines.append(entry)
    assert len(lines) == 1, log[-3000:]
    (line,) = lines
    assert (line["level"], line["status"], line["method"], line["route"]) == (
        "error",
        500,
        "POST",
        route,
    )
    assert 2000 <= line["duration_ms"] < 15000  # held for WORKER_TIMEOUT, then aborted
    assert counted == 1


def test_a_frozen_postgresql_backend_holds_a_thread_until_the_worker_timeout(
    postgres_url: str, tmp_path: Path
) -> None:
    """DB_STATEMENT_TIMEOUT (libpq's `-c statement_timeout`) bounds a create behind a lock
    another session holds: 503 after it. A backend that is frozen (SIGSTOP; a host that
    stalls) cannot run its own timer, and the kernel still acknowledges what is sent to it
    (so neither TCP keepalives nor tcp_user_timeout fire): only WORKER_TIMEOUT ends that
    request, THREADS=2 here: the JSON 500, and a new worker whose requests succeed."""
    import psycopg

    env = {
        "DATABASE_URL": postgres_url,
        "RATELIMIT_ENABLED": "false",
        "DUPLICATE_WINDOW": "0",
        "THREADS": "2",
        "WORKER_TIMEOUT": "3",
        "DB_STATEMENT_TIMEOUT": "1",
    }
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        master = service.proc.pid
        (first,) = children(master)
        post(service.base, 1, "warm")  # the worker's pooled connection exists
        path = f"{service.base}/api/v1/contents/{CONTENT}/comments"
        with psycopg.connect(plain) as holder:
            holder.execute("LOCK TABLE comments IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            locked = requests.post(path, json={"body": "locked"}, timeout=15)
            waited = time.monotonic() - started
            holder.rollback()
        assert locked.status_code == 503
        assert waited < 2.5  # DB_STATEMENT_TIMEOUT 1 s, not WORKER_TIMEOUT 3 s
        # Resumed only once that worker is gone: its stuck thread, resumed earlier, would
        # go on with the create its client was answered 500 for, and commit it.
        with _frozen_backends(postgres_url):
            started = time.monotonic()
            frozen = requests.post(path, json={"body": "frozen"}, timeout=15)
            waited = time.monotonic() - started
            replaced = wait_until(lambda: first not in children(master), 15)
        assert frozen.status_code == 500
        assert frozen.json()["detail"] == "the request took too long and was aborted"
        assert 2.5 < waited < 6  # WORKER_TIMEOUT (3 s), checked every 0.25 s
        assert replaced, service.log()[-3000:]
        assert wait_until(lambda: len(children(master)) == 1, 15)
        post(service.base, 1, "after")
    assert stored_bodies(postgres_url) == Counter({"warm-0": 1, "after-0": 1})


@contextlib.contextmanager
def _frozen_backends(postgres_url: str, host: bool = False) -> Iterator[Callable[[], None]]:
    """Freeze (SIGSTOP) the PostgreSQL backends serving the service's connections to
    ``postgres_url``'s database: a database host that stalls. ``host``: the postmaster as
    well, so that a new connection is never answered either (the kernel still completes
    its TCP handshake). Yields ``resume()``, which lets them go on (SIGCONT), at the latest
    on leaving."""
    import psycopg

    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True) as admin:
        frozen = {
            pid
            for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                (plain.rsplit("/", 1)[1],),
            ).fetchall()
        }
    assert frozen, "the service holds no database connection to freeze"
    if host:  # the backends' parent
        frozen.add(int(Path(f"/proc/{min(frozen)}/stat").read_text().rsplit(")", 1)[1].split()[1]))
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)

    def resume() -> None:
        while frozen:
            os.kill(frozen.pop(), signal.SIGCONT)

    try:
        yield resume
    finally:
        resume()


def _lines_of(log: str, request_id: str, message: str) -> list[dict]:
    found = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("message") == message and entry.get("request_id") == request_id:
                found.append(entry)
    return found


def test_a_sync_worker_stuck_on_a_frozen_postgresql_backend_still_answers_its_500(
    postgres_url: str, tmp_path: Path
) -> None:
    """THREADS=1: at WORKER_TIMEOUT the master's SIGABRT raised SystemExit in the request,
    but psycopg, waiting on the frozen backend's socket, catches it to cancel the query and
    waits up to 5 s more for it; the master SIGKILLed the worker a second later, and the
    client got its connection closed with no answer, no "request aborted" line and no
    access line. The abort now answers from the signal handler: the JSON 500 with the
    request's id, its error line and its access line; the aborted create is not stored."""

    env = {
        "DATABASE_URL": postgres_url,
        "RATELIMIT_ENABLED": "false",
        "DUPLICATE_WINDOW": "0",
        "LOG_LEVEL": "info",
        "THREADS": "1",
        "WORKER_TIMEOUT": "3",
        "DB_STATEMENT_TIMEOUT": "1",
    }
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        master = service.proc.pid
        (first,) = children(master)
        post(service.base, 1, "warm")  # the worker's pooled connection exists
        with _frozen_backends(postgres_url):
            started = time.monotonic()
            frozen = requests.post(
                service.base + path,
                json={"body": "frozen"},
                headers={"X-Request-ID": "frozen-sync-1"},
                timeout=15,
            )
            waited = time.monotonic() - started
            replaced = wait_until(lambda: first not in children(master), 15)
        assert frozen.status_code == 500
        assert frozen.headers["Content-Type"] == "application/problem+json"
        assert frozen.json()["detail"] == "the request took too long and was aborted"
        assert frozen.headers["X-Request-ID"] == "frozen-sync-1"
        assert 2.5 < waited < 6  # WORKER_TIMEOUT (3 s), checked by the master every ~1 s
        assert replaced, service.log()[-3000:]
        assert wait_until(lambda: len(children(master)) == 1, 15)
        post(service.base, 1, "after")
        log = service.log()
    assert stored_bodies(postgres_url) == Counter({"warm-0": 1, "after-0": 1})
    aborted = _lines_of(log, "frozen-sync-1", "request aborted: the worker exceeded its timeout")
    assert [line["level"] for line in aborted] == ["error"], log[-3000:]
    (access,) = _lines_of(log, "frozen-sync-1", "request")
    assert (access["status"], access["method"]) == (500, "POST")


def test_a_create_aborted_at_the_worker_timeout_is_not_stored_when_its_backend_resumes(
    postgres_url: str, tmp_path: Path
) -> None:
    """THREADS=2: the main loop answers a create stuck on a frozen backend 500 at
    WORKER_TIMEOUT, and its worker finishes the other threads' answers before it exits (a
    slow reader's here). The backend resumed meanwhile: the stuck thread went on and
    committed the create its client had been told failed, so a retry stored it twice. The
    abort now shuts the stuck thread's database connection down (the backend sees the end
    of its input and rolls back): nothing of the aborted create is stored."""

    env = {
        "DATABASE_URL": postgres_url,
        "RATELIMIT_ENABLED": "false",
        "DUPLICATE_WINDOW": "0",
        "THREADS": "2",
        "WORKER_TIMEOUT": "2",
        # Long: a statement_timeout firing once the backend resumes would cancel the
        # create itself and hide what the worker does.
        "DB_STATEMENT_TIMEOUT": "30",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        master = service.proc.pid
        (first,) = children(master)
        bundle = requests.get(service.base + BUNDLE, timeout=10).content
        post(service.base, 1, "warm")
        with _frozen_backends(postgres_url) as resume:
            stuck, result = _in_thread(
                lambda: requests.post(
                    service.base + path,
                    json={"body": "aborted"},
                    headers={"X-Request-ID": "aborted-1"},
                    timeout=15,
                )
            )
            # A thread is in that create now, its backend frozen.
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 1, 10)
            with slow_reader(
                service.port, f"GET {BUNDLE} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
            ) as reader:
                stuck.join(15)
                assert "value" in result, "no answer within 15 s"
                assert result["value"].status_code == 500
                resume()
                time.sleep(1.5)  # the stuck thread's create, if it goes on, commits now
                assert first in children(master)  # still finishing the slow reader's answer
                status, headers, _ = read_response(reader, body=False)
                assert status == 200
                assert read_body(reader, int(headers["content-length"])) == bundle
        assert wait_until(lambda: first not in children(master), 15), service.log()[-3000:]
        assert wait_until(lambda: len(children(master)) == 1, 15)
        post(service.base, 1, "after")
    assert stored_bodies(postgres_url) == Counter({"warm-0": 1, "after-0": 1})


def test_a_create_aborted_at_the_worker_timeout_on_the_sqlite_lock_is_not_stored(
    tmp_path: Path,
) -> None:
    """THREADS=2 on SQLite: a create stuck waiting for the write lock is answered 500 at
    WORKER_TIMEOUT, and its worker finishes a slow reader's answer before it exits. The
    lock came free meanwhile: the stuck thread (its writer connection has no socket the
    abort could shut down) went on and committed the create its client had been told
    failed. Its write now rolls back instead (Repository.aborted_threads): nothing is
    stored, and the retry with the same Idempotency-Key creates the comment, once."""
    db = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        **ABANDONING,
        "THREADS": "2",
        "WORKER_TIMEOUT": "2",
        # Long: the create's own lock wait must not end it before the abort does.
        "DB_STATEMENT_TIMEOUT": "30",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    path = f"/api/v1/contents/{CONTENT}/comments"
    body = {"body": "keyed", "email": "k@example.com"}
    headers = {"Idempotency-Key": "abort-retry-1", "X-Request-ID": "sqlite-abort-1"}
    rolled_back = "rolled back the write of a request aborted at WORKER_TIMEOUT"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        master = service.proc.pid
        (first,) = children(master)
        bundle = requests.get(service.base + BUNDLE, timeout=10).content
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            stuck, result = _in_thread(
                lambda: requests.post(service.base + path, json=body, headers=headers, timeout=15)
            )
            # A thread is in that create now, waiting for the lock.
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 1, 10)
            with slow_reader(
                service.port, f"GET {BUNDLE} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
            ) as reader:
                stuck.join(15)
                assert "value" in result, "no answer within 15 s"
                assert result["value"].status_code == 500
                holder.execute("ROLLBACK")  # the stuck thread takes the lock and goes on
                # Its create ends either way within a few ms: stored, or rolled back.
                assert wait_until(
                    lambda: (
                        _lines_of(service.log(), "sqlite-abort-1", rolled_back)
                        or stored_bodies(env["DATABASE_URL"])["keyed"]
                    ),
                    5,
                ), service.log()[-3000:]
                assert stored_bodies(env["DATABASE_URL"])["keyed"] == 0
                assert first in children(master)  # still finishing the slow reader's answer
                status, headers_read, _ = read_response(reader, body=False)
                assert status == 200
                assert read_body(reader, int(headers_read["content-length"])) == bundle
        finally:
            holder.close()
        assert wait_until(lambda: first not in children(master), 15), service.log()[-3000:]
        assert wait_until(lambda: len(children(master)) == 1, 15)
        (line,) = _lines_of(service.log(), "sqlite-abort-1", rolled_back)
        assert line["level"] == "warning"
        retry = requests.post(service.base + path, json=body, headers=headers, timeout=10)
        assert retry.status_code == 201
        assert "Idempotent-Replayed" not in retry.headers
        again = requests.post(service.base + path, json=body, headers=headers, timeout=10)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == retry.json()
    assert stored_bodies(env["DATABASE_URL"]) == Counter({"keyed": 1})


@pytest.mark.parametrize("db", ["sqlite", "postgres"])
def test_a_write_aborted_at_the_worker_timeout_is_not_a_database_error(
    request: pytest.FixtureRequest, tmp_path: Path, db: str
) -> None:
    """THREADS=2: the stuck thread of a create answered 500 at WORKER_TIMEOUT comes back to
    the app while its worker finishes a slow reader's answer, and its write fails: on
    SQLite with AbortedWrite (the lock came free; its write rolls back instead of
    committing), on PostgreSQL with the error of the connection the abort shut down. Both
    reached the app's database error handler, which logged "database unavailable" and
    counted comments_api_database_errors_total{cause="unavailable"}: an outage of a
    database that was fine, for a request already counted as the 500. Now neither; the
    request keeps its one access line and one request count."""
    if db == "sqlite":
        database_url = f"sqlite:///{tmp_path / 'comments.db'}"
    else:
        database_url = request.getfixturevalue("postgres_url")
    env = {
        "DATABASE_URL": database_url,
        "RATELIMIT_ENABLED": "false",
        "DUPLICATE_WINDOW": "0",
        "LOG_LEVEL": "info",
        "THREADS": "2",
        "WORKER_TIMEOUT": "2",
        # Long: the create's own lock or statement timeout must not end it before the
        # abort does.
        "DB_STATEMENT_TIMEOUT": "30",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    route = "/api/v1/contents/<content_id>/comments"
    path = f"/api/v1/contents/{CONTENT}/comments"
    rid = f"{db}-aborted-write"
    with contextlib.ExitStack() as stack, ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        master = service.proc.pid
        (first,) = children(master)
        bundle = requests.get(service.base + BUNDLE, timeout=10).content
        post(service.base, 1, "warm")  # on PostgreSQL: the pooled connection to freeze
        if db == "sqlite":
            holder = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=5)
            holder.isolation_level = None
            stack.callback(holder.close)
            holder.execute("BEGIN IMMEDIATE")
            release: Callable[[], object] = functools.partial(holder.execute, "ROLLBACK")
        else:
            release = stack.enter_context(_frozen_backends(database_url))
        stuck, result = _in_thread(
            lambda: requests.post(
                service.base + path,
                json={"body": "aborted", "email": "a@example.com"},
                headers={"X-Request-ID": rid},
                timeout=15,
            )
        )
        # A thread is in that create now, waiting on its database.
        assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 1, 10)
        with slow_reader(service.port, f"GET {BUNDLE} HTTP/1.1\r\nHost: a\r\n\r\n".encode()) as r:
            stuck.join(15)
            assert "value" in result, "no answer within 15 s"
            assert result["value"].status_code == 500
            release()  # SQLite: the stuck thread takes the lock and goes on to its commit
            if db == "sqlite":
                rolled_back = "rolled back the write of a request aborted at WORKER_TIMEOUT"
                assert wait_until(lambda: _lines_of(service.log(), rid, rolled_back), 5)
            # The stuck thread's error reaches the app's handlers within milliseconds
            # (PostgreSQL's as soon as the abort shut its connection down).
            time.sleep(1)
            assert first in children(master)  # still finishing the slow reader's answer
            status, headers, _ = read_response(r, body=False)
            assert status == 200
            assert read_body(r, int(headers["content-length"])) == bundle
        assert wait_until(lambda: first not in children(master), 15), service.log()[-3000:]
        assert wait_until(lambda: len(children(master)) == 1, 15)
        samples = scrape(service.base)  # the exited worker's counters included
        log = service.log()
    assert stored_bodies(database_url) == Counter({"warm-0": 1})
    errors = value(samples, "comments_api_database_errors_total", cause="unavailable")
    assert errors == 0, log[-3000:]
    # Its error lines: the abort's and its access line, no "database unavailable".
    error_lines = []
    for line in log.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("request_id") == rid and entry.get("level") == "error":
                error_lines.append(entry["message"])
    assert sorted(error_lines) == [
        "request",
        "request aborted: the worker exceeded its timeout",
    ], log[-3000:]
    (access,) = _lines_of(log, rid, "request")
    assert (access["status"], access["route"]) == (500, route)
    counted = value(
        samples, "comments_api_http_requests_total", method="POST", route=route, status="500"
    )
    assert counted == 1


# A module plain gunicorn serves: the app behind werkzeug's ProxyFix (which keeps it as
# ``.app``), and behind a bare function that keeps no reference to it anyone could follow.
WRAPPED_APPS = """\
from werkzeug.middleware.proxy_fix import ProxyFix

from comments_api.app import create_app

proxied = ProxyFix(create_app(), x_for=1)


def hidden(environ, start_response):
    return proxied(environ, start_response)
"""
GUARD_MISSING = "the aborted-request guard is not installed"


@contextlib.contextmanager
def _plain_gunicorn(
    tmp_path: Path, app: str, *, our_config: bool = False
) -> Iterator[tuple[int, Path, dict[str, str]]]:
    """``gunicorn -k comments_api.worker.BufferedThreadWorker`` with its own flags (and,
    with ``our_config``, comments_api.gunicorn_conf's hooks under them, metrics on),
    THREADS=2, WORKER_TIMEOUT=2, one worker, on SQLite, serving ``app`` of WRAPPED_APPS.
    Yields its port, its output file and its environment."""
    (tmp_path / "wrapped_apps.py").write_text(WRAPPED_APPS)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
        "METRICS_ENABLED": "false",
        "DUPLICATE_WINDOW": "0",
        # Long: the create's own lock wait must not end it before the abort does.
        "DB_STATEMENT_TIMEOUT": "30",
    }
    config: list[str] = []
    if our_config:
        (tmp_path / "metrics").mkdir()
        env.update(METRICS_ENABLED="true", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
        config = ["--config=python:comments_api.gunicorn_conf"]
    subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"], env=env, check=True, capture_output=True
    )
    out = tmp_path / "gunicorn.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "gunicorn"),
                *config,
                "--worker-class",
                "comments_api.worker.BufferedThreadWorker",
                "--threads=2",
                "--timeout=2",
                "--workers=1",
                "--no-control-socket",  # gunicorn's default writes under $HOME
                f"--bind=127.0.0.1:{port}",
                f"--pythonpath={tmp_path}",
                f"wrapped_apps:{app}",
            ],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:

            def ready() -> bool:
                assert proc.poll() is None, out.read_text()
                try:
                    return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok
                except requests.RequestException:
                    return False

            assert wait_until(ready, 30), out.read_text()
            yield port, out, env
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_the_aborted_write_guard_is_installed_behind_a_middleware(tmp_path: Path) -> None:
    """Plain gunicorn with our threaded worker, serving create_app() behind werkzeug's
    ProxyFix: the worker looked for the app's services on the WSGI app it was given only,
    found none on the middleware, and silently left Repository.aborted_threads empty, so a
    create stuck on SQLite's write lock, answered 500 at WORKER_TIMEOUT, committed once the
    lock came free. The worker now follows the middleware's ``app`` to the comments app:
    that write rolls back, and nothing warns that the guard is missing."""
    base_path = f"/api/v1/contents/{CONTENT}/comments"
    rolled_back = "rolled back the write of a request aborted at WORKER_TIMEOUT"
    with _plain_gunicorn(tmp_path, "proxied") as (port, out, env):
        base = f"http://127.0.0.1:{port}"
        bundle = requests.get(base + BUNDLE, timeout=10).content
        holder = sqlite3.connect(tmp_path / "comments.db", isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            stuck, result = _in_thread(
                lambda: requests.post(
                    base + base_path, json={"body": "proxied", "email": "p@example.com"}, timeout=15
                )
            )
            # A thread is in that create now, waiting for the lock: it holds its writer
            # turn (WriterTurns' flock) meanwhile. Metrics are off here, no in-flight gauge.
            turn = tmp_path / "comments.db-writer.lock"
            assert wait_until(lambda: flock_held(turn), 10), out.read_text()[-3000:]
            with slow_reader(port, f"GET {BUNDLE} HTTP/1.1\r\nHost: a\r\n\r\n".encode()) as r:
                stuck.join(15)
                assert "value" in result, "no answer within 15 s"
                assert result["value"].status_code == 500
                holder.execute("ROLLBACK")  # the stuck thread takes the lock and goes on
                # Its create ends either way within a few ms: stored, or rolled back.
                assert wait_until(
                    lambda: rolled_back in out.read_text() or stored_bodies(env["DATABASE_URL"]),
                    5,
                ), out.read_text()[-3000:]
                assert stored_bodies(env["DATABASE_URL"]) == Counter()
                status, headers, _ = read_response(r, body=False)
                assert status == 200
                assert read_body(r, int(headers["content-length"])) == bundle
        finally:
            holder.close()
    assert GUARD_MISSING not in out.read_text()


def test_our_gunicorn_config_serves_an_app_behind_a_middleware(tmp_path: Path) -> None:
    """gunicorn_conf's post_fork read ``extensions`` off the WSGI app gunicorn was given:
    behind ProxyFix it raised AttributeError and no worker booted. It now finds the
    comments app through the middleware, as the worker does: the pool is reset after the
    fork and the worker's live gauges are set."""
    with _plain_gunicorn(tmp_path, "proxied", our_config=True) as (port, out, _env):
        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert re.search(r"^comments_api_workers(\{[^}]*\})? 1\.0$", metrics.text, re.M), (
            metrics.text[-2000:]
        )
    assert "Traceback" not in out.read_text()
    assert GUARD_MISSING not in out.read_text()


def test_our_gunicorn_config_says_when_it_cannot_find_the_app(tmp_path: Path) -> None:
    """An app hidden inside a plain function: the worker still boots and serves, and its
    post_fork says what it could not do, instead of failing to boot."""
    with _plain_gunicorn(tmp_path, "hidden", our_config=True) as (port, out, _env):
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
        assert wait_until(lambda: "comments app was not found" in out.read_text(), 5), (
            out.read_text()[-3000:]
        )
    assert "Traceback" not in out.read_text()


def test_a_worker_that_cannot_install_the_aborted_write_guard_says_so(tmp_path: Path) -> None:
    """An app the worker cannot see through (a function wrapping create_app(), with no
    ``app`` or ``__wrapped__`` attribute) still runs, but each worker warns at its start
    that a write of a request aborted at WORKER_TIMEOUT may commit: it used to be silent."""
    with _plain_gunicorn(tmp_path, "hidden") as (port, out, _env):
        answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert answer.status_code == 200
        assert wait_until(lambda: GUARD_MISSING in out.read_text(), 5), out.read_text()
    warned = [line for line in out.read_text().splitlines() if GUARD_MISSING in line]
    assert len(warned) == 1, warned  # one worker, one line


def test_sigkill_of_a_worker_under_write_load(backend, tmp_path):
    _name, env = backend
    with ServiceProcess(env, tmp_path, workers=2) as service:
        assert service.proc is not None
        master = service.proc.pid
        with WriteLoad(service.base, max_seconds=15) as load:
            assert wait_until(lambda: load.count() >= 20, timeout=10)
            victim = children(master)[0]
            os.kill(victim, signal.SIGKILL)
            before = load.count()
            wait_replaced(master, set(), 2, {victim})
            assert wait_until(lambda: load.count() >= before + 40, timeout=10)
        assert len(load.acked) >= 60
        assert load.refused == 0
    assert_acked_stored_once(load, env["DATABASE_URL"])


def test_sigkill_of_the_master_under_write_load(backend, tmp_path):
    _name, env = backend
    service = ServiceProcess(env, tmp_path, workers=2).start()
    assert service.proc is not None
    master = service.proc.pid
    workers = children(master)
    with WriteLoad(service.base, max_seconds=15) as load:
        assert wait_until(lambda: load.count() >= 30, timeout=10)
        os.kill(master, signal.SIGKILL)
        # Orphaned workers notice their parent is gone and stop on their own.
        assert wait_until(
            lambda: not any(Path(f"/proc/{p}/status").exists() for p in workers), timeout=10
        )
        load.stop.set()
    service.stop()
    assert_acked_stored_once(load, env["DATABASE_URL"])
    # (Restarting after this, with the stale runtime directory removed: test_serve_server.)


def test_sigterm_under_write_load_fails_nothing(backend, tmp_path):
    """SIGTERM mid-load: readiness turns 503 before the listener closes, the load balancer
    (here: the load itself, polling /readyz) stops sending, no request fails, exit 0."""
    _name, env = backend
    env = {**env, "SHUTDOWN_DELAY": "1.5"}
    service = ServiceProcess(env, tmp_path, workers=2).start()
    assert service.proc is not None
    not_ready_at: list[float] = []
    refused_at: list[float] = []

    def prober() -> None:
        while not refused_at:
            try:
                status = requests.get(f"{service.base}/readyz", timeout=2).status_code
                if status == 503 and not not_ready_at:
                    not_ready_at.append(time.monotonic())
                    load.stop.set()
            except requests.ConnectionError:
                refused_at.append(time.monotonic())
            time.sleep(0.05)

    with WriteLoad(service.base, max_seconds=15) as load:
        probe = threading.Thread(target=prober, daemon=True)
        probe.start()
        assert wait_until(lambda: load.count() >= 30, timeout=10)
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(20) == 0, service.log()
        probe.join(5)
    service.stop()
    assert not_ready_at, "readiness never reported 503"
    assert refused_at, "the listener never closed"
    assert not_ready_at[0] < refused_at[0] - 1.0
    assert load.failed == []
    assert load.refused == 0
    assert_acked_stored_once(load, env["DATABASE_URL"])


@pytest.mark.parametrize("threads", ["1", "2"])
def test_an_idle_server_stops_at_once_on_sigterm(tmp_path, threads):
    """With SHUTDOWN_DELAY=0 and nothing in flight, SIGTERM ends the server well within a
    second, idle kept-alive connections included (closed without a byte, as Go's
    Server.Shutdown does). The threaded worker kept them gthread's 2 s
    (STOP_KEEPALIVE_LINGER) first, so a server behind a proxy's pool of idle upstream
    connections took over 2 s to stop."""
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
        "SHUTDOWN_DELAY": "0",
        "THREADS": threads,
    }
    service = ServiceProcess(env, tmp_path, workers=1).start()
    assert service.proc is not None
    idle = []
    try:
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            answer = sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"\r\nConnection: keep-alive\r\n" in answer
            idle.append(sock)
        time.sleep(0.2)  # all three wait for their next request, nothing in flight
        started = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        assert service.proc.wait(10) == 0, service.log()
        assert time.monotonic() - started < 1.0
        for sock in idle:
            assert sock.recv(100) == b""  # closed, no stray answer
    finally:
        for sock in idle:
            sock.close()
        service.stop()


def _abandon(port: int, path: str, count: int) -> None:
    """Creates sent whole by clients that close at once, unanswered (a proxy's timeout),
    each with the X-Request-ID an ingress gave it (``abandoned-<i>``)."""
    for i in range(count):
        body = f'{{"body": "abandoned {i}", "email": "gone@example.com"}}'.encode()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"X-Request-ID: abandoned-{i}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )


def _in_thread(call) -> tuple[threading.Thread, dict]:
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(value=call(), at=time.monotonic()))
    thread.start()
    return thread, result


ABANDONING = {
    "RATELIMIT_ENABLED": "false",
    "DUPLICATE_WINDOW": "0",
    "DB_STATEMENT_TIMEOUT": "1.2",  # the held answer's length: over SLOW_ANSWER (1 s)
}


@contextlib.contextmanager
def _abandoned_behind_a_held_lock(service: ServiceProcess, db: Path, path: str, count: int):
    """The SQLite write lock held; a live create waiting it out (DB_STATEMENT_TIMEOUT);
    ``count`` abandoned creates queued behind it (``service`` has a PROMETHEUS_MULTIPROC_DIR
    of its own: the live create is seen in flight there). Yields the live create's thread and
    result; the lock is released on leaving (from then on a create served is stored)."""
    holder = sqlite3.connect(db, isolation_level=None, timeout=5)
    try:
        holder.execute("BEGIN IMMEDIATE")
        live, held = _in_thread(
            lambda: requests.post(
                service.base + path, json={"body": "held", "email": "h@example.com"}, timeout=30
            )
        )
        # The worker is in that create now, waiting for the lock.
        metrics = Path(service.env["PROMETHEUS_MULTIPROC_DIR"])
        assert wait_until(lambda: requests_in_flight(metrics) == 1, 10)
        _abandon(service.port, path, count)
        yield live, held
        holder.execute("ROLLBACK")
    finally:
        holder.close()


def _only_served_after_the_drops(service: ServiceProcess, path: str, dropped: int) -> None:
    """The drops were counted, each logged with its request's own id, and a create sent
    once the lock is free is stored (the caller then checks that it alone was: no
    abandoned create was)."""
    gone = [line for line in service.log().splitlines() if '"error":"client_gone"' in line]
    assert sorted(json.loads(line)["request_id"] for line in gone) == [
        f"abandoned-{i}" for i in range(dropped)
    ]
    samples = scrape(service.base)
    counted = value(samples, "comments_api_server_refusals_total", reason="client-closed-request")
    assert counted == dropped
    after = requests.post(
        service.base + path, json={"body": "after", "email": "a@example.com"}, timeout=10
    )
    assert after.status_code == 201


def test_requests_abandoned_behind_a_slow_answer_are_dropped_unserved(tmp_path: Path) -> None:
    """While the worker waits out a held database lock, clients queued behind it give up
    (a proxy's timeout, the kubelet's): their requests are dropped unserved, so no create
    is stored that nobody was told of (served after the lock's release, each was)."""
    db = tmp_path / "comments.db"
    env = {"DATABASE_URL": f"sqlite:///{db}", **ABANDONING}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")  # read mid-request
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        with _abandoned_behind_a_held_lock(service, db, path, 5) as (live, held):
            live.join(30)
        assert held["value"].status_code == 503  # waited out DB_STATEMENT_TIMEOUT
        assert wait_until(lambda: service.log().count('"error":"client_gone"') == 5, 10), (
            service.log()[-3000:]
        )
        _only_served_after_the_drops(service, path, 5)
    assert stored_bodies(env["DATABASE_URL"]) == Counter({"after": 1})


def test_the_threaded_worker_drops_requests_abandoned_while_every_thread_was_held(
    tmp_path: Path,
) -> None:
    """THREADS=2: two live creates hold both threads for DB_STATEMENT_TIMEOUT (the SQLite
    lock held elsewhere); creates whose clients gave up meanwhile wait in the pool's queue
    for over SLOW_ANSWER, and are dropped unserved instead of each waiting the lock out."""
    db = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        **ABANDONING,
        "DB_STATEMENT_TIMEOUT": "2",
        "THREADS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            lives = [
                _in_thread(
                    lambda i=i: requests.post(
                        service.base + path,
                        json={"body": f"held {i}", "email": "h@example.com"},
                        timeout=30,
                    )
                )
                for i in range(2)
            ]
            # Both threads are in those creates now.
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 2, 10)
            _abandon(service.port, path, 4)
            for thread, _ in lives:
                thread.join(30)
            # The lock is still held: served, each would wait it out for 2 s more.
            assert wait_until(lambda: service.log().count('"error":"client_gone"') == 4, 3), (
                service.log()[-3000:]
            )
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        assert [result["value"].status_code for _, result in lives] == [503, 503]
        _only_served_after_the_drops(service, path, 4)
    assert stored_bodies(env["DATABASE_URL"]) == Counter({"after": 1})


def test_the_threaded_worker_sheds_requests_queued_past_queue_timeout(tmp_path: Path) -> None:
    """THREADS=2, overload: two creates hold both threads on a held SQLite write lock for
    DB_STATEMENT_TIMEOUT (6 s). A read and a create queued behind them, by clients still
    waiting, get a JSON 503 with Retry-After at QUEUE_TIMEOUT (1 s), not a late answer once
    a thread frees up; the shed create is not stored. Before, both waited the 6 s out."""
    db = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        **ABANDONING,
        "DB_STATEMENT_TIMEOUT": "6",
        "QUEUE_TIMEOUT": "1",
        "THREADS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert requests.post(service.base + path, json={"body": "before"}, timeout=10).ok
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            lives = [
                _in_thread(
                    lambda i=i: requests.post(
                        service.base + path, json={"body": f"held {i}"}, timeout=30
                    )
                )
                for i in range(2)
            ]
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 2, 10)
            started = time.monotonic()
            queued = [
                _in_thread(lambda: requests.get(service.base + path, timeout=30)),
                _in_thread(
                    lambda: requests.post(service.base + path, json={"body": "shed"}, timeout=30)
                ),
            ]
            for thread, _ in queued:
                thread.join(30)
            # Generous on a loaded machine, and still well under the 6 s the threads are held.
            elapsed = [result["at"] - started for _, result in queued]
            assert max(elapsed) < 4.5, elapsed
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        for thread, _ in lives:
            thread.join(30)
        for _, result in queued:
            answer = result["value"]
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["Retry-After"]) >= 1
            assert answer.headers["Content-Type"] == "application/problem+json"
            assert "waited too long" in answer.json()["detail"]
            assert answer.headers["X-Request-ID"]
        # The lock was released before their DB_STATEMENT_TIMEOUT: both stored.
        assert [result["value"].status_code for _, result in lives] == [201, 201]
        assert service.log().count('"error":"queue_timeout"') == 2, service.log()[-3000:]
        samples = scrape(service.base)
        assert (
            value(samples, "comments_api_server_refusals_total", reason="service-unavailable") == 2
        )
        after = requests.get(service.base + path, timeout=10)
        assert after.status_code == 200
    assert stored_bodies(env["DATABASE_URL"]) == Counter({"before": 1, "held 0": 1, "held 1": 1})


def test_a_head_request_shed_at_queue_timeout_gets_no_content(tmp_path: Path) -> None:
    """A HEAD queued past QUEUE_TIMEOUT behind two held creates gets the shed 503's head
    only (RFC 9110 9.3.2): it was sent the JSON body too, which a client reads as the start
    of its next answer."""
    db = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        **ABANDONING,
        "DB_STATEMENT_TIMEOUT": "6",
        "QUEUE_TIMEOUT": "1",
        "THREADS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert requests.post(service.base + path, json={"body": "before"}, timeout=10).ok
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            lives = [
                _in_thread(
                    lambda i=i: requests.post(
                        service.base + path, json={"body": f"held {i}"}, timeout=30
                    )
                )
                for i in range(2)
            ]
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 2, 10)
            with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
                sock.sendall(f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                received = b""
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and (chunk := sock.recv(65536)):
                    received += chunk  # the shed answer closes the connection
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        for thread, _ in lives:
            thread.join(30)
    head, _, content = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 "), received
    assert b"\r\nRetry-After: " in head, head
    assert int(re.search(rb"\r\nContent-Length: (\d+)", head)[1]) > 0, head  # GET's length
    assert content == b"", received


def test_a_request_abandoned_in_the_queue_is_dropped_not_shed(tmp_path: Path) -> None:
    """A create whose client closed while it waited for a thread reaches QUEUE_TIMEOUT:
    it is dropped as a 499 (client_gone), as a thread would drop it, not counted as a 503
    the server sent to nobody (it was: one queue_timeout shed, no client_gone)."""
    db = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        **ABANDONING,
        "DB_STATEMENT_TIMEOUT": "6",
        "QUEUE_TIMEOUT": "1",
        "THREADS": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    path = f"/api/v1/contents/{CONTENT}/comments"
    body = json.dumps({"body": "abandoned"}).encode()
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert requests.post(service.base + path, json={"body": "before"}, timeout=10).ok
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            lives = [
                _in_thread(
                    lambda i=i: requests.post(
                        service.base + path, json={"body": f"held {i}"}, timeout=30
                    )
                )
                for i in range(2)
            ]
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 2, 10)
            with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
                sock.sendall(
                    f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                time.sleep(0.3)  # read by the worker and queued before the client leaves
            assert wait_until(lambda: '"error":"client_gone"' in service.log(), 4)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        for thread, _ in lives:
            thread.join(30)
        log_text = service.log()
    assert log_text.count('"error":"client_gone"') == 1, log_text[-3000:]
    assert '"error":"queue_timeout"' not in log_text, log_text[-3000:]
    assert stored_bodies(env["DATABASE_URL"]) == Counter({"before": 1, "held 0": 1, "held 1": 1})


def test_a_stop_answers_requests_still_waiting_for_a_thread(tmp_path: Path) -> None:
    """SIGTERM while both threads are held past GRACEFUL_TIMEOUT and a read waits for a
    thread (QUEUE_TIMEOUT=0: never shed): the read, never started, gets the JSON 503 that
    says "retry", as a request still being read does. It had its connection closed without
    an answer, and the stop's log line did not count it."""
    db = tmp_path / "comments.db"
    env = {
        "DATABASE_URL": f"sqlite:///{db}",
        **ABANDONING,
        "DB_STATEMENT_TIMEOUT": "20",
        "QUEUE_TIMEOUT": "0",
        "THREADS": "2",
        "GRACEFUL_TIMEOUT": "3",
        "SHUTDOWN_DELAY": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    path = f"/api/v1/contents/{CONTENT}/comments"

    def call(method: str, **kwargs: Any) -> requests.Response | str:
        try:
            return requests.request(method, service.base + path, timeout=30, **kwargs)
        except requests.RequestException as exc:  # a held create is cut off by the stop
            return repr(exc)

    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert requests.post(service.base + path, json={"body": "before"}, timeout=10).ok
        holder = sqlite3.connect(db, isolation_level=None, timeout=5)
        try:
            holder.execute("BEGIN IMMEDIATE")
            lives = [
                _in_thread(lambda i=i: call("POST", json={"body": f"held {i}"})) for i in range(2)
            ]
            assert wait_until(lambda: requests_in_flight(tmp_path / "metrics") == 2, 10)
            queued, result = _in_thread(lambda: call("GET"))
            time.sleep(0.5)  # read and queued behind the two held creates
            service.proc.send_signal(signal.SIGTERM)
            queued.join(30)
            service.proc.wait(30)
        finally:
            holder.close()
        for thread, _ in lives:
            thread.join(30)
    answer = result["value"]
    assert isinstance(answer, requests.Response), answer
    assert answer.status_code == 503, answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert "shutting down" in answer.json()["detail"]


def test_a_live_request_behind_abandoned_ones_is_answered_next(tmp_path: Path) -> None:
    """The kubelet's /healthz queued behind requests whose clients gave up, with the lock
    still held: it is answered right after the slow answer, not after each abandoned create
    has waited out DB_STATEMENT_TIMEOUT in turn (which restarted pods by liveness)."""
    db = tmp_path / "comments.db"
    env = {"DATABASE_URL": f"sqlite:///{db}", **ABANDONING}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")  # read mid-request
    path = f"/api/v1/contents/{CONTENT}/comments"
    with ServiceProcess(env, tmp_path, workers=1) as service:
        with _abandoned_behind_a_held_lock(service, db, path, 3) as (live, held):
            prober, probe = _in_thread(
                lambda: requests.get(f"{service.base}/healthz", timeout=30).status_code
            )
            live.join(30)
            prober.join(10)  # each abandoned create served would wait 1.2 s: 3.6 s in all
            answered_while_held = not prober.is_alive()
        prober.join(30)
        assert held["value"].status_code == 503
        assert probe["value"] == 200
        assert answered_while_held
        assert probe["at"] - held["at"] < 1.0, probe["at"] - held["at"]


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_secret_file_emptied_after_the_start_never_stops_workers_being_replaced(
    tmp_path: Path, threads: str
) -> None:
    """A *_FILE secret emptied or removed while serving (a Secret key deleted) is the
    next start's problem, not the running server's: its workers are built from the
    settings the master read. Each new worker read them again from the environment and
    refused the empty file: sync workers in a crash loop (the master's liveness still 200),
    and with THREADS > 1 the master itself exited."""
    salt = tmp_path / "salt"
    salt.write_text("a-salt-of-the-logs-client-ip-hashes\n", encoding="utf-8")
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'comments.db'}",
        "RATELIMIT_ENABLED": "false",
        "CLIENT_IP_HASH_SALT_FILE": str(salt),
        "THREADS": threads,
    }
    service = ServiceProcess(env, tmp_path, workers=2).start()
    assert service.proc is not None
    master = service.proc.pid
    try:
        salt.write_text("", encoding="utf-8")
        workers = children(master)
        for worker in workers:
            os.kill(worker, signal.SIGKILL)
        wait_replaced(master, set(workers), 2, set(workers))
        post(service.base, 2, "after-secret-emptied")
        assert service.proc.poll() is None, service.log()[-3000:]
    finally:
        service.stop()
    assert "SettingsError" not in service.log()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_readiness_and_metrics_answer_within_the_statement_timeout_on_a_frozen_database(
    postgres_url: str, tmp_path: Path, threads: str
) -> None:
    """A frozen backend (SIGSTOP: its kernel still acknowledges, so neither its
    statement_timeout nor TCP ends the wait) held /metrics, which runs the readiness
    check, and /readyz until WORKER_TIMEOUT: a 500 and a worker aborted per scrape, and
    Prometheus (scrape_timeout 10 s) saw the target down (CommentsApiDown, which holds back
    the database alerts). Both now answer within DB_STATEMENT_TIMEOUT: /metrics 200 with
    comments_api_ready 0, /readyz a JSON 503; a probe after the check's deadline checks
    again (on a fresh connection, which the frozen host does not answer either), and one
    while that check still connects answers at once; ready again once the host resumes,
    without a restart."""

    env = {
        "DATABASE_URL": postgres_url,
        "RATELIMIT_ENABLED": "false",
        "THREADS": threads,
        "WORKER_TIMEOUT": "20",
        "DB_STATEMENT_TIMEOUT": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        (worker,) = children(service.proc.pid)
        post(service.base, 1, "warm")  # the worker's pooled connection exists
        with _frozen_backends(postgres_url, host=True) as resume:
            started = time.monotonic()
            scraped = requests.get(service.base + "/metrics", timeout=15)
            scrape_took = time.monotonic() - started
            started = time.monotonic()
            probed = requests.get(service.base + "/readyz", timeout=15)
            probe_took = time.monotonic() - started
            started = time.monotonic()
            again = requests.get(service.base + "/readyz", timeout=15)
            again_took = time.monotonic() - started
            resume()
            assert wait_until(
                lambda: requests.get(service.base + "/readyz", timeout=5).status_code == 200, 10
            )
            after = scrape(service.base)
        assert children(service.proc.pid) == [worker]  # no worker aborted
    assert scraped.status_code == 200, scraped.text[:300]
    assert "comments_api_ready 0.0" in scraped.text
    assert scrape_took < 5  # DB_STATEMENT_TIMEOUT (1 s), far from WORKER_TIMEOUT
    assert probed.status_code == 503
    assert probed.json() == {"status": "unavailable", "reason": "database not answering"}
    assert probe_took < 2  # a new check, given up at DB_STATEMENT_TIMEOUT (1 s)
    assert again.json() == {"status": "unavailable", "reason": "database not answering"}
    assert again_took < 0.5  # that check still connecting: no other started
    assert value(after, "comments_api_ready") == 1


@pytest.mark.parametrize("threads", ["1", "4"])
def test_readiness_checks_again_when_one_check_never_ends(
    postgres_url: str, tmp_path: Path, threads: str
) -> None:
    """The backend of a readiness check frozen for good while the rest of the database
    answers: every later probe shared that one check and answered "database not answering",
    so the instance stayed out of service while its writes succeeded (a probe held to
    WORKER_TIMEOUT, before, got its worker replaced). At its deadline (DB_STATEMENT_TIMEOUT)
    the stuck check is cut off and the next probe checks again, on a fresh connection."""
    import psycopg

    env = {
        "DATABASE_URL": postgres_url,
        "RATELIMIT_ENABLED": "false",
        "THREADS": threads,
        "WORKER_TIMEOUT": "3",
        "DB_STATEMENT_TIMEOUT": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    pg_port = int(plain.rsplit(":", 1)[1].split("/", 1)[0])
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        (worker,) = children(service.proc.pid)
        post(service.base, 1, "warm")
        with psycopg.connect(plain, autocommit=True) as admin:
            backends = [
                pid
                for (pid,) in admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                    (plain.rsplit("/", 1)[1],),
                ).fetchall()
            ]
        for pid in backends:
            os.kill(pid, signal.SIGSTOP)
        try:
            probed = requests.get(service.base + "/readyz", timeout=15)
            assert probed.json()["reason"] == "database not answering"
            # The check's backend is the frozen one with a query unread: it stays frozen.
            read = server_sockets_read(pg_port)
            owners = socket_owners(backends)
            (stuck,) = {
                owners[inode]
                for port, inode in server_socket_inodes(pg_port).items()
                if port not in read and inode in owners
            }
            for pid in backends:
                if pid != stuck:
                    os.kill(pid, signal.SIGCONT)
            post(service.base, 1, "while-stuck")  # the database answers
            assert wait_until(
                lambda: requests.get(service.base + "/readyz", timeout=5).status_code == 200, 20
            ), requests.get(service.base + "/readyz", timeout=5).text
        finally:
            for pid in backends:
                os.kill(pid, signal.SIGCONT)
        assert children(service.proc.pid) == [worker]  # no worker replaced
    assert "the check is cut off; the next probe checks again" in service.log()


def _freeze_the_next_readiness_check(
    base: str, admin: Any, database: str, frozen: list[int], within: float = 15
) -> None:
    """Probe /readyz until a readiness check's backend waits for alembic_version (which the
    caller holds locked), and freeze (SIGSTOP) that backend there: a backend stuck for good
    (uninterruptible IO, a stopped process) while serving the check. Its statement_timeout
    cannot fire while it is stopped, and its kernel acknowledges what is sent to it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        prober = threading.Thread(
            target=lambda: requests.get(base + "/readyz", timeout=10), daemon=True
        )
        prober.start()
        look_until = time.monotonic() + 1.5
        while time.monotonic() < look_until:
            waiting = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                " AND wait_event_type = 'Lock' AND query LIKE %s AND pid <> ALL(%s)",
                (database, "%alembic_version%", frozen),
            ).fetchall()
            if waiting:
                os.kill(waiting[0][0], signal.SIGSTOP)
                frozen.append(waiting[0][0])
                prober.join(10)
                return
            time.sleep(0.01)
        prober.join(10)
    raise AssertionError(f"no readiness check reached the database within {within}s")


@pytest.mark.parametrize("threads", ["1", "4"])
def test_readiness_recovers_when_two_checks_stay_frozen(
    postgres_url: str, tmp_path: Path, threads: str
) -> None:
    """The backends of two readiness checks in a row frozen for good while the rest of the
    database answers. With one check left behind at a time (1eb2da9), the second one
    stuck meant no check ever started again: /readyz stayed 503 "database not answering"
    while writes succeeded, each stuck check holding a pooled connection. A check is now
    cut off at its deadline (its database socket shut down, so its thread returns and its
    connection is dropped): the next probe checks on a fresh connection and answers 200."""
    import psycopg

    env = {
        "DATABASE_URL": postgres_url,
        "RATELIMIT_ENABLED": "false",
        "THREADS": threads,
        "WORKER_TIMEOUT": "3",
        "DB_STATEMENT_TIMEOUT": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    database = plain.rsplit("/", 1)[1]
    frozen: list[int] = []
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        (worker,) = children(service.proc.pid)
        post(service.base, 1, "warm")
        try:
            with (
                psycopg.connect(plain, autocommit=True) as admin,
                psycopg.connect(plain) as locker,
            ):
                locker.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
                for _ in range(2):
                    _freeze_the_next_readiness_check(service.base, admin, database, frozen)
                locker.rollback()  # the database answers again, but for those two backends
            assert len(set(frozen)) == 2
            post(service.base, 1, "while-frozen")
            started = time.monotonic()
            assert wait_until(
                lambda: requests.get(service.base + "/readyz", timeout=5).status_code == 200, 12
            ), requests.get(service.base + "/readyz", timeout=5).text
            recovered_in = time.monotonic() - started
            # The checks cut off gave their connections up: none reaches a frozen backend.
            pg_port = int(plain.rsplit(":", 1)[1].split("/", 1)[0])
            assert not _backends_reached(pg_port, worker, frozen)
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)
        assert children(service.proc.pid) == [worker]  # no worker replaced
    assert recovered_in < 2 * 2 + 1  # within a probe or two (DB_STATEMENT_TIMEOUT each)


def _backends_reached(port: int, pid: int, backends: list[int]) -> set[int]:
    """Those of ``backends`` (PostgreSQL's, on 127.0.0.1:``port``) that process ``pid``
    holds a connection to."""
    owned = set(socket_owners([pid]))
    client_ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and int(fields[9]) in owned:
            client_ports.add(int(fields[1].split(":")[1], 16))
    servers = server_socket_inodes(port)
    owners = socket_owners(backends)
    return {owners[servers[c]] for c in client_ports if servers.get(c) in owners}


def _connections_to(port: int, pid: int) -> int:
    """How many TCP connections to 127.0.0.1:``port`` process ``pid`` holds open."""
    owned = set(socket_owners([pid]))
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and int(fields[9]) in owned:
            count += 1
    return count


@pytest.mark.parametrize("threads", ["1", "4"])
def test_readiness_holds_few_threads_and_connections_over_many_probes_on_a_frozen_host(
    postgres_url: str, pg_server: Any, tmp_path: Path, threads: str
) -> None:
    """50 probes while the database host is frozen whole (its backends and the postmaster:
    a new connection's handshake completes in the kernel, then nothing answers). Each check
    is given up at its deadline; one that cannot be cut off (still connecting) keeps later
    probes from starting another until its connect_timeout ends it, so the worker's threads
    and database connections stay within two readiness checks, and every probe answers
    within DB_STATEMENT_TIMEOUT. Ready again soon after the host resumes."""
    env = {
        "DATABASE_URL": postgres_url,
        "RATELIMIT_ENABLED": "false",
        "THREADS": threads,
        "WORKER_TIMEOUT": "20",
        "DB_STATEMENT_TIMEOUT": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    with ServiceProcess(env, tmp_path, workers=1) as service:
        assert service.proc is not None
        (worker,) = children(service.proc.pid)
        post(service.base, 1, "warm")
        assert requests.get(service.base + "/readyz", timeout=5).status_code == 200
        threads_before = len(list(Path(f"/proc/{worker}/task").iterdir()))
        connections_before = _connections_to(pg_server.port, worker)
        most_threads = most_connections = 0
        answers: list[tuple[int, float]] = []
        with _frozen_backends(postgres_url, host=True) as resume:
            for _ in range(50):
                started = time.monotonic()
                status = requests.get(service.base + "/readyz", timeout=10).status_code
                answers.append((status, time.monotonic() - started))
                most_threads = max(most_threads, len(list(Path(f"/proc/{worker}/task").iterdir())))
                most_connections = max(most_connections, _connections_to(pg_server.port, worker))
                time.sleep(0.05)
            resume()
            assert wait_until(
                lambda: requests.get(service.base + "/readyz", timeout=5).status_code == 200, 10
            ), service.log()[-2000:]
        assert children(service.proc.pid) == [worker]
    assert {status for status, _ in answers} == {503}
    assert max(took for _, took in answers) < 1.5  # DB_STATEMENT_TIMEOUT (1 s)
    # The check in progress and the one left behind, at most: not one per probe.
    assert most_threads <= threads_before + 2, (threads_before, most_threads)
    assert most_connections <= connections_before + 2, (connections_before, most_connections)
