"""Storage: the one place that knows SQL. SQLAlchemy Core on SQLite or PostgreSQL."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from select import POLLIN, poll
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Select,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    DBAPIError,
    IntegrityError,
    InvalidatePoolError,
    OperationalError,
    SQLAlchemyError,
)

from ..clock import utcnow
from ..comments.rules import (
    STATUS_DELETED,
    STATUS_PUBLISHED,
    Comment,
    DomainError,
    NewComment,
    Page,
    encode_cursor,
    iso_timestamp,
)
from ..identity.credentials import ApiKeyRecord
from ..moderation.rules import (
    AuditEntry,
    AuthorActivity,
    Transition,
    author_key,
    author_key_forms,
    decomposed_email_key,
    email_key,
    legacy_email_key,
)
from ..processes import pid_at_fork
from ..settings import POOLER_MODES, POOLER_OPTION
from .driver_sql import (
    COMMIT,
    DriverStatement,
    StatementObserver,
    StorageRefused,
    TimedCursor,
    as_sqlalchemy_error,
    is_lost,
    map_driver_errors,
    raw_connection,
)
from .url_file import follow_url_file

log = logging.getLogger(__name__)
_P = ParamSpec("_P")
_R = TypeVar("_R")

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
    # The author's last edit of the text (0008); updated_at also moves on moderation.
    Column("edited_at", DateTime(timezone=True), nullable=True),
    # email:<lowercased address> or sub:<token subject>: bans and flood checks key on it.
    Column("author_key", String(300), nullable=True),
    # Every list query is "this content, in id order": the page is read straight off it.
    # Legacy lists (published, in id order) and counts (covering) read the second alone.
    # On SQLite one index serves both since 0011 (each is a B-tree every insert writes):
    # lists test the status in it, counts read it alone, and a content's newest id, its
    # marker for inserts (store/versions.py), is one seek. PostgreSQL keeps two: with the
    # one index its planner read a page by the primary key backwards (ANALYZEd or not),
    # and before the first ANALYZE a whole content for each create's author check.
    # Even with both, a content holding ~10 % of the table took the primary key: the lists
    # name the content so that only these indexes give their order (_of_content).
    Index(None, "content_id", "id").ddl_if(dialect="postgresql"),
    Index(None, "content_id", "status", "id").ddl_if(dialect="postgresql"),
    Index(None, "content_id", "id", "status").ddl_if(dialect="sqlite"),
    # Duplicate and per-thread-per-author checks on every create: one range scan.
    Index(None, "content_id", "author_key", "created_at"),
    # One author's comments across contents (0009, 0010): the moderation listing's author
    # filter (a status, in id order) and delete by author. Led by status, which both name,
    # so that the create's author check (no status) can never use it instead of the index
    # above: led by author_key it did, on PostgreSQL before the first ANALYZE, and read
    # every comment of the author on each create.
    Index(None, "status", "author_key", "id"),
    # The moderation lists (pending, hidden); partial, so published comments never pay
    # for them.
    Index(
        "ix_comments_pending",
        "id",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    Index(
        "ix_comments_hidden",
        "id",
        sqlite_where=text("status = 'hidden'"),
        postgresql_where=text("status = 'hidden'"),
    ),
    # A comment's replies (0013): the removal's "does anything reply to it?" and the
    # foreign key's check of every row removed read the whole table without it. Partial:
    # a comment that replies to nothing writes no entry.
    Index(
        "ix_comments_parent_id",
        "parent_id",
        sqlite_where=text("parent_id IS NOT NULL"),
        postgresql_where=text("parent_id IS NOT NULL"),
    ),
    # SQLite: an id is never given out again, not after the comment holding the largest
    # one was removed for good (0014); PostgreSQL's identity never does.
    sqlite_autoincrement=True,
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("key_hash", String(64), nullable=False),  # SHA-256 hex; the key itself is never kept
    Column("scopes", String(200), nullable=False),  # space-separated
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

bans = Table(
    "bans",
    metadata,
    Column("target", String(300), primary_key=True),  # an author_key
    Column("reason", Text, nullable=True),
    Column("created_by", String(300), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The ban list, newest first, a page at a time (0017): read backwards from a position,
    # the primary key breaking ties between bans of one instant.
    Index(None, "created_at", "target"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("actor", String(300), nullable=False),
    Column("action", String(32), nullable=False),
    Column("target", String(300), nullable=True),
    Column("comment_ids", Text, nullable=True),  # JSON array
    Column("details", Text, nullable=True),  # JSON object
    Column("created_at", DateTime(timezone=True), nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    # Who sent the key (API key id, token subject, or "anonymous"): one caller's key can
    # never replay another caller's answer.
    Column("scope", String(300), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),  # SHA-256 of the request
    Column("status", Integer, nullable=False),
    Column("body", Text, nullable=False),  # the JSON answered the first time
    Column("location", String(300), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The comment the answer describes (0007), so deleting it erases its text and author
    # here too. No foreign key: a comment removed for good leaves its erased answer behind,
    # and the key stays used. NULL only in rows written before 0007 that held no comment.
    Column("comment_id", Id, nullable=True),
    Index(None, "created_at"),  # expiry sweeps
    Index(None, "comment_id"),  # the answers of the comments being deleted
)

# A change marker per content, set to a new random value by database triggers in the
# transaction of every write to its comments (migration 0004; read by store/versions.py).
# On SQLite the content's newest id is read with it (0011), and an insert above that id
# leaves the row alone (0012).
content_versions = Table(
    "content_versions",
    metadata,
    Column("content_id", String(128), primary_key=True),
    Column("version", BigInteger, nullable=False),
    # SQLite: the marker lives in its key's B-tree alone, one page per bump (0005).
    sqlite_with_rowid=False,
)

# Seconds between sweeps of expired idempotency keys, and between WAL truncations after
# disk-full errors, per process.
IDEMPOTENCY_SWEEP_INTERVAL = 60.0
RELEASE_SPACE_INTERVAL = 5.0
# Expired idempotency keys one sweep deletes at most. A backlog (IDEMPOTENCY_TTL lowered,
# keyed creates back after a pause) went in one transaction, run by the create that
# triggered it: 900,000 rows held that create and SQLite's write lock, so every other
# write, for 6.6 s; a batch of 500 takes ~20 ms here. A full batch lets the next keyed create
# sweep again at once, so a backlog drains at up to 500 rows per create.
IDEMPOTENCY_SWEEP_BATCH = 500

# Seconds between last_used_at writes for one key: tracking use must not turn every
# authenticated request into a database write.
API_KEY_TOUCH_INTERVAL = 60

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
    comments.c.edited_at,
)


def _pinned(
    columns: Sequence[tuple[Column[Any], Any]], postgresql: bool, *, newest: bool = False
) -> tuple[list[ColumnElement[bool]], list[Any]]:
    """``column = value`` for each of ``columns``, and the order "by id" for the rows they
    pick, read off an index led by those columns whatever the statistics say (PostgreSQL):
    see ``_of_content``. Only the first is written ``= ANY``: PostgreSQL reads an index in
    order under an ``ANY`` on its leading column alone."""
    where = [column == value for column, value in columns]
    if not postgresql:
        return where, [comments.c.id.desc() if newest else comments.c.id]
    first, value = columns[0]
    where[0] = first == any_(array([value]))
    order = [first, comments.c.id]
    return where, [c.desc() for c in order] if newest else order


def _of_content(
    content_id: Any, postgresql: bool, *, newest: bool = False
) -> tuple[ColumnElement[bool], list[Any]]:
    """The condition "of this content" and the order "by id" for a list of one content's
    comments, read off the content's index whatever the statistics say.

    PostgreSQL: with ``content_id = :c`` the planner takes the order as the id's alone,
    which the primary key gives too, and for a content it expects many rows of (a hot story:
    ~10 % of the table) it walked the primary key and filtered out every other content's
    rows. A recent content's oldest-first page, its legacy list and its moderation listing
    then read every comment posted before it (880,000 rows, ~0.4 s, at 1,000,000
    comments). ``= ANY(ARRAY[:c])`` is no equality to the planner, so the order stays
    (content_id, id), which only the content's indexes give. SQLite's plans need no help.
    """
    where, order = _pinned([(comments.c.content_id, content_id)], postgresql, newest=newest)
    return where[0], order


def _legacy_list(postgresql: bool) -> Select[Any]:
    of_content, order = _of_content(bindparam("content_id", type_=String()), postgresql)
    return (
        select(comments.c.email, comments.c.body)
        .where(of_content, comments.c.status == STATUS_PUBLISHED)
        .order_by(*order)
        .limit(bindparam("limit"))
    )


# The hottest statements are built once: constructing a select per request cost more CPU
# than running it (bench/). Values are bound at execute; the compiled SQL is cached.
_LEGACY_LIST = {False: _legacy_list(False), True: _legacy_list(True)}
_INSERT_COMMENT = insert(comments).returning(comments.c.id)
# On PostgreSQL every write learns its transaction's id before its COMMIT: when the answer
# to the COMMIT is lost, pg_xact_status tells whether it committed (_commit_outcome). The
# comment insert returns it; the other writes (_write) read it.
_CURRENT_TRANSACTION = cast(func.pg_current_xact_id(), String)
_INSERT_COMMENT_NAMING_ITS_TRANSACTION = _INSERT_COMMENT.returning(_CURRENT_TRANSACTION)
_TRANSACTION_ID = select(_CURRENT_TRANSACTION)
_TRANSACTION_STATUS = text("SELECT pg_xact_status(CAST(:xact AS xid8))")
# A reply's parent, read in the create's transaction (ParentCheck).
_COMMENT_BY_ID = select(*_COMMENT_COLUMNS).where(comments.c.id == bindparam("id"))
_INSERTED_COLUMNS = (
    "content_id",
    "parent_id",
    "body",
    "email",
    "author_name",
    "author_subject",
    "status",
    "created_at",
    "updated_at",
    "author_key",
)
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:k)")
# Held by every edit (shared) from its clock read to its commit, and by a moderation
# listing (exclusive) while it reads its clock and its rows: see moderation_page.
_EDITS_KEY = {"k": int.from_bytes(b"edits\0\0\0", "big", signed=True)}
_EDIT_IN_FLIGHT = text("SELECT pg_advisory_xact_lock_shared(:k)")
# Building this nested select per request cost ~0.8 ms of CPU, far more than running it.
_MINE = and_(
    comments.c.content_id == bindparam("content_id"),
    comments.c.author_key == bindparam("author_key"),
)
# The author's comments in the flood window, counted and the oldest found in one index
# range. The oldest (the flood 429's Retry-After) comes back as the driver gives it (text on
# SQLite), so the row needs no result processing: _author_activity parses it when present.
# The window is open at its start: a comment leaves it exactly THREAD_AUTHOR_WINDOW seconds
# on, when the Retry-After announced for it runs out (held, the retry was refused again).
_RECENT = (
    select(
        func.count().label("recent"),
        func.min(comments.c.created_at, type_=String()).label("oldest"),
    )
    .where(_MINE, comments.c.created_at > bindparam("thread_since"))
    .subquery("recent")
)
_AUTHOR_ACTIVITY = select(
    _RECENT.c.recent,
    _RECENT.c.oldest,
    select(func.count())
    .where(
        _MINE,
        comments.c.created_at >= bindparam("dup_since"),
        comments.c.body == bindparam("body"),
    )
    .scalar_subquery(),
    # A signed-in author's key is the subject's; a ban by email names the email's in one
    # of the forms email_key_forms lists (the release before 0016 banned as typed).
    select(func.count())
    .where(
        bans.c.target.in_(
            [
                bindparam("author_key"),
                bindparam("email_key"),
                bindparam("decomposed_key"),
                bindparam("legacy_key"),
            ]
        )
    )
    .scalar_subquery(),
).select_from(_RECENT)

# The stored answers of comments being deleted (erased in the delete's transaction), and
# those that name no comment: written by the release before 0007 while a rolling upgrade
# still runs it, they are matched by the id in the answer. In created_at order, as the
# expiry sweep's index scan meets them: on PostgreSQL both then take their row locks in
# one order, not crosswise.
_ANSWERS_OF = (
    select(
        idempotency_keys.c.scope,
        idempotency_keys.c.key,
        idempotency_keys.c.body,
        idempotency_keys.c.comment_id,
    )
    .where(
        or_(
            idempotency_keys.c.comment_id.in_(bindparam("ids", expanding=True)),
            idempotency_keys.c.comment_id.is_(None),
        )
    )
    .order_by(idempotency_keys.c.created_at, idempotency_keys.c.scope, idempotency_keys.c.key)
)
_ERASE_ANSWER = (
    update(idempotency_keys)
    .where(
        idempotency_keys.c.scope == bindparam("match_scope"),
        idempotency_keys.c.key == bindparam("match_key"),
    )
    .values(body=bindparam("erased"))
)

# The expiry sweep's batch: expired keys, oldest first, row-locked in _ANSWERS_OF's order.
_OLDEST_EXPIRED_KEYS = (
    select(idempotency_keys.c.scope, idempotency_keys.c.key)
    .where(idempotency_keys.c.created_at < bindparam("cutoff"))
    .order_by(idempotency_keys.c.created_at, idempotency_keys.c.scope, idempotency_keys.c.key)
    .limit(IDEMPOTENCY_SWEEP_BATCH)
    .with_for_update()
)
_FORGET_EXPIRED_KEY = delete(idempotency_keys).where(
    idempotency_keys.c.scope == bindparam("match_scope"),
    idempotency_keys.c.key == bindparam("match_key"),
)

# An Idempotency-Key's row. Whether it is still fresh is one comparison in SQL, like the
# activity windows above: no stored time comes back to be parsed and compared here.
_KEY_MATCH = and_(
    idempotency_keys.c.scope == bindparam("scope"),
    idempotency_keys.c.key == bindparam("key"),
)
_KEY_LOOKUP = select(
    idempotency_keys.c.request_hash,
    idempotency_keys.c.status,
    idempotency_keys.c.body,
    idempotency_keys.c.location,
    (idempotency_keys.c.created_at > bindparam("fresh_since")).label("fresh"),
).where(_KEY_MATCH)
_KEY_FORGET = delete(idempotency_keys).where(_KEY_MATCH)
_KEY_REMEMBER = insert(idempotency_keys)
_KEY_COLUMNS = (
    "scope",
    "key",
    "request_hash",
    "status",
    "body",
    "location",
    "created_at",
    "comment_id",
)
_API_KEY_BY_ID = select(api_keys).where(api_keys.c.id == bindparam("id"))


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _ban_item(row: Any) -> dict[str, Any]:
    """A ``bans`` row as the ban list and the one-ban lookup give it."""
    return {
        "target": row.target,
        "reason": row.reason,
        "created_by": row.created_by,
        "created_at": _aware(row.created_at),
    }


def _to_comment(row: Any) -> Comment:
    # By position, in _COMMENT_COLUMNS' order: a SQLAlchemy Row or a driver tuple.
    (
        comment_id,
        content_id,
        body,
        status,
        created_at,
        updated_at,
        parent_id,
        email,
        author_name,
        author_subject,
        deleted_at,
        edited_at,
    ) = row
    return Comment(
        id=comment_id,
        content_id=content_id,
        body=body,
        status=status,
        created_at=_aware(created_at),  # type: ignore[arg-type]
        updated_at=_aware(updated_at),  # type: ignore[arg-type]
        parent_id=parent_id,
        email=email,
        author_name=author_name,
        author_subject=author_subject,
        deleted_at=_aware(deleted_at),
        edited_at=_aware(edited_at),
    )


def _tombstone(now: datetime) -> dict[str, Any]:
    """What deleting erases for good: the text and everything that names the author.
    ``edited_at`` goes with the text it dated (``updated_at`` becomes the delete's time)."""
    return {
        "body": None,
        "edited_at": None,
        "email": None,
        "author_name": None,
        "author_subject": None,
        "author_key": None,
        "deleted_at": now,
    }


def _stored_answer(body: str) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _erased_answer(answer: dict[str, Any], now: datetime) -> str:
    """A stored create's answer once its comment was deleted at ``now``: the comment as
    GET shows a tombstone (comments/render.py, ``comment_view``), its text and author gone.
    Status and ``Location`` stay the first answer's, so a retry still learns that its
    create succeeded, and creates nothing. A comment removed for good (never public, no
    reply) reads the same: deleted."""
    # The tests compare this answer with the tombstone's GET.
    aware = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    stamp = iso_timestamp(aware.astimezone(UTC))
    answer.update(status=STATUS_DELETED, updated_at=stamp, edited_at=None, body=None, author=None)
    answer["deleted_at"] = stamp
    return json.dumps(answer, ensure_ascii=False, separators=(",", ":"))


def _erase_answers(conn: Connection, comment_ids: Sequence[int], now: datetime) -> None:
    """Erase the deleted comments' text and author from the answers stored for their
    Idempotency-Keys; the keys stay used, so a retry replays the erased answer instead of
    creating the comment again."""
    deleted = set(comment_ids)
    erased = []
    for scope, key, body, comment_id in conn.execute(_ANSWERS_OF, {"ids": list(deleted)}):
        answer = _stored_answer(body)
        named = answer.get("id")
        if comment_id is None and not (isinstance(named, int) and named in deleted):
            continue  # another comment's, written by the release before 0007
        erased.append(
            {"match_scope": scope, "match_key": key, "erased": _erased_answer(answer, now)}
        )
    if erased:
        conn.execute(_ERASE_ANSWER, erased)


def _lock_contents_of(conn: Connection, ids: Sequence[int]) -> None:
    """PostgreSQL: take the content locks of the comments ``ids`` (as a create takes its
    content's) before any of their rows, in one order. A reply's create then reads its
    parent only once a removal of it has committed or after its own commit, and two writes
    to one content never take its rows and its change marker in opposite orders (a bulk
    delete against an edit or hide deadlocked). SQLite's BEGIN IMMEDIATE serialises all."""
    if conn.dialect.name != "postgresql" or not ids:
        return
    contents = conn.execute(
        select(comments.c.content_id).where(comments.c.id.in_(list(ids))).distinct()
    ).scalars()
    for key in sorted({_lock_key("content", content_id) for content_id in contents}):
        conn.execute(_ADVISORY_LOCK, {"k": key})


def _stamps(now: datetime | None, clock: Callable[[], datetime] | None) -> Callable[[], datetime]:
    """What a write reads its time from once it holds its locks: ``clock``, else ``now``,
    else the wall clock."""
    if clock is not None:
        return clock
    return utcnow if now is None else lambda: now


def _apply(
    conn: Connection, ids: Sequence[int], change: Transition, clock: Callable[[], datetime]
) -> tuple[list[int], datetime]:
    """``change`` on the comments ``ids`` it may move, in the caller's transaction; the ids
    that changed, in order, and the time it was stamped with. See ``Repository.moderate``."""
    _lock_contents_of(conn, ids)
    # Read once the contents' locks are held, not before waiting for them: a write that
    # went first (an author's edit) is stamped later than that, and this change, applied
    # after it, must not say it came before it (in the audit log, in updated_at).
    now = clock()
    values: dict[str, Any] = {"status": change.to_status, "updated_at": now}
    if change.to_status == STATUS_DELETED:
        values.update(_tombstone(now))
    # The ids named, and with unedited_since only those not edited after it.
    named: ColumnElement[bool] = comments.c.id.in_(list(ids))
    if change.unedited_since is not None:
        named = and_(
            named,
            or_(comments.c.edited_at.is_(None), comments.c.edited_at <= change.unedited_since),
        )
    vanished: list[int] = []
    if change.vanish_from:
        replies = comments.alias("replies")
        has_reply = select(replies.c.id).where(replies.c.parent_id == comments.c.id)
        vanish = (
            delete(comments)
            .where(
                named,
                comments.c.status.in_(change.vanish_from),
                ~has_reply.exists(),
            )
            .returning(comments.c.id)
        )
        # Again until none is left: a reply removed here may leave its parent, also among
        # ids, with no reply (a hidden comment and its hidden reply): the same end as
        # deleting them one call after the other, never a tombstone nobody could read.
        while removed := [r[0] for r in conn.execute(vanish)]:
            vanished += removed
    changed = vanished + [
        r[0]
        for r in conn.execute(
            update(comments)
            .where(named, comments.c.status.in_(change.from_statuses))
            .values(**values)
            .returning(comments.c.id)
        )
    ]
    changed.sort()
    if change.to_status == STATUS_DELETED and changed:
        _erase_answers(conn, changed, now)
    return changed, now


# The WAL is folded into the database once it holds 1 MiB of pages (SQLite's default is
# 4 MiB) and cut back to 1 MiB after a checkpoint. Unbounded, it kept its high-water size
# and grew 4 MiB at a time: on a full disk, freeing less than that let a few writes
# through before failing again (issue #8). Readiness wants twice this much free (health.py).
SQLITE_WAL_SIZE_LIMIT = 1024 * 1024
# New databases get 2 KiB pages, not SQLite's 4 KiB. A create changes about seven pages
# (the row, three indexes, the change marker and its key), and each is written whole to
# the WAL and again by the checkpoint, with an fsync: for a comment of a few hundred bytes,
# halving the page halves those bytes, and creates gained 6-12 % side by side
# (bench/README.md). SQLite fixes the page size when it creates the file: an existing
# database keeps its own.
SQLITE_PAGE_SIZE = 2048


def _sqlite_setup(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # SQLAlchemy emits BEGIN itself (see _sqlite_begin), so the driver must not.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets readers in every worker proceed while one writer commits; NORMAL sync is
        # durable across process crashes (only an OS crash can lose the last commits).
        # Before WAL creates the file. PRAGMAs take no bound parameters; the value is ours.
        cursor.execute(f"PRAGMA page_size={int(SQLITE_PAGE_SIZE)}")  # nosemgrep
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        page_size = int(cursor.execute("PRAGMA page_size").fetchone()[0])
        # busy_timeout: how long a write waits for another writer's lock (DB_STATEMENT_TIMEOUT).
        for pragma, value in (
            ("busy_timeout", busy_timeout_ms),
            ("wal_autocheckpoint", SQLITE_WAL_SIZE_LIMIT // page_size),
            ("journal_size_limit", SQLITE_WAL_SIZE_LIMIT),
        ):
            # PRAGMAs take no bound parameters; names are literals here, values ints.
            cursor.execute(f"PRAGMA {pragma}={int(value)}")  # nosemgrep
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return on_connect


# SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100 ms between
# tries: a writer that has waited 30 ms sleeps 20 ms more even if the lock was freed 0.1 ms
# later, and under concurrent creates from every worker they queue that way (a convoy: create
# p99 ~0.5 s under granian). BEGIN IMMEDIATE is our only statement that waits for the write
# lock, so it alone runs with busy_timeout=0 and retries itself: jittered sleeps from 50 us
# doubling to 1 ms, until DB_STATEMENT_TIMEOUT (then the usual 503).
SQLITE_LOCK_RETRY_FIRST = 0.00005
SQLITE_LOCK_RETRY_MAX = 0.001
TURN_POLL_FAST = 0.002


class WriterTurns:
    """One writer at a time among the processes that share a SQLite file: an ``flock`` on
    ``<database>-writer.lock``, taken before BEGIN IMMEDIATE. Without it two workers'
    creates collide on SQLite's lock, and each collision costs a failed BEGIN (an
    exception through SQLAlchemy) and a sleep (2 workers spent ~0.3 ms more CPU per create
    than 1; with turns the side-by-side difference was within noise, bench/README.md). A
    try is one syscall; a waiter asks every ~50 us for 2 ms, then backs off to 1 ms, and
    never blocks outright: a stuck holder must end in the usual 503 after
    ``DB_STATEMENT_TIMEOUT``, not stall every worker until gunicorn kills them all. Past
    that wait the write goes on without a turn and BEGIN IMMEDIATE's own retry decides.
    Threads of one process (gthread) share its writer connection: one that waits longer
    than ``wait`` for another thread's turn gets the usual lock timeout (a 503) instead.
    ``comments-api migrate`` and ``import`` write on their own connections and meet
    SQLite's lock instead."""

    def __init__(self, database: str | None, wait: float) -> None:
        self.path = f"{database}-writer.lock" if database and database != ":memory:" else None
        self.wait = wait
        self._fd = -1
        self._threads = threading.Lock()  # gthread workers share one descriptor
        if self.path is not None:
            os.register_at_fork(after_in_child=functools.partial(_forked, weakref.ref(self)))

    def forked(self) -> None:
        # A descriptor inherited across fork() is the parent's open file description, and
        # flock() would not keep parent and child apart: the child opens its own. Its
        # thread lock starts free, whatever the forking thread held.
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._threads = threading.Lock()

    def _descriptor(self) -> int:
        if self._fd < 0:
            self._fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @contextmanager
    def turn(self) -> Iterator[None]:
        if self.path is None:
            yield
            return
        # Threads share this process's writer connection, so one that cannot get in must
        # not write without the turn. Bounded like the flock: while an import or a
        # migration holds SQLite's lock, the k-th waiting thread would otherwise answer
        # its 503 after k statement timeouts instead of one.
        if not self._threads.acquire(timeout=self.wait):
            raise OperationalError(
                "writer turn", None, sqlite3.OperationalError("database is locked")
            )
        try:
            fd = self._descriptor()
            held = self._take(fd)
            try:
                yield
            finally:
                if held:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _take(self, fd: int) -> bool:
        started = time.monotonic()
        deadline = started + self.wait
        pause = SQLITE_LOCK_RETRY_FIRST
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    log.warning("no writer turn within %.1f s; writing without one", self.wait)
                    return False
            time.sleep(pause * (0.5 + random.random() / 2))  # noqa: S311 # nosec B311
            # A turn lasts ~0.2 ms: ask every ~50 us (a try is one syscall) for the first
            # 2 ms, then back off as BEGIN IMMEDIATE does. Workers sleep with a 1 us timer
            # slack (processes.tighten_timer_slack): with Linux's default these slept ~105 us.
            if now - started > TURN_POLL_FAST:
                pause = min(pause * 2, SQLITE_LOCK_RETRY_MAX)


def _forked(turns: weakref.ref[WriterTurns]) -> None:
    live = turns()
    if live is not None:
        live.forked()


def _begin_immediate(driver: Any, busy_timeout_ms: int, begin: Callable[[], object]) -> None:
    """Run ``begin`` (BEGIN IMMEDIATE) on the sqlite3 connection ``driver`` as
    ``_retry_while_busy`` does, with SQLite's own busy handler off meanwhile."""
    driver.execute("PRAGMA busy_timeout=0")
    try:
        _retry_while_busy(begin, busy_timeout_ms)
    finally:
        # PRAGMAs take no bound parameters; the value is an int.
        driver.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")  # nosemgrep


def _retry_while_busy(begin: Callable[[], object], busy_timeout_ms: int) -> None:
    """Run ``begin`` (BEGIN IMMEDIATE), retried while another writer holds the lock, with
    jittered sleeps from 50 us doubling to 1 ms, for at most ``busy_timeout_ms``. The
    connection's busy_timeout must be 0, or SQLite sleeps in its own steps first."""
    deadline = time.monotonic() + busy_timeout_ms / 1000
    pause = SQLITE_LOCK_RETRY_FIRST
    while True:
        try:
            begin()
            return
        except (OperationalError, sqlite3.OperationalError) as exc:
            orig = getattr(exc, "orig", exc)  # SQLAlchemy's wrapper, or the driver's own
            name = getattr(orig, "sqlite_errorname", None) or ""
            busy = name.startswith("SQLITE_BUSY")  # or an extended BUSY code
            if not busy or time.monotonic() >= deadline:
                raise
        # Jitter (not security): workers that collided do not retry in lockstep.
        time.sleep(pause * (0.5 + random.random() / 2))  # noqa: S311 # nosec B311
        pause = min(pause * 2, SQLITE_LOCK_RETRY_MAX)


def _no_such_table(exc: DBAPIError) -> bool:
    """The statement named a table the database does not have."""
    if getattr(exc.orig, "sqlstate", None) == "42P01":  # PostgreSQL undefined_table
        return True
    return isinstance(exc, OperationalError) and "no such table" in str(exc.orig)


def _sqlite_begin(busy_timeout_ms: int) -> Callable[[Connection], None]:
    def on_begin(conn: Connection) -> None:
        # Writes start with BEGIN IMMEDIATE: the write lock is taken before the abuse checks
        # read, so check-then-insert is one serialised step across workers, and a deferred
        # transaction can never fail to upgrade half-way (SQLITE_BUSY without waiting).
        mode = conn.get_execution_options().get("sqlite_begin", "")
        if mode != "IMMEDIATE":
            conn.exec_driver_sql(f"BEGIN {mode}")
            return
        _begin_immediate(
            conn.connection.driver_connection,
            busy_timeout_ms,
            lambda: conn.exec_driver_sql("BEGIN IMMEDIATE"),
        )

    return on_begin


# libpq's TCP keepalives on pooled and kept connections: a probe after 30 s idle keeps a
# NAT's or load balancer's idle timer (AWS: 350 s) from dropping the path, and a peer that
# vanished without a word is known after ~1 minute (then _drop_dead_connection sees the
# socket's error) instead of the kernel's two hours.
TCP_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
# libpq's tcp_user_timeout (ms): a statement sent on a path that went silent mid-request
# (a failover that took the old primary's address away, a partition) waits for its ACK
# this long, not for the kernel's ~15 minutes of retransmissions, during which the worker
# was wedged until WORKER_TIMEOUT killed it (a 500). Then the connection is lost: the
# request answers 503 and the pool starts afresh. It bounds only what the server's kernel
# has not acknowledged, never a slow answer (DB_STATEMENT_TIMEOUT does that).
TCP_USER_TIMEOUT_MS = 10_000


def sqlite_file(database_url: str | URL) -> str | None:
    """The database file of a SQLite URL; None for PostgreSQL or an in-memory database."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


def make_engine(
    database_url: str,
    pool_size: int = 5,
    pool_timeout: float = 5.0,
    statement_timeout: float = 5.0,
    url_file: str | None = None,
) -> Engine:
    """An engine for ``database_url``. SQLite creates the file on first run; its directory
    is created only for the default URL (``./data``, as ``make run`` uses it).

    ``url_file``: the file ``database_url`` was read from (``DATABASE_URL_FILE``); on
    PostgreSQL, new connections use the credentials it holds at the time (url_file.py)."""
    from ..settings import DEFAULT_SQLITE_URL

    url = make_url(database_url)
    timeout_ms = max(1, int(statement_timeout * 1000))
    if url.get_backend_name() == "sqlite":
        database = sqlite_file(url)
        if database is not None and not (directory := Path(database).parent).is_dir():
            # Said here, with the reason; SQLite's own "unable to open database file" then
            # fails the first connection, answered as any unreachable database. Any other
            # missing directory is a mistyped path: made, it held a new empty database that
            # was served as though it were the one meant.
            reason = "only the default's ./data is made; create it, or correct DATABASE_URL"
            if str(database_url) == DEFAULT_SQLITE_URL:
                try:
                    directory.mkdir(parents=True, exist_ok=True)
                    reason = ""
                except OSError as exc:
                    reason = str(exc.strerror)
            if reason:
                log.error("cannot create the database directory %s: %s", directory, reason)
        engine = create_engine(
            url,
            pool_size=pool_size,
            pool_timeout=pool_timeout,
            connect_args={"check_same_thread": False},
        )
        event.listen(engine, "connect", _sqlite_setup(timeout_ms))
        event.listen(engine, "begin", _sqlite_begin(timeout_ms))
        return engine
    pooler = pooler_mode(url)
    url = url.difference_update_query([POOLER_OPTION])  # ours, not libpq's
    server: dict[str, Any] = {}
    if pooler is None:
        # Keep a wedged query or a held lock from pinning a worker: DB_STATEMENT_TIMEOUT.
        server["options"] = _server_options(timeout_ms, url.query.get("options"))
    elif pooler == "transaction":
        # psycopg prepares a statement on a connection after its 5th run there; through a
        # transaction pooler the next run may meet another server connection, one without
        # it ("prepared statement _pg3_0 does not exist") or with another client's
        # ("already exists"): a 500. PgBouncer 1.18 does not track them.
        server["prepare_threshold"] = None
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        connect_args={
            "connect_timeout": 5,
            **server,
            # Defaults: a URL query naming one keeps its value (connect_args would win).
            **{
                k: v
                for k, v in {**TCP_KEEPALIVES, "tcp_user_timeout": TCP_USER_TIMEOUT_MS}.items()
                if k not in url.query
            },
        },
    )
    if pooler == "session":
        event.listen(engine, "connect", _set_statement_timeout(timeout_ms))
    elif pooler == "transaction":
        engine.update_execution_options(**{_POOLER_EXECUTION_OPTION: pooler})
        event.listen(engine, "connect", _require_statement_timeout(timeout_ms))
    # In place of pool_pre_ping: first, so no other checkout listener sees a dead one.
    event.listen(engine, "checkout", _drop_dead_connection, insert=True)
    # A standby's (or default_transaction_read_only's) refusal is a 503, not a 500.
    event.listen(engine, "handle_error", map_driver_errors)
    if url_file:
        follow_url_file(engine, url_file, pooler=pooler)
    return engine


# The pool mode an engine was made for, kept on the engine (its URL no longer says it):
# migrate() refuses a transaction pooler (its lock is the session's).
_POOLER_EXECUTION_OPTION = "comments_api_pooler"


def pooler_mode(database_url: str | URL) -> str | None:
    """The pool mode DATABASE_URL's ``?pooler=`` names (None: PostgreSQL directly)."""
    value = make_url(database_url).query.get(POOLER_OPTION)
    if value is None:
        return None
    if value not in POOLER_MODES:
        raise ValueError(f"?{POOLER_OPTION}= takes one of {', '.join(POOLER_MODES)}")
    return str(value)


def _set_statement_timeout(timeout_ms: int) -> Callable[[Any, Any], None]:
    """Session pooling: PgBouncer refuses (or, told to, drops) libpq's ``options``, so
    DB_STATEMENT_TIMEOUT is set on each new connection instead. The pooler keeps the
    server session for this client until it disconnects, then DISCARD ALL resets it."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # set_config, not SET: a bound parameter (SET takes none).
        dbapi_connection.execute(
            "SELECT set_config('statement_timeout', %s, false)", (str(int(timeout_ms)),)
        )
        dbapi_connection.commit()

    return on_connect


def _require_statement_timeout(timeout_ms: int) -> Callable[[Any, Any], None]:
    """Transaction pooling: a SET would stay on whichever server connection ran it, for
    other clients, and ``options`` never reaches the server, so the timeout must be the
    role's (or database's) own setting. A connection is refused, with what to do, while
    the server's differs: DB_STATEMENT_TIMEOUT silently not applied let a wedged query
    or a held lock pin a worker."""

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        row = dbapi_connection.execute(
            "SELECT setting FROM pg_settings WHERE name = 'statement_timeout'"
        ).fetchone()
        dbapi_connection.rollback()
        if row is not None and int(row[0]) == timeout_ms:
            return
        dbapi_connection.close()
        refused = (
            f"DATABASE_URL has ?pooler=transaction, and the server's statement_timeout is "
            f"{row[0] if row else '?'} ms, not the {timeout_ms} ms asked for "
            f"(DB_STATEMENT_TIMEOUT): a transaction pooler passes no per-connection "
            f"setting on, so set it on the role: ALTER ROLE <user> SET statement_timeout "
            f"= {timeout_ms}; export and import, which allow themselves hours, connect "
            f"directly or through a session-mode pool (docs/deployment.md, 'Behind "
            f"PgBouncer')"
        )
        # Logged too: serve's requests and /readyz say only that the database is
        # unavailable, and its log only the error's class, so the advice reached no one.
        log.error("%s", refused)
        raise dbapi_connection.OperationalError(refused)

    return on_connect


def _server_options(statement_timeout_ms: int, from_url: str | Sequence[str] | None) -> str:
    """libpq's ``options``: our statement_timeout, then whatever the URL's ``options``
    sets (connect_args replace a URL parameter of the same name, so an operator's
    ``?options=-c lock_timeout=2s`` was silently dropped). Later settings win, so a
    statement_timeout the URL names keeps its value, as its keepalives do."""
    ours = f"-c statement_timeout={statement_timeout_ms}"
    if not from_url:
        return ours
    extra = from_url if isinstance(from_url, str) else " ".join(from_url)
    return f"{ours} {extra}"


def _drop_dead_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """Pool checkout on PostgreSQL: is the connection still alive, without a round trip?

    ``pool_pre_ping`` sent ``;`` and waited for the answer at every checkout: one round trip
    in six of a create (bench/README.md). An idle connection's server says nothing unless
    it is going away: a restart, ``pg_terminate_backend``, ``idle_session_timeout`` or a
    crash each leave an error message or the close to read on the socket, and a failed
    keepalive (TCP_KEEPALIVES) leaves an error. So anything readable (or a connection
    psycopg already knows is broken) means dead, and raising InvalidatePoolError makes
    SQLAlchemy reconnect and drop the pool's older connections, as a failed pre-ping did
    (PoolEvents.checkout, SQLAlchemy 2.1). Not seen here: a path that answers only when
    spoken to, with a reset (the ping did see that). The keepalives keep such paths alive,
    the first connection found lost in use takes the pool's idle ones with it, and a read
    that met it is tried again (``_read_again_if_lost``).
    """
    if dbapi_connection.closed or dbapi_connection.broken:
        raise InvalidatePoolError("connection already closed")
    poller = poll()
    poller.register(dbapi_connection.fileno(), POLLIN)
    if poller.poll(0):
        raise InvalidatePoolError("the server spoke or hung up while the connection was idle")


def _read_again_if_lost(read: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a read once more when its connection was found lost in use. That is what a
    checkout cannot see (``_drop_dead_connection``: a path that resets a connection only
    when spoken to, such as a NAT or load balancer that forgot an idle flow). By then the
    pool's idle connections are gone too, so the second try connects afresh; a read
    changes nothing, so trying it twice is safe. A server that is really down fails the
    second try as well, and the request gets its 503 as before. Only a connection lost at
    once is tried again (``lost_at_once``), not one whose path went silent."""

    @functools.wraps(read)
    def again(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        started = time.monotonic()
        try:
            return read(*args, **kwargs)
        except DBAPIError as exc:
            if not lost_at_once(exc.connection_invalidated, started):
                raise
            log.warning("database connection lost during a read; reading once more")
            return read(*args, **kwargs)

    return again


# A connection found lost this soon after the call began was cut (its session ended, its
# path reset): a fresh one may well work. Found lost later, after the path had gone silent
# for TCP_USER_TIMEOUT_MS, the second try would wait out its connect_timeout as well, only
# to answer the same 503 later (the path-gone-silent test in tests/test_pool_checkout.py).
TRY_AGAIN_IF_LOST_WITHIN = 1.0
# How long a lost COMMIT's outcome is asked for while its transaction is still in progress.
COMMIT_OUTCOME_WAIT = 1.0
# What a write's error names once the database has said its lost COMMIT rolled back
# (Repository._stored_after_all): nothing was stored, so it may be written again.
ROLLED_BACK = "COMMIT (rolled back)"


def lost_at_once(lost: bool, started: float) -> bool:
    """Whether a call begun at ``started`` (time.monotonic) that found its connection
    ``lost`` is worth one more try (TRY_AGAIN_IF_LOST_WITHIN)."""
    return lost and time.monotonic() - started < TRY_AGAIN_IF_LOST_WITHIN


def lost_at_commit(exc: BaseException) -> bool:
    """A write's connection was found lost at its COMMIT, which the server may have
    carried out (named by ``TimedCursor.commit`` and ``Repository._write``)."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated and exc.statement == COMMIT


def _write_again_if_lost(
    write: Callable[Concatenate[Repository, _P], _R],
) -> Callable[Concatenate[Repository, _P], _R]:
    """Run a write once more when its connection was found lost while one of its
    statements ran: what ``_read_again_if_lost`` does for reads, and as safe, because
    nothing was committed. Its COMMIT had not been sent, and a transaction the server
    never got a COMMIT for is rolled back. That is the session ended by a restart, a
    failover or ``idle_session_timeout`` a moment before its checkout, its socket not yet
    readable (``_drop_dead_connection``), or a path that resets only when spoken to
    (``lost_at_once``: not one that went silent). A connection lost at the COMMIT itself
    may have committed, so that write is not tried again (both paths' errors name the
    COMMIT: ``TimedCursor.commit``, ``Repository._write``) unless the database has said it
    rolled back (``ROLLED_BACK``, PostgreSQL: ``Repository._stored_after_all``); nor one
    the server has already answered 500 at WORKER_TIMEOUT, whose abort is what cut its
    connection."""

    @functools.wraps(write)
    def again(repo: Repository, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        started = time.monotonic()
        try:
            return write(repo, *args, **kwargs)
        except DBAPIError as exc:
            # The database's word that the lost COMMIT rolled back (given at once after it,
            # Repository._stored_after_all) holds however long the write ran before it,
            # waiting for a content's lock, say: the database has just answered.
            rolled_back = exc.statement == ROLLED_BACK
            if not (rolled_back or lost_at_once(exc.connection_invalidated, started)):
                raise
            # No statement: lost while connecting, which the pool has just tried.
            if exc.statement in (None, COMMIT) or repo.in_aborted_request():
                raise
            log.warning("database connection lost before a write was committed; writing once more")
            return write(repo, *args, **kwargs)

    return again


def _lock_key(*parts: str) -> int:
    """A signed 64-bit key for pg_advisory_xact_lock, stable across processes."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def is_disk_full(exc: BaseException) -> bool:
    """SQLITE_FULL (or PostgreSQL's disk-full error): the volume has no room for a write."""
    orig = getattr(exc, "orig", exc)
    if getattr(orig, "sqlite_errorname", None) == "SQLITE_FULL":
        return True
    return getattr(orig, "sqlstate", None) == "53100"  # PostgreSQL disk_full


class AbortedWrite(OperationalError):
    """A write of a request the server has already answered 500 at WORKER_TIMEOUT
    (``Repository.aborted_threads``): rolled back instead of committed. An
    OperationalError, so whatever catches database failures ends the request with it; the
    app's handler neither logs nor counts it as the database's failure
    (``in_aborted_request``)."""


class IdempotencyKeyReused(DomainError):
    code = "idempotency-key-reused"
    http_status = 422


@dataclass(frozen=True)
class IdempotentRequest:
    scope: str  # the caller's identity, or "anonymous"
    key: str
    request_hash: str
    ttl: float  # seconds a key is remembered


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: str  # JSON text
    location: str | None
    replayed: bool  # True: the answer to an earlier request with the same key


# Renders the response for a freshly stored comment: (status, JSON body, Location).
Renderer = Callable[[Comment], tuple[int, str, str | None]]


@dataclass(frozen=True)
class AuthorCheck:
    """The caller's rule on an author's recent activity, run inside the insert's transaction.

    Storage counts (comments since ``thread_since`` and the oldest of them, same text
    since ``duplicate_since``, a ban) under the content's lock and hands the facts to
    ``decide``, which raises to refuse: check and insert stay one serialised step, while
    the rule lives in the service.
    """

    thread_since: datetime
    duplicate_since: datetime
    decide: Callable[[AuthorActivity], None]


# The caller's rule on a reply's parent (None: no such comment), run in the insert's
# transaction after an Idempotency-Key's lookup, so a retry gets its first answer whatever
# became of the parent since. Raises to refuse.
ParentCheck = Callable[[Comment | None], None]


class Repository:
    """Comment persistence. Every method is one short transaction."""

    def __init__(
        self,
        engine: Engine,
        lock_wait: float = 5.0,
        observe_statement: StatementObserver | None = None,
    ) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self.observe_statement = observe_statement
        self._lock_wait_ms = max(1, int(lock_wait * 1000))
        self._writers = WriterTurns(engine.url.database if self.is_sqlite else None, lock_wait)
        self._writer: Any = None  # SQLite file: the comment insert's connection (_sqlite_writer)
        self._writer_pid = 0
        self._inherited: list[Any] = []
        self._pid = pid_at_fork()
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        dialect = engine.dialect
        self._insert_comment = DriverStatement.compile(
            _INSERT_COMMENT if self.is_sqlite else _INSERT_COMMENT_NAMING_ITS_TRANSACTION,
            dialect,
            _INSERTED_COLUMNS,
        )
        self._transaction_status = DriverStatement.compile(_TRANSACTION_STATUS, dialect)
        self._comment_by_id = DriverStatement.compile(_COMMENT_BY_ID, dialect)
        self._author_activity_sql = DriverStatement.compile(_AUTHOR_ACTIVITY, dialect)
        self._advisory_lock = DriverStatement.compile(_ADVISORY_LOCK, dialect)
        self._key_lookup = DriverStatement.compile(_KEY_LOOKUP, dialect)
        self._api_key_by_id = DriverStatement.compile(_API_KEY_BY_ID, dialect)
        self._key_forget = DriverStatement.compile(_KEY_FORGET, dialect)
        self._key_remember = DriverStatement.compile(_KEY_REMEMBER, dialect, _KEY_COLUMNS)
        self._last_sweep = -IDEMPOTENCY_SWEEP_INTERVAL
        self._last_release = -RELEASE_SPACE_INTERVAL
        # The threads whose request the threaded worker has answered 500 at WORKER_TIMEOUT
        # while they were still in the app (it sets its own set here, in its process):
        # their writes roll back instead of committing. Nothing can cut off a thread
        # waiting for SQLite's write lock (no socket to shut down, unlike PostgreSQL's
        # connections), and it committed the create its client was told had failed when
        # the lock came free before its worker exited. Almost always empty.
        self.aborted_threads: Collection[int] = frozenset()

    @contextmanager
    def _write(self, *, writes: bool = True) -> Iterator[Connection]:
        """A write transaction: BEGIN IMMEDIATE on SQLite (in its writer turn), a plain
        one on PostgreSQL. ``writes=False``: one that only takes locks, and asks for no
        transaction id (pg_current_xact_id would assign one, and a commit record with it)."""
        with self.engine.connect() as conn, self._writers.turn():
            conn.execution_options(sqlite_begin="IMMEDIATE")
            transaction: str | None = None
            commit_sent: float | None = None
            try:
                with conn.begin():
                    yield conn
                    if self.aborted_threads and threading.get_ident() in self.aborted_threads:
                        raise self._aborted_write()
                    if writes and not self.is_sqlite:  # to ask, were the COMMIT's answer lost
                        transaction = conn.execute(_TRANSACTION_ID).scalar()
                    commit_sent = time.monotonic()
            except IntegrityError as exc:
                # An audit row's id already taken: not the ban's "already banned".
                refused = _sequence_refusal(exc.orig, exc.statement)
                if refused is None:
                    raise
                raise refused from exc
            except DBAPIError as exc:
                # SQLAlchemy's error names no statement when its COMMIT fails: named here as
                # the driver path names it (TimedCursor.commit), so that a write lost there
                # is neither tried again nor logged as a plain outage (lost_at_commit).
                if commit_sent is not None and exc.statement is None:
                    exc.statement = COMMIT
                if not self._stored_after_all(exc, transaction, commit_sent):
                    raise

    @contextmanager
    def _driver_write(self) -> Iterator[TimedCursor]:
        """``_write`` on a DBAPI connection, for the comment insert: the same turn, BEGIN
        IMMEDIATE and lock wait, without SQLAlchemy's per-statement work (driver_sql.py).
        A driver error is raised as SQLAlchemy's, so callers and the app's error handlers
        see one kind of database failure."""
        if self._writers.path is not None:
            with self._writers.turn():
                yield from self._sqlite_writer_transaction()
            return
        # PostgreSQL (and SQLite in memory): a pooled connection, checked out and returned
        # outside the turn, so other writers wait only for the transaction itself.
        run: TimedCursor | None = None
        commit_sent: float | None = None
        try:
            with self._driver_cursor() as (driver, run), self._writers.turn():
                try:
                    if self.is_sqlite:
                        _begin_immediate(
                            driver, self._lock_wait_ms, lambda: run.execute("BEGIN IMMEDIATE")
                        )
                    yield run
                    if self.aborted_threads and threading.get_ident() in self.aborted_threads:
                        raise self._aborted_write()
                    commit_sent = time.monotonic()
                    run.commit(driver)
                except BaseException:
                    with contextlib.suppress(self._dbapi_error):
                        driver.rollback()
                    raise
        except DBAPIError as exc:
            if run is None or not self._stored_after_all(exc, run.transaction, commit_sent):
                raise

    def _stored_after_all(
        self, exc: DBAPIError, transaction: str | None, commit_sent: float | None
    ) -> bool:
        """A write failed with ``exc``: True when its connection was lost at the COMMIT
        (sent at ``commit_sent``) and the database says ``transaction`` committed, so the
        write stands. When it says the transaction rolled back, ``exc`` is renamed
        ``ROLLED_BACK``: nothing was stored, and the write may run again."""
        # Lost at once, not after a path went silent: then asking would wait as long.
        if commit_sent is None or not lost_at_once(lost_at_commit(exc), commit_sent):
            return False
        outcome = self._commit_outcome(transaction)
        if outcome == "committed":
            log.warning(
                "database connection lost at a write's COMMIT, which the database had "
                "carried out (pg_xact_status): stored, and answered as stored"
            )
            return True
        if outcome == "aborted":
            # Nothing was stored: as safe to write again as a loss at a statement.
            exc.statement = ROLLED_BACK
        return False

    def _commit_outcome(self, transaction: str | None) -> str | None:
        """After the answer to a COMMIT was lost: "committed" or "aborted" as the database
        tells it on a fresh connection, or None when it cannot tell (no transaction id, the
        database unreachable, or the transaction still in progress after
        COMMIT_OUTCOME_WAIT seconds)."""
        if transaction is None:  # SQLite's writes have none (and lose no connections)
            return None
        deadline = time.monotonic() + COMMIT_OUTCOME_WAIT
        try:
            while True:
                with self._driver_cursor() as (_, asking):
                    row = asking.fetchone(self._transaction_status, {"xact": transaction})
                status = row[0] if row is not None else None
                # A backend whose client went away mid-COMMIT finishes it, or rolls back
                # as it exits: "in progress" only for that moment.
                if status != "in progress" or time.monotonic() >= deadline:
                    return status if status in ("committed", "aborted") else None
                time.sleep(0.05)
        except DBAPIError as exc:
            log.warning("the outcome of a lost COMMIT is unknown: %s", exc.__class__.__name__)
            return None

    def _sqlite_writer_transaction(self) -> Iterator[TimedCursor]:
        # Only inside the writer turn, which also keeps this process's threads apart.
        driver = self._sqlite_writer()
        cursor = run = None
        try:
            cursor = driver.cursor()
            run = TimedCursor(cursor, self.observe_statement)
            _retry_while_busy(lambda: run.execute("BEGIN IMMEDIATE"), self._lock_wait_ms)
            yield run
            if self.aborted_threads and threading.get_ident() in self.aborted_threads:
                raise self._aborted_write()
            run.commit(driver)
        except BaseException as exc:
            with contextlib.suppress(self._dbapi_error):
                driver.rollback()
            if not isinstance(exc, self._dbapi_error):
                raise
            lost = is_lost(self.engine.dialect, exc, driver, cursor)
            if lost:
                self._writer = None
                with contextlib.suppress(self._dbapi_error):
                    driver.close()
            sql = run.running if run is not None else None
            raise as_sqlalchemy_error(self.engine.dialect, exc, invalidated=lost, sql=sql) from exc
        finally:
            if cursor is not None:
                with contextlib.suppress(self._dbapi_error):
                    cursor.close()

    def in_aborted_request(self) -> bool:
        """True in a thread whose request the server has already answered 500 at
        WORKER_TIMEOUT (``aborted_threads``): a database error it meets now is that
        abort's doing (AbortedWrite, or the connection the abort shut down), not the
        database's."""
        return bool(self.aborted_threads) and threading.get_ident() in self.aborted_threads

    @staticmethod
    def _aborted_write() -> AbortedWrite:
        """What a write raises instead of committing (its caller rolls back) in a thread
        in ``aborted_threads``: its client has its 500, and may retry."""
        log.warning("rolled back the write of a request aborted at WORKER_TIMEOUT")
        return AbortedWrite("COMMIT", None, None)  # type: ignore[arg-type]

    def _sqlite_writer(self) -> Any:
        """This process's connection for comment inserts on a SQLite file, outside the
        pool, with ``busy_timeout=0`` for good: BEGIN IMMEDIATE is the only statement it
        waits on, and ``_retry_while_busy`` does that waiting. Against a pooled connection
        it saves the checkout, the return's rollback and setting busy_timeout twice per
        create (bench/README.md, "The comment writer's connection")."""
        if self._writer is not None and self._writer_pid == self._pid():
            return self._writer
        if self._writer is not None:
            # Forked: the parent's connection is the parent's. Closing it here could fold or
            # remove the WAL under the parent; keep it referenced, unused, instead.
            self._inherited.append(self._writer)
        proxied = raw_connection(self.engine)  # runs the engine's connect setup
        driver: Any = proxied.driver_connection
        proxied.detach()  # ours alone, never returned to the pool
        try:
            driver.execute("PRAGMA busy_timeout=0")
        except self._dbapi_error as exc:
            with contextlib.suppress(self._dbapi_error):
                driver.close()
            raise as_sqlalchemy_error(self.engine.dialect, exc) from exc
        self._writer, self._writer_pid = driver, self._pid()
        return driver

    @contextmanager
    def _driver_cursor(self) -> Iterator[tuple[Any, TimedCursor]]:
        """A pooled DBAPI connection and a timed cursor on it. A read needs nothing more:
        the pool's reset on return ends whatever transaction the driver began."""
        pooled = raw_connection(self.engine)
        driver: Any = pooled.driver_connection
        cursor = run = None
        try:
            cursor = driver.cursor()
            run = TimedCursor(cursor, self.observe_statement)
            yield driver, run
        except self._dbapi_error as exc:
            lost = is_lost(self.engine.dialect, exc, driver, cursor)
            if lost:
                pooled.invalidate(exc)
                # As SQLAlchemy's own Connection does on a disconnect: the pool's idle
                # connections are likely as dead as this one, even where a checkout could
                # not tell (a path that resets only when spoken to). Close them now.
                self.engine.dispose()
            # Naming the statement (or COMMIT) it came from, as SQLAlchemy names statements.
            sql = run.running if run is not None else None
            raise as_sqlalchemy_error(self.engine.dialect, exc, invalidated=lost, sql=sql) from exc
        finally:
            if cursor is not None:
                with contextlib.suppress(self._dbapi_error):
                    cursor.close()
            pooled.close()

    def _lock(self, run: TimedCursor, *parts: str) -> None:
        # PostgreSQL: held until this transaction ends. SQLite's BEGIN IMMEDIATE already
        # serialises every writer, so there is nothing more to take.
        if not self.is_sqlite:
            run.fetchone(self._advisory_lock, {"k": _lock_key(*parts)})

    # --- health ------------------------------------------------------------------
    def free_bytes(self) -> int | None:
        """Free space on the SQLite database's volume; None on PostgreSQL or in memory."""
        database = sqlite_file(self.engine.url)
        if database is None:
            return None
        stats = os.statvfs(Path(database).expanduser().resolve().parent)
        return stats.f_bavail * stats.f_frsize

    def release_space(self) -> None:
        """After a disk-full error: fold the WAL into the database and cut it to zero bytes,
        so the space it held is free again and the next write is not the one that fails."""
        clock = time.monotonic()
        # TRUNCATE waits (busy timeout) for readers to move on: not on every failed write.
        if not self.is_sqlite or clock - self._last_release < RELEASE_SPACE_INTERVAL:
            return
        self._last_release = clock
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        except SQLAlchemyError:
            pass  # still full or still busy: the next failure tries again

    def schema_revision(self, conn: Connection | None = None) -> str | None:
        """The Alembic revision the database is at; None if it was never migrated (no
        alembic_version table); raises on any other error (unreachable, a timeout, a
        connection lost), which readiness reports as such: taken for "never migrated",
        a slow or failing database was answered "run `comments-api migrate`". On ``conn``
        if given (readiness watches the connection it checks on), else a pooled one."""
        if conn is None:
            with self.engine.connect() as pooled:
                return self.schema_revision(pooled)
        try:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except DBAPIError as exc:
            if _no_such_table(exc):
                return None
            raise

    # --- writes ------------------------------------------------------------------
    @_write_again_if_lost
    def create(
        self,
        new: NewComment,
        check: AuthorCheck | None = None,
        *,
        now: datetime | None = None,
        parent_check: ParentCheck | None = None,
    ) -> Comment:
        """Insert a comment; with ``check``, first let it judge the author's activity, and
        with ``parent_check`` a reply's parent."""
        with self._driver_write() as run:
            return self._insert(run, new, check, parent_check, now or utcnow())

    @_write_again_if_lost
    def create_idempotent(
        self,
        new: NewComment,
        check: AuthorCheck | None,
        request: IdempotentRequest,
        render: Renderer,
        *,
        now: datetime | None = None,
        parent_check: ParentCheck | None = None,
    ) -> StoredResponse:
        """``create`` once per (caller, key): a retry gets the first answer back.

        The key's row is written in the comment's transaction, so either both exist or
        neither; concurrent requests with one key wait on one lock and the later ones
        replay. The same key with another request raises IdempotencyKeyReused. The row
        names the comment, so deleting it erases the answer (``moderate``).
        """
        now = now or utcnow()
        keys = {"scope": request.scope, "key": request.key}
        # The comment insert's path (_driver_write): on SQLAlchemy's Connection these
        # statements cost a keyed create 2.6x a plain one (bench/README.md).
        with self._driver_write() as run:
            self._lock(run, "idempotency", request.scope, request.key)
            fresh_since = now - timedelta(seconds=request.ttl)
            row = run.fetchone(self._key_lookup, {**keys, "fresh_since": fresh_since})
            if row is not None:
                request_hash, status, body, location, fresh = row
                if not fresh:  # expired: forgotten
                    # Its content's lock before the old row's: a delete of the comment it
                    # names holds that lock, then erases this row (_erase_answers), and
                    # the two deadlocked (a 503 after PostgreSQL's deadlock_timeout).
                    self._lock(run, "content", new.content_id)
                    run.run(self._key_forget, keys)
                elif request_hash != request.request_hash:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was already used with a different request; "
                        "use a new key for a new comment"
                    )
                else:
                    return StoredResponse(status, body, location, replayed=True)
            comment = self._insert(run, new, check, parent_check, now)
            status, body, location = render(comment)
            run.run(
                self._key_remember,
                {
                    **keys,
                    "request_hash": request.request_hash,
                    "status": status,
                    "body": body,
                    "location": location,
                    "created_at": now,
                    "comment_id": comment.id,
                },
            )
        self._sweep_idempotency_keys(now - timedelta(seconds=request.ttl))
        return StoredResponse(status, body, location, replayed=False)

    def _sweep_idempotency_keys(self, cutoff: datetime) -> None:
        # Outside the create's transaction and at most once a minute per process: the
        # rows are dead already (lookups check the age), this only reclaims the space, and
        # it must never hold a create up or deadlock with another process's sweep.
        clock = time.monotonic()
        if clock - self._last_sweep < IDEMPOTENCY_SWEEP_INTERVAL:
            return
        self._last_sweep = clock
        try:
            with self._write() as conn:
                # The oldest ones by primary key (not "up to the batch's newest created_at":
                # rows written in one microsecond would all go). Locked first, in the order
                # a delete erases answers (_ANSWERS_OF): a DELETE ... IN (this subquery)
                # ran as a hash join over a seq scan, locking rows in their physical order,
                # and deadlocked a concurrent delete of their comments (PostgreSQL).
                oldest = conn.execute(_OLDEST_EXPIRED_KEYS, {"cutoff": cutoff}).all()
                if oldest:
                    conn.execute(
                        _FORGET_EXPIRED_KEY,
                        [{"match_scope": scope, "match_key": key} for scope, key in oldest],
                    )
            if len(oldest) >= IDEMPOTENCY_SWEEP_BATCH:  # more may be left: the next create sweeps
                self._last_sweep = clock - IDEMPOTENCY_SWEEP_INTERVAL
        except SQLAlchemyError as exc:
            log.warning("idempotency key sweep skipped: %s", exc.__class__.__name__)

    def _insert(
        self,
        run: TimedCursor,
        new: NewComment,
        check: AuthorCheck | None,
        parent_check: ParentCheck | None,
        now: datetime,
    ) -> Comment:
        key = author_key(new.email, new.author_subject)
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
        # One create per content at a time (PostgreSQL; SQLite's BEGIN IMMEDIATE already
        # serialises every writer). Ids come from a sequence at INSERT, so without it two
        # creates could commit out of id order, and a reader paging oldest-first ("after
        # the last id seen") would pass the later-committed one for good. It also makes
        # the author check and the insert one step: two identical posts at the same
        # instant store one comment.
        self._lock(run, "content", new.content_id)
        # The parent read under that lock, which its removal takes too (_lock_contents_of):
        # read before it, a parent removed meanwhile failed the insert's foreign key (a 500).
        if parent_check is not None and new.parent_id is not None:
            parent = run.fetchone(self._comment_by_id, {"id": new.parent_id})
            parent_check(_to_comment(parent) if parent is not None else None)
        if check is not None and key is not None:
            check.decide(self._author_activity(run, new, key, check))
        try:
            inserted = run.fetchone(self._insert_comment, {**values, "author_key": key})
        except self.engine.dialect.loaded_dbapi.IntegrityError as exc:
            refused = _sequence_refusal(exc, self._insert_comment.sql)
            if refused is None:
                raise  # e.g. a reply to no comment: the caller skipped its parent check
            raise refused from exc
        if len(inserted) > 1:  # PostgreSQL: the transaction's id (_commit_outcome)
            run.transaction = inserted[1]
        return Comment(id=inserted[0], deleted_at=None, **values)  # type: ignore[arg-type]

    def _author_activity(
        self,
        run: TimedCursor,
        new: NewComment,
        key: str,
        check: AuthorCheck,
    ) -> AuthorActivity:
        # One statement, three index lookups: (content_id, author_key, created_at) twice
        # and the bans primary key.
        row = run.fetchone(
            self._author_activity_sql,
            {
                "content_id": new.content_id,
                "author_key": key,
                "email_key": email_key(new.email) or key,
                "decomposed_key": decomposed_email_key(new.email) or key,
                "legacy_key": legacy_email_key(new.email) or key,
                "thread_since": check.thread_since,
                "dup_since": check.duplicate_since,
                "body": new.body,
            },
        )
        oldest = row[1]
        if isinstance(oldest, str):  # SQLite's stored text, "YYYY-MM-DD HH:MM:SS.ffffff"
            oldest = datetime.fromisoformat(oldest)
        return AuthorActivity(
            recent=row[0], duplicates=row[2], banned=row[3] > 0, oldest_recent=_aware(oldest)
        )

    # --- reads -------------------------------------------------------------------
    @_read_again_if_lost
    def get(self, comment_id: int) -> Comment | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(*_COMMENT_COLUMNS).where(comments.c.id == comment_id)).first()
        return _to_comment(row) if row is not None else None

    @_read_again_if_lost
    def legacy_list(self, content_id: str, cap: int) -> tuple[list[tuple[str | None, str]], bool]:
        """Published (email, body) pairs in creation order, at most ``cap``; and truncated?"""
        with self.engine.connect() as conn:
            result = conn.execute(
                _LEGACY_LIST[not self.is_sqlite], {"content_id": content_id, "limit": cap + 1}
            )
            rows = [(r[0], r[1]) for r in result]
        return rows[:cap], len(rows) > cap

    @_read_again_if_lost
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
        of_content, by_id = _of_content(content_id, not self.is_sqlite, newest=newest)
        query = select(*_COMMENT_COLUMNS).where(of_content, comments.c.status.in_(statuses))
        if after_id is not None:
            query = query.where(comments.c.id < after_id if newest else comments.c.id > after_id)
        query = query.order_by(*by_id).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = [_to_comment(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].id, order) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    @_read_again_if_lost
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

    # --- moderation ------------------------------------------------------------------
    @_write_again_if_lost
    def moderate(
        self,
        ids: Sequence[int],
        change: Transition,
        actor: str,
        details: dict[str, Any] | None = None,
        *,
        now: datetime | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> list[int]:
        """Apply ``change`` (decided by the moderation rules) to every comment it may move;
        one transaction with its audit row.

        Returns the ids that actually changed (others were missing or already there).
        Comments in ``change.vanish_from`` with no reply are removed, not kept as
        tombstones. A delete also erases the text and author from the answers stored for
        the comments' Idempotency-Keys (``_erase_answers``). ``clock`` (else ``now``, else
        the wall clock) is read once this write holds its locks.
        """
        with self._write() as conn:
            changed, stamp = _apply(conn, ids, change, _stamps(now, clock))
            self._audit(conn, actor, change.action, None, changed, details, stamp)
        return changed

    @_write_again_if_lost
    def moderate_author(
        self,
        author_key: str,
        change: Transition,
        actor: str,
        details: dict[str, Any] | None = None,
        *,
        limit: int,
        now: datetime | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> tuple[list[int], bool]:
        """``moderate`` the oldest ``limit`` comments whose author key is ``author_key``
        (in a status ``change`` moves out of), read in the same transaction; one audit row
        whose details get ``more``. Returns the ids that changed, and whether that author
        has more such comments left. Time as ``moderate`` reads it."""
        stamps = _stamps(now, clock)
        with self._write() as conn:
            # The oldest of each (status, key form), each read off the (status, author_key,
            # id) index in order, then the oldest of those. One statement over every status
            # had no index in id order: PostgreSQL walked the primary key instead, and for an
            # author whose comments are recent it read the whole table before them (901,000
            # rows, ~0.44 s a call, at 1,000,000 comments).
            # One statement, so one snapshot (READ COMMITTED gives each its own): read one
            # (status, key form) at a time, a comment a moderator approved from pending
            # between the published read and the pending one was read in neither, and the
            # erasure could end (more: false) leaving it published.
            branches = []
            for status in change.from_statuses:
                for key in author_key_forms(author_key):
                    pinned = [(comments.c.status, status), (comments.c.author_key, key)]
                    where, order = _pinned(pinned, not self.is_sqlite)
                    oldest = select(comments.c.id).where(*where).order_by(*order)
                    branches.append(select(oldest.limit(limit + 1).subquery().c.id))
            each = union_all(*branches).subquery()
            found = list(
                conn.execute(select(each.c.id).order_by(each.c.id).limit(limit + 1)).scalars()
            )
            more = len(found) > limit
            changed, stamp = (
                _apply(conn, found[:limit], change, stamps) if found else ([], stamps())
            )
            self._audit(
                conn, actor, change.action, None, changed, {**(details or {}), "more": more}, stamp
            )
        return changed, more

    @_write_again_if_lost
    def edit_body(
        self,
        comment_id: int,
        body: str,
        status: str,
        actor: str,
        *,
        expected_status: str,
        now: datetime | None = None,
        clock: Callable[[], datetime] | None = None,
        refuse_if_banned: tuple[Sequence[str], Callable[[], None]] | None = None,
    ) -> Comment | None:
        """Set a comment's text and status if its status is still ``expected_status`` (the
        one the edit was allowed on); None when it moved meanwhile (hidden, deleted).

        ``clock`` (else ``now``, else the wall clock) is read once this write holds its
        locks: ``edited_at`` is what an approve's ``if_unedited_since`` is compared with,
        and a time read before waiting for another write's lock could lie before a
        moderator's read that did not see the edit yet (the approve then published text
        nobody had read).

        ``refuse_if_banned``: author keys, and what raises when a ban names one of them,
        asked under the same locks, as a create asks in its insert's transaction: a ban
        that committed while the edit waited for another write's lock stops it."""
        with self._write() as conn:
            _lock_contents_of(conn, [comment_id])
            if refuse_if_banned is not None:
                targets, refuse = refuse_if_banned
                named = select(bans.c.target).where(bans.c.target.in_(list(targets)))
                if targets and conn.execute(named).first() is not None:
                    refuse()
            if not self.is_sqlite:  # SQLite: BEGIN IMMEDIATE already excludes a listing
                conn.execute(_EDIT_IN_FLIGHT, _EDITS_KEY)
            now = clock() if clock is not None else (now or utcnow())
            changed = conn.execute(
                update(comments)
                .where(comments.c.id == comment_id, comments.c.status == expected_status)
                .values(body=body, status=status, updated_at=now, edited_at=now)
            ).rowcount
            if not changed:
                # A moderator's hide or a delete committed after the edit's checks: writing
                # the status read before would undo it.
                return None
            self._audit(conn, actor, "edit", None, [comment_id], None, now)
            row = conn.execute(select(*_COMMENT_COLUMNS).where(comments.c.id == comment_id)).first()
        return _to_comment(row) if row is not None else None

    @_read_again_if_lost
    def moderation_page(
        self,
        status: str,
        *,
        content_id: str | None,
        limit: int,
        after_id: int | None,
        author_key: str | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> Page:
        """Comments in ``status`` (pending, hidden or published), oldest first, across all
        contents or of one, of every author or of one; ``read_at``: ``clock`` read once no
        edit is in flight, so an edit these rows miss is stamped after it (an approve's
        ``if_unedited_since``). An edit stamps ``edited_at`` before it commits: a listing
        that read between the two missed it yet read a later time."""
        query = select(*_COMMENT_COLUMNS).where(comments.c.status == status)
        by_id: list[Any] = [comments.c.id]
        if content_id is not None:
            of_content, by_id = _of_content(content_id, not self.is_sqlite)
            query = query.where(of_content)
        if author_key is not None:
            query = query.where(_by_author(author_key))
        if after_id is not None:
            query = query.where(comments.c.id > after_id)
        query = query.order_by(*by_id).limit(limit + 1)
        # A write transaction that writes nothing: it waits for the edits in flight (SQLite's
        # write lock, PostgreSQL's edits lock) and keeps new ones out until it has read.
        # No transaction id: every listing (a console's refresh) burnt one, and a WAL flush.
        with self._write(writes=False) as conn:
            if not self.is_sqlite:
                conn.execute(_ADVISORY_LOCK, _EDITS_KEY)
            read_at = clock()
            rows = conn.execute(query).all()
        items = [_to_comment(r) for r in rows[:limit]]
        next_cursor = encode_cursor(items[-1].id, "oldest") if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor, read_at=read_at)

    @_read_again_if_lost
    def is_banned(self, *targets: str) -> bool:
        """Whether a ban names any of ``targets`` (author keys)."""
        if not targets:
            return False
        with self.engine.connect() as conn:
            return (
                conn.execute(select(bans.c.target).where(bans.c.target.in_(targets))).first()
                is not None
            )

    @_read_again_if_lost
    def find_ban(self, *targets: str) -> dict[str, Any] | None:
        """The ban standing under any of ``targets`` (one author key's forms), or None; of
        several, the first made (the one a repeat ban leaves standing)."""
        if not targets:
            return None
        query = (
            select(bans)
            .where(bans.c.target.in_(targets))
            .order_by(bans.c.created_at, bans.c.target)
            .limit(1)
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _ban_item(row)

    @_write_again_if_lost
    def ban(
        self,
        target: str,
        reason: str | None,
        actor: str,
        *,
        also: Sequence[str] = (),
        now: datetime | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> bool:
        """Ban an author key; False when it already was banned, under ``target`` or any of
        ``also`` (its other forms: a ban the release before 0016 took of the address typed
        decomposed). Time as ``moderate`` reads it: once the write began (SQLite: holds the
        lock)."""
        stamps = _stamps(now, clock)
        others = [form for form in also if form != target]
        try:
            with self._write() as conn:
                if others:
                    standing = select(bans.c.target).where(bans.c.target.in_(others)).limit(1)
                    if conn.execute(standing).first() is not None:
                        return False
                now = stamps()
                conn.execute(
                    insert(bans),
                    {"target": target, "reason": reason, "created_by": actor, "created_at": now},
                )
                self._audit(conn, actor, "ban", target, [], {"reason": reason}, now)
        except IntegrityError:
            # The primary key decides, so two moderators banning at once cannot collide.
            return False
        return True

    @_write_again_if_lost
    def unban(
        self,
        target: str,
        actor: str,
        *,
        also: Sequence[str] = (),
        now: datetime | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> bool:
        """Lift the ban of ``target`` and of each of ``also`` (its other forms) in one
        transaction, an audit row per ban lifted; False when none stood."""
        stamps = _stamps(now, clock)
        targets = list(dict.fromkeys((target, *also)))
        with self._write() as conn:
            now = stamps()
            gone = conn.execute(
                delete(bans).where(bans.c.target.in_(targets)).returning(bans.c.target)
            ).scalars()
            lifted = sorted(gone)
            for form in lifted:
                self._audit(conn, actor, "unban", form, [], None, now)
        return bool(lifted)

    @_read_again_if_lost
    def ban_page(
        self, *, limit: int, before: tuple[datetime, str] | None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Bans newest first (created_at, then target, descending), after the position
        ``before`` (a ban's created_at and target) if given: read off ix_bans_created_at_target
        backwards. Returns at most ``limit`` bans and whether more follow."""
        query = select(bans)
        if before is not None:
            created_at, target = before
            query = query.where(
                tuple_(bans.c.created_at, bans.c.target)
                < tuple_(
                    literal(created_at, bans.c.created_at.type), literal(target, bans.c.target.type)
                )
            )
        query = query.order_by(bans.c.created_at.desc(), bans.c.target.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_ban_item(r) for r in rows[:limit]], len(rows) > limit

    @staticmethod
    def _audit(
        conn: Any,
        actor: str,
        action: str,
        target: str | None,
        comment_ids: Sequence[int],
        details: dict[str, Any] | None,
        now: datetime,
    ) -> None:
        conn.execute(
            insert(audit_log),
            {
                "actor": actor,
                "action": action,
                "target": target,
                "comment_ids": json.dumps(list(comment_ids)),
                "details": json.dumps(details) if details else None,
                "created_at": now,
            },
        )

    @_read_again_if_lost
    def audit_page(
        self, *, limit: int, before_id: int | None
    ) -> tuple[list[AuditEntry], int | None]:
        """Newest first; returns the entries and the id to continue before, if any."""
        query = select(audit_log)
        if before_id is not None:
            query = query.where(audit_log.c.id < before_id)
        query = query.order_by(audit_log.c.id.desc()).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        entries = [
            AuditEntry(
                id=r.id,
                actor=r.actor,
                action=r.action,
                target=r.target,
                comment_ids=json.loads(r.comment_ids) if r.comment_ids else [],
                details=json.loads(r.details) if r.details else {},
                created_at=_aware(r.created_at),  # type: ignore[arg-type]
            )
            for r in rows[:limit]
        ]
        return entries, (entries[-1].id if len(rows) > limit else None)

    # --- API keys --------------------------------------------------------------------
    @_write_again_if_lost
    def add_api_key(
        self,
        key_id: str,
        name: str,
        key_hash: str,
        scopes: Sequence[str],
        *,
        now: datetime | None = None,
    ) -> None:
        with self._write() as conn:
            conn.execute(
                insert(api_keys),
                {
                    "id": key_id,
                    "name": name,
                    "key_hash": key_hash,
                    "scopes": " ".join(scopes),
                    "created_at": now or utcnow(),
                },
            )

    @_read_again_if_lost
    def list_api_keys(self) -> list[ApiKeyRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at)).all()
        return [_to_key(r) for r in rows]

    @_write_again_if_lost
    def revoke_api_key(self, key_id: str, *, now: datetime | None = None) -> bool:
        with self._write() as conn:
            return bool(
                conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=now or utcnow())
                ).rowcount
            )

    @_read_again_if_lost
    def get_api_key(self, key_id: str) -> ApiKeyRecord | None:
        # On every request that carries an API key: the driver path (through SQLAlchemy's
        # Connection this lookup cost as much as the rest of a create, bench/README.md).
        with self._driver_cursor() as (_, run):
            row = run.fetchone(self._api_key_by_id, {"id": key_id})
        return _to_key(row) if row is not None else None

    def touch_api_key(self, record: ApiKeyRecord, *, now: datetime | None = None) -> None:
        """Record use of a verified key, at most once a minute so reads stay write-free."""
        now = now or utcnow()
        stale = now - timedelta(seconds=API_KEY_TOUCH_INTERVAL)
        if record.last_used_at is not None and record.last_used_at >= stale:
            return
        try:
            with self._write() as conn:
                conn.execute(
                    update(api_keys)
                    .where(
                        api_keys.c.id == record.id,
                        or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < stale),
                    )
                    .values(last_used_at=now)
                )
        except SQLAlchemyError as exc:
            # Best effort: a moderator's read must not fail because its key's use could not
            # be noted (a read-only standby after a failover, a lock held on the row).
            # The key was verified; the next request notes it once the database takes it.
            log.warning("API key use not recorded: %s", _cause(exc))


# Primary keys whose values come from a PostgreSQL sequence (SQLite takes max(id) + 1).
_SEQUENCE_KEYS = {"pk_comments": "comments", "pk_audit_log": "audit_log"}


def _sequence_refusal(exc: BaseException | None, sql: str | None) -> StorageRefused | None:
    """A unique violation on an id a sequence handed out: the fault is the database's
    state, not the request's. A sequence set behind ``max(id)`` by hand or by a restore
    hands out ids already taken; every create (or moderation action, for the audit log)
    then fails until it is moved past them. The operator needs the table and the fix in
    the log; the client a 503 (each refused try still draws an id, so the sequence may
    pass the taken ones by itself). None for any other integrity error."""
    if exc is None or getattr(exc, "sqlstate", None) != "23505":  # PostgreSQL unique_violation
        return None
    constraint = getattr(getattr(exc, "diag", None), "constraint_name", None)
    table = _SEQUENCE_KEYS.get(constraint or "")
    if table is None:
        return None
    log.error(
        "insert into %s refused by the database: unique_violation on %s, the id sequence "
        "is behind max(id); nothing was stored, answered 503. Move it past the taken ids: "
        "SELECT setval(pg_get_serial_sequence('%s', 'id'), (SELECT max(id) FROM %s))",
        table,
        constraint,
        table,
        table,
    )
    return StorageRefused(sql, None, exc)


def _by_author(key: str) -> ColumnElement[bool]:
    forms = author_key_forms(key)
    # One form (every ASCII address, every subject): an equality, as the index prefers.
    return comments.c.author_key == key if len(forms) == 1 else comments.c.author_key.in_(forms)


def _cause(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return (orig if orig is not None else exc).__class__.__name__


def _to_key(row: Any) -> ApiKeyRecord:
    # By position, in api_keys' column order: a SQLAlchemy Row or a driver tuple.
    key_id, name, key_hash, scopes, created_at, last_used_at, revoked_at = row
    return ApiKeyRecord(
        id=key_id,
        name=name,
        key_hash=key_hash,
        scopes=tuple(scopes.split()),
        created_at=_aware(created_at),  # type: ignore[arg-type]
        last_used_at=_aware(last_used_at),
        revoked_at=_aware(revoked_at),
    )


# --- migrations ------------------------------------------------------------------
_MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def _alembic_config(engine: Engine | None = None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS_DIR))
    if engine is not None:
        # ConfigParser interpolation: a percent-encoded password (p%40ss) must be "%%".
        url = engine.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    """The newest migration shipped with this code."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def shipped_revisions() -> tuple[str, frozenset[str]]:
    """``head_revision()`` and the migrations shipped before it (its ancestors: a database
    at one of them is behind this code), from one read of the migration scripts."""
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(_alembic_config())
    head = scripts.get_current_head()
    assert head is not None
    return head, _ancestors(scripts, head)


def revisions_before(revision: str) -> frozenset[str]:
    """The shipped migrations older than ``revision`` (none for one this code does not
    ship)."""
    from alembic.script import ScriptDirectory

    return _ancestors(ScriptDirectory.from_config(_alembic_config()), revision)


def _ancestors(scripts: Any, revision: str) -> frozenset[str]:
    from alembic.util import CommandError

    try:
        return frozenset(
            script.revision
            for script in scripts.iterate_revisions(revision, "base")
            if script.revision != revision
        )
    except CommandError:
        return frozenset()


# Held by whoever migrates a PostgreSQL database: two replicas or Jobs starting together
# must not both run the same migration.
MIGRATION_LOCK_KEY = 7305812
MIGRATION_LOCK_POLL = 0.25  # seconds between tries while another process migrates


class TransactionPoolerRefused(RuntimeError):
    """migrate() on an engine made for a transaction pooler (``?pooler=transaction``)."""


def migrate(engine: Engine, revision: str = "head", *, down: bool = False) -> None:
    """Upgrade the database to ``revision``; safe to run on every start. With ``down``,
    downgrade it to that older revision instead (an operator's step back: see
    ``comments-api migrate --down-to``).

    SQLite: every pending migration in one transaction. PostgreSQL: one transaction per
    migration (migrations/env.py), under a session-level lock, because some must run
    outside any transaction (``CREATE INDEX CONCURRENTLY``, which leaves writes to the
    table running while the index builds).
    """
    from alembic import command

    if engine.get_execution_options().get(_POOLER_EXECUTION_OPTION) == "transaction":
        raise TransactionPoolerRefused(
            "migrations hold a session-level advisory lock across transactions, which a "
            "transaction pooler hands to other clients' server connections (two replicas "
            "then both migrate, and the lock is left held): run `comments-api migrate` "
            "with a DATABASE_URL that reaches PostgreSQL directly or through a "
            "session-mode pool, and set MIGRATE_ON_START=false for `serve` "
            "(docs/deployment.md, 'Behind PgBouncer')"
        )
    step = command.downgrade if down else command.upgrade
    config = _alembic_config(engine)
    if engine.dialect.name != "postgresql":
        with engine.connect() as conn:
            # The write lock first, waited for as writes wait (_sqlite_begin): a deferred
            # BEGIN read the revision, then failed at once with "database is locked" if
            # another writer held the lock, whatever the lock wait allowed.
            conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                config.attributes["connection"] = conn
                step(config, revision)
        return
    with engine.connect() as conn:
        # A migration may take longer than a request may (DB_STATEMENT_TIMEOUT, set for the
        # session at connect): an index built on a large table, a wait for the lock below.
        # Put back as it was, not RESET: behind a session pooler the connection's own SET
        # (make_engine), not its startup default, is DB_STATEMENT_TIMEOUT.
        before = conn.execute(text("SELECT current_setting('statement_timeout')")).scalar()
        conn.execute(text("SET statement_timeout = 0"))
        _take_migration_lock(conn)
        try:
            config.attributes["connection"] = conn
            step(config, revision)
        finally:
            conn.rollback()  # whatever a failed migration left open
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            # The pool may hand it out again.
            conn.execute(text("SELECT set_config('statement_timeout', :v, false)"), {"v": before})
            conn.commit()


def _take_migration_lock(conn: Connection) -> None:
    # Tried, not waited for: a session waiting in pg_advisory_lock() is an open
    # transaction, and the holder's CREATE INDEX CONCURRENTLY waits for every transaction
    # older than itself, so the two would wait for each other. Between tries no
    # transaction is open.
    while not conn.execute(
        text("SELECT pg_try_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY}
    ).scalar():
        conn.commit()
        time.sleep(MIGRATION_LOCK_POLL)
    conn.commit()
