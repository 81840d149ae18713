"""ix_comments_status_author_key_id replaces 0009's ix_comments_author_key_status_id

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

0009's index was led by author_key, so PostgreSQL could also use it for the author check
every create runs (``content_id = ? AND author_key = ? AND created_at >= ?``). Before the
table's first ANALYZE its estimates tie with the (content_id, author_key, created_at)
index that the check is for, and it chose the author's index: each create then read every
comment of that author on every content (bench/README.md, "A plan that grew with the
author"). Both queries 0009 serves name a status (the moderation listing's one status, the
delete's statuses), so the same columns led by status serve them as well, and no query
that names no status can use it.

Expand, then contract: the new index is built before the old one goes, so both a release
before this one and this one find theirs during a rolling upgrade. On PostgreSQL the
upgrade builds and drops them CONCURRENTLY (outside a transaction), as 0006's and 0009's
upgrades do, and an invalid index left by a build that failed half-way is dropped first,
so running the migration again repairs it. The downgrade runs in its transaction.
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

NEW, NEW_COLUMNS = "ix_comments_status_author_key_id", ["status", "author_key", "id"]
OLD, OLD_COLUMNS = "ix_comments_author_key_status_id", ["author_key", "status", "id"]


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index(NEW, "comments", NEW_COLUMNS)
        op.drop_index(OLD, table_name="comments")
        return
    with context.autocommit_block():
        op.drop_index(NEW, table_name="comments", postgresql_concurrently=True, if_exists=True)
        op.create_index(NEW, "comments", NEW_COLUMNS, postgresql_concurrently=True)
        op.drop_index(OLD, table_name="comments", postgresql_concurrently=True, if_exists=True)


def downgrade() -> None:
    # In the migration's transaction, as 0006's and 0009's downgrades: a downgrade may run
    # inside a caller's transaction, where no autocommit block can open.
    op.create_index(OLD, "comments", OLD_COLUMNS)
    op.drop_index(NEW, table_name="comments")
