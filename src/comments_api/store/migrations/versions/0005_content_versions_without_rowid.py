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

_EVENTS = {"insert": "NEW", "update": "NEW", "delete": "OLD"}

_TABLE = (
    "CREATE TABLE {name} (content_id VARCHAR(128) NOT NULL, version BIGINT NOT NULL, "
    "CONSTRAINT pk_content_versions PRIMARY KEY (content_id)){options}"
)

# 0004's triggers replaced the row (delete + insert); these update it where it is.
_UPSERT = (
    "CREATE TRIGGER comments_{event}_bump AFTER {EVENT} ON comments FOR EACH ROW "
    "BEGIN INSERT INTO content_versions (content_id, version) "
    "VALUES ({row}.content_id, random()) "
    "ON CONFLICT (content_id) DO UPDATE SET version = excluded.version; END"
)
_REPLACE = (
    "CREATE TRIGGER comments_{event}_bump AFTER {EVENT} ON comments FOR EACH ROW "
    "BEGIN INSERT OR REPLACE INTO content_versions (content_id, version) "
    "VALUES ({row}.content_id, random()); END"
)


def _rebuild(options: str, trigger: str) -> None:
    # Triggers first: SQLite checks every trigger's body when a table is renamed.
    for event in _EVENTS:
        op.execute(f"DROP TRIGGER IF EXISTS comments_{event}_bump")
    op.execute(_TABLE.format(name="content_versions_new", options=options))
    op.execute(
        "INSERT INTO content_versions_new (content_id, version) "
        "SELECT content_id, version FROM content_versions"
    )
    op.execute("DROP TABLE content_versions")
    op.execute("ALTER TABLE content_versions_new RENAME TO content_versions")
    for event, row in _EVENTS.items():
        op.execute(trigger.format(event=event, EVENT=event.upper(), row=row))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(" WITHOUT ROWID", _UPSERT)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild("", _REPLACE)
