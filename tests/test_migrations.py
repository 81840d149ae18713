"""Migrations from an empty database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import subprocess

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from comments_api.store.repository import (
    SQLITE_PAGE_SIZE,
    head_revision,
    make_engine,
    metadata,
    migrate,
)

from .support import VENV_BIN


def test_upgrade_from_empty_creates_the_schema_the_code_expects(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        # The migrated schema and the Table definitions in store/repository.py agree exactly.
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
        inspector = inspect(conn)
        assert "comments" in inspector.get_table_names()
        index_columns = {tuple(ix["column_names"]) for ix in inspector.get_indexes("comments")}
        assert ("content_id", "id") in index_columns
    migrate(engine)  # a second run is a no-op
    engine.dispose()


def test_migrate_command(database_url, tmp_path):
    result = subprocess.run(
        [str(VENV_BIN / "comments-api"), "migrate"],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"database is at revision {head_revision()}" in result.stdout


def test_sqlite_database_file_and_directory_are_created_on_first_run(tmp_path):
    target = tmp_path / "nested" / "dir" / "comments.db"
    engine = make_engine(f"sqlite:///{target}")
    migrate(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
    assert target.exists()


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

    def markers() -> dict[str, int]:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT content_id, version FROM content_versions")
            return {content: version for content, version in rows}

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

        migrate(engine)
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
