"""content_versions WITHOUT ROWID on SQLite: a marker bump writes one page, not two

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

On SQLite, 0004's content_versions was a rowid table with a separate index for its text
primary key, and every write to ``comments`` replaced a row in both: two of the ~7.6
pages a create writes to the WAL (each later fsynced and copied by a checkpoint). As a
WITHOUT ROWID table the marker lives in its key's B-tree alone, and the triggers update
it in place (UPSERT) instead of deleting and re-inserting it: 6.6 pages per create,
counted. PostgreSQL is unchanged.

SQLite cannot change a table's storage in place: the triggers are dropped, the table
is copied into its new form, and the triggers come back, all in this migration's
transaction. The markers' values are kept, so no read cache sees a false change.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DROP_TRIGGERS = (
    "DROP TRIGGER IF EXISTS comments_insert_bump",
    "DROP TRIGGER IF EXISTS comments_update_bump",
    "DROP TRIGGER IF EXISTS comments_delete_bump",
)
_CREATE_TABLE = (
    "CREATE TABLE content_versions_new (content_id VARCHAR(128) NOT NULL, "
    "version BIGINT NOT NULL, CONSTRAINT pk_content_versions PRIMARY KEY (content_id))"
)
_COPY = (
    "INSERT INTO content_versions_new (content_id, version) "
    "SELECT content_id, version FROM content_versions"
)
# 0004's triggers replaced the row (delete + insert); 0005's update it where it is.
_UPSERT_TRIGGERS = (
    "CREATE TRIGGER comments_insert_bump AFTER INSERT ON comments FOR EACH ROW "
    "BEGIN INSERT INTO content_versions (content_id, version) VALUES (NEW.content_id, random()) "
    "ON CONFLICT (content_id) DO UPDATE SET version = excluded.version; END",
    "CREATE TRIGGER comments_update_bump AFTER UPDATE ON comments FOR EACH ROW "
    "BEGIN INSERT INTO content_versions (content_id, version) VALUES (NEW.content_id, random()) "
    "ON CONFLICT (content_id) DO UPDATE SET version = excluded.version; END",
    "CREATE TRIGGER comments_delete_bump AFTER DELETE ON comments FOR EACH ROW "
    "BEGIN INSERT INTO content_versions (content_id, version) VALUES (OLD.content_id, random()) "
    "ON CONFLICT (content_id) DO UPDATE SET version = excluded.version; END",
)
_REPLACE_TRIGGERS = (  # exactly 0004's
    "CREATE TRIGGER comments_insert_bump AFTER INSERT ON comments FOR EACH ROW "
    "BEGIN INSERT OR REPLACE INTO content_versions (content_id, version) "
    "VALUES (NEW.content_id, random()); END",
    "CREATE TRIGGER comments_update_bump AFTER UPDATE ON comments FOR EACH ROW "
    "BEGIN INSERT OR REPLACE INTO content_versions (content_id, version) "
    "VALUES (NEW.content_id, random()); END",
    "CREATE TRIGGER comments_delete_bump AFTER DELETE ON comments FOR EACH ROW "
    "BEGIN INSERT OR REPLACE INTO content_versions (content_id, version) "
    "VALUES (OLD.content_id, random()); END",
)


def _rebuild(create_table: str, triggers: tuple[str, ...]) -> None:
    # Triggers first: SQLite checks every trigger's body when a table is renamed.
    for statement in (
        *_DROP_TRIGGERS,
        create_table,
        _COPY,
        "DROP TABLE content_versions",
        "ALTER TABLE content_versions_new RENAME TO content_versions",
        *triggers,
    ):
        op.execute(statement)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(_CREATE_TABLE + " WITHOUT ROWID", _UPSERT_TRIGGERS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(_CREATE_TABLE, _REPLACE_TRIGGERS)
