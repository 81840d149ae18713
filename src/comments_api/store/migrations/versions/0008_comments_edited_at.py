"""comments.edited_at: when the author last changed the text

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05

``updated_at`` moves on an author's edit and on a moderator's approve, hide or delete, so
a client could not show "(edited)" without taking an approval for an edit. ``edited_at``
moves only on the author's edit (store/repository.py, ``edit_body``); NULL if never.

Expand only: one nullable column, no default. The release before reads and writes its own
columns by name, so it keeps working on this schema; an edit it makes during a rolling
upgrade or after a rollback leaves ``edited_at`` as it was (NULL, or an earlier edit).

Backfilled from the audit log: every edit wrote one ``edit`` row whose ``comment_ids`` is
the JSON array of that one id and whose ``created_at`` is the edit's ``updated_at``. The
arrays are read in Python, as 0007 reads its answers: one way for both databases, with
no JSON functions of either. Deleted comments stay NULL (a tombstone keeps no text, and
no time of editing it). Rows already set are left alone, so running it again is harmless.
"""

import json
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BATCH = 1000

_comments = sa.table(
    "comments",
    sa.column("id", sa.BigInteger),
    sa.column("status", sa.String),
    sa.column("edited_at", sa.DateTime(timezone=True)),
)
_audit = sa.table(
    "audit_log",
    sa.column("action", sa.String),
    sa.column("comment_ids", sa.Text),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _ids(text: str | None) -> list[int]:
    try:
        ids = json.loads(text) if text else []
    except ValueError:
        return []
    if not isinstance(ids, list):
        return []
    return [i for i in ids if isinstance(i, int) and not isinstance(i, bool)]


def _backfill() -> None:
    bind = op.get_bind()
    latest: dict[int, datetime] = {}
    rows = bind.execute(
        sa.select(_audit.c.comment_ids, _audit.c.created_at).where(_audit.c.action == "edit")
    )
    for comment_ids, at in rows:
        for comment_id in _ids(comment_ids):
            if comment_id not in latest or at > latest[comment_id]:
                latest[comment_id] = at
    found = [{"cid": cid, "at": at} for cid, at in latest.items()]
    update = (
        sa.update(_comments)
        .where(
            _comments.c.id == sa.bindparam("cid"),
            _comments.c.status != "deleted",
            _comments.c.edited_at.is_(None),
        )
        .values(edited_at=sa.bindparam("at"))
    )
    for start in range(0, len(found), BATCH):
        bind.execute(update, found[start : start + BATCH])


def upgrade() -> None:
    op.add_column("comments", sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True))
    _backfill()


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+), not batch mode: rebuilding comments would drop
    # the change-marker triggers 0004 put on it.
    op.drop_column("comments", "edited_at")
