"""idempotency_keys.comment_id: the comment a stored answer describes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05

A stored answer holds the comment's text and author. Deleting the comment must erase them
there too, in the delete's transaction (store/repository.py, ``moderate``): this column
finds the answers of the deleted comments through its index, instead of reading every
stored body.

Existing rows are backfilled from the ``id`` of the answer they hold, so a comment
created before the upgrade and deleted after it is erased from its answer as well (rows
expire within ``IDEMPOTENCY_TTL``, but a day of answers still holding deleted text was the
fault this fixes). The ids are read in Python, not with SQLite's ``json_extract`` or
PostgreSQL's ``->>``: one way for both databases, and the table holds only a TTL's worth
of keyed creates. Rows the release before still writes during a rolling upgrade name no
comment either; a delete matches those by the answer's id.

On PostgreSQL the index is built CONCURRENTLY, as in 0006: keyed creates go on while it
builds; an invalid index left by a failed build is dropped first.
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

INDEX = "ix_idempotency_keys_comment_id"
BATCH = 1000

_keys = sa.table(
    "idempotency_keys",
    sa.column("scope", sa.String),
    sa.column("key", sa.String),
    sa.column("body", sa.Text),
    sa.column("comment_id", sa.BigInteger),
)


def _answer_id(body: str) -> int | None:
    try:
        answer = json.loads(body)
    except ValueError:
        return None
    value = answer.get("id") if isinstance(answer, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _backfill() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(_keys.c.scope, _keys.c.key, _keys.c.body).where(_keys.c.comment_id.is_(None))
    ).all()
    found = [
        {"s": scope, "k": key, "comment_id": comment_id}
        for scope, key, body in rows
        if (comment_id := _answer_id(body)) is not None
    ]
    update = (
        sa.update(_keys)
        .where(_keys.c.scope == sa.bindparam("s"), _keys.c.key == sa.bindparam("k"))
        .values(comment_id=sa.bindparam("comment_id"))
    )
    for start in range(0, len(found), BATCH):
        bind.execute(update, found[start : start + BATCH])


def upgrade() -> None:
    # BigInteger on PostgreSQL, INTEGER on SQLite: the type of comments.id.
    comment_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.add_column("idempotency_keys", sa.Column("comment_id", comment_id, nullable=True))
    _backfill()
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index(INDEX, "idempotency_keys", ["comment_id"])
        return
    with context.autocommit_block():
        op.drop_index(
            INDEX, table_name="idempotency_keys", postgresql_concurrently=True, if_exists=True
        )
        op.create_index(INDEX, "idempotency_keys", ["comment_id"], postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="idempotency_keys")
    with op.batch_alter_table("idempotency_keys") as batch:
        batch.drop_column("comment_id")
