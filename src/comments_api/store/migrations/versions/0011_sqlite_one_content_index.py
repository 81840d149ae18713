"""SQLite: one (content_id, id, status) index for two; a moved comment bumps both contents

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06

On SQLite every insert wrote six B-trees: the row, four indexes and its content's marker
row (content_versions). Two of them serve one purpose: (content_id, id) gives every list
its id order and (content_id, status, id) let the legacy list and the counts skip other
statuses. One index on (content_id, id, status) does both: lists read it in id order and
test the status in the index, counts read it alone (covering), and a content's newest id
is one seek (store/versions.py reads it beside the marker row). No query names an index,
so the release before finds an index for each of its queries too.

On both databases a new trigger bumps the content a comment is moved away from (an
operator's SQL: no write path of the service moves one), which the update trigger (NEW
rows only) did not: the list it left was served from the cache with the comment still in
it. On PostgreSQL it is a statement trigger on the OLD transition table, with 0004's
function: an update that moves nothing bumps the same markers twice, in one transaction.

The first step of two (expand, then contract; docs/deployment.md): this release reads a
SQLite content's marker as its marker row's value *and* its newest id, and every insert
still writes the row. A later release may stop inserts from writing it (only an insert
under a lower id would), once no release that reads the row alone can run on the file:
bench/README.md, "Fewer B-trees per insert", measured both steps.

PostgreSQL keeps its indexes and reads the marker row alone. Its ids come from a sequence
at INSERT, so a transaction can commit a lower id after a higher one was seen: the newest
id is no marker there. And with the one index its planner read a page by the primary key
backwards, and, before the first ANALYZE, a whole content for each create's author check
(tests/test_storage.py).
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

NEW, NEW_COLUMNS = "ix_comments_content_id_id_status", ["content_id", "id", "status"]
OLD = {
    "ix_comments_content_id_id": ["content_id", "id"],
    "ix_comments_content_id_status_id": ["content_id", "status", "id"],
}
_SQLITE_MOVE_TRIGGER = (
    "CREATE TRIGGER comments_move_bump AFTER UPDATE OF content_id ON comments FOR EACH ROW "
    "WHEN OLD.content_id IS NOT NEW.content_id "
    "BEGIN INSERT INTO content_versions (content_id, version) VALUES (OLD.content_id, random()) "
    "ON CONFLICT (content_id) DO UPDATE SET version = excluded.version; END"
)
# PostgreSQL allows no column list (UPDATE OF) beside a transition table: every update.
_PG_MOVE_TRIGGER = (
    "CREATE TRIGGER comments_move_bump AFTER UPDATE ON comments "
    "REFERENCING OLD TABLE AS changed_rows FOR EACH STATEMENT "
    "EXECUTE FUNCTION comments_bump_content_versions()"
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute(_PG_MOVE_TRIGGER)
        return
    op.create_index(NEW, "comments", NEW_COLUMNS)
    for name in OLD:
        op.drop_index(name, table_name="comments")
    op.execute(_SQLITE_MOVE_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP TRIGGER IF EXISTS comments_move_bump ON comments")
        return
    for name, columns in OLD.items():
        op.create_index(name, "comments", columns)
    op.drop_index(NEW, table_name="comments")
    op.execute("DROP TRIGGER IF EXISTS comments_move_bump")
