"""Migrations from an empty database, on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import subprocess

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from comments_api.store.repository import head_revision, make_engine, metadata, migrate

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
