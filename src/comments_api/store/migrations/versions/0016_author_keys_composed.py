"""author keys and email bans of addresses in Unicode's composed form (NFC)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07

An address was keyed trimmed and lower-cased only, so ``josé@…`` typed decomposed (``e``
and U+0301) and precomposed were two author keys for one mailbox (RFC 6532): a ban by one
form let the other post, and an erasure by one answered ``"changed": []`` for the other's
comments. The code now keys addresses in NFC (comments/rules.py, ``key_address``). This
writes the comments' email keys and the email bans again that way; only rows that change
are written. Two bans that become one keep the earliest (as a second ban of a banned author
leaves the first standing); the audit log keeps both bans' entries. Data only: the release
before runs on it, and a downgrade leaves the keys as they are (the release before finds
them from an address typed composed, as most are).
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

BATCH = 1000
# The width of comments.author_key and bans.target. NFC lengthens a few characters (U+0344
# becomes two): a key it would push past the column stays as it was.
KEY_WIDTH = 300


def _key_address(email: str) -> str:
    # comments/rules.py's key_address, as it is at this revision.
    return unicodedata.normalize("NFC", email.strip().lower())


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
        if (key := f"email:{_key_address(row.email)}") != row.author_key and len(key) <= KEY_WIDTH
    ]
    change = (
        sa.update(comments)
        .where(comments.c.id == sa.bindparam("row_id"))
        .values(author_key=sa.bindparam("key"))
    )
    for start in range(0, len(fixes), BATCH):
        conn.execute(change, fixes[start : start + BATCH])
    _compose_email_bans(conn)


def _compose_email_bans(conn: sa.Connection) -> None:
    bans = sa.table(
        "bans",
        sa.column("target", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    groups: dict[str, list[tuple[object, str]]] = {}
    for target, created_at in conn.execute(
        sa.select(bans.c.target, bans.c.created_at).where(bans.c.target.like("email:%"))
    ):
        composed = f"email:{_key_address(target[len('email:') :])}"
        if len(composed) > KEY_WIDTH:
            composed = target
        groups.setdefault(composed, []).append((created_at, target))
    for composed, members in groups.items():
        if len(members) == 1 and members[0][1] == composed:
            continue
        _, kept = min(members)
        # The others go first: the kept one's new target may be one of theirs.
        others = [target for _, target in members if target != kept]
        if others:
            conn.execute(sa.delete(bans).where(bans.c.target.in_(others)))
        if kept != composed:
            conn.execute(sa.update(bans).where(bans.c.target == kept).values(target=composed))


def downgrade() -> None:
    pass  # the composed keys are found by the release before too: nothing to restore
