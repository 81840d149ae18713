"""The floor under our legacy create: Flask and one SQLite file its workers share, and none
of our layers (contract validation, guards, metrics, access log, auth hooks, read cache).
bench/floor.py serves it under our own worker class beside the original and ours, to tell
what Flask and a shared SQLite file cost from what our layers cost.

Settings (environment):
- FLOOR_DB: the SQLite file.
- FLOOR_SCHEMA=plain: a table of its own with one index (``create_plain``), one INSERT.
- FLOOR_SCHEMA=ours: a database that `comments-api migrate` made (our indexes and change-
  marker trigger); each create runs our author check and our INSERT, the statements
  compiled from the repository's own, with the bench's relaxed windows (0 s).

Writers take turns as ours do (an ``flock`` before BEGIN IMMEDIATE), so no create waits
in SQLite's sleeping busy handler; journal, synchronous and checkpoint settings are ours.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from datetime import UTC, datetime

from flask import Flask, jsonify, request
from sqlalchemy.dialects import sqlite

from comments_api.store.driver_sql import DriverStatement
from comments_api.store.repository import (
    _AUTHOR_ACTIVITY,
    _INSERT_COMMENT,
    _INSERTED_COLUMNS,
    SQLITE_WAL_SIZE_LIMIT,
)

app = Flask("floor")
_DIALECT = sqlite.dialect()
INSERT = DriverStatement.compile(_INSERT_COMMENT, _DIALECT, _INSERTED_COLUMNS)
AUTHOR_ACTIVITY = DriverStatement.compile(_AUTHOR_ACTIVITY, _DIALECT)
# Per process (gunicorn forks the workers after importing this module).
_connections: dict[int, tuple[sqlite3.Connection, int]] = {}


def create_plain(path: str) -> None:
    """The plain schema: one table, one index for the list."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size=2048")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE comments (id INTEGER PRIMARY KEY, content_id TEXT NOT NULL, "
        "email TEXT, body TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    conn.execute("CREATE INDEX ix_comments_content_id_id ON comments (content_id, id)")
    conn.commit()
    conn.close()


def _connection() -> tuple[sqlite3.Connection, int]:
    pid = os.getpid()
    if pid not in _connections:
        path = os.environ["FLOOR_DB"]
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_SIZE_LIMIT // page_size}")
        conn.execute("PRAGMA busy_timeout=5000")
        turn = os.open(f"{path}-floor.lock", os.O_RDWR | os.O_CREAT, 0o600)
        _connections[pid] = (conn, turn)
    return _connections[pid]


def _insert_ours(conn: sqlite3.Connection, content_id: str, email: str, body: str) -> None:
    now = datetime.now(UTC)
    key = f"email:{email.strip().lower()}"
    activity = {
        "content_id": content_id,
        "author_key": key,
        "email_key": key,
        "decomposed_key": key,
        "legacy_key": key,
        "thread_since": now,
        "dup_since": now,
        "body": body,
    }
    conn.execute(AUTHOR_ACTIVITY.sql, AUTHOR_ACTIVITY.parameters(activity)).fetchone()
    values = {
        "content_id": content_id,
        "parent_id": None,
        "body": body,
        "email": email,
        "author_name": None,
        "author_subject": None,
        "status": "published",
        "created_at": now,
        "updated_at": now,
        "author_key": key,
    }
    conn.execute(INSERT.sql, INSERT.parameters(values)).fetchone()


@app.post("/api/comment/new")
def new_comment():
    data = request.get_json()
    content_id = str(data["content_id"])
    conn, turn = _connection()
    fcntl.flock(turn, fcntl.LOCK_EX)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if os.environ.get("FLOOR_SCHEMA") == "ours":
                _insert_ours(conn, content_id, data["email"], data["comment"])
            else:
                conn.execute(
                    "INSERT INTO comments (content_id, email, body, created_at) "
                    "VALUES (?, ?, ?, datetime('now'))",
                    (content_id, data["email"], data["comment"]),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        fcntl.flock(turn, fcntl.LOCK_UN)
    return jsonify(
        status="SUCCESS", message=f"comment created and associated with content_id {content_id}"
    )


@app.get("/api/comment/list/<content_id>")
def list_comments(content_id: str):
    conn, _ = _connection()
    rows = conn.execute(
        "SELECT email, body FROM comments WHERE content_id = ? ORDER BY id", (content_id,)
    ).fetchall()
    if not rows:
        return jsonify(status="NOT-FOUND", message=f"content_id {content_id} not found"), 404
    return jsonify([{"email": email, "comment": body} for email, body in rows])
