"""SQLite: comment ids are never given out again (AUTOINCREMENT)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

Without AUTOINCREMENT, SQLite gives a new row the table's largest id plus one. A pending or
hidden comment that nothing replies to is removed for good when deleted, so when it held the
largest id, the next comment got its id again: a reader's cursor past that id skipped the new
comment, the deleted comment's Idempotency-Key replayed a `Location` that now named another
author's comment, and the audit log named two comments by one id. PostgreSQL's identity
sequence never gives an id twice; this makes SQLite do the same.

SQLite takes AUTOINCREMENT only where the table is created, so the table is rebuilt (SQLite's
own recipe, "Making Other Kinds Of Table Schema Changes"): a new table, the rows copied in id
order, the old table dropped, the new one renamed. Its indexes and triggers are read from the
schema before the drop and created again as they were. The new table's foreign key names
itself, so that the copy and the drop never check against the old table (foreign keys stay
on: a migration runs in one transaction, where that pragma cannot change); dropping the old
table checks every row's replies through 0013's index. The whole rebuild holds the write lock:
writers wait for it (or answer 503 after `DB_STATEMENT_TIMEOUT`), readers do not. It took
6 s for 300,000 comments of 300 characters on a 2-core machine (2026-12-07).

The sequence starts past every id known to have been given: the comments', the stored
answers' (`idempotency_keys.comment_id`) and the audit log's (`comment_ids`), so an id removed
before this upgrade is not given out again either.

The release before (0013) inserts without naming ids, so it can run on this schema (a
rollback) and its ids are not reused either.
"""

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_AUTOINCREMENT = "id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT"
_ROWID = "id INTEGER NOT NULL"
_ROWID_KEY = "CONSTRAINT pk_comments PRIMARY KEY (id), "
# {id} and {key}: one of the two forms above; the rest as migrations 0001-0008 left it.
_CREATE = (
    "CREATE TABLE comments_rebuilt ("
    "{id}, "
    "content_id VARCHAR(128) NOT NULL, "
    "parent_id INTEGER, "
    "body TEXT, "
    "email VARCHAR(254), "
    "author_name VARCHAR(80), "
    "author_subject VARCHAR(255), "
    "status VARCHAR(16) DEFAULT 'published' NOT NULL, "
    "created_at DATETIME NOT NULL, "
    "updated_at DATETIME NOT NULL, "
    "deleted_at DATETIME, "
    "author_key VARCHAR(300), "
    "edited_at DATETIME, "
    "{key}"
    "CONSTRAINT fk_comments_parent_id_comments FOREIGN KEY(parent_id) "
    "REFERENCES comments_rebuilt (id))"
)
# Parents before their replies: a reply's id is always above its parent's.
_COPY = (
    "INSERT INTO comments_rebuilt (id, content_id, parent_id, body, email, author_name, "
    "author_subject, status, created_at, updated_at, deleted_at, author_key, edited_at) "
    "SELECT id, content_id, parent_id, body, email, author_name, author_subject, status, "
    "created_at, updated_at, deleted_at, author_key, edited_at FROM comments ORDER BY id"
)
_SCHEMA_OF_COMMENTS = (
    "SELECT sql FROM sqlite_master WHERE tbl_name = 'comments' "
    "AND type IN ('index', 'trigger') AND sql IS NOT NULL ORDER BY type, name"
)
# Every id given so far, as far as the database still tells: malformed audit entries
# (written by hand) are read as none.
_HIGHEST_ID = (
    "SELECT max(coalesce((SELECT max(id) FROM comments), 0), "
    "coalesce((SELECT max(comment_id) FROM idempotency_keys), 0), "
    "coalesce((SELECT max(j.value) FROM audit_log a, json_each(CASE WHEN "
    "json_valid(a.comment_ids) AND json_type(a.comment_ids) = 'array' "
    "THEN a.comment_ids ELSE '[]' END) j WHERE j.type = 'integer'), 0))"
)


def _rebuild(create: str) -> None:
    bind = op.get_bind()
    kept = [row[0] for row in bind.exec_driver_sql(_SCHEMA_OF_COMMENTS)]
    op.execute(create)
    op.execute(_COPY)
    op.execute("DROP TABLE comments")  # its indexes and triggers go with it
    op.execute("ALTER TABLE comments_rebuilt RENAME TO comments")
    for statement in kept:
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(_CREATE.format(id=_AUTOINCREMENT, key=""))
    bind = op.get_bind()
    highest = int(bind.exec_driver_sql(_HIGHEST_ID).scalar() or 0)
    # The copy wrote the sequence up to the largest id copied (no row if none was); ids
    # removed above it and still named elsewhere are passed as well.
    bind.exec_driver_sql("DELETE FROM sqlite_sequence WHERE name = 'comments'")
    bind.exec_driver_sql(
        "INSERT INTO sqlite_sequence (name, seq) VALUES ('comments', ?)", (highest,)
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    _rebuild(_CREATE.format(id=_ROWID, key=_ROWID_KEY))
