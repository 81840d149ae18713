"""Fault drills against a real `comments-api serve`: the database goes away, slows down or
runs out of space while a bounded write load runs on loopback.

Every drill ends with the same ledger check: each comment acknowledged with a 2xx is
stored exactly once, nothing unacknowledged is stored twice, and every refusal was a JSON
503/507 with Retry-After (never a 500, never a dropped connection).
"""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient
from sqlalchemy import select

from comments_api.app import create_app
from comments_api.identity.credentials import SCOPE_MODERATE, generate_api_key
from comments_api.settings import Settings
from comments_api.store.repository import comments, make_engine, migrate
from comments_api.web.common import EXTENSION_KEY

from .support import (
    PostgresServer,
    ServiceProcess,
    requests_in_flight,
    small_tmpfs,
    wait_until,
)
from .test_database_error_metrics import database_errors, scraped

WRITE_TIMEOUT = 10.0


class Load:
    """Writers posting unique comments back to back, bounded in count and time."""

    def __init__(
        self, base: str, content: str, writers: int = 2, max_requests: int = 1500, seconds=60.0
    ) -> None:
        self.url = f"{base}/api/v1/contents/{content}/comments"
        self.records: list[tuple[str, int | str, requests.Response | None]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._budget = max_requests
        self._deadline = time.monotonic() + seconds
        self._threads = [
            threading.Thread(target=self._run, args=(w,), daemon=True) for w in range(writers)
        ]

    def _take(self) -> bool:
        with self._lock:
            if self._budget <= 0:
                return False
            self._budget -= 1
            return True

    def _run(self, writer: int) -> None:
        n = 0
        session = requests.Session()
        while not self._stop.is_set() and time.monotonic() < self._deadline and self._take():
            body = f"drill w{writer} n{n}"
            n += 1
            try:
                response = session.post(
                    self.url, json={"body": body, "author_name": "drill"}, timeout=WRITE_TIMEOUT
                )
                outcome: int | str = response.status_code
            except requests.RequestException as exc:
                response, outcome = None, f"{exc.__class__.__name__}"
            with self._lock:
                self.records.append((body, outcome, response))
            time.sleep(0.01)

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> list[tuple[str, int | str, requests.Response | None]]:
        self._stop.set()
        for t in self._threads:
            t.join(WRITE_TIMEOUT + 5)
        return self.records


def stored_bodies(url: str, content: str) -> Counter[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(comments.c.body).where(comments.c.content_id == content))
            return Counter(r[0] for r in rows)
    finally:
        engine.dispose()


def assert_refusal(response: requests.Response, statuses: tuple[int, ...] = (503,)) -> None:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert int(response.headers["Retry-After"]) > 0
    assert response.json()["detail"]


def check_ledger(
    records, url: str, content: str, refusals: tuple[int, ...] = (503,)
) -> tuple[int, int]:
    """No acknowledged comment lost, nothing duplicated, every refusal clean."""
    stored = stored_bodies(url, content)
    acked = refused = 0
    for body, outcome, response in records:
        assert outcome in (201, *refusals), f"{body}: {outcome}"
        if outcome == 201:
            acked += 1
            assert stored[body] == 1, f"acknowledged {body!r} stored {stored[body]} times"
        else:
            refused += 1
            assert response is not None
            assert_refusal(response, refusals)
    assert all(n == 1 for n in stored.values()), "a comment was stored twice"
    assert set(stored) <= {body for body, _, _ in records}
    return acked, refused


# --- PostgreSQL restarted, then down for several seconds -----------------------------


def test_postgres_restart_and_outage_under_write_load(tmp_path):
    pg = PostgresServer()
    try:
        url = pg.create_database("drill")
        env = {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false", "LOG_LEVEL": "info"}
        with ServiceProcess(env, tmp_path, workers=2) as service:
            # ~10 s of drill at up to ~200 writes/s: a budget the load cannot spend before
            # the writes after recovery, which the check below reads.
            load = Load(service.base, "pg-drill", max_requests=4000).start()
            time.sleep(1.0)
            pg.halt()
            pg.resume()  # a restart: connections in the pools are all dead now
            time.sleep(1.5)
            pg.halt()
            down = time.monotonic()
            time.sleep(1.0)
            # While it is down: clean JSON 503s with Retry-After, and readiness says why.
            probe = requests.post(
                f"{service.base}/api/v1/contents/pg-drill/comments",
                json={"body": "probe while down"},
                timeout=WRITE_TIMEOUT,
            )
            assert_refusal(probe)
            # Reads too: each worker's marker connection reconnects, and fails, cleanly.
            for route in ("/api/v1/contents/pg-drill/comments", "/api/comment/list/pg-drill"):
                for _ in range(4):  # both workers, on their kept and their fresh connections
                    read = requests.get(f"{service.base}{route}", timeout=WRITE_TIMEOUT)
                    assert read.status_code == 503, (route, read.status_code, read.text[:200])
                    assert int(read.headers["Retry-After"]) > 0
            ready = requests.get(f"{service.base}/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["reason"] == "database unreachable"
            assert requests.get(f"{service.base}/healthz", timeout=5).status_code == 200
            time.sleep(max(0.0, 4.0 - (time.monotonic() - down)))  # ~4 s down in all
            pg.resume()
            # Recovery without restarting the app: writes and readiness come back alone.
            assert wait_until(
                lambda: requests.get(f"{service.base}/readyz", timeout=5).status_code == 200, 15
            )
            recovered = time.monotonic()
            since_recovery = len(load.records)
            time.sleep(1.5)
            records = load.stop()
            assert service.proc is not None
            assert service.proc.poll() is None, "the app died with its database"
        acked, refused = check_ledger(records, url, "pg-drill")
        assert refused > 0, "the outage was never seen: the drill proved nothing"
        late = [o for body, o, _ in records[since_recovery:]]
        assert 201 in late, f"writes did not recover after {recovered - down:.1f}s: {late[-10:]}"
        assert acked > 20
    finally:
        pg.stop()


# --- a slow database: a held lock; DB_STATEMENT_TIMEOUT answers quickly ---------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_held_lock_times_out_quickly_and_reads_keep_answering(backend, request, tmp_path):
    if backend == "sqlite":
        db_path = tmp_path / "comments.db"
        url = f"sqlite:///{db_path}"
    else:
        url = request.getfixturevalue("postgres_url")
    env = {
        "DATABASE_URL": url,
        "RATELIMIT_ENABLED": "false",
        "DB_STATEMENT_TIMEOUT": "1",
        "LOG_LEVEL": "info",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    with ServiceProcess(env, tmp_path, workers=2) as service:
        write_url = f"{service.base}/api/v1/contents/slow/comments"
        first = requests.post(write_url, json={"body": "before the lock"}, timeout=10)
        assert first.status_code == 201
        # Another client holds the write lock on comments and does not let go.
        if backend == "sqlite":
            holder = sqlite3.connect(db_path, isolation_level=None, timeout=5)
            holder.execute("BEGIN IMMEDIATE")
        else:
            import psycopg

            holder = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
            holder.execute("LOCK TABLE comments IN EXCLUSIVE MODE")  # reads still allowed
        try:
            outcome: dict[str, object] = {}

            def write() -> None:
                started = time.monotonic()
                outcome["response"] = requests.post(
                    write_url, json={"body": "during the lock"}, timeout=10
                )
                outcome["seconds"] = time.monotonic() - started

            writer = threading.Thread(target=write)
            writer.start()
            # The write is now waiting on the lock in one worker; unless a stall outlasted
            # its 1 s wait (the reads then show less, but nothing fails for it).
            assert wait_until(
                lambda: requests_in_flight(tmp_path / "metrics") == 1 or "seconds" in outcome,
                10,
            )
            for _ in range(5):
                started = time.monotonic()
                listed = requests.get(write_url, timeout=5)
                assert listed.status_code == 200
                assert [c["body"] for c in listed.json()["items"]] == ["before the lock"]
                assert requests.get(f"{service.base}/healthz", timeout=5).status_code == 200
                assert time.monotonic() - started < 0.9, "reads waited on the write lock"
            writer.join(15)
            response = outcome["response"]
            assert isinstance(response, requests.Response)
            assert_refusal(response)
            # DB_STATEMENT_TIMEOUT=1, not the 5 s default, and not the 30 s worker timeout.
            assert 0.8 < float(outcome["seconds"]) < 3.0, outcome["seconds"]  # type: ignore[arg-type]
        finally:
            holder.rollback()
            holder.close()
        after = requests.post(write_url, json={"body": "after the lock"}, timeout=10)
        assert after.status_code == 201
        assert "database timeout" in service.log()
        # Summed over both workers, whichever one answered the write and the scrape.
        counted = database_errors(requests.get(f"{service.base}/metrics", timeout=5).text)
        assert +counted == Counter({"timeout": 1}), counted
    assert stored_bodies(url, "slow") == Counter({"before the lock": 1, "after the lock": 1})


# --- disk full on the SQLite volume ----------------------------------------------------


def _fill(path: Path) -> None:
    """Write zeros until the volume is full: big chunks first, then a page at a time."""
    for size in (256 * 1024, 4096):
        with open(path, "ab", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


def test_disk_full_on_the_sqlite_volume(tmp_path):
    with small_tmpfs(tmp_path / "volume", "24m") as volume:
        url = f"sqlite:///{volume / 'comments.db'}"
        env = {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false", "LOG_LEVEL": "info"}
        records = []
        with ServiceProcess(env, tmp_path, workers=2) as service:
            write_url = f"{service.base}/api/v1/contents/disk/comments"

            def post(body: str) -> requests.Response:
                response = requests.post(
                    write_url, json={"body": body, "author_name": "disk"}, timeout=10
                )
                records.append((body, response.status_code, response))
                return response

            for i in range(20):
                assert post(f"before {i} " + "x" * 400).status_code == 201
            filler = volume / "filler"
            _fill(filler)
            during = [post(f"full {i} " + "x" * 400) for i in range(12)]
            refused = [r for r in during if r.status_code != 201]
            assert refused, "no write failed on a full volume: the drill proved nothing"
            # Every refusal is a 507, and with the volume full nothing gets through for long
            # (space a checkpoint gives back may take a write or two).
            assert all(r.status_code in (201, 507) for r in during)
            assert all(r.status_code == 507 for r in during[-6:])
            assert "storage space" in refused[0].json()["detail"]
            ready = requests.get(f"{service.base}/readyz", timeout=5)
            assert ready.status_code == 503
            assert "volume is full" in ready.json()["reason"]
            # One per 507, summed over both workers; the failed probe adds nothing.
            counted = database_errors(requests.get(f"{service.base}/metrics", timeout=5).text)
            assert +counted == Counter({"disk_full": len(refused)}), counted
            listed = requests.get(f"{write_url}?limit=100", timeout=5)
            assert listed.status_code == 200  # reads keep working
            assert len(listed.json()["items"]) == 20 + sum(r.status_code == 201 for r in during)
            assert "database disk full" in service.log()

            # Free 3 MiB only: enough for a sustained run of writes, not just a few.
            os.truncate(filler, filler.stat().st_size - 3 * 1024 * 1024)
            assert wait_until(
                lambda: requests.get(f"{service.base}/readyz", timeout=5).status_code == 200, 10
            )
            statuses = Counter(post(f"after {i} " + "x" * 400).status_code for i in range(200))
            assert statuses == Counter({201: 200}), statuses
            filler.unlink()
            assert post("all space back").status_code == 201
        check_ledger(records, url, "disk", refusals=(507,))


# --- PostgreSQL refuses a write for its own state: a standby, a sequence behind max(id) --


def _app_on(url: str, **overrides: object) -> FlaskClient:
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    settings = replace(Settings(database_url=url, ratelimit_enabled=False), **overrides)
    return create_app(settings).test_client()


def _moderator_key(client: FlaskClient) -> str:
    new = generate_api_key()
    services = client.application.extensions[EXTENSION_KEY]
    services.repo.add_api_key(new.key_id, "drill-moderator", new.key_hash, [SCOPE_MODERATE])
    return new.key


def _database_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _stored_count(url: str) -> int:
    return sum(stored_bodies(url, "ro").values())


def test_a_read_only_database_refuses_writes_with_503_and_reads_go_on(
    pg_server: PostgresServer, postgres_url: str
):
    # After a failover to a replica (or default_transaction_read_only=on) every write is
    # refused with read_only_sql_transaction, which psycopg raises as an InternalError:
    # creates, deletes and even a moderator's read (its key's last_used_at) were 500s.
    client = _app_on(postgres_url)
    key = _moderator_key(client)
    auth = {"Authorization": f"Bearer {key}"}
    write_url = "/api/v1/contents/ro/comments"
    created = client.post(write_url, json={"body": "before the failover"})
    assert created.status_code == 201
    comment_id = created.get_json()["id"]
    database = _database_of(postgres_url)
    with pg_server.superuser() as conn:
        conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = on')
    pg_server.end_sessions(database)  # new sessions come up read-only, as on a standby
    before = scraped(client)
    try:
        refusals = [
            client.post(write_url, json={"body": "on the standby"}),
            client.post(
                write_url, json={"body": "keyed on the standby"}, headers={"Idempotency-Key": "k1"}
            ),
            client.delete(f"/api/v1/comments/{comment_id}", headers=auth),
        ]
        for refused in refusals:
            assert refused.status_code == 503, refused.get_json()
            assert refused.content_type.startswith("application/problem+json")
            assert int(refused.headers["Retry-After"]) > 0
            assert refused.get_json()["detail"]
        listed = client.get(write_url)
        assert listed.status_code == 200
        assert [c["body"] for c in listed.get_json()["items"]] == ["before the failover"]
        # A moderator's read notes the key's use: best effort, the read still answers.
        pending = client.get("/api/v1/moderation/comments?status=pending", headers=auth)
        assert pending.status_code == 200, pending.get_json()
        # Refused, not unavailable: waiting will not turn a standby into a primary.
        assert scraped(client) - before == Counter({"refused": len(refusals)})
    finally:
        with pg_server.superuser() as conn:
            conn.execute("SET default_transaction_read_only = off")
            conn.execute(f'ALTER DATABASE "{database}" RESET default_transaction_read_only')
        pg_server.end_sessions(database)
    assert _stored_count(postgres_url) == 1  # nothing half-written
    after = client.post(write_url, json={"body": "primary again"})
    assert after.status_code == 201, after.get_json()


def test_a_sequence_behind_max_id_is_a_503_that_names_the_constraint(
    pg_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
):
    # An id sequence moved behind max(id) by hand (or a restore) hands out taken ids: the
    # INSERT's unique violation was a 500 with nothing for the operator to act on.
    client = _app_on(postgres_url)
    write_url = "/api/v1/contents/ro/comments"
    for n in range(3):
        assert client.post(write_url, json={"body": f"first {n}"}).status_code == 201
    database = _database_of(postgres_url)
    with pg_server.superuser(database) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('comments', 'id'), 1)")
    caplog.set_level(logging.ERROR, logger="comments_api.store.repository")
    before = scraped(client)
    refused = client.post(write_url, json={"body": "taken id"})
    keyed = client.post(
        write_url, json={"body": "taken id, keyed"}, headers={"Idempotency-Key": "k"}
    )
    for response in (refused, keyed):
        assert response.status_code == 503, response.get_json()
        assert response.content_type.startswith("application/problem+json")
        assert int(response.headers["Retry-After"]) > 0
    assert "pk_comments" in caplog.text
    assert "setval" in caplog.text
    assert scraped(client) - before == Counter({"refused": 2})
    assert _stored_count(postgres_url) == 3
    with pg_server.superuser(database) as conn:  # nothing half-written: no key kept
        (kept,) = conn.execute("SELECT count(*) FROM idempotency_keys").fetchone()
        assert kept == 0
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('comments', 'id'), "
            "(SELECT max(id) FROM comments))"
        )
    again = client.post(
        write_url, json={"body": "taken id, keyed"}, headers={"Idempotency-Key": "k"}
    )
    assert again.status_code == 201, again.get_json()


def test_an_audit_log_sequence_behind_max_id_is_a_503_not_already_banned(
    pg_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
):
    # Every moderation action writes an audit row with an id from its sequence. Set behind
    # max(id), a ban answered 200 "created": false (as if already banned) with nothing
    # stored, and a delete was a 500.
    client = _app_on(postgres_url)
    auth = {"Authorization": f"Bearer {_moderator_key(client)}"}
    write_url = "/api/v1/contents/ro/comments"
    ids = [client.post(write_url, json={"body": f"c{n}"}).get_json()["id"] for n in range(2)]
    bans_url = "/api/v1/moderation/bans"
    assert client.post(bans_url, json={"email": "a@example.com"}, headers=auth).status_code == 201
    assert client.delete(f"/api/v1/comments/{ids[0]}", headers=auth).status_code == 204
    database = _database_of(postgres_url)
    with pg_server.superuser(database) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('audit_log', 'id'), 1, false)")
    caplog.set_level(logging.ERROR, logger="comments_api.store.repository")
    before = scraped(client)
    refusals = [
        client.post(bans_url, json={"email": "b@example.com"}, headers=auth),
        client.delete(f"/api/v1/comments/{ids[1]}", headers=auth),
    ]
    for refused in refusals:
        assert refused.status_code == 503, refused.get_json()
        assert refused.content_type.startswith("application/problem+json")
        assert int(refused.headers["Retry-After"]) > 0
    assert "pk_audit_log" in caplog.text
    assert scraped(client) - before == Counter({"refused": len(refusals)})
    assert "setval(pg_get_serial_sequence('audit_log'" in caplog.text
    banned = client.get(bans_url, headers=auth).get_json()["items"]
    assert [b["target"] for b in banned] == ["email:a@example.com"]
    assert client.get(f"/api/v1/comments/{ids[1]}").get_json()["body"] == "c1"


def test_a_change_marker_read_that_times_out_is_not_tried_twice(
    pg_server: PostgresServer, postgres_url: str
):
    # The read cache's marker read retried any error once on a fresh connection: a list
    # blocked by a lock waited out DB_STATEMENT_TIMEOUT twice before its 503.
    client = _app_on(postgres_url, db_statement_timeout=1.0)
    write_url = "/api/v1/contents/ro/comments"
    assert client.post(write_url, json={"body": "listed"}).status_code == 201
    assert client.get(write_url).status_code == 200  # the worker's marker connection is kept
    holder = pg_server.superuser(_database_of(postgres_url))
    holder.autocommit = False
    try:
        holder.execute("LOCK TABLE content_versions IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        blocked = client.get(write_url)
        waited = time.monotonic() - started
        assert blocked.status_code == 503, blocked.get_json()
        assert int(blocked.headers["Retry-After"]) > 0
        assert 0.8 < waited < 1.8, waited
    finally:
        holder.rollback()
        holder.close()
    listed = client.get(write_url)
    assert listed.status_code == 200
    assert [c["body"] for c in listed.get_json()["items"]] == ["listed"]


# --- PostgreSQL restarted, or every session ended, between requests -------------------


def test_after_a_restart_or_ended_sessions_the_next_requests_answer_and_lists_are_current(
    tmp_path,
):
    # Each worker keeps a change-marker connection for the read cache and a pool: both die
    # with a restart. The next list must not serve the page cached before it (a comment
    # written meanwhile by another client must show) and nothing answers 500 or 503.
    pg = PostgresServer()
    try:
        url = pg.create_database("restart")
        env = {"DATABASE_URL": url, "RATELIMIT_ENABLED": "false", "LOG_LEVEL": "info"}
        with ServiceProcess(env, tmp_path, workers=2) as service:
            write_url = f"{service.base}/api/v1/contents/rs/comments"
            expected = []
            for n in range(3):
                body = f"before {n}"
                assert requests.post(write_url, json={"body": body}, timeout=10).status_code == 201
                expected.append(body)
            for _ in range(6):  # both workers cache the page
                assert requests.get(write_url, timeout=10).status_code == 200

            def written_elsewhere(body: str) -> None:
                with pg.superuser("restart") as conn:
                    conn.execute(
                        "INSERT INTO comments (content_id, body, status, created_at, updated_at)"
                        " VALUES ('rs', %s, 'published', now(), now())",
                        (body,),
                    )
                expected.append(body)

            def every_worker_current() -> None:
                for _ in range(6):
                    listed = requests.get(write_url, timeout=10)
                    assert listed.status_code == 200, (listed.status_code, listed.text[:300])
                    assert [c["body"] for c in listed.json()["items"]] == expected

            pg.halt()
            pg.resume()
            written_elsewhere("after the restart")
            every_worker_current()
            created = requests.post(write_url, json={"body": "created after"}, timeout=10)
            assert created.status_code == 201, created.text[:300]
            expected.append("created after")
            every_worker_current()

            with pg.superuser() as conn:  # a failover's or an operator's pg_terminate_backend
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = 'restart'"
                )
            written_elsewhere("after the sessions ended")
            every_worker_current()
            created = requests.post(write_url, json={"body": "created last"}, timeout=10)
            assert created.status_code == 201, created.text[:300]
            expected.append("created last")
            every_worker_current()
            assert "Traceback" not in service.log()
    finally:
        pg.stop()
