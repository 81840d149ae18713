"""content_versions: a change marker per content, bumped by triggers on comments

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Every INSERT, UPDATE or DELETE on ``comments`` sets its content's marker to a new random
64-bit value in the same transaction (database triggers, so no write path can forget it:
the API, bulk moderation, imports, an operator's SQL). Read caches compare markers; see
docs/caching.md. Random rather than counted: a marker never comes back, even after a
re-import or a restore, so a cached page can never be mistaken for a newer state.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# SQLite: row triggers (writers are serialised, so their order cannot deadlock).
_SQLITE_TRIGGERS = {
    "insert": "CREATE TRIGGER comments_insert_bump AFTER INSERT ON comments FOR EACH ROW "
    "BEGIN INSERT OR REPLACE INTO content_versions (content_id, version) "
    "VALUES (NEW.content_id, random()); END",
    "update": "CREATE TRIGGER comments_update_bump AFTER UPDATE ON comments FOR EACH ROW "
    "BEGIN INSERT OR REPLACE INTO content_versions (content_id, version) "
    "VALUES (NEW.content_id, random()); END",
    "delete": "CREATE TRIGGER comments_delete_bump AFTER DELETE ON comments FOR EACH ROW "
    "BEGIN INSERT OR REPLACE INTO content_versions (content_id, version) "
    "VALUES (OLD.content_id, random()); END",
}

# PostgreSQL: one upsert per statement from its transition table, in content_id order, so
# two bulk actions lock the marker rows in the same order and cannot deadlock.
_PG_FUNCTION = """
CREATE FUNCTION comments_bump_content_versions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO content_versions (content_id, version)
    SELECT content_id, (random() * 9007199254740991)::bigint
    FROM (SELECT DISTINCT content_id FROM changed_rows) AS c
    ORDER BY content_id
    ON CONFLICT (content_id) DO UPDATE SET version = EXCLUDED.version;
    RETURN NULL;
END
$$
"""
_PG_TRIGGERS = {"insert": "NEW", "update": "NEW", "delete": "OLD"}


def upgrade() -> None:
    op.create_table(
        "content_versions",
        sa.Column("content_id", sa.String(128), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("content_id", name="pk_content_versions"),
    )
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_TRIGGERS.values():
            op.execute(statement)
        return
    op.execute(_PG_FUNCTION)
    for event, table in _PG_TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER comments_{event}_bump AFTER {event.upper()} ON comments "
            f"REFERENCING {table} TABLE AS changed_rows FOR EACH STATEMENT "
            "EXECUTE FUNCTION comments_bump_content_versions()"
        )


def downgrade() -> None:
    for event in _SQLITE_TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS comments_{event}_bump" + _on_comments())
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS comments_bump_content_versions()")
    op.drop_table("content_versions")


def _on_comments() -> str:
    return "" if op.get_bind().dialect.name == "sqlite" else " ON comments"
