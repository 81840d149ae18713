"""ix_comments_hidden: moderators list hidden comments across contents

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``GET /api/v1/moderation/comments?status=hidden`` reads the hidden comments of every
content in id order. Like the pending queue's index (0002), it is partial: published
comments, nearly all rows, never pay for it.

On PostgreSQL the table is live and may be large: the index is built CONCURRENTLY
(outside a transaction), so comments keep being written while it builds (a plain CREATE
INDEX would hold them for the whole scan). A build that failed half-way leaves an invalid
index behind; it is dropped first, so running the migration again repairs it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

HIDDEN = sa.text("status = 'hidden'")


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index("ix_comments_hidden", "comments", ["id"], sqlite_where=HIDDEN)
        return
    with context.autocommit_block():
        op.drop_index(
            "ix_comments_hidden",
            table_name="comments",
            postgresql_concurrently=True,
            if_exists=True,
        )
        op.create_index(
            "ix_comments_hidden",
            "comments",
            ["id"],
            postgresql_where=HIDDEN,
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    op.drop_index("ix_comments_hidden", table_name="comments")
