"""ix_comments_author_key_status_id: one author's comments across contents

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

``GET /api/v1/moderation/comments?author=...`` lists one author's comments in one status,
in id order, across every content; ``POST /api/v1/moderation/comments {"action":
"delete", "author": ...}`` finds them all. The index on (content_id, author_key,
created_at) serves one content only: across contents, both would scan the table. This
one is led by author_key, then status and id, so the listing reads its page straight off
it and the delete reads one range per status.

Expand only: one index, nothing the release before reads or writes changes. On
PostgreSQL it is built CONCURRENTLY (outside a transaction), as 0006's, so comments keep
being written while it builds; an invalid index left by a build that failed half-way is
dropped first, so running the migration again repairs it.
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

NAME = "ix_comments_author_key_status_id"
COLUMNS = ["author_key", "status", "id"]


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index(NAME, "comments", COLUMNS)
        return
    with context.autocommit_block():
        op.drop_index(NAME, table_name="comments", postgresql_concurrently=True, if_exists=True)
        op.create_index(NAME, "comments", COLUMNS, postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_index(NAME, table_name="comments")
