"""comments.author_key of addresses outside ASCII lower-cased as the code does

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08

0002 gave comments posted before it their author key in SQL: ``'email:' || lower(email)``.
SQLite's lower() folds ASCII letters only (PostgreSQL's follows the database's locale), so
an address such as ``ÅSA@example.com`` was keyed ``email:Åsa@example.com``, while every key
the code builds (a new comment's, a ban's, a listing's ``author=``, a delete by author) is
``email:åsa@example.com`` (moderation/rules.py, ``email_key``). Those comments were found
by no author filter: an erasure by address answered ``"changed": []`` and left them, and
the flood and duplicate checks did not count them. Each email key is written again as
``email_key`` writes it; only rows whose key differs change. Data only: the release before
runs on it unchanged, and a downgrade leaves the keys as they are.
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

BATCH = 1000


def _email_key(email: str) -> str:
    # moderation/rules.py's email_key, as it is at this revision.
    return f"email:{email.strip().lower()}"


def upgrade() -> None:
    conn = op.get_bind()
    comments = sa.table(
        "comments",
        sa.column("id", sa.BigInteger),
        sa.column("email", sa.String),
        sa.column("author_subject", sa.String),
        sa.column("author_key", sa.String),
    )
    rows = conn.execute(
        sa.select(comments.c.id, comments.c.email, comments.c.author_key)
        .where(comments.c.author_subject.is_(None), comments.c.email.is_not(None))
        .execution_options(yield_per=BATCH)
    )
    # Read to the end before writing; only the keys that change are kept.
    fixes = [
        {"row_id": row.id, "key": key}
        for row in rows
        if (key := _email_key(row.email)) != row.author_key
    ]
    change = (
        sa.update(comments)
        .where(comments.c.id == sa.bindparam("row_id"))
        .values(author_key=sa.bindparam("key"))
    )
    for start in range(0, len(fixes), BATCH):
        conn.execute(change, fixes[start : start + BATCH])


def downgrade() -> None:
    pass  # the keys 0002 wrote matched nothing the code looks up: nothing to restore
