"""ix_comments_parent_id: a comment's replies found by index

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

Nothing looked a comment's replies up by its id until a delete did: removing a pending or
hidden comment for good asks whether anything replies to it, and the foreign key
(`parent_id`) asks the same of every row removed. Without an index each question read the
whole table, with the write lock held: a bulk delete of 100 comments read it 200 times
(about 7 s for one drop of a 20,000-row table's rows on SQLite, the next migration's case).

Partial (`parent_id IS NOT NULL`): only replies are in it, so a create of a comment that
replies to nothing writes no more than before. Both databases use it for `parent_id = ?`.

On PostgreSQL it is built CONCURRENTLY (outside a transaction), as 0006's: comments keep
being written while it builds, and a build that failed half-way is dropped and built again
by the next run. Expand only: the release before runs on this schema unchanged.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

INDEX = "ix_comments_parent_id"
REPLIES = sa.text("parent_id IS NOT NULL")


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index(INDEX, "comments", ["parent_id"], sqlite_where=REPLIES)
        return
    with context.autocommit_block():
        op.drop_index(INDEX, table_name="comments", postgresql_concurrently=True, if_exists=True)
        op.create_index(
            INDEX,
            "comments",
            ["parent_id"],
            postgresql_where=REPLIES,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index(INDEX, table_name="comments")
