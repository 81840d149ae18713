"""Migrations from an empty database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from functools import partial
from urllib.parse import quote

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError

from comments_api.identity.credentials import SCOPE_MODERATE
from comments_api.store.repository import (
    SQLITE_PAGE_SIZE,
    Repository,
    head_revision,
    make_engine,
    metadata,
    migrate,
)

from .authkit import AUDIENCE, ISSUER, api_key, bearer
from .support import VENV_BIN, marker_rows, wait_until


def _schema_diff(conn) -> list:
    """What differs between the migrated schema and the Table definitions in
    store/repository.py, for this database: an index defined for the other dialect only
    (``ddl_if``) is not expected here."""
    dialect = conn.dialect.name

    def for_this_dialect(obj, name, type_, reflected, compare_to) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        return reflected or condition is None or condition.dialect in (None, dialect)

    context = MigrationContext.configure(conn, opts={"include_object": for_this_dialect})
    return compare_metadata(context, metadata)


def test_upgrade_from_empty_creates_the_schema_the_code_expects(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        # The migrated schema and the Table definitions in store/repository.py agree exactly.
        diff = _schema_diff(conn)
        assert diff == []
        inspector = inspect(conn)
        assert "comments" in inspector.get_table_names()
        index_columns = {tuple(ix["column_names"]) for ix in inspector.get_indexes("comments")}
        # SQLite: one index for a content's lists and counts; PostgreSQL two (0011).
        if conn.dialect.name == "sqlite":
            assert ("content_id", "id", "status") in index_columns
            assert ("content_id", "id") not in index_columns
        else:
            assert {("content_id", "id"), ("content_id", "status", "id")} <= index_columns
    migrate(engine)  # a second run is a no-op
    engine.dispose()


def _migrate_command(database_url: str, cwd, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate", *args],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_command(database_url, tmp_path):
    result = _migrate_command(database_url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"database is at revision {head_revision()}" in result.stdout


def test_migrate_down_to_steps_the_schema_back_and_migrate_brings_it_up(database_url, tmp_path):
    """`migrate --down-to`: rolling back further than one release needs the schema the
    older release expects (docs/deployment.md: on SQLite, 0012's inserts leave the marker
    row that releases before 0011 read alone). A revision it cannot go down to is one line,
    and the schema stays where it was."""

    run = partial(_migrate_command, database_url, tmp_path)
    engine = make_engine(database_url)
    head = head_revision()
    try:
        assert run().returncode == 0
        result = run("--down-to", "0011")
        assert result.returncode == 0, result.stderr
        assert "database is at revision 0011" in result.stdout
        assert "Running downgrade 0014 -> 0013" in result.stdout  # one step at a time
        assert "Running downgrade 0013 -> 0012" in result.stdout
        assert "Running downgrade 0012 -> 0011" in result.stdout
        assert Repository(engine).schema_revision() == "0011"
        if engine.dialect.name == "sqlite":  # 0011's trigger is back: every insert bumps
            insert = text(
                "INSERT INTO comments (content_id, body, status, created_at, updated_at)"
                " VALUES ('a', 'x', 'published', '2026-12-06', '2026-12-06')"
            )
            marker = text("SELECT version FROM content_versions WHERE content_id = 'a'")
            with engine.begin() as conn:
                conn.execute(insert)
                first = conn.execute(marker).scalar()
                conn.execute(insert)  # 0012's trigger would leave the row alone
                assert conn.execute(marker).scalar() != first

        again = run("--down-to", "0011")  # already there: nothing to do
        assert again.returncode == 0, again.stderr
        assert "database is at revision 0011" in again.stdout
        for target, why in (
            (head, "below"),  # ahead of the database
            ("9999", "not a revision this version ships"),
            ("0011x", "not a revision this version ships"),
        ):
            refused = run("--down-to", target)
            assert refused.returncode == 1, (target, refused.stderr)
            assert why in refused.stderr, (target, refused.stderr)
            assert "Traceback" not in refused.stderr
            assert Repository(engine).schema_revision() == "0011"

        up = run()
        assert up.returncode == 0, up.stderr
        assert f"database is at revision {head}" in up.stdout
        with engine.connect() as conn:
            assert _schema_diff(conn) == []
    finally:
        engine.dispose()


def test_sqlite_database_file_is_created_on_first_run_but_not_a_missing_directory(tmp_path):
    target = tmp_path / "comments.db"
    engine = make_engine(f"sqlite:///{target}")
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    assert target.exists()
    # A directory that does not exist is a mistyped path (only the default's ./data is
    # made, tests/test_cli.py): nothing is created there (60de4de).
    mistyped = tmp_path / "nested" / "dir" / "comments.db"
    engine = make_engine(f"sqlite:///{mistyped}")
    with pytest.raises(OperationalError):
        migrate(engine)
    engine.dispose()
    assert not (tmp_path / "nested").exists()


def test_new_sqlite_databases_get_small_pages_and_existing_ones_keep_theirs(tmp_path):
    # Page size is fixed when SQLite creates the file (store/repository.py, SQLITE_PAGE_SIZE);
    # the WAL is folded back at 1 MiB whatever the page size.
    def pragmas(path) -> tuple[int, int]:
        engine = make_engine(f"sqlite:///{path}")
        try:
            migrate(engine)
            with engine.connect() as conn:
                page = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
                checkpoint = conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
                return page, checkpoint
        finally:
            engine.dispose()

    assert pragmas(tmp_path / "new.db") == (SQLITE_PAGE_SIZE, (1 << 20) // SQLITE_PAGE_SIZE)

    old = tmp_path / "old.db"
    created = sqlite3.connect(old)
    created.execute("PRAGMA page_size=4096")
    created.execute("CREATE TABLE kept (x)")  # the file exists: its page size is fixed
    created.close()
    assert pragmas(old) == (4096, 256)


def test_sqlite_markers_move_to_a_without_rowid_table_and_back_intact(tmp_path):
    # 0005 rebuilds content_versions on SQLite: the markers' values must survive (a read
    # cache would otherwise see a change that never happened), and the triggers that bump
    # them must work after the rebuild, in both directions.
    from alembic import command

    from comments_api.store.repository import _alembic_config

    engine = make_engine(f"sqlite:///{tmp_path / 'markers.db'}")

    def table_sql() -> str:
        with engine.connect() as conn:
            return conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'content_versions'"
            ).scalar_one()

    markers = partial(marker_rows, engine)

    def write(statement: str) -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(statement)

    insert = (
        "INSERT INTO comments (content_id, body, status, created_at, updated_at) "
        "VALUES ('{}', 'x', 'published', '2026-12-02', '2026-12-02')"
    )
    try:
        migrate(engine, "0004")
        write(insert.format("a"))
        write(insert.format("b"))
        before = markers()
        assert set(before) == {"a", "b"}

        migrate(engine, "0005")  # 0012 stops most inserts from writing the row
        assert "WITHOUT ROWID" in table_sql()
        assert markers() == before
        write(insert.format("a"))
        after_insert = markers()
        assert after_insert["a"] != before["a"]
        assert after_insert["b"] == before["b"]
        write("UPDATE comments SET body = 'y' WHERE content_id = 'b'")
        assert markers()["b"] != before["b"]
        write(insert.format("c"))
        write("DELETE FROM comments WHERE content_id = 'c'")
        assert set(markers()) == {"a", "b", "c"}
        kept = markers()

        with engine.begin() as conn:
            config = _alembic_config(engine)
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
        assert "WITHOUT ROWID" not in table_sql()
        assert markers() == kept
        write(insert.format("a"))
        assert markers()["a"] != kept["a"]
    finally:
        engine.dispose()


def test_two_migrators_at_once_on_postgres_run_each_migration_once(postgres_url):
    """Two replicas (or a Job and a replica) starting together on an empty database: the
    second waits for the first's lock, then finds nothing left to do."""
    engines = [make_engine(postgres_url) for _ in range(2)]
    errors: list[BaseException] = []

    def run(engine) -> None:
        try:
            migrate(engine)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    with engines[0].connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == (
            head_revision()
        )
        # The session lock was given back: a third run takes it at once.
        assert (
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
            ).scalar()
            == 0
        )
    migrate(engines[1])
    for engine in engines:
        engine.dispose()


def test_postgres_index_migration_lets_writes_through_while_it_waits(postgres_url):
    """0006 builds its index CONCURRENTLY: while the build waits for a transaction that
    was writing before it (as a plain CREATE INDEX waits too), other comments are still
    written, instead of queueing behind the build's table lock until they time out."""
    # A request's statement timeout, shorter than the build's wait below: migrations must
    # not be bound by it.
    engine = make_engine(postgres_url, statement_timeout=1.0)
    migrate(engine, "0005")
    row = (
        "INSERT INTO comments (content_id, body, status, created_at, updated_at) "
        "VALUES (%s, 'x', 'published', now(), now())"
    )
    older = engine.raw_connection()
    older.cursor().execute(row, ("older",))  # open: the build must wait for it to end
    migration = threading.Thread(target=migrate, args=(engine, "0006"))
    migration.start()
    try:
        assert wait_until(lambda: _building(engine), 10), "the index build never started"
        writer = engine.raw_connection()
        try:
            cursor = writer.cursor()
            cursor.execute("SET lock_timeout = '2s'")
            cursor.execute(row, ("live",))  # a plain CREATE INDEX: canceled by lock_timeout
            writer.commit()
        finally:
            writer.close()
        time.sleep(1.5)  # the build keeps waiting, past the statement timeout
        assert migration.is_alive()
    finally:
        older.commit()
        older.close()
        migration.join(30)
    assert not migration.is_alive()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == "0006"
        valid = conn.exec_driver_sql(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_comments_hidden'::regclass"
        ).scalar()
        assert valid is True
        assert conn.exec_driver_sql("SELECT count(*) FROM comments").scalar() == 2
    engine.dispose()


def _building(engine) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'",
                ("CREATE INDEX%ix_comments_hidden%",),
            ).scalar()
        )


def _downgrade(engine, revision: str) -> None:
    from alembic import command

    from comments_api.store.repository import _alembic_config

    with engine.connect() as conn:
        config = _alembic_config(engine)
        config.attributes["connection"] = conn
        command.downgrade(config, revision)
        conn.commit()


def test_stored_answers_get_their_comment_id_and_lose_it_again(database_url):
    """0007 adds idempotency_keys.comment_id and its index, filled in from the answers
    stored before the upgrade: a comment created before it and deleted after it is erased
    from its answer too, as is one whose answer the release before wrote meanwhile. The
    downgrade takes both away and keeps the rows."""
    from comments_api.moderation.rules import ACTION_DELETE, transition
    from comments_api.store.repository import Repository

    engine = make_engine(database_url)
    secret = "posted before the upgrade"
    try:
        migrate(engine, "0006")
        with engine.begin() as conn:
            cid = conn.execute(
                text(
                    "INSERT INTO comments (content_id, body, status, created_at, updated_at) "
                    "VALUES ('m', :body, 'published', :at, :at) RETURNING id"
                ),
                {"body": secret, "at": "2026-12-04"},
            ).scalar_one()
            answer = json.dumps({"id": cid, "status": "published", "body": secret})
            conn.execute(
                text(
                    "INSERT INTO idempotency_keys (scope, key, request_hash, status, body, "
                    "created_at) VALUES ('anonymous', :key, 'h', 201, :body, :at)"
                ),
                [
                    {"key": "k-comment", "body": answer, "at": "2026-12-04"},
                    {"key": "k-odd", "body": '{"id": "seven"}', "at": "2026-12-04"},
                ],
            )

        migrate(engine)
        with engine.connect() as conn:
            assert _schema_diff(conn) == []
            rows = _comment_ids(conn)
            indexes = {
                ix["name"]: ix["column_names"]
                for ix in inspect(conn).get_indexes("idempotency_keys")
            }
        assert rows == {"k-comment": cid, "k-odd": None}
        assert indexes["ix_idempotency_keys_comment_id"] == ["comment_id"]
        # During a rolling upgrade the release before 0007 still writes rows without it.
        with engine.begin() as conn:
            late = conn.execute(
                text(
                    "INSERT INTO comments (content_id, body, status, created_at, updated_at) "
                    "VALUES ('m', :body, 'published', :at, :at) RETURNING id"
                ),
                {"body": secret, "at": "2026-12-05"},
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO idempotency_keys (scope, key, request_hash, status, body, "
                    "created_at) VALUES ('anonymous', 'k-late', 'h', 201, :body, :at)"
                ),
                {"body": json.dumps({"id": late, "body": secret}), "at": "2026-12-05"},
            )
        Repository(engine).moderate([cid, late], transition(ACTION_DELETE), "moderator")
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT key, body FROM idempotency_keys")
            bodies = {key: body for key, body in rows if key != "k-odd"}
        assert set(bodies) == {"k-comment", "k-late"}
        for body in bodies.values():
            assert secret not in body
            assert json.loads(body)["status"] == "deleted"

        _downgrade(engine, "0006")
        with engine.connect() as conn:
            inspector = inspect(conn)
            columns = {c["name"] for c in inspector.get_columns("idempotency_keys")}
            indexes = {ix["name"] for ix in inspector.get_indexes("idempotency_keys")}
            kept = conn.exec_driver_sql("SELECT count(*) FROM idempotency_keys").scalar()
            version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        assert "comment_id" not in columns
        assert "ix_idempotency_keys_comment_id" not in indexes
        assert (kept, version) == (3, "0006")

        migrate(engine)  # and up again
        with engine.connect() as conn:
            assert _schema_diff(conn) == []
            assert _comment_ids(conn) == {"k-comment": cid, "k-odd": None, "k-late": late}
    finally:
        engine.dispose()


def _comment_ids(conn) -> dict[str, int | None]:
    rows = conn.exec_driver_sql("SELECT key, comment_id FROM idempotency_keys")
    return {key: comment_id for key, comment_id in rows}


def test_edited_at_is_filled_from_the_audit_log_and_dropped_again(database_url):
    """0008 adds comments.edited_at, set from each comment's latest `edit` audit row: an
    edited comment shows when, one never edited or only moderated stays null, and so does a
    tombstone. The release before keeps writing comments without it. The downgrade drops
    the column, keeps the rows and the change-marker triggers."""
    from comments_api.store.repository import Repository

    engine = make_engine(database_url)
    insert_comment = text(
        "INSERT INTO comments (content_id, body, status, created_at, updated_at) "
        "VALUES ('m', :body, :status, :at, :at) RETURNING id"
    )
    audit = text(
        "INSERT INTO audit_log (actor, action, comment_ids, created_at) "
        "VALUES (:actor, :action, :ids, :at)"
    )
    try:
        migrate(engine, "0007")
        with engine.begin() as conn:
            ids = {
                name: conn.execute(
                    insert_comment,
                    {"body": name, "status": status, "at": "2026-12-01 10:00:00"},
                ).scalar_one()
                for name, status in [
                    ("edited", "published"),
                    ("approved", "published"),
                    ("never", "published"),
                    ("deleted", "deleted"),
                ]
            }
            conn.execute(
                audit,
                [
                    {
                        "actor": "jwt:alice",
                        "action": "edit",
                        "ids": json.dumps([ids["edited"]]),
                        "at": "2026-12-01 10:05:00",
                    },
                    {  # the latest edit wins, whatever the audit ids' order
                        "actor": "jwt:alice",
                        "action": "edit",
                        "ids": json.dumps([ids["edited"]]),
                        "at": "2026-12-01 10:09:30",
                    },
                    {
                        "actor": "jwt:alice",
                        "action": "edit",
                        "ids": json.dumps([ids["edited"]]),
                        "at": "2026-12-01 10:07:00",
                    },
                    {
                        "actor": "api_key:mod",
                        "action": "approve",
                        "ids": json.dumps([ids["approved"], ids["edited"]]),
                        "at": "2026-12-01 11:00:00",
                    },
                    {
                        "actor": "jwt:bob",
                        "action": "edit",
                        "ids": json.dumps([ids["deleted"]]),
                        "at": "2026-12-01 10:06:00",
                    },
                    {"actor": "api_key:mod", "action": "ban", "ids": "[]", "at": "2026-12-01"},
                ],
            )

        migrate(engine)
        with engine.connect() as conn:
            assert _schema_diff(conn) == []
        repo = Repository(engine)
        edited = {name: repo.get(cid).edited_at for name, cid in ids.items()}
        assert edited["edited"] is not None
        assert edited["edited"].isoformat() == "2026-12-01T10:09:30+00:00"
        assert (edited["approved"], edited["never"], edited["deleted"]) == (None, None, None)
        # The release before writes comments by its own columns; they read as never edited.
        with engine.begin() as conn:
            late = conn.execute(
                insert_comment, {"body": "late", "status": "published", "at": "2026-12-05"}
            ).scalar_one()
        assert repo.get(late).edited_at is None

        _downgrade(engine, "0007")
        with engine.connect() as conn:
            columns = {c["name"] for c in inspect(conn).get_columns("comments")}
            kept = conn.exec_driver_sql("SELECT count(*) FROM comments").scalar()
            marker = conn.exec_driver_sql(
                "SELECT version FROM content_versions WHERE content_id = 'm'"
            ).scalar()
        assert "edited_at" not in columns
        assert kept == 5
        # The triggers survived: a write still moves the content's change marker.
        with engine.begin() as conn:
            conn.execute(
                insert_comment, {"body": "after", "status": "published", "at": "2026-12-06"}
            )
            moved = conn.exec_driver_sql(
                "SELECT version FROM content_versions WHERE content_id = 'm'"
            ).scalar()
        assert moved != marker

        migrate(engine)  # and up again: filled in once more
        assert repo.get(ids["edited"]).edited_at == edited["edited"]
        with engine.connect() as conn:
            assert _schema_diff(conn) == []
    finally:
        engine.dispose()


def _insert_authored(engine, status: str) -> None:
    """One comment of content c1 by email:a@example.com, written as the schema stands."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO comments (content_id, body, status, created_at, updated_at, "
                "author_key) VALUES ('c1', 'x', :status, :now, :now, 'email:a@example.com')"
            ),
            {"status": status, "now": "2026-12-05 10:00:00+00:00"},
        )


def _index_is_valid(conn, name: str) -> bool:
    """PostgreSQL: the index was built whole (a CONCURRENTLY build that failed leaves it
    invalid)."""
    query = "SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass"
    return conn.exec_driver_sql(query, (name,)).scalar() is True


def _comment_indexes(engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        found = inspect(conn).get_indexes("comments")
    return {ix["name"]: ix["column_names"] for ix in found}


def test_author_key_index_is_built_and_dropped_again(database_url):
    """0009 adds the index led by author_key that one author's listing and delete by author
    read across contents (the (content_id, author_key, created_at) one serves one content);
    comments written before it are in it, and a downgrade takes only the index away."""
    name = "ix_comments_author_key_status_id"
    engine = make_engine(database_url)
    migrate(engine, "0008")
    _insert_authored(engine, "hidden")
    indexes = partial(_comment_indexes, engine)
    assert name not in indexes()
    migrate(engine, "0009")
    assert indexes()[name] == ["author_key", "status", "id"]
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            assert _index_is_valid(conn, name)
        else:
            plan = conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN SELECT id FROM comments WHERE author_key = "
                "'email:a@example.com' AND status = 'hidden' ORDER BY id"
            ).all()
            assert name in " ".join(str(row) for row in plan)
    _downgrade(engine, "0008")
    assert name not in indexes()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM comments").scalar() == 1
    migrate(engine, "0009")
    assert name in indexes()
    engine.dispose()


def test_the_author_index_led_by_status_replaces_0009s_and_back(database_url):
    """0010 builds (status, author_key, id) and then drops 0009's (author_key, status, id),
    which the create's author check could read instead of its own (test_storage.py); one
    author's listing reads the new one, and a downgrade puts 0009's back."""
    new, old = "ix_comments_status_author_key_id", "ix_comments_author_key_status_id"
    engine = make_engine(database_url)
    migrate(engine, "0009")
    _insert_authored(engine, "published")
    indexes = partial(_comment_indexes, engine)
    migrate(engine, "0010")
    found = indexes()
    assert found[new] == ["status", "author_key", "id"]
    assert old not in found
    listing = (
        "SELECT id FROM comments WHERE author_key = 'email:a@example.com' "
        "AND status = 'published' ORDER BY id"
    )
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            assert _index_is_valid(conn, new)
            conn.exec_driver_sql("SET enable_seqscan = off")  # one row: any index beats none
            plan = conn.exec_driver_sql(f"EXPLAIN {listing}").all()
        else:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {listing}").all()
        assert new in " ".join(str(row) for row in plan)
        assert conn.exec_driver_sql(listing).all() == [(1,)]
    _downgrade(engine, "0009")
    found = indexes()
    assert found[old] == ["author_key", "status", "id"]
    assert new not in found
    migrate(engine)
    assert new in indexes()
    engine.dispose()


def test_sqlite_0011_goes_down_and_up(tmp_path):
    """0011 on SQLite: one content index for two, and a trigger for comments moved to
    another content; markers kept both ways, and every insert still writes its content's
    (0012 stops that)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'down.db'}")
    insert = (
        "INSERT INTO comments (content_id, body, status, created_at, updated_at) "
        "VALUES (:c, 'x', 'published', '2026-12-06', '2026-12-06')"
    )

    def write(sql: str, **params: str) -> None:
        with engine.begin() as conn:
            conn.execute(text(sql), params)

    markers = partial(marker_rows, engine)

    def indexes() -> set[str]:
        with engine.connect() as conn:
            return {ix["name"] for ix in inspect(conn).get_indexes("comments")}

    move = "UPDATE comments SET content_id = :to WHERE content_id = :c"
    try:
        migrate(engine, "0010")
        write(insert, c="a")
        write(insert, c="b")
        before = markers()
        migrate(engine, "0011")
        assert markers() == before  # the upgrade moves no marker
        assert "ix_comments_content_id_id_status" in indexes()
        assert not {"ix_comments_content_id_id", "ix_comments_content_id_status_id"} & indexes()
        write(insert, c="a")
        inserted = markers()
        assert inserted["a"] != before["a"]
        write(move, c="a", to="c")  # the content left is bumped too
        moved = markers()
        assert moved["a"] != inserted["a"]
        assert moved["c"] != 0

        _downgrade(engine, "0010")
        assert markers() == moved
        assert {"ix_comments_content_id_id", "ix_comments_content_id_status_id"} <= indexes()
        assert "ix_comments_content_id_id_status" not in indexes()
        write(move, c="c", to="b")  # 0005's update trigger alone: the new content only
        assert markers()["c"] == moved["c"]

        migrate(engine)
        with engine.connect() as conn:
            assert _schema_diff(conn) == []
    finally:
        engine.dispose()


def test_sqlite_0012_goes_down_and_up(tmp_path):
    """0012 on SQLite: an insert writes its content's marker row only for the content's
    first comment or an id under its newest; 0011's trigger (every insert) comes back down.
    The markers the read cache reads move with every insert either way."""
    from comments_api.store.versions import ChangeMarkers

    engine = make_engine(f"sqlite:///{tmp_path / 'down.db'}")
    markers = ChangeMarkers(engine)

    def insert(content: str, comment_id: int | None = None) -> None:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO comments (id, content_id, body, status, created_at, updated_at)"
                    " VALUES (:id, :c, 'x', 'published', '2026-12-06', '2026-12-06')"
                ),
                {"id": comment_id, "c": content},
            )

    rows = partial(marker_rows, engine)

    def read(content: str) -> int:
        return markers.versions([content])[0]

    try:
        migrate(engine, "0011")
        insert("a")
        before, marker = rows(), read("a")
        migrate(engine)
        assert rows() == before  # the upgrade moves no marker
        insert("a")
        assert rows() == before  # not the first, not under the newest: no row written
        assert read("a") != marker
        insert("b")  # a content's first comment writes its row
        assert set(rows()) == {"a", "b"}
        after_b = rows()
        insert("b", comment_id=-1)  # under b's newest
        assert rows()["b"] != after_b["b"]
        assert rows()["a"] == before["a"]

        _downgrade(engine, "0011")
        kept, marker = rows(), read("a")
        insert("a")  # 0011's trigger: every insert writes the row
        assert rows()["a"] != kept["a"]
        assert read("a") != marker

        migrate(engine)
        with engine.connect() as conn:
            assert _schema_diff(conn) == []
    finally:
        markers.close()
        engine.dispose()


def test_sqlite_0014_never_gives_a_removed_comments_id_again(tmp_path):
    """0014 on SQLite: AUTOINCREMENT. Before it, removing the comment with the largest id
    (a pending one deleted for good) gave its id to the next comment; the upgrade starts
    past every id the database still names (comments, stored answers, the audit log),
    keeps the rows, indexes, triggers and markers as they were, and goes back down."""
    engine = make_engine(f"sqlite:///{tmp_path / 'ids.db'}")

    def insert(content: str = "a") -> int:
        with engine.begin() as conn:
            return int(
                conn.execute(
                    text(
                        "INSERT INTO comments (content_id, body, status, created_at, updated_at)"
                        " VALUES (:c, 'x', 'pending', '2026-12-07', '2026-12-07') RETURNING id"
                    ),
                    {"c": content},
                ).scalar_one()
            )

    def remove(comment_id: int) -> None:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM comments WHERE id = :i"), {"i": comment_id})

    def schema() -> set[tuple[str, str]]:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT type, sql FROM sqlite_master WHERE tbl_name = 'comments'"
                " AND type IN ('index', 'trigger')"
            )
            return {(kind, sql) for kind, sql in rows}

    try:
        migrate(engine, "0012")
        first = insert()
        removed = insert()
        remove(removed)
        assert insert() == removed  # the defect: the id is given again
        remove(removed)
        # Ids removed before the upgrade, still named by a stored answer and an audit entry.
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO idempotency_keys (scope, key, request_hash, status, body,"
                    " created_at, comment_id) VALUES ('s', 'k', 'h', 201, '{}', '2026-12-07', :i)"
                ),
                {"i": removed + 5},
            )
            conn.execute(
                text(
                    "INSERT INTO audit_log (actor, action, comment_ids, created_at) VALUES"
                    " ('m', 'delete', :ids, '2026-12-07'), ('m', 'edit', 'not json', '2026-12-07')"
                ),
                {"ids": json.dumps([first, removed + 9])},
            )
        migrate(engine, "0013")
        kept, markers = schema(), marker_rows(engine)

        migrate(engine, "0014")
        assert schema() == kept  # every index and trigger as it was
        assert marker_rows(engine) == markers  # the rebuild moves no marker
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT id FROM comments").scalars().all() == [first]
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        after = insert()
        assert after == removed + 10  # past the audit log's id, the largest named
        remove(after)
        assert insert() == after + 1  # and never again after the upgrade
        with engine.connect() as conn:
            # The schema the code expects, but for what later migrations add (0017's index).
            assert [(d[0], d[1].name) for d in _schema_diff(conn)] == [
                ("add_index", "ix_bans_created_at_target")
            ]

        _downgrade(engine, "0013")
        assert schema() == kept
        again = insert()
        remove(again)
        assert insert() == again  # 0013's table: the largest id plus one, as before
        migrate(engine)
        assert insert() == again + 1
    finally:
        engine.dispose()


def test_a_comments_replies_are_found_by_index_when_it_is_removed(database_url):
    """0013: a removal asks whether anything replies to the comment, and the foreign key
    asks it of every row removed; without an index on parent_id each read the whole table
    with the write lock held. Comments replying to nothing are not in it (partial)."""
    engine = make_engine(database_url)
    try:
        migrate(engine, "0012")
        with engine.connect() as conn:
            assert "ix_comments_parent_id" not in {
                ix["name"] for ix in inspect(conn).get_indexes("comments")
            }
        migrate(engine)
        with engine.connect() as conn:
            indexes = {ix["name"]: ix for ix in inspect(conn).get_indexes("comments")}
            assert indexes["ix_comments_parent_id"]["column_names"] == ["parent_id"]
            if conn.dialect.name == "sqlite":
                plan = " ".join(
                    str(row[-1])
                    for row in conn.exec_driver_sql(
                        "EXPLAIN QUERY PLAN SELECT 1 FROM comments WHERE parent_id = 1"
                    )
                )
                assert "ix_comments_parent_id" in plan, plan
            else:  # built CONCURRENTLY: valid, not a half-built leftover
                valid = conn.exec_driver_sql(
                    "SELECT indisvalid FROM pg_index WHERE indexrelid ="
                    " 'ix_comments_parent_id'::regclass"
                ).scalar()
                assert valid is True
        _downgrade(engine, "0012")
        with engine.connect() as conn:
            assert "ix_comments_parent_id" not in {
                ix["name"] for ix in inspect(conn).get_indexes("comments")
            }
    finally:
        engine.dispose()


def test_migrate_down_to_the_first_revision_with_replies_and_up_again(database_url, tmp_path):
    """`migrate --down-to 0001` is accepted; on SQLite, 0002's downgrade rebuilt comments in
    batch mode, and dropping the old table failed its foreign key check as soon as one
    comment replied to another: a traceback, and the schema stayed where it was."""
    engine = make_engine(database_url)
    migrate(engine)
    comment = (
        "INSERT INTO comments (id, content_id, parent_id, body, status, created_at, updated_at)"
        " VALUES (:id, 'a', :parent, 'x', 'published', '2026-12-07', '2026-12-07')"
    )
    with engine.begin() as conn:
        conn.execute(text(comment), [{"id": 1, "parent": None}, {"id": 2, "parent": 1}])
    try:
        down = _migrate_command(database_url, tmp_path, "--down-to", "0001")
        assert down.returncode == 0, down.stderr
        assert "database is at revision 0001" in down.stdout
        up = _migrate_command(database_url, tmp_path)
        assert up.returncode == 0, up.stderr
        with engine.connect() as conn:
            assert _schema_diff(conn) == []
            replies = text("SELECT id, parent_id FROM comments ORDER BY id")
            assert conn.execute(replies).all() == [(1, None), (2, 1)]
    finally:
        engine.dispose()


def test_0015_author_keys_of_addresses_outside_ascii(database_url, make_app):
    """0002 keyed comments posted before it ``'email:' || lower(email)`` in SQL, and
    SQLite's lower() folds ASCII only: ``ÅSA@example.com`` became ``email:Åsa@…``, which no
    author filter names, and an erasure by that address deleted nothing. 0015 keys them as
    the code does."""
    engine = make_engine(database_url)
    try:
        migrate(engine, "0001")
        with engine.begin() as conn:
            for email in ("\u00c5SA@example.com", "Ann@Example.com"):
                conn.execute(
                    text(
                        "INSERT INTO comments (content_id, body, email, status, created_at,"
                        " updated_at) VALUES ('m1', 'before', :e, 'published', '2026-12-07',"
                        " '2026-12-07')"
                    ),
                    {"e": email},
                )
        migrate(engine)
        with engine.connect() as conn:
            keys = conn.exec_driver_sql("SELECT author_key FROM comments ORDER BY id").scalars()
            assert keys.all() == ["email:\u00e5sa@example.com", "email:ann@example.com"]
    finally:
        engine.dispose()
    app = make_app()
    client = app.test_client()
    mod = {"Authorization": f"Bearer {api_key(app, SCOPE_MODERATE)}"}
    erased = client.post(
        "/api/v1/moderation/comments",
        json={"action": "delete", "author": "email:\u00c5SA@example.com"},
        headers=mod,
    )
    assert erased.json["changed"] == [1]


def test_0016_author_keys_and_email_bans_in_composed_form(database_url, make_app):
    """One mailbox, two keys: ``josé@…`` posted decomposed (``e`` + U+0301) was keyed
    apart from the same address typed precomposed, so a ban by one form let the other post
    and an erasure by one deleted nothing of the other. 0016 keys both in NFC; two bans
    that become one keep the earliest."""
    composed, decomposed = "jos\u00e9@example.com", "jose\u0301@example.com"
    engine = make_engine(database_url)
    try:
        migrate(engine, "0015")
        with engine.begin() as conn:
            for email in (decomposed, "Ann@Example.com", "\u00c5SA@example.com"):
                conn.execute(
                    text(
                        "INSERT INTO comments (content_id, body, email, author_key, status,"
                        " created_at, updated_at) VALUES ('m1', 'before', :e, :k,"
                        " 'published', '2026-12-07', '2026-12-07')"
                    ),
                    {"e": email, "k": f"email:{email.strip().lower()}"},
                )
            ban = text(
                "INSERT INTO bans (target, reason, created_by, created_at)"
                " VALUES (:t, :r, 'api_key:m', :at)"
            )
            conn.execute(ban, {"t": f"email:{decomposed}", "r": "first", "at": "2026-12-01"})
            conn.execute(ban, {"t": f"email:{composed}", "r": "second", "at": "2026-12-02"})
            conn.execute(ban, {"t": "email:o\u0308@example.com", "r": "alone", "at": "2026-12-03"})
            conn.execute(ban, {"t": "sub:e\u0301", "r": "subject", "at": "2026-12-04"})
        migrate(engine)
        with engine.connect() as conn:
            keys = conn.exec_driver_sql("SELECT author_key FROM comments ORDER BY id").scalars()
            assert keys.all() == [
                f"email:{composed}",
                "email:ann@example.com",
                "email:\u00e5sa@example.com",
            ]
            kept = conn.exec_driver_sql("SELECT target, reason FROM bans ORDER BY reason")
            assert sorted(map(tuple, kept)) == [
                (f"email:{composed}", "first"),
                ("email:\u00f6@example.com", "alone"),
                ("sub:e\u0301", "subject"),  # a subject is matched exactly, as given
            ]
    finally:
        engine.dispose()
    app = make_app()
    client = app.test_client()
    mod = {"Authorization": f"Bearer {api_key(app, SCOPE_MODERATE)}"}
    # Typed in the other form than it was posted in: the ban stops it, the erasure finds it.
    refused = client.post(
        "/api/v1/contents/m1/comments", json={"body": "after", "email": decomposed.upper()}
    )
    assert refused.status_code == 403, refused.json
    erased = client.post(
        "/api/v1/moderation/comments",
        json={"action": "delete", "author": f"email:{composed}"},
        headers=mod,
    )
    assert erased.json["changed"] == [1]


def _ban_as_the_release_before_0016(database_url: str, email: str) -> None:
    """The database at head, and a ban of ``email`` as the release before 0016 stores it
    serving there (a rollout, a rollback): under its lower-cased key, in the form typed."""
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO bans (target, reason, created_by, created_at)"
                    " VALUES (:t, 'spam', 'api_key:m', '2026-12-07')"
                ),
                {"t": f"email:{email.strip().lower()}"},
            )
    finally:
        engine.dispose()


def test_0016_a_ban_the_release_before_takes_on_it_still_stops_the_address(database_url, make_app):
    """The release before 0016 serves on its schema (a rollout, `rollout undo`) and bans an
    address typed decomposed under its lower-cased key, after 0016's rewrite has run: this
    release must still refuse that address, as the release before did, not let it post."""
    decomposed = "jose\u0301@example.com"
    _ban_as_the_release_before_0016(database_url, decomposed)
    client = make_app().test_client()
    refused = client.post(
        "/api/v1/contents/m2/comments", json={"body": "after", "email": decomposed.upper()}
    )
    assert refused.status_code == 403, refused.json
    legacy = client.post(
        "/api/comment/new", json={"comment": "after", "email": decomposed, "content_id": "m2"}
    )
    assert legacy.status_code == 403, legacy.json
    # Listed as it stands, it is lifted as listed; then the address posts again.
    mod = {"Authorization": f"Bearer {api_key(client.application, SCOPE_MODERATE)}"}
    (listed,) = client.get("/api/v1/moderation/bans", headers=mod).json["items"]
    lifted = client.delete(f"/api/v1/moderation/bans/{quote(listed['target'])}", headers=mod)
    assert lifted.status_code == 204, lifted.json
    again = client.post("/api/v1/contents/m2/comments", json={"body": "later", "email": decomposed})
    assert again.status_code == 201, again.json


def test_0016_a_ban_the_release_before_takes_stops_the_address_typed_precomposed(
    database_url, make_app, signer
):
    """The release before 0016 bans an address typed decomposed under that form's key.
    This release keys the same address typed precomposed (as most readers type it) in NFC,
    which that ban did not name: the banned mailbox posted again here, through both APIs
    and in a reader's token, and lifting the ban by the address as usually typed left it
    standing (found by running d46602b's serve beside this one on one database)."""
    decomposed, composed = "jose\u0301@example.com", "jos\u00e9@example.com"
    _ban_as_the_release_before_0016(database_url, decomposed)
    app = make_app(jwt_hs256_secret=signer.key, jwt_issuer=ISSUER, jwt_audience=AUDIENCE)
    client = app.test_client()
    v1 = client.post("/api/v1/contents/m4/comments", json={"body": "after", "email": composed})
    assert v1.status_code == 403, v1.json
    legacy = client.post(
        "/api/comment/new", json={"comment": "after", "email": composed, "content_id": "m4"}
    )
    assert legacy.status_code == 403, legacy.json
    token = signer.token("reader-4", email=composed.upper())
    signed_in = client.post(
        "/api/v1/contents/m4/comments", json={"body": "after"}, headers=bearer(token)
    )
    assert signed_in.status_code == 403, signed_in.json
    # Lifted by the address as typed precomposed: no form of the ban is left standing.
    mod = {"Authorization": f"Bearer {api_key(app, SCOPE_MODERATE)}"}
    lifted = client.delete(f"/api/v1/moderation/bans/{quote(f'email:{composed}')}", headers=mod)
    assert lifted.status_code == 204, lifted.json
    assert client.get("/api/v1/moderation/bans", headers=mod).json["items"] == []
    again = client.post("/api/v1/contents/m4/comments", json={"body": "later", "email": decomposed})
    assert again.status_code == 201, again.json


def test_0016_comments_the_release_before_posts_on_it_are_listed_and_erased(database_url, make_app):
    """The release before 0016, serving on its schema, keys an address posted decomposed
    as given (lower-cased only): a listing or erasure by the address, which this release
    keys composed, found nothing of those comments."""
    decomposed, composed = "jose\u0301@example.com", "jos\u00e9@example.com"
    engine = make_engine(database_url)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO comments (content_id, body, email, author_key, status,"
                    " created_at, updated_at) VALUES ('m3', 'rollout', :e, :k, 'published',"
                    " '2026-12-07', '2026-12-07')"
                ),
                {"e": decomposed, "k": f"email:{decomposed}"},  # the release before's key
            )
    finally:
        engine.dispose()
    app = make_app()
    client = app.test_client()
    mod = {"Authorization": f"Bearer {api_key(app, SCOPE_MODERATE)}"}
    listing = client.get(
        f"/api/v1/moderation/comments?status=published&author={quote(f'email:{composed}')}",
        headers=mod,
    )
    assert [c["body"] for c in listing.json["items"]] == ["rollout"], listing.json
    erased = client.post(
        "/api/v1/moderation/comments",
        json={"action": "delete", "author": f"email:{composed.upper()}"},
        headers=mod,
    )
    assert erased.json["changed"] == [1], erased.json


def test_0017_the_ban_list_index_is_built_over_existing_bans_and_dropped_again(
    database_url, make_app
):
    """0017 adds (created_at, target) to bans, which the ban list's pages are read off:
    bans made before it are in it and page once each, and a downgrade takes only the index
    away. On SQLite a time stored without its microseconds (by hand) compared below its own
    position, as text, and its ban was listed again on the next page: 0017 writes it as
    every release does."""
    name = "ix_bans_created_at_target"
    engine = make_engine(database_url)
    migrate(engine, "0016")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO bans (target, reason, created_by, created_at) VALUES "
                "('sub:old-1', NULL, 'm', '2026-12-01 10:00:00'), "
                "('sub:old-2', 'spam', 'm', '2026-12-02 10:00:00')"
            )
        )

    def indexes() -> dict[str, list[str]]:
        with engine.connect() as conn:
            return {ix["name"]: ix["column_names"] for ix in inspect(conn).get_indexes("bans")}

    assert name not in indexes()
    migrate(engine, "0017")
    assert indexes()[name] == ["created_at", "target"]
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            assert _index_is_valid(conn, name)
        assert _schema_diff(conn) == []
        if engine.dialect.name == "sqlite":
            stored = conn.exec_driver_sql("SELECT created_at FROM bans ORDER BY target").scalars()
            assert stored.all() == ["2026-12-01 10:00:00.000000", "2026-12-02 10:00:00.000000"]
    client = make_app().test_client()
    mod = bearer(api_key(client.application, SCOPE_MODERATE))
    first = client.get("/api/v1/moderation/bans?limit=1", headers=mod).json
    assert [b["target"] for b in first["items"]] == ["sub:old-2"]
    rest = client.get(f"/api/v1/moderation/bans?cursor={first['next_cursor']}", headers=mod).json
    assert ([b["target"] for b in rest["items"]], rest["next_cursor"]) == (["sub:old-1"], None)

    _downgrade(engine, "0016")
    assert name not in indexes()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM bans").scalar() == 2
    migrate(engine)
    assert name in indexes()
    engine.dispose()
