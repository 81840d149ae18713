"""ix_comments_hidden: moderators list hidden comments across contents

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

``GET /api/v1/moderation/comments?status=hidden`` reads the hidden comments of every
content in id order. Like the pending queue's index (0002), it is partial: published
comments, nearly all rows, never pay for it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

HIDDEN = sa.text("status = 'hidden'")


def upgrade() -> None:
    op.create_index(
        "ix_comments_hidden", "comments", ["id"], sqlite_where=HIDDEN, postgresql_where=HIDDEN
    )


def downgrade() -> None:
    op.drop_index("ix_comments_hidden", table_name="comments")
