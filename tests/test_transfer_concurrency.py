"""`comments-api import` into a database a serving instance already writes to.

An operator moving SQLite -> PostgreSQL may start the new deployment before importing. The
import must then be one serialised step against the service's writes: a create either
lands before it (and the import refuses the non-empty target) or waits until the import
commits and gets an id after every imported one; reads go on meanwhile. The import is held
open at two points: right after its emptiness check (before its first insert: the file's
first row is not handed over yet) and once its comments are inserted (the ``progress``
callback), their ids taken but not committed.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text

from comments_api.app import create_app
from comments_api.settings import Settings
from comments_api.store.repository import comments, make_engine, migrate
from comments_api.store.transfer import TransferError, export, import_

from .test_transfer import cli, generate

N_IMPORTED = 50
HOLD = 1.0  # seconds the import is held open while a write arrives
WAIT = 30.0  # the bound on every wait here


def exported(tmp_path: Path) -> list[str]:
    """An export of a generated SQLite database: comments 1..N_IMPORTED and the rest."""
    source = f"sqlite:///{tmp_path / 'source.db'}"
    generate(source, N_IMPORTED)
    engine = make_engine(source)
    out = io.StringIO()
    export(engine, out)
    engine.dispose()
    return out.getvalue().splitlines(keepends=True)


class HeldImport:
    """``import_`` in a thread, stopped at ``at`` until released: "check" holds it after
    its emptiness check (the file's first row is not handed over yet), "comments" once
    it has inserted every comment."""

    def __init__(self, url: str, lines: list[str], at: str) -> None:
        self.engine = make_engine(url, statement_timeout=WAIT)
        migrate(self.engine)
        self.holding = threading.Event()
        self.release = threading.Event()
        self.result: dict[str, int] | None = None
        self.error: BaseException | None = None
        self._lines, self._at = lines, at
        counts = json.loads(lines[0])["tables"]
        # Rows up to and with the comments: tables are imported in the file's order.
        self._comments_done = sum(
            counts[n] for n in ("api_keys", "bans", "comments") if n in counts
        )
        self._done = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _hold(self) -> None:
        if not self.holding.is_set():
            self.holding.set()
            assert self.release.wait(WAIT)

    def _rows(self) -> Iterator[str]:
        yield self._lines[0]  # the header: read before the transaction begins
        if self._at == "check":
            self._hold()
        yield from self._lines[1:]

    def _progress(self, n: int) -> None:
        self._done += n
        if self._at == "comments" and self._done == self._comments_done:
            self._hold()

    def _run(self) -> None:
        try:
            self.result = import_(self.engine, self._rows(), progress=self._progress)
        except BaseException as exc:  # handed to the test's thread
            self.error = exc

    def __enter__(self) -> HeldImport:
        self.thread.start()
        assert self.holding.wait(WAIT), f"the import never reached its hold: {self.error!r}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(WAIT)
        self.engine.dispose()


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    return thread, out


def stored_ids(url: str) -> list[int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        ids = list(conn.execute(text("SELECT id FROM comments ORDER BY id")).scalars())
    engine.dispose()
    return ids


def lock_waiters(url: str) -> list[str]:
    """PostgreSQL: the statements of sessions waiting for a heavyweight lock."""
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT query FROM pg_stat_activity "
                "WHERE wait_event_type = 'Lock' AND datname = current_database()"
            )
        ).scalars()
        waiting = list(rows)
    engine.dispose()
    return waiting


@pytest.mark.parametrize("at", ["check", "comments"])
def test_a_create_during_an_import_waits_for_it_and_gets_the_next_id(tmp_path, database_url, at):
    lines = exported(tmp_path)
    app = create_app(
        Settings(database_url=database_url, ratelimit_enabled=False, db_statement_timeout=WAIT)
    )
    client = app.test_client()
    with HeldImport(database_url, lines, at) as held:
        writer, created = in_thread(
            lambda: client.post(
                "/api/v1/contents/article-1/comments", json={"body": "posted during the import"}
            )
        )
        time.sleep(HOLD)
        assert writer.is_alive(), f"the create did not wait: {[r.json for r in created]}"
        if database_url.startswith("postgresql"):
            # Waiting for the import's table lock, not merely slow.
            assert any(q.startswith("INSERT INTO comments") for q in lock_waiters(database_url))
        # Readers go on: the import's rows are not there yet, and no error.
        started = time.monotonic()
        listed = app.test_client().get("/api/v1/contents/article-1/comments")
        assert listed.status_code == 200, listed.json
        assert listed.json["items"] == []
        assert time.monotonic() - started < 5  # not held until the import commits
        assert writer.is_alive()
    assert held.error is None, held.error
    assert held.result == json.loads(lines[0])["tables"]
    writer.join(WAIT)
    assert created, "the create never returned"
    assert created[0].status_code == 201, created[0].json
    # Readers page oldest-first by id: the new comment comes after every imported one.
    assert created[0].json["id"] == N_IMPORTED + 1
    assert stored_ids(database_url) == [*range(1, N_IMPORTED + 1), N_IMPORTED + 1]


def test_a_create_held_up_past_its_statement_timeout_answers_503(tmp_path, database_url):
    lines = exported(tmp_path)
    app = create_app(
        Settings(database_url=database_url, ratelimit_enabled=False, db_statement_timeout=0.5)
    )
    with HeldImport(database_url, lines, "check") as held:
        started = time.monotonic()
        late = app.test_client().post("/api/v1/contents/article-1/comments", json={"body": "x"})
        waited = time.monotonic() - started
        assert late.status_code == 503, late.json
        assert late.headers["Retry-After"] == "2"
        assert late.json["status"] == 503
        assert 0.5 <= waited < 5  # DB_STATEMENT_TIMEOUT, then the usual answer
    assert held.error is None, held.error
    assert stored_ids(database_url) == list(range(1, N_IMPORTED + 1))  # nothing of it stored


def test_a_create_before_the_import_makes_it_refuse(tmp_path, database_url):
    lines = exported(tmp_path)
    engine = make_engine(database_url)
    migrate(engine)
    engine.dispose()
    app = create_app(Settings(database_url=database_url, ratelimit_enabled=False))
    posted = app.test_client().post("/api/v1/contents/a/comments", json={"body": "first"})
    assert posted.status_code == 201, posted.json
    # Without the API key records (checked first): then comments is the non-empty table.
    header = json.loads(lines[0])
    header["tables"].pop("api_keys")
    rows = [line for line in lines[1:] if json.loads(line)["table"] != "api_keys"]
    dump = tmp_path / "dump.jsonl"
    dump.write_text(json.dumps(header) + "\n" + "".join(rows), encoding="utf-8")
    result = cli("import", str(dump), url=database_url)
    assert result.returncode == 1, result.stderr
    assert "the target database already has comments: import only into an empty one" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
    assert stored_ids(database_url) == [posted.json["id"]]


def test_two_imports_at_once_one_refuses(tmp_path, database_url):
    lines = exported(tmp_path)
    with HeldImport(database_url, lines, "check") as held:
        second = make_engine(database_url, statement_timeout=WAIT)
        other, outcome = in_thread(lambda: _import_or_error(second, lines))
        time.sleep(HOLD)
        assert other.is_alive(), f"the second import did not wait: {outcome}"
    assert held.error is None, held.error
    other.join(WAIT)
    second.dispose()
    assert outcome, "the second import never returned"
    assert isinstance(outcome[0], TransferError), outcome
    assert "already has api_keys" in str(outcome[0])
    assert stored_ids(database_url) == list(range(1, N_IMPORTED + 1))


def _import_or_error(engine: Any, lines: list[str]) -> Any:
    try:
        return import_(engine, lines)
    except TransferError as exc:
        return exc


class OpenWrite:
    """A comment inserted on another connection and not committed yet: a create in
    flight when the import starts (BEGIN IMMEDIATE on SQLite, as the service's)."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url)
        migrate(self.engine)
        self.conn = self.engine.connect()
        self.conn.execution_options(sqlite_begin="IMMEDIATE")
        self.transaction = self.conn.begin()
        now = datetime.now(UTC)
        self.conn.execute(
            insert(comments),
            {"content_id": "a", "body": "in flight", "created_at": now, "updated_at": now},
        )

    def close(self, commit: bool) -> None:
        if commit:
            self.transaction.commit()
        self.conn.close()
        self.engine.dispose()


def test_a_write_in_flight_when_the_import_starts_makes_it_wait_then_refuse(tmp_path, database_url):
    lines = exported(tmp_path)
    write = OpenWrite(database_url)
    try:
        importer = make_engine(database_url, statement_timeout=WAIT)
        other, outcome = in_thread(lambda: _import_or_error(importer, lines))
        time.sleep(HOLD)
        assert other.is_alive(), f"the import did not wait for the write: {outcome}"
    finally:
        write.close(commit=True)
    other.join(WAIT)
    importer.dispose()
    assert outcome, "the import never returned"
    assert isinstance(outcome[0], TransferError), outcome
    assert "the target database already has comments" in str(outcome[0])
    assert len(stored_ids(database_url)) == 1


def test_an_import_that_cannot_get_the_lock_in_time_says_so_in_one_line(tmp_path, database_url):
    lines = exported(tmp_path)
    write = OpenWrite(database_url)
    try:
        importer = make_engine(database_url, statement_timeout=0.3)
        with pytest.raises(TransferError, match=r"^cannot start the import: \S") as refused:
            import_(importer, lines)
        importer.dispose()
    finally:
        write.close(commit=False)
    assert "\n" not in str(refused.value)
    assert stored_ids(database_url) == []
