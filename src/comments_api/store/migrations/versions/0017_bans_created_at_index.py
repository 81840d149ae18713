"""ix_bans_created_at_target: the ban list read a page at a time, newest first

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07

`GET /api/v1/moderation/bans` answered every ban at once, sorted by (created_at, target)
without an index: at 3,000 bans 362 KB, 23 ms on SQLite and 45-65 ms on PostgreSQL, growing
with every ban. It now pages newest first, from a position (a ban's created_at and target),
and this index is that order: each page is read backwards off it, `limit` rows, wherever it
starts. The primary key (target) alone gives no order by time.

Pages start after a position, compared with `(created_at, target) < (?, ?)`. On SQLite a
time is text, compared as text, and every writer stores it as SQLAlchemy writes it
(`2026-12-07 10:00:00.000000`); a ban stored otherwise (by hand, without the microseconds)
would compare below its own position and be listed again on the next page. So the SQLite
upgrade first rewrites any such `created_at` in that form (the same instant: what every
release reads is unchanged), and then builds the index.

On PostgreSQL it is built CONCURRENTLY (outside a transaction), as 0013's: bans keep being
added and lifted while it builds, and a build that failed half-way is dropped and built
again by the next run. Expand only: the release before reads and writes bans as it did,
and runs on this schema unchanged.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

INDEX, COLUMNS = "ix_bans_created_at_target", ["created_at", "target"]


def upgrade() -> None:
    context = op.get_context()
    if context.dialect.name != "postgresql":
        _times_as_written(op.get_bind())
        op.create_index(INDEX, "bans", COLUMNS)
        return
    with context.autocommit_block():
        op.drop_index(INDEX, table_name="bans", postgresql_concurrently=True, if_exists=True)
        op.create_index(INDEX, "bans", COLUMNS, postgresql_concurrently=True)


def downgrade() -> None:
    # In the migration's transaction, as 0013's: a downgrade may run inside a caller's
    # transaction, where no autocommit block can open.
    op.drop_index(INDEX, table_name="bans")


def _times_as_written(conn: sa.Connection) -> None:
    """SQLite: every ban's created_at in the text form SQLAlchemy writes (UTC, microseconds),
    so that text order is time order. A value no timestamp reads as is left alone."""
    bans = sa.table("bans", sa.column("target", sa.String), sa.column("created_at", sa.String))
    for target, raw in conn.execute(sa.select(bans.c.target, bans.c.created_at)).all():
        try:
            value = datetime.fromisoformat(raw)
        except (TypeError, ValueError):
            continue
        if value.tzinfo is not None:  # stored times are UTC; a naive one is UTC already
            value = value.astimezone(UTC).replace(tzinfo=None)
        written = value.isoformat(sep=" ", timespec="microseconds")
        if written != raw:
            conn.execute(sa.update(bans).where(bans.c.target == target).values(created_at=written))
