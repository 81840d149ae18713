"""PostgreSQL pool checkouts: no round trip to ask whether a connection lives, and a
connection whose server session ended is replaced before anyone uses it
(store/repository.py, ``_drop_dead_connection``); TCP keepalives on every connection. A
real cluster; sessions are ended as a restart, a failover or ``idle_session_timeout`` ends
them."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError

from comments_api.app import COMMIT_LOST, create_app
from comments_api.comments.rules import NewComment
from comments_api.settings import Settings
from comments_api.store.repository import (
    TRY_AGAIN_IF_LOST_WITHIN,
    Repository,
    _lock_key,
    make_engine,
    migrate,
)
from comments_api.web.common import EXTENSION_KEY

from .authkit import api_key, bearer
from .support import PostgresServer, missing


def database_of(url: str) -> str:
    return urlsplit(url.replace("postgresql+psycopg", "postgresql")).path.lstrip("/")


def last_statement(pg: PostgresServer, pid: int) -> str:
    with pg.superuser() as conn:
        row = conn.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return str(row[0])


def migrated_client(url: str, **settings: Any) -> FlaskClient:
    """A test client of the app on ``url``, migrated first on a connection of its own."""
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    app = create_app(Settings(database_url=url, ratelimit_enabled=False, **settings))
    return app.test_client()


def test_a_checkout_sends_nothing_to_the_server(pg_server: PostgresServer, postgres_url: str):
    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        # Back in the pool: its last statement is the reset's ROLLBACK. A pre-ping at the
        # next checkout would be the last statement instead.
        assert last_statement(pg_server, pid) == "ROLLBACK"
        conn = engine.connect()
        try:
            assert last_statement(pg_server, pid) == "ROLLBACK"
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == pid
        finally:
            conn.close()
    finally:
        engine.dispose()


def test_connections_whose_sessions_ended_are_replaced_at_checkout(
    pg_server: PostgresServer, postgres_url: str
):
    engine = make_engine(postgres_url, pool_size=2)
    try:
        first, second = engine.connect(), engine.connect()
        old = {c.execute(text("SELECT pg_backend_pid()")).scalar() for c in (first, second)}
        first.close()
        second.close()
        assert pg_server.end_sessions(database_of(postgres_url)) == 2
        # Both pooled connections are dead; both checkouts get live ones, no error.
        first, second = engine.connect(), engine.connect()
        try:
            new = {c.execute(text("SELECT pg_backend_pid()")).scalar() for c in (first, second)}
        finally:
            first.close()
            second.close()
        assert len(new) == 2
        assert not new & old
    finally:
        engine.dispose()


def test_a_connection_lost_in_use_closes_the_pools_idle_ones(
    pg_server: PostgresServer, postgres_url: str
):
    # What a checkout cannot see (a path that resets a connection only when spoken to)
    # shows as a lost connection in use: its idle siblings go too, as SQLAlchemy's own
    # Connection does it, instead of each failing one request later.
    database = database_of(postgres_url)
    engine = make_engine(postgres_url, pool_size=3)
    migrate(engine)
    repo = Repository(engine)
    try:
        idle = [engine.connect() for _ in range(2)]
        idle_pids = {c.execute(text("SELECT pg_backend_pid()")).scalar() for c in idle}
        for conn in idle:
            conn.close()

        def end_own_session(dbapi_connection: object, record: object, proxy: object) -> None:
            pid = dbapi_connection.info.backend_pid  # type: ignore[attr-defined]
            pg_server.end_sessions(database, {pid})

        # After the checkout's own check passed: the next statement meets a dead session.
        event.listen(engine, "checkout", end_own_session)
        with pytest.raises(OperationalError):
            repo.get_api_key("any")
        event.remove(engine, "checkout", end_own_session)
        assert idle_pids
        assert not idle_pids & pg_server.live_sessions(database)
        assert repo.get_api_key("any") is None  # and the next lookup just works
    finally:
        engine.dispose()


class SessionEnder:
    """Ends the server session of a connection the moment something asks (a pool or
    engine event, a statement observer): what a restart, a failover or
    ``idle_session_timeout`` does to a session a request is about to use."""

    def __init__(self, pg: PostgresServer, database: str) -> None:
        self.pg, self.database = pg, database
        self.ended: list[int] = []
        self.pid = 0  # of the last connection checked out
        self.inserts: list[str] = []  # comment inserts seen by end_after_the_first_insert

    def note_checkout(self, dbapi_connection: object, record: object, proxy: object) -> None:
        self.pid = dbapi_connection.info.backend_pid  # type: ignore[attr-defined]

    def end(self, pid: int) -> None:
        self.ended.append(pid)
        self.pg.end_sessions(self.database, {pid})

    def end_after_the_first_insert(self, sql: str, seconds: float) -> None:
        # A statement observer (Repository's observe_statement): the first comment insert
        # has run, its COMMIT not yet sent.
        if sql.startswith("INSERT INTO comments"):
            self.inserts.append(sql)
            if len(self.inserts) == 1:
                self.end(self.pid)

    def end_first_checkout(self, dbapi_connection: object, record: object, proxy: object) -> None:
        # After the pool's own check at checkout passed: the first statement meets it.
        if not self.ended:
            self.end(dbapi_connection.info.backend_pid)  # type: ignore[attr-defined]


def test_a_read_whose_connection_is_lost_in_use_is_read_again(
    pg_server: PostgresServer, postgres_url: str
):
    # The same blind spot, met by a read through the app: the request is answered from a
    # fresh connection instead of failing with 503.
    database = database_of(postgres_url)
    client = migrated_client(postgres_url)
    assert client.post("/api/v1/contents/c1/comments", json={"body": "kept"}).status_code == 201
    app_engine = client.application.extensions[EXTENSION_KEY].repo.engine
    sessions = SessionEnder(pg_server, database)
    ended, end_once = sessions.ended, sessions.end_first_checkout
    for n, path in enumerate(("/api/v1/contents/c1/comments", "/api/comment/list/c1")):
        # Once first, so the change markers' own connection is open (it is kept, not
        # pooled: checked out only when made); then a write, so the read cache misses.
        assert client.get(path).status_code == 200
        created = client.post("/api/v1/contents/c1/comments", json={"body": f"then {n}"})
        assert created.status_code == 201
        ended.clear()
        event.listen(app_engine, "checkout", end_once)
        try:
            response = client.get(path)
        finally:
            event.remove(app_engine, "checkout", end_once)
        assert ended, "no connection was checked out"
        assert response.status_code == 200, response.get_json()
        assert f"then {n}" in response.text
        assert not set(ended) & pg_server.live_sessions(database)
    # A key lookup takes the driver's own path (_driver_cursor).
    engine = make_engine(postgres_url)
    repo = Repository(engine)
    ended.clear()
    event.listen(engine, "checkout", end_once)
    try:
        assert repo.get_api_key("any") is None
    finally:
        event.remove(engine, "checkout", end_once)
        engine.dispose()
    assert ended


def test_writes_and_reads_go_on_after_the_servers_sessions_end(
    pg_server: PostgresServer, postgres_url: str
):
    # A restart or failover between two requests: the next create and list succeed on
    # their first try, not one failed request per pooled connection.
    client = migrated_client(postgres_url)
    for n in range(3):
        created = client.post("/api/v1/contents/c1/comments", json={"body": f"before {n}"})
        assert created.status_code == 201, created.get_json()
    assert client.get("/api/comment/list/c1").status_code == 200
    checked_out = pool_checked_out(client)
    assert pg_server.end_sessions(database_of(postgres_url)) >= 2

    created = client.post("/api/v1/contents/c1/comments", json={"body": "after"})
    assert created.status_code == 201, created.get_json()
    listed = client.get("/api/v1/contents/c1/comments")
    assert listed.status_code == 200, listed.get_json()
    assert [c["body"] for c in listed.get_json()["items"]][-1] == "after"
    # The dead connections were never counted as checked out: the gauge is where it was.
    assert pool_checked_out(client) == checked_out


def test_a_write_whose_connection_is_lost_before_its_commit_is_written_once(
    pg_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
):
    # A session ended a moment before a write checked its connection out, its socket not
    # yet readable: the write runs again on a fresh connection (nothing was committed)
    # instead of answering 503, and is stored once.
    database = database_of(postgres_url)
    engine = make_engine(postgres_url)
    migrate(engine)
    repo = Repository(engine)
    sessions = SessionEnder(pg_server, database)
    writes = {
        # The comment insert's driver path (_driver_write)...
        "create": lambda: repo.create(NewComment(content_id="c1", body="kept once")),
        # ...and SQLAlchemy's Connection (_write): moderation, bans, keys.
        "ban": lambda: repo.ban("email:someone", "spam", "moderator"),
    }
    try:
        assert repo.get_api_key("none") is None  # the pool holds a connection now
        for name, write in writes.items():
            sessions.ended.clear()
            caplog.clear()
            event.listen(engine, "checkout", sessions.end_first_checkout)
            try:
                assert write(), name
            finally:
                event.remove(engine, "checkout", sessions.end_first_checkout)
            assert sessions.ended, name
            assert "writing once more" in caplog.text, name
            assert not set(sessions.ended) & pg_server.live_sessions(database)
        page = repo.list_page("c1", limit=10, order="oldest", after_id=None, statuses=["published"])
        assert [c.body for c in page.items] == ["kept once"]
        assert [b["target"] for b in repo.ban_page(limit=25, before=None)[0]] == ["email:someone"]
    finally:
        engine.dispose()

    # Through the app: the create that met the ended session answers 201.
    client = create_app(Settings(database_url=postgres_url, ratelimit_enabled=False)).test_client()
    assert client.post("/api/v1/contents/c2/comments", json={"body": "a"}).status_code == 201
    app_engine = client.application.extensions[EXTENSION_KEY].repo.engine
    sessions.ended.clear()
    event.listen(app_engine, "checkout", sessions.end_first_checkout)
    try:
        created = client.post("/api/v1/contents/c2/comments", json={"body": "b"})
    finally:
        event.remove(app_engine, "checkout", sessions.end_first_checkout)
    assert sessions.ended
    assert created.status_code == 201, created.get_json()
    listed = client.get("/api/v1/contents/c2/comments").get_json()["items"]
    assert [c["body"] for c in listed] == ["a", "b"]


def test_a_change_marker_read_that_meets_ended_sessions_is_read_again(
    pg_server: PostgresServer, postgres_url: str
):
    # The read cache's change markers are read on a connection each thread takes from the
    # pool once and keeps. Taken while its session was ending (not yet seen at checkout),
    # or kept and ended with the pool's idle ones (a failover), it met a 503; the list is
    # now answered from a new connection.
    database = database_of(postgres_url)
    client = migrated_client(postgres_url)
    services = client.application.extensions[EXTENSION_KEY]
    markers = services.comments.cache.markers
    app_engine = services.repo.engine
    path = "/api/v1/contents/c1/comments"
    assert client.post(path, json={"body": "first"}).status_code == 201
    assert markers._local.conn is None  # no list read yet: its connection is not taken
    sessions = SessionEnder(pg_server, database)
    event.listen(app_engine, "checkout", sessions.end_first_checkout)
    try:
        listed = client.get(path)
    finally:
        event.remove(app_engine, "checkout", sessions.end_first_checkout)
    assert sessions.ended, "no connection was checked out"
    assert listed.status_code == 200, listed.get_json()
    assert [c["body"] for c in listed.get_json()["items"]] == ["first"]

    assert client.post(path, json={"body": "second"}).status_code == 201
    kept = markers._local.conn.info.backend_pid
    old = pg_server.live_sessions(database)  # the kept one and the pool's idle ones
    sessions.ended.clear()
    pg_server.end_sessions(database, {kept})

    def end_if_old(dbapi_connection: object, record: object, proxy: object) -> None:
        pid = dbapi_connection.info.backend_pid  # type: ignore[attr-defined]
        if pid in old:  # ended by the same failover, not yet seen at checkout
            sessions.end(pid)

    event.listen(app_engine, "checkout", end_if_old)
    try:
        listed = client.get(path)
    finally:
        event.remove(app_engine, "checkout", end_if_old)
    assert listed.status_code == 200, listed.get_json()
    assert [c["body"] for c in listed.get_json()["items"]] == ["first", "second"]
    assert markers._local.conn.info.backend_pid not in old


def test_a_create_whose_session_ends_before_its_commit_arrives_is_written_once_more(
    pg_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
):
    # The session ends after the insert, before the COMMIT reaches the server: the COMMIT
    # fails on a lost connection, which alone cannot tell whether it committed. The
    # database can: pg_xact_status says the transaction rolled back, so the create is
    # written once more and stored once.
    database = database_of(postgres_url)
    engine = make_engine(postgres_url)
    migrate(engine)
    sessions = SessionEnder(pg_server, database)

    repo = Repository(engine, observe_statement=sessions.end_after_the_first_insert)
    event.listen(engine, "checkout", sessions.note_checkout)
    try:
        created = repo.create(NewComment(content_id="c1", body="once"))
        assert len(sessions.inserts) == 2
        assert len(sessions.ended) == 1
        page = repo.list_page("c1", limit=10, order="oldest", after_id=None, statuses=["published"])
        assert [(c.id, c.body) for c in page.items] == [(created.id, "once")]
        assert "writing once more" in caplog.text
    finally:
        event.remove(engine, "checkout", sessions.note_checkout)
        engine.dispose()

    # Through the app: a 201, not a 503.
    client = migrated_client(postgres_url)
    app_repo = client.application.extensions[EXTENSION_KEY].repo
    app_engine, observe = app_repo.engine, app_repo.observe_statement

    def observe_then_end(sql: str, seconds: float) -> None:
        if observe is not None:
            observe(sql, seconds)
        sessions.end_after_the_first_insert(sql, seconds)

    sessions.inserts.clear()
    app_repo.observe_statement = observe_then_end
    event.listen(app_engine, "checkout", sessions.note_checkout)
    try:
        answered = client.post("/api/v1/contents/c2/comments", json={"body": "once"})
    finally:
        event.remove(app_engine, "checkout", sessions.note_checkout)
        app_repo.observe_statement = observe
    assert answered.status_code == 201, answered.get_json()
    assert len(sessions.inserts) == 2
    listed = client.get("/api/v1/contents/c2/comments").get_json()["items"]
    assert [c["id"] for c in listed] == [answered.get_json()["id"]]


def test_a_create_that_waited_for_its_lock_before_a_rolled_back_commit_is_written_once_more(
    pg_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
):
    # As above, after the create had waited longer than TRY_AGAIN_IF_LOST_WITHIN for its
    # content's lock, held by another transaction. A loss found that late is not tried
    # again in general (a path gone silent), but this one was found at its COMMIT, at once,
    # and the database has just said the transaction rolled back: written once more.
    database = database_of(postgres_url)
    engine, holder = make_engine(postgres_url), make_engine(postgres_url)
    migrate(engine)
    sessions = SessionEnder(pg_server, database)

    held, release = threading.Event(), threading.Event()

    def hold_the_contents_lock() -> None:
        with holder.begin() as conn:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key("content", "c1")}
            )
            held.set()
            release.wait(10)

    repo = Repository(engine, observe_statement=sessions.end_after_the_first_insert)
    event.listen(engine, "checkout", sessions.note_checkout)
    locker = threading.Thread(target=hold_the_contents_lock)
    locker.start()
    try:
        assert held.wait(10)
        threading.Timer(TRY_AGAIN_IF_LOST_WITHIN + 0.3, release.set).start()
        began = time.monotonic()
        created = repo.create(NewComment(content_id="c1", body="once"))
        assert time.monotonic() - began > TRY_AGAIN_IF_LOST_WITHIN  # it did wait
        assert len(sessions.inserts) == 2
        assert len(sessions.ended) == 1
        assert "writing once more" in caplog.text
        page = repo.list_page("c1", limit=10, order="oldest", after_id=None, statuses=["published"])
        assert [(c.id, c.body) for c in page.items] == [(created.id, "once")]
    finally:
        release.set()
        locker.join(10)
        event.remove(engine, "checkout", sessions.note_checkout)
        engine.dispose()
        holder.dispose()


def test_a_moderation_write_whose_session_ends_before_its_commit_arrives_is_written_once_more(
    pg_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
):
    # The same on SQLAlchemy's Connection (moderation, bans, keys): the session ends as the
    # COMMIT is about to be sent; the database says the transaction rolled back, so the
    # ban is written once more, stored once.
    database = database_of(postgres_url)
    engine = make_engine(postgres_url)
    migrate(engine)
    sessions = SessionEnder(pg_server, database)
    repo = Repository(engine)
    commits: list[object] = []

    def end_at_the_first_commit(conn: object) -> None:
        commits.append(conn)
        if len(commits) == 1:
            sessions.end(sessions.pid)

    event.listen(engine, "checkout", sessions.note_checkout)
    event.listen(engine, "commit", end_at_the_first_commit)
    try:
        assert repo.ban("email:someone", "spam", "moderator")
    finally:
        event.remove(engine, "commit", end_at_the_first_commit)
        event.remove(engine, "checkout", sessions.note_checkout)
    try:
        assert len(commits) == 2
        assert len(sessions.ended) == 1
        assert "writing once more" in caplog.text
        assert [b["target"] for b in repo.ban_page(limit=25, before=None)[0]] == ["email:someone"]
    finally:
        engine.dispose()

    # Through the app: a 201, not a 503.
    client = migrated_client(postgres_url)
    app_engine = client.application.extensions[EXTENSION_KEY].repo.engine
    moderator = bearer(api_key(client.application, "comments:moderate"))
    ban_inserts: list[str] = []

    def note_ban_insert(conn: object, cursor: object, sql: str, *args: object) -> None:
        if sql.startswith("INSERT INTO bans"):
            ban_inserts.append(sql)

    def end_at_the_bans_first_commit(conn: object) -> None:
        if len(ban_inserts) == 1 and not sessions.ended:  # not the API key's use
            sessions.end(sessions.pid)

    sessions.ended.clear()
    event.listen(app_engine, "checkout", sessions.note_checkout)
    event.listen(app_engine, "before_cursor_execute", note_ban_insert)
    event.listen(app_engine, "commit", end_at_the_bans_first_commit)
    try:
        banned = client.post(
            "/api/v1/moderation/bans", json={"email": "x@example.com"}, headers=moderator
        )
    finally:
        event.remove(app_engine, "commit", end_at_the_bans_first_commit)
        event.remove(app_engine, "before_cursor_execute", note_ban_insert)
        event.remove(app_engine, "checkout", sessions.note_checkout)
    assert banned.status_code == 201, banned.get_json()
    assert len(sessions.ended) == 1
    assert len(ban_inserts) == 2
    listed = client.get("/api/v1/moderation/bans", headers=moderator)
    targets = sorted(b["target"] for b in listed.get_json()["items"])
    assert targets == ["email:someone", "email:x@example.com"]  # each stored once


class CommitAnswerCutter:
    """A TCP relay to a PostgreSQL server. Armed, it passes the next COMMIT on, waits for
    the server's answer and closes that connection instead of passing the answer back: the
    COMMIT was carried out and its answer lost, as a connection reset at the worst moment
    leaves it. ``refuse_after_cut``: connections made after the cut are closed at once
    (the database unreachable)."""

    # psycopg sends a COMMIT as one simple-query message: 'Q', its length, the text.
    COMMIT = b"Q\x00\x00\x00\x0bCOMMIT\x00"

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.armed = threading.Event()
        self.cut = threading.Event()
        self.refuse_after_cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, url: str) -> str:
        return url.replace(f":{self.target_port}/", f":{self.port}/")

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse_after_cut and self.cut.is_set():
                client.close()
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            swallow = threading.Event()
            threading.Thread(
                target=self._to_server, args=(client, server, swallow), daemon=True
            ).start()
            threading.Thread(
                target=self._to_client, args=(server, client, swallow), daemon=True
            ).start()

    def _to_server(
        self, client: socket.socket, server: socket.socket, swallow: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                if self.COMMIT in data and self.armed.is_set() and not self.cut.is_set():
                    self.armed.clear()
                    swallow.set()  # before the COMMIT leaves: its answer is the next data back
                server.sendall(data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _to_client(
        self, server: socket.socket, client: socket.socket, swallow: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(65536):
                if swallow.is_set():
                    self.cut.set()
                    break
                client.sendall(data)
        for end in (client, server):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()


def test_a_write_whose_commit_answer_is_lost_asks_the_database_whether_it_committed(
    pg_server: PostgresServer, postgres_url: str, caplog: pytest.LogCaptureFixture
):
    # The COMMIT reached the server and was carried out; its answer never came back. The
    # write asks the database (pg_xact_status, on a fresh connection), learns that it
    # committed, and answers as stored: no 503 that a client would retry into a second
    # copy. A create (the driver path) and a ban (SQLAlchemy's Connection).
    migrate_engine = make_engine(postgres_url)
    migrate(migrate_engine)
    migrate_engine.dispose()
    cutter = CommitAnswerCutter(pg_server.port)
    try:
        client = migrated_client(cutter.url(postgres_url))
        moderator = bearer(api_key(client.application, "comments:moderate"))
        path = "/api/v1/contents/c1/comments"
        assert client.post(path, json={"body": "before"}).status_code == 201
        cutter.armed.set()
        answered = client.post(path, json={"body": "committed, answer lost"})
        assert cutter.cut.is_set()
        assert answered.status_code == 201, answered.get_json()
        assert "which the database had carried out" in caplog.text
        listed = client.get(path).get_json()["items"]
        assert [c["body"] for c in listed] == ["before", "committed, answer lost"]
        assert listed[1]["id"] == answered.get_json()["id"]

        caplog.clear()
        bans = "/api/v1/moderation/bans"
        assert client.get(bans, headers=moderator).get_json()["items"] == []  # key use noted
        cutter.cut.clear()
        cutter.armed.set()
        banned = client.post(bans, json={"email": "x@example.com"}, headers=moderator)
        assert cutter.cut.is_set()
        assert banned.status_code == 201, banned.get_json()
        assert "which the database had carried out" in caplog.text
        listed = client.get(bans, headers=moderator).get_json()["items"]
        assert [b["target"] for b in listed] == ["email:x@example.com"]

        # The database unreachable when asked: the outcome is unknown, so a 503 and the
        # line that says it may have been stored (it was).
        caplog.clear()
        cutter.refuse_after_cut = True
        cutter.cut.clear()
        cutter.armed.set()
        refused = client.post(path, json={"body": "committed, outcome unknown"})
        assert cutter.cut.is_set()
        assert refused.status_code == 503, refused.get_json()
        assert f"{COMMIT_LOST}:" in caplog.text
        assert "the outcome of a lost COMMIT is unknown" in caplog.text
    finally:
        cutter.close()
    stored = migrated_client(postgres_url).get("/api/v1/contents/c1/comments").get_json()
    assert [c["body"] for c in stored["items"]] == [
        "before",
        "committed, answer lost",
        "committed, outcome unknown",
    ]


def test_the_checked_out_gauge_stays_true_through_an_outage():
    # SQLAlchemy checks a record in after a failed connect, with no checkout before it:
    # each request refused while the server was down lowered the gauge for good (-6 after
    # three, where the pool held none).
    pg = PostgresServer()
    try:
        url = pg.create_database("outage")
        client = migrated_client(url)
        assert client.post("/api/v1/contents/c1/comments", json={"body": "a"}).status_code == 201
        assert client.get("/api/comment/list/c1").status_code == 200
        assert pool_checked_out(client) == 0
        pg.halt()
        for _ in range(3):
            refused = client.post("/api/v1/contents/c1/comments", json={"body": "down"})
            assert refused.status_code == 503, refused.get_json()
            assert client.get("/api/comment/list/c2").status_code == 503
        assert pool_checked_out(client) == 0
        pg.resume()
        assert client.post("/api/v1/contents/c1/comments", json={"body": "b"}).status_code == 201
        assert client.get("/api/comment/list/c1").status_code == 200
        assert pool_checked_out(client) == 0
    finally:
        pg.stop()


def pool_checked_out(client: FlaskClient) -> float:
    scrape = client.get("/metrics").text
    (line,) = [x for x in scrape.splitlines() if x.startswith("comments_api_db_pool_checked_out ")]
    return float(line.split()[1])


def keepalive_options(engine: Engine) -> tuple[int, int, int, int]:
    with engine.connect() as conn:
        fd = conn.connection.driver_connection.fileno()
        sock = socket.socket(fileno=socket.dup(fd))  # a duplicate: closing it keeps the connection
        try:
            return (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            )
        finally:
            sock.close()


def test_connections_probe_an_idle_path_unless_the_url_says_otherwise(postgres_url: str):
    engine = make_engine(postgres_url)
    try:
        # After 30 s idle, every 10 s, 3 misses: a NAT keeps the path, a dead peer shows.
        assert keepalive_options(engine) == (1, 30, 10, 3)
    finally:
        engine.dispose()
    engine = make_engine(f"{postgres_url}?keepalives_idle=120")
    try:
        assert keepalive_options(engine) == (1, 120, 10, 3)
    finally:
        engine.dispose()


def tcp_user_timeout(engine: Engine) -> int:
    with engine.connect() as conn:
        fd = conn.connection.driver_connection.fileno()
        sock = socket.socket(fileno=socket.dup(fd))
        try:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
        finally:
            sock.close()


def test_unacknowledged_data_gives_up_after_ten_seconds_unless_the_url_says_otherwise(
    postgres_url: str,
):
    engine = make_engine(postgres_url)
    try:
        assert tcp_user_timeout(engine) == 10_000
    finally:
        engine.dispose()
    engine = make_engine(f"{postgres_url}?tcp_user_timeout=30000")
    try:
        assert tcp_user_timeout(engine) == 30_000
    finally:
        engine.dispose()


@contextlib.contextmanager
def silent_path(port: int) -> Iterator[None]:
    """Drop every loopback packet to and from ``port``: the server's address went away
    without a word (a failover that moved it, a partition). Needs root and iptables."""
    iptables = shutil.which("iptables")
    if os.geteuid() != 0 or not iptables:
        missing("root and iptables, to drop a path's packets")
    rules = [
        ["INPUT", "-i", "lo", "-p", "tcp", "--dport", str(port), "-j", "DROP"],
        ["INPUT", "-i", "lo", "-p", "tcp", "--sport", str(port), "-j", "DROP"],
    ]
    added = []
    try:
        for rule in rules:
            done = subprocess.run([iptables, "-I", *rule], capture_output=True, text=True)
            if done.returncode != 0:
                missing(f"permission to add an iptables rule ({done.stderr.strip()})")
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run([iptables, "-D", *rule], capture_output=True, check=False)


def test_a_request_on_a_path_gone_silent_answers_503_and_the_next_one_recovers():
    # The server vanished mid-conversation: no FIN, no RST, packets dropped. A create sent
    # on the pooled connection waited for TCP's retransmissions (~15 minutes), wedging its
    # worker until WORKER_TIMEOUT killed it (a 500); tcp_user_timeout ends it in ~10 s.
    pg = PostgresServer()
    try:
        url = pg.create_database("silent")
        client = migrated_client(url, db_statement_timeout=1.0)
        write_url = "/api/v1/contents/c1/comments"
        assert client.post(write_url, json={"body": "before"}).status_code == 201
        outcome: dict[str, object] = {}

        def write() -> None:
            started = time.monotonic()
            outcome["response"] = client.post(write_url, json={"body": "into the silence"})
            outcome["seconds"] = time.monotonic() - started

        with silent_path(pg.port):
            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            writer.join(20)
            assert "response" in outcome, "the write still waits on a silent path after 20 s"
        refused = outcome["response"]
        assert refused.status_code == 503, refused.get_json()  # type: ignore[attr-defined]
        assert int(refused.headers["Retry-After"]) > 0  # type: ignore[attr-defined]
        assert 9.0 < float(outcome["seconds"]) < 15.0, outcome["seconds"]  # type: ignore[arg-type]
        # The path is back: the pool was emptied with the lost connection, nothing waits.
        after = client.post(write_url, json={"body": "after"})
        assert after.status_code == 201, after.get_json()
        listed = client.get(write_url)
        assert [c["body"] for c in listed.get_json()["items"]] == ["before", "after"]
        # A read meets the silence once, not twice: a second try would wait out its
        # connect_timeout as well, to fail all the same (lost_at_once).
        repo = client.application.extensions[EXTENSION_KEY].repo
        assert repo.get_api_key("any") is None  # on a pooled connection, as the write was
        with silent_path(pg.port):
            started = time.monotonic()
            with pytest.raises(OperationalError) as lost:
                repo.get_api_key("any")
            waited = time.monotonic() - started
        assert lost.value.connection_invalidated
        assert 9.0 < waited < 14.0, waited
    finally:
        pg.stop()


def test_a_url_options_parameter_keeps_its_settings_beside_the_statement_timeout(
    postgres_url: str,
):
    # connect_args replace a URL parameter of the same name: an operator's lock_timeout in
    # DATABASE_URL's options was silently dropped for DB_STATEMENT_TIMEOUT's setting.
    options = "-c%20lock_timeout%3D1234%20-c%20application_name%3Dcomments-ops"
    engine = make_engine(f"{postgres_url}?options={options}", statement_timeout=2.0)
    try:
        with engine.connect() as conn:
            shown = [
                conn.execute(text(f"SHOW {name}")).scalar()
                for name in ("lock_timeout", "application_name", "statement_timeout")
            ]
        assert shown == ["1234ms", "comments-ops", "2s"]
    finally:
        engine.dispose()
    # A statement_timeout the URL names keeps its value, as its keepalives do.
    engine = make_engine(f"{postgres_url}?options=-c%20statement_timeout%3D7s")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "7s"
    finally:
        engine.dispose()
