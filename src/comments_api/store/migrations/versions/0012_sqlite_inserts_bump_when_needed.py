"""SQLite: an insert writes its content's marker row only when the newest id cannot tell

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

The second step of 0011's two (expand, then contract; docs/deployment.md). Since 0011 a
SQLite content's change marker is read as its marker row's value *and* its newest comment
id. Writers are serialised there, so an insert that commits an id above every id of its
content moves the marker by itself, and no longer needs to write the row: one B-tree
fewer per create (bench/README.md, "The marker row left alone").

The insert trigger still writes the row, with a new random value, for:
- an insert under a lower id than the content's newest (an operator's SQL or an import
  with explicit ids): the newest id does not move;
- a content's first insert (no row yet), so that every content's marker carries a random
  value from the start: a marker never takes an old value again, not across an import
  into a fresh database or a restored backup (docs/caching.md).

Updates, deletes and moves bump as before. The release before (0011) reads the same pair,
so it can run on this schema (a rollback). 0011's predecessor, which reads the row alone,
cannot: its workers would not see each other's inserts. PostgreSQL is unchanged (there the
newest id is no marker: docs/caching.md).
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# 0005's, and the same with a WHEN clause: whole literals, no SQL built from pieces.
_EVERY_INSERT = (
    "CREATE TRIGGER comments_insert_bump AFTER INSERT ON comments FOR EACH ROW "
    "BEGIN INSERT INTO content_versions (content_id, version) VALUES (NEW.content_id, random()) "
    "ON CONFLICT (content_id) DO UPDATE SET version = excluded.version; END"
)
_WHEN_NEEDED = (
    "CREATE TRIGGER comments_insert_bump AFTER INSERT ON comments FOR EACH ROW "
    "WHEN NOT EXISTS (SELECT 1 FROM content_versions WHERE content_id = NEW.content_id) "
    "OR NEW.id < (SELECT max(id) FROM comments WHERE content_id = NEW.content_id) "
    "BEGIN INSERT INTO content_versions (content_id, version) VALUES (NEW.content_id, random()) "
    "ON CONFLICT (content_id) DO UPDATE SET version = excluded.version; END"
)
_DROP = "DROP TRIGGER IF EXISTS comments_insert_bump"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(_DROP)
    op.execute(_WHEN_NEEDED)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(_DROP)
    op.execute(_EVERY_INSERT)
