"""Storage: the one place that knows SQL. SQLAlchemy Core on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .domain import (
    STATUS_DELETED,
    STATUS_PUBLISHED,
    Comment,
    NewComment,
    Page,
    encode_cursor,
)

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
Id = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

comments = Table(
    "comments",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("content_id", String(128), nullable=False),
    Column("parent_id", Id, ForeignKey("comments.id"), nullable=True),
    Column("body", Text, nullable=True),  # NULL once deleted: a tombstone keeps no text
    Column("email", String(254), nullable=True),
    Column("author_name", String(80), nullable=True),
    Column("author_subject", String(255), nullable=True),
    Column("status", String(16), nullable=False, server_default=STATUS_PUBLISHED),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=True),
    # Every list query is "this content, in id order": the page is read straight off it.
    Index(None, "content_id", "id"),
    # Counts read only this index (covering), never the comment rows.
    Index(None, "content_id", "status"),
)

_COMMENT_COLUMNS = (
    comments.c.id,
    comments.c.content_id,
    comments.c.body,
    comments.c.status,
    comments.c.created_at,
    comments.c.updated_at,
    comments.c.parent_id,
    comments.c.email,
    comments.c.author_name,
    comments.c.author_subject,
    comments.c.deleted_at,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _to_comment(row: Any) -> Comment:
    return Comment(
        id=row.id,
        content_id=row.content_id,
        body=row.body,
        status=row.status,
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        updated_at=_aware(row.updated_at),  # type: ignore[arg-type]
        parent_id=row.parent_id,
        email=row.email,
        author_name=row.author_name,
        author_subject=row.author_subject,
        deleted_at=_aware(row.deleted_at),
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers in every worker proceed while one writer commits; NORMAL sync is
    # durable across process crashes (only an OS crash can lose the last commits).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(database_url: str, pool_size: int = 5, pool_timeout: float = 5.0) -> Engine:
    """An engine for ``database_url``; creates the SQLite file's directory on first run."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_size=pool_size,
            pool_timeout=pool_timeout,
            connect_args={"check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        pool_pre_ping=True,
        # Keep a wedged query from pinning a worker forever.
        connect_args={"connect_timeout": 5, "options": "-c statement_timeout=5000"},
    )


class Repository:
    """Comment persistence. Every method is one short transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- health ------------------------------------------------------------------
    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at; raises if the DB is unreachable."""
        with self.engine.connect() as conn:
            try:
                return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except SQLAlchemyError:
                # No alembic_version table: reachable but never migrated.
                return None

    # --- writes ------------------------------------------------------------------
    def create(self, new: NewComment) -> Comment:
        now = utcnow()
        values = {
            "content_id": new.content_id,
            "parent_id": new.parent_id,
            "body": new.body,
            "email": new.email,
            "author_name": new.author_name,
            "author_subject": new.author_subject,
            "status": new.status,
            "created_at": now,
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            new_id = conn.execute(insert(comments).returning(comments.c.id), values).scalar_one()
        return Comment(id=new_id, deleted_at=None, **values)  # type: ignore[arg-type]

    def soft_delete(self, comment_id: int) -> Comment | None:
        """Turn a comment into a tombstone: its text and author are dropped for good."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(comments)
                .where(comments.c.id == comment_id, comments.c.status != STATUS_DELETED)
                .values(
                    status=STATUS_DELETED,
                    body=None,
                    email=None,
                    author_name=None,
                    author_subject=None,
                    deleted_at=now,
                    updated_at=now,
                )
            )
            row = conn.execute(select(*_COMMENT_COLUMNS).where(comments.c.id == comment_id)).first()
        return _to_comment(row) if row is not None else None

    # --- reads -------------------------------------------------------------------
    def get(self, comment_id: int) -> Comment | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_COMMENT_COLUMNS).where(comments.c.id == comment_id)).first()
        return _to_comment(row) if row is not None else None

    def legacy_list(self, content_id: str, cap: int) -> tuple[list[tuple[str | None, str]], bool]:
        """Published (email, body) pairs in creation order, at most ``cap``; and truncated?"""
        query = (
            select(comments.c.email, comments.c.body)
            .where(comments.c.content_id == content_id, comments.c.status == STATUS_PUBLISHED)
            .order_by(comments.c.id)
            .limit(cap + 1)
        )
        with self.engine.connect() as conn:
            rows = [(r[0], r[1]) for r in conn.execute(query)]
        return rows[:cap], len(rows) > cap

    def list_page(
        self,
        content_id: str,
        *,
        limit: int,
        order: str,
        after_id: int | None,
        statuses: Sequence[str],
    ) -> Page:
        newest = order == "newest"
        query = select(*_COMMENT_COLUMNS).where(
            comments.c.content_id == content_id, comments.c.status.in_(statuses)
        )
        if after_id is not None:
            query = query.where(comments.c.id < after_id if newest else comments.c.id > after_id)
        query = query.order_by(comments.c.id.desc() if newest else comments.c.id).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = [_to_comment(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].id, order) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    def counts(self, content_ids: Iterable[str]) -> dict[str, int]:
        ids = list(content_ids)
        query = (
            select(comments.c.content_id, func.count())
            .where(comments.c.content_id.in_(ids), comments.c.status == STATUS_PUBLISHED)
            .group_by(comments.c.content_id)
        )
        with self.engine.connect() as conn:
            found: dict[str, int] = {cid: n for cid, n in conn.execute(query)}
        return {cid: found.get(cid, 0) for cid in ids}


# --- migrations ------------------------------------------------------------------
_MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _alembic_config(engine: Engine | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def head_revision() -> str:
    """The newest migration shipped with this code."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision``; safe to run on every start."""
    from alembic import command

    config = _alembic_config(engine)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two replicas starting together must not both run the same migration.
            conn.execute(text("SELECT pg_advisory_xact_lock(7305812)"))
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
