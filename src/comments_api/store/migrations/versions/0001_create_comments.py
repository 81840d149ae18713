"""create comments

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "comments",
        sa.Column("id", Id, primary_key=True, autoincrement=True),
        sa.Column("content_id", sa.String(128), nullable=False),
        sa.Column("parent_id", Id, nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("email", sa.String(254), nullable=True),
        sa.Column("author_name", sa.String(80), nullable=True),
        sa.Column("author_subject", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="published"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_comments"),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["comments.id"], name="fk_comments_parent_id_comments"
        ),
    )
    op.create_index("ix_comments_content_id_id", "comments", ["content_id", "id"])
    op.create_index("ix_comments_content_id_status_id", "comments", ["content_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_comments_content_id_status_id", table_name="comments")
    op.drop_index("ix_comments_content_id_id", table_name="comments")
    op.drop_table("comments")
