"""The service behind a real PgBouncer (Debian's 1.18), in both pool modes, with
DATABASE_URL's ``?pooler=`` (docs/deployment.md, "Behind PgBouncer").

Found by a review helper: through PgBouncer's defaults no connection was made at all
("unsupported startup parameter: options"); with ``options`` ignored, DB_STATEMENT_TIMEOUT
was silently not applied; in transaction mode psycopg's server-side prepared statements
(after a statement's 5th run on a connection) met other server connections and the read
cache's change markers answered 500 ("prepared statement "_pg3_0" already exists"), and
the migration's session-level lock was taken twice and left held.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from comments_api.store.repository import TransactionPoolerRefused, make_engine, migrate

from .support import VENV_BIN, PgBouncer, PostgresServer, ServiceProcess, free_port

TIMEOUT_MS = 4000


@pytest.fixture
def pooled(pg_server: PostgresServer) -> Iterator[tuple[PgBouncer, str]]:
    """PgBouncer with ``session``, ``transaction`` (the database's statement_timeout set
    to TIMEOUT_MS, as docs/deployment.md says) and ``bare`` (no timeout set) in front of
    one new database; yields it and the database's direct URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    direct = pg_server.create_database(name)
    bare = f"{name}_bare"
    pg_server.create_database(bare)
    with pg_server.superuser() as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET statement_timeout = {TIMEOUT_MS}')
    bouncer = PgBouncer(
        pg_server,
        {
            "session": (name, "session"),
            "transaction": (name, "transaction"),
            "bare": (bare, "transaction"),
        },
    )
    try:
        yield bouncer, direct
    finally:
        bouncer.stop()


def test_transaction_pooling_serves_repeated_requests(pooled, tmp_path: Path) -> None:
    bouncer, direct = pooled
    engine = make_engine(direct)
    migrate(engine)  # directly: a transaction pooler cannot hold the migration lock
    engine.dispose()
    env = {
        "DATABASE_URL": bouncer.url("transaction") + "?pooler=transaction",
        "DB_STATEMENT_TIMEOUT": str(TIMEOUT_MS / 1000),
        "MIGRATE_ON_START": "false",
        "RATELIMIT_ENABLED": "false",
    }
    statuses: dict[int, int] = {}
    with ServiceProcess(env, tmp_path, workers=1) as service, requests.Session() as http:
        base = service.base
        # Each marker read, list and insert runs its statement far more than psycopg's 5
        # times (prepare_threshold) on its connection, over 4 server connections.
        for i in range(60):
            for response in (
                http.post(
                    f"{base}/api/v1/contents/page-{i % 3}/comments",
                    json={"body": f"comment {i}", "email": f"reader{i}@news.example"},
                ),
                http.get(f"{base}/api/v1/contents/page-{i % 3}/comments?limit=5"),
                http.get(f"{base}/api/comment/list/page-{i % 3}"),
                http.get(f"{base}/api/v1/counts?content_id=page-0&content_id=page-1"),
            ):
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        log = service.log()
    assert set(statuses) <= {200, 201}, (statuses, log[-3000:])
    assert "prepared statement" not in log


def test_session_pooling_applies_the_statement_timeout(pooled) -> None:
    bouncer, _ = pooled
    engine = make_engine(bouncer.url("session") + "?pooler=session", statement_timeout=0.5)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "500ms"
            with pytest.raises(OperationalError, match="statement timeout"):
                conn.execute(text("SELECT pg_sleep(3)"))
    finally:
        engine.dispose()


def test_session_pooling_keeps_the_statement_timeout_after_a_migration(pooled) -> None:
    # migrate() lifted the timeout for itself, then RESET it: back to the role's and
    # database's (here TIMEOUT_MS; usually none), not the SET made at connect, on a
    # connection the pool then handed out again.
    bouncer, _ = pooled
    engine = make_engine(
        bouncer.url("session") + "?pooler=session", pool_size=1, statement_timeout=0.5
    )
    try:
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "500ms"
    finally:
        engine.dispose()


def test_transaction_pooling_refuses_what_it_cannot_do(pooled, caplog) -> None:
    bouncer, _ = pooled
    # The server's statement_timeout is not DB_STATEMENT_TIMEOUT: refused, with the fix,
    # and said in the log too (serve's requests and /readyz say only "unavailable").
    engine = make_engine(bouncer.url("bare") + "?pooler=transaction", statement_timeout=4.0)
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(OperationalError, match="ALTER ROLE"):
            engine.connect().close()
        assert "ALTER ROLE <user> SET statement_timeout = 4000" in caplog.text
    finally:
        engine.dispose()
    engine = make_engine(
        bouncer.url("transaction") + "?pooler=transaction",
        statement_timeout=TIMEOUT_MS / 1000,
    )
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        with pytest.raises(TransactionPoolerRefused, match="session-level advisory lock"):
            migrate(engine)
    finally:
        engine.dispose()


def test_a_url_file_follows_credentials_not_a_changed_pool_mode(tmp_path: Path, caplog) -> None:
    # ?pooler= is left out of the engine's URL: compared without it, a file naming
    # another pool mode (or none) was taken as new credentials, and an unchanged one too.
    path = tmp_path / "database-url"
    base = f"postgresql+psycopg://app:{{}}@127.0.0.1:{free_port()}/comments"  # refused

    def connect() -> str:
        caplog.clear()
        with pytest.raises(OperationalError):  # after DATABASE_URL_FILE was looked at
            engine.connect().close()
        return caplog.text

    path.write_text(base.format("old") + "?pooler=session\n")
    engine = make_engine(base.format("old") + "?pooler=session", url_file=str(path))
    try:
        with caplog.at_level(logging.INFO, logger="comments_api.store.url_file"):
            assert connect() == ""  # unchanged: no "new credentials"
            path.write_text(base.format("new") + "?pooler=transaction\n")
            assert "restart to apply it" in connect()
            path.write_text(base.format("new") + "\n")
            assert "restart to apply it" in connect()
            path.write_text(base.format("newer") + "?pooler=session\n")
            assert "new credentials" in connect()
    finally:
        engine.dispose()


@pytest.mark.parametrize("command", ["export", "import"])
def test_export_and_import_refuse_a_transaction_pooler_in_one_line(tmp_path, command) -> None:
    # They set 6 hours per connection, which a transaction pooler passes to no server:
    # refused at the connection, whose advice was to give the role those 6 hours.
    (tmp_path / "in.jsonl").write_text("")
    url = f"postgresql+psycopg://app@127.0.0.1:{free_port()}/c?pooler=transaction"
    args = [command, str(tmp_path / ("out.jsonl" if command == "export" else "in.jsonl"))]
    result = subprocess.run(
        [str(VENV_BIN / "comments-api"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DATABASE_URL": url},
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "session-mode pool" in result.stderr, result.stderr
    assert "ALTER ROLE" not in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_a_postgresql_restart_behind_pgbouncer_is_quick_503s_then_served(
    mode: str, tmp_path: Path
) -> None:
    """PostgreSQL restarted behind PgBouncer with the settings docs/deployment.md gives
    (``query_wait_timeout``, ``server_login_retry``). With PgBouncer's defaults a request
    sent during the outage waited 15 s, or past this test's 30 s, and once PostgreSQL was
    back requests were 503s for up to 15 s more ("server login has been failing")."""
    pg = PostgresServer()  # its own: halted here
    bouncer = None
    try:
        name = f"t_{uuid.uuid4().hex[:12]}"
        direct = pg.create_database(name)
        with pg.superuser() as conn:
            conn.execute(f'ALTER DATABASE "{name}" SET statement_timeout = {TIMEOUT_MS}')
        engine = make_engine(direct)
        migrate(engine)
        engine.dispose()
        bouncer = PgBouncer(
            pg, {"p": (name, mode)}, {"query_wait_timeout": "3", "server_login_retry": "1"}
        )
        env = {
            "DATABASE_URL": bouncer.url("p") + f"?pooler={mode}",
            "DB_STATEMENT_TIMEOUT": str(TIMEOUT_MS / 1000),
            "MIGRATE_ON_START": "false",
            "RATELIMIT_ENABLED": "false",
        }
        with ServiceProcess(env, tmp_path, workers=1) as service, requests.Session() as http:
            posts = f"{service.base}/api/v1/contents/restart/comments"

            def post(i: int) -> requests.Response:
                body = {"body": f"comment {i}", "email": f"reader{i}@news.example"}
                return http.post(posts, json=body, timeout=30)

            assert post(0).status_code == 201
            pg.halt()
            for i in range(1, 4):  # refused within query_wait_timeout, as a JSON 503
                started = time.monotonic()
                refused = post(i)
                assert time.monotonic() - started < 3 + 5, i
                assert refused.status_code == 503, refused.text
                assert refused.headers["Retry-After"]
                assert refused.json()["status"] == 503
            pg.resume()
            back = time.monotonic()
            statuses = []
            while time.monotonic() - back < 10:
                statuses.append(post(1000 + len(statuses)).status_code)
                if statuses[-1] == 201:
                    break
                time.sleep(0.05)
            served_after = time.monotonic() - back
            assert statuses[-1] == 201, statuses
            assert served_after < 1 + 7, (served_after, statuses)
            assert set(statuses) <= {201, 503}, statuses
            following = [post(200 + i).status_code for i in range(20)]
            assert following == [201] * 20, following
            listed = http.get(f"{posts}?limit=100", timeout=10).json()["items"]
            log = service.log()
        stored = {c["body"] for c in listed}
        assert {"comment 0", "comment 219"} <= stored
        assert not {"comment 1", "comment 2", "comment 3"} & stored  # refused: not written
        # The 503s' lines name PgBouncer's reason (docs/deployment.md), not only the class.
        reason = r"\((query_wait_timeout|server login has been failing)"
        assert re.search(rf"database unavailable: ProtocolViolation {reason}", log), log
        assert '"status":500' not in log.replace(" ", "")
    finally:
        if bouncer is not None:
            bouncer.stop()
        pg.stop()
