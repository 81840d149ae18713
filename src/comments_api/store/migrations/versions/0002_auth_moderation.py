"""auth and moderation: author_key, api_keys, bans, audit_log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    with op.batch_alter_table("comments") as batch:
        batch.add_column(sa.Column("author_key", sa.String(300), nullable=True))
    # Existing comments get the same author key new ones would: bans and flood checks
    # then see an author's history from before the upgrade.
    op.execute(
        "UPDATE comments SET author_key = CASE "
        "WHEN author_subject IS NOT NULL THEN 'sub:' || author_subject "
        "WHEN email IS NOT NULL THEN 'email:' || lower(email) END"
    )
    op.create_index(
        "ix_comments_content_id_author_key_created_at",
        "comments",
        ["content_id", "author_key", "created_at"],
    )
    op.create_index(
        "ix_comments_pending", "comments", ["id"], sqlite_where=PENDING, postgresql_where=PENDING
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("scopes", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_table(
        "bans",
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target", name="pk_bans"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("actor", sa.String(300), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target", sa.String(300), nullable=True),
        sa.Column("comment_ids", sa.Text(), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("bans")
    op.drop_table("api_keys")
    op.drop_index("ix_comments_pending", table_name="comments")
    op.drop_index("ix_comments_content_id_author_key_created_at", table_name="comments")
    # A plain DROP COLUMN (SQLite 3.35+), as 0008's: batch mode's copy of comments names
    # comments in its foreign key, so dropping the old table failed its check ("FOREIGN KEY
    # constraint failed") as soon as one comment replied to another.
    op.drop_column("comments", "author_key")
