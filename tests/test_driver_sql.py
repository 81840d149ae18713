"""The comment insert runs SQLAlchemy-compiled statements on the DBAPI connection
(store/driver_sql.py): it must store exactly what SQLAlchemy would, report its statements,
and fail the way SQLAlchemy fails. On SQLite and on a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, literal_column, select
from sqlalchemy.exc import IntegrityError

from comments_api.comments.rules import NewComment
from comments_api.moderation.rules import AuthorActivity, author_key
from comments_api.store.repository import (
    AuthorCheck,
    Repository,
    comments,
    make_engine,
    migrate,
)


@pytest.fixture
def engine(database_url: str):
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def _stored(engine, comment_id: int) -> tuple:
    columns = [literal_column(c.name) for c in comments.c if c.name != "id"]
    with engine.connect() as conn:
        # The raw stored values (no result processing): SQLite keeps a DateTime as text.
        query = select(*columns).select_from(comments).where(comments.c.id == comment_id)
        return tuple(conn.execute(query).one())


def test_the_driver_insert_stores_what_sqlalchemy_stores(engine) -> None:
    now = datetime(2026, 12, 2, 5, 6, 7, 890123, tzinfo=UTC)
    new = NewComment(
        content_id="héllo/1",
        body="first 😀 post\nwith 'quotes' and \"more\"",
        email="Ana@Example.com",
        author_name="Ana",
    )
    seen: list[AuthorActivity] = []
    check = AuthorCheck(now - timedelta(hours=1), now - timedelta(minutes=1), seen.append)
    created = Repository(engine).create(new, check, now=now)

    values = {
        "content_id": new.content_id,
        "body": new.body,
        "email": new.email,
        "author_name": new.author_name,
        "status": new.status,
        "created_at": now,
        "updated_at": now,
        "author_key": author_key(new.email, None),
    }
    with engine.begin() as conn:
        reference = conn.execute(insert(comments).returning(comments.c.id), values).scalar_one()

    assert _stored(engine, created.id) == _stored(engine, reference)
    assert Repository(engine).get(created.id) == created
    assert created.created_at == now
    assert seen == [AuthorActivity(recent=0, duplicates=0, banned=False)]

    # The check counts what the insert stored: the same author again sees one comment.
    Repository(engine).create(new, check, now=now + timedelta(seconds=1))
    assert seen[-1] == AuthorActivity(recent=2, duplicates=2, banned=False, oldest_recent=now)
    with engine.connect() as conn:
        bodies = conn.execute(select(comments.c.body).where(comments.c.content_id == "héllo/1"))
        assert [b for (b,) in bodies] == [new.body] * 3


def test_the_driver_statements_are_reported_with_their_time(engine) -> None:
    reported: list[tuple[str, float]] = []
    repo = Repository(engine, observe_statement=lambda sql, s: reported.append((sql, s)))
    now = datetime.now(UTC)
    check = AuthorCheck(now, now, lambda activity: None)
    repo.create(NewComment(content_id="c", body="hi", email="a@example.com"), check, now=now)

    heads = [sql.split(None, 1)[0].upper() for sql, _ in reported]
    sqlite = engine.dialect.name == "sqlite"
    # SQLite: BEGIN IMMEDIATE (the wait for the write lock is worth seeing); PostgreSQL:
    # the author's advisory lock. Then the author check and the insert.
    assert heads == (["BEGIN", "SELECT", "INSERT"] if sqlite else ["SELECT", "SELECT", "INSERT"])
    assert all(0 <= seconds < 5 for _, seconds in reported)


def test_a_driver_error_is_sqlalchemys_and_the_connection_goes_back_clean(engine) -> None:
    repo = Repository(engine)
    orphan = NewComment(content_id="c", body="reply", parent_id=987654)
    for _ in range(engine.pool.size() + 1):  # more failures than the pool has connections
        with pytest.raises(IntegrityError):
            repo.create(orphan)
    assert engine.pool.checkedout() == 0
    # Nothing of the failed transactions was kept, and the pooled connections still write.
    stored = repo.create(NewComment(content_id="c", body="after"))
    with engine.connect() as conn:
        rows = conn.execute(select(comments.c.id).where(comments.c.content_id == "c")).all()
    assert rows == [(stored.id,)]


def test_driver_rows_read_what_sqlalchemy_reads(engine) -> None:
    """An API key's record, looked up on the driver path on every keyed request, equals
    the one SQLAlchemy's result processing gives (SQLite hands its times back as text)."""
    from comments_api.store.repository import _to_key, api_keys

    repo = Repository(engine)
    created = datetime(2026, 12, 2, 5, 6, 7, 890123, tzinfo=UTC)
    repo.add_api_key("k1", "backend", "0" * 64, ("comments:write",), now=created)
    repo.touch_api_key(repo.get_api_key("k1"), now=created + timedelta(hours=1))  # type: ignore[arg-type]
    repo.revoke_api_key("k1", now=created + timedelta(hours=2))
    with engine.connect() as conn:
        expected = _to_key(conn.execute(select(api_keys)).one())
    found = repo.get_api_key("k1")
    assert found == expected
    assert (found.created_at, found.revoked_at) == (created, created + timedelta(hours=2))
    assert repo.get_api_key("nope") is None


# The writer's own connection exists on a SQLite file only.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@sqlite_only
def test_sqlite_creates_write_on_a_connection_of_their_own(engine) -> None:
    """On a SQLite file the insert's transaction runs on one connection per process,
    outside the pool: no checkout, no return, no busy_timeout set twice per create."""
    from sqlalchemy import event

    checkouts: list[object] = []
    event.listen(engine, "checkout", lambda *args: checkouts.append(args))
    repo = Repository(engine)
    repo.create(NewComment(content_id="c", body="first"))
    assert len(checkouts) == 1  # the writer's connection, taken once and detached
    orphan = NewComment(content_id="c", body="reply", parent_id=987654)
    with pytest.raises(IntegrityError):
        repo.create(orphan)
    for i in range(5):
        repo.create(NewComment(content_id="c", body=f"more {i}"))
    assert len(checkouts) == 1
    assert engine.pool.checkedout() == 0
    writer = repo._sqlite_writer()
    # Our retry loop waits for the write lock (test_serve_write_lock.py), never SQLite's.
    assert writer.execute("PRAGMA busy_timeout").fetchone()[0] == 0
    assert not writer.in_transaction


@sqlite_only
def test_a_broken_writer_connection_fails_one_create_and_is_replaced(engine) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    repo = Repository(engine)
    repo.create(NewComment(content_id="c", body="before"))
    broken = repo._sqlite_writer()
    broken.close()
    with pytest.raises(SQLAlchemyError) as failed:
        repo.create(NewComment(content_id="c", body="lost"))
    assert failed.value.connection_invalidated  # type: ignore[attr-defined]
    repo.create(NewComment(content_id="c", body="after"))
    assert repo._sqlite_writer() is not broken
    with engine.connect() as conn:
        bodies = conn.execute(select(comments.c.body).where(comments.c.content_id == "c"))
        assert [b for (b,) in bodies] == ["before", "after"]


@sqlite_only
def test_a_forked_child_writes_on_its_own_connection(engine) -> None:
    """A worker forked from a process that has written opens its own writer connection;
    the parent's, inherited, is never used (nor closed) in the child."""
    import os

    repo = Repository(engine)
    repo.create(NewComment(content_id="c", body="parent"))
    inherited = repo._sqlite_writer()
    pid = os.fork()
    if pid == 0:  # the child: report through the exit status only
        code = 1
        try:
            repo.create(NewComment(content_id="c", body="child"))
            own = repo._sqlite_writer()
            code = 0 if own is not inherited and inherited in repo._inherited else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    repo.create(NewComment(content_id="c", body="parent again"))
    assert repo._sqlite_writer() is inherited
    with engine.connect() as conn:
        bodies = conn.execute(select(comments.c.body).where(comments.c.content_id == "c"))
        assert sorted(b for (b,) in bodies) == ["child", "parent", "parent again"]


@sqlite_only
def test_a_writer_connection_that_cannot_be_set_up_fails_one_create_cleanly(engine) -> None:
    """If the writer's connection cannot turn SQLite's busy handler off, that create fails
    as SQLAlchemy's error (the app's handlers know it), the connection is closed, not
    kept, and the next create opens a new one."""
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.exc import SQLAlchemyError

    refuse = {"on": True}
    opened: list[sqlite3.Connection] = []

    def deny_busy_timeout_off(action: int, arg1, arg2, *_: object) -> int:
        # SQLite's own authorizer: the PRAGMA fails with "not authorized".
        off = action == sqlite3.SQLITE_PRAGMA and arg1 == "busy_timeout" and arg2 == "0"
        return sqlite3.SQLITE_DENY if refuse["on"] and off else sqlite3.SQLITE_OK

    @event.listens_for(engine, "connect")
    def guard(driver, _record) -> None:
        opened.append(driver)
        driver.set_authorizer(deny_busy_timeout_off)

    engine.dispose()  # the migration's pooled connection predates the guard
    repo = Repository(engine)
    with pytest.raises(SQLAlchemyError, match="not authorized"):
        repo.create(NewComment(content_id="c", body="lost"))
    assert repo._writer is None
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):
        opened[-1].execute("SELECT 1")
    refuse["on"] = False
    repo.create(NewComment(content_id="c", body="after"))
    assert repo._sqlite_writer() is opened[-1]
    with engine.connect() as conn:
        bodies = conn.execute(select(comments.c.body).where(comments.c.content_id == "c"))
        assert [b for (b,) in bodies] == ["after"]


def test_a_socket_psycopg_found_closed_is_a_lost_connection(postgres_url) -> None:
    """psycopg says "connection socket closed" when the socket reports an error before
    libpq has read it; the connection is not marked broken yet, so SQLAlchemy's dialect
    did not call it a disconnect: a read on a path gone silent was not judged lost (its
    connection went back to the pool, whose reset then failed), seen once in CI."""
    import psycopg

    from comments_api.store.driver_sql import is_lost

    engine = make_engine(postgres_url)
    try:
        with engine.connect() as conn:
            live = conn.connection.dbapi_connection
            closed_socket = psycopg.OperationalError("connection socket closed")
            timed_out = psycopg.OperationalError("canceling statement due to statement timeout")
            assert not engine.dialect.is_disconnect(closed_socket, live, None)  # the gap
            assert is_lost(engine.dialect, closed_socket, live, None)
            assert not is_lost(engine.dialect, timed_out, live, None)
            assert not is_lost(engine.dialect, psycopg.DataError(str(closed_socket)), live, None)
    finally:
        engine.dispose()


def test_parameters_process_every_placeholder_as_its_bind(engine) -> None:
    # One pass over the placeholders (DriverStatement.plan): a name repeated in the SQL gets
    # its processed value at each place, and a value without a processor stays as it is.
    from sqlalchemy import and_, bindparam

    from comments_api.store.driver_sql import DriverStatement

    when = bindparam("when", type_=comments.c.created_at.type)
    query = select(comments.c.id).where(
        and_(
            comments.c.content_id == bindparam("content_id"),
            comments.c.created_at >= when,
            comments.c.updated_at >= when,
            comments.c.author_key == bindparam("content_id"),
        )
    )
    statement = DriverStatement.compile(query, engine.dialect)
    now = datetime(2026, 12, 2, 5, 6, 7, 890123, tzinfo=UTC)
    process = dict(statement.processors)
    values = {"content_id": "c1", "when": now}
    expected_by_name = {k: process[k](v) if k in process else v for k, v in values.items()}
    bound = statement.parameters(values)
    if statement.positions is None:  # named paramstyle (PostgreSQL): the mapping
        assert bound == expected_by_name
    else:
        assert bound == tuple(expected_by_name[name] for name in statement.positions)
        assert statement.positions.count("when") == 2
        assert statement.positions.count("content_id") == 2
        with pytest.raises(KeyError):  # a placeholder without its value, as before
            statement.parameters({"content_id": "c1"})
