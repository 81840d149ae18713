"""Liveness vs readiness, as Kubernetes probes see them."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from comments_api.app import create_app
from comments_api.health import HealthService, Readiness
from comments_api.settings import Settings
from comments_api.store.repository import (
    Repository,
    head_revision,
    make_engine,
    migrate,
    shipped_revisions,
)
from comments_api.web.common import EXTENSION_KEY

from .support import free_port, wait_until


def test_liveness_makes_no_database_call():
    # Nothing listens on this port: any database access would fail or time out.
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    app = create_app(Settings(database_url=url))
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_ready_when_migrated(client):
    for path in ("/readyz", "/healthcheck"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json == {"status": "ready", "schema_revision": head_revision()}


def test_not_ready_before_migrations(database_url):
    client = create_app(Settings(database_url=database_url)).test_client()
    for path in ("/readyz", "/healthcheck"):
        response = client.get(path)
        assert response.status_code == 503
        assert "comments-api migrate" in response.json["reason"]
        assert response.headers["Retry-After"]
    engine = make_engine(database_url)
    migrate(engine)
    engine.dispose()
    assert client.get("/readyz").status_code == 200


def test_not_ready_when_schema_is_behind(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    from sqlalchemy import text

    older = sorted(shipped_revisions()[1])[0]  # one of this code's earlier ones
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": older})
    engine.dispose()
    response = create_app(Settings(database_url=database_url)).test_client().get("/readyz")
    assert response.status_code == 503
    assert older in response.json["reason"]
    assert response.json["reason"].endswith("run `comments-api migrate`")


def test_ready_when_schema_is_ahead(database_url, caplog):
    """A newer release's Job migrated (a revision this code does not ship): expand/contract
    keeps this code working on it, so the previous release's pods keep serving during the
    rollout, and turn ready again after `kubectl rollout undo`. They were all unready."""
    engine = make_engine(database_url)
    migrate(engine)
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfacef00d'"))
    engine.dispose()
    client = create_app(Settings(database_url=database_url)).test_client()
    with caplog.at_level(logging.INFO, logger="comments_api.health"):
        for _ in range(3):
            response = client.get("/readyz")
            assert response.status_code == 200, response.json
    assert response.json == {"status": "ready", "schema_revision": "f00dfacef00d"}
    ahead = [r for r in caplog.records if "is ahead of this code" in r.getMessage()]
    assert len(ahead) == 1  # once, not at every probe


def test_not_ready_when_database_unreachable_but_still_alive():
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    client = create_app(Settings(database_url=url, db_pool_timeout=1)).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "reason": "database unreachable"}
    assert client.get("/healthz").status_code == 200
    # A write while the database is down is a 503 problem, not a 500 or a stack trace.
    write = client.post("/api/v1/contents/1/comments", json={"body": "x"})
    assert write.status_code == 503
    assert write.mimetype == "application/problem+json"
    legacy = client.post(
        "/api/comment/new", json={"email": "a@example.com", "comment": "x", "content_id": 1}
    )
    assert legacy.status_code == 503
    assert legacy.json["status"] == "SERVICE-UNAVAILABLE"


def test_a_database_that_cannot_answer_is_not_called_unmigrated(postgres_url):
    """A revision query that fails for any reason but a missing table (here the statement
    timeout, behind a lock on alembic_version) was taken for "never migrated": readiness
    sent the operator to run `comments-api migrate` on a migrated, slow database."""
    engine = make_engine(postgres_url, statement_timeout=0.5)
    migrate(engine)
    health = HealthService(Repository(engine), head_revision(), None, timeout=5.0)
    holder = make_engine(postgres_url)
    try:
        with holder.begin() as conn:
            conn.exec_driver_sql("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
            stuck = health.readiness()
        assert not stuck.ready
        assert stuck.reason == "database unreachable", stuck.reason
        assert health.readiness() == Readiness(True, schema_revision=head_revision())
    finally:
        holder.dispose()
        engine.dispose()


def test_readiness_is_decided_without_flask(tmp_path):
    """HealthService alone, on a real SQLite database: the drain file (created by the
    server on SIGTERM) turns readiness off before anything else is asked, and a database
    one migration behind is named with the command that fixes it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'comments.db'}")
    migrate(engine)
    drain = tmp_path / "draining"
    health = HealthService(Repository(engine), head_revision(), str(drain))
    assert health.readiness() == Readiness(True, schema_revision=head_revision())
    drain.touch()
    assert health.readiness() == Readiness(False, "shutting down")
    drain.unlink()
    behind = HealthService(
        Repository(engine), "f" * 12, None, older_revisions=frozenset({head_revision()})
    ).readiness()
    assert not behind.ready
    assert behind.reason.endswith("this code needs ffffffffffff; run `comments-api migrate`")
    engine.dispose()


def test_an_exhausted_pool_is_a_503_whose_log_names_the_pool(tmp_path, caplog):
    """Every pooled connection in use (THREADS beyond DB_POOL_SIZE, a leak): the log said
    "database unavailable: TimeoutError", which sends the operator to the database."""
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path}/c.db", db_pool_size=1, db_pool_timeout=0.2)
    )
    client = app.test_client()
    engine = app.extensions[EXTENSION_KEY].repo.engine
    migrate(engine)
    with contextlib.ExitStack() as held, caplog.at_level(logging.ERROR):
        # The pool's size and its overflow, all checked out.
        for _ in range(engine.pool.size() + engine.pool._max_overflow):  # type: ignore[attr-defined]
            held.enter_context(engine.connect())
        response = client.get("/api/v1/contents/pool/comments")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"] == "2"
    (logged,) = [r.getMessage() for r in caplog.records if r.name == "comments_api.app"]
    assert logged.startswith(
        "database pool exhausted: no connection free within DB_POOL_TIMEOUT (0.2s), "
        "every one of DB_POOL_SIZE=1 (and the overflow) in use"
    )
    # With the connection back, the same request is served.
    assert client.get("/api/v1/contents/pool/comments").status_code == 200


def test_a_check_on_a_frozen_backend_is_cut_off_and_keeps_no_connection(postgres_url):
    """The backend serving a readiness check frozen for good (SIGSTOP: its statement_timeout
    cannot fire, its kernel acknowledges) while the rest of the database answers: the check
    held its pooled connection, and later checks shared it ("database not answering") for as
    long as it was frozen. At its deadline it is cut off (its socket shut down): its thread
    returns, its connection is dropped, and the next check, on a fresh one, answers."""
    import psycopg

    engine = make_engine(postgres_url)
    migrate(engine)
    health = HealthService(Repository(engine), head_revision(), None, timeout=1.0)
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    frozen: list[int] = []
    try:
        with (
            psycopg.connect(plain, autocommit=True) as admin,
            psycopg.connect(plain) as locker,
            ThreadPoolExecutor(1) as prober,
        ):
            locker.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
            first = prober.submit(health.readiness)
            deadline = time.monotonic() + 5
            while not frozen and time.monotonic() < deadline:
                frozen += [
                    pid
                    for (pid,) in admin.execute(
                        "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                        " AND wait_event_type = 'Lock' AND query LIKE %s",
                        (plain.rsplit("/", 1)[1], "%alembic_version%"),
                    ).fetchall()
                ]
                time.sleep(0.01)
            assert frozen, "the check never reached the database"
            for pid in frozen:
                os.kill(pid, signal.SIGSTOP)
            locker.rollback()  # the database answers, but for the frozen backend
            assert first.result(5) == Readiness(False, "database not answering")
        # A probe or a few (each bounded by its 1 s deadline, a loaded machine's connect
        # may take longer than one): a check on a fresh connection answers.
        ready = Readiness(True, schema_revision=head_revision())
        assert wait_until(lambda: health.readiness() == ready, 10)
        assert wait_until(lambda: engine.pool.checkedout() == 0, 2)  # none kept by a check
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        engine.dispose()


def test_a_backend_frozen_as_the_check_ends_its_transaction_is_cut_off_too(postgres_url):
    """The backend froze after answering the check's SELECT, before the ROLLBACK that ends
    its transaction: that round trip ran as the connection went back to the pool, after
    the check had let go of its socket, so it could not be cut off. Given up and left
    behind, it held every later probe to "database not answering" for as long as the
    backend stayed frozen, the database answering meanwhile."""
    from sqlalchemy import event

    engine = make_engine(postgres_url)
    migrate(engine)
    health = HealthService(Repository(engine), head_revision(), None, timeout=1.0)
    frozen: list[int] = []

    def freeze(conn):  # ConnectionEvents.rollback: before the ROLLBACK is sent
        if threading.current_thread().name == "readiness" and not frozen:
            frozen.append(conn.connection.driver_connection.info.backend_pid)
            os.kill(frozen[0], signal.SIGSTOP)

    event.listen(engine, "rollback", freeze)
    try:
        assert health.readiness() == Readiness(False, "database not answering")
        assert frozen, "the check never ended its transaction"
        # The next probes check again on a fresh connection, which answers.
        ready = Readiness(True, schema_revision=head_revision())
        assert wait_until(lambda: health.readiness() == ready, 10)
        assert wait_until(lambda: engine.pool.checkedout() == 0, 2)  # none kept by a check
    finally:
        event.remove(engine, "rollback", freeze)
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        engine.dispose()


def test_a_backend_frozen_as_the_checks_new_connection_is_set_up_is_cut_off_too(postgres_url):
    """Through a session pooler each new connection runs set_config (DB_STATEMENT_TIMEOUT)
    in its pool "connect" event, before the check could watch its socket: a backend frozen
    there left the check stuck for good, uncut, and no other check started ("database not
    answering" for as long as it stayed frozen, the database answering meanwhile). After a
    fork or dispose SQLAlchemy also makes every other new connection wait for that first
    one's connect listeners: the worker's requests waited with it."""
    from sqlalchemy import event, text

    engine = make_engine(postgres_url + "?pooler=session")
    frozen: list[int] = []

    def freeze(dbapi_connection, _record):  # before the pooler's set_config is sent
        if threading.current_thread().name == "readiness" and not frozen:
            frozen.append(dbapi_connection.info.backend_pid)
            os.kill(frozen[0], signal.SIGSTOP)

    event.listen(engine, "connect", freeze, insert=True)
    migrate(engine)
    health = HealthService(Repository(engine), head_revision(), None, timeout=1.0)
    engine.dispose()  # as after a fork: the check opens the pool's first connection

    def select_one() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT 1")).scalar_one())

    try:
        assert health.readiness() == Readiness(False, "database not answering")
        assert frozen, "the check never connected"
        # The next probes check again on a fresh connection, which answers; so do requests.
        ready = Readiness(True, schema_revision=head_revision())
        assert wait_until(lambda: health.readiness() == ready, 10)
        with ThreadPoolExecutor(1) as requester:  # bounded: it waited for good before
            assert requester.submit(select_one).result(10) == 1
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
        event.remove(engine, "connect", freeze)
        engine.dispose()
