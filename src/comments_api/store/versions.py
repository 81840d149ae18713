"""Change markers: reading each content's version cheaply, for the read cache.

The markers live in ``content_versions`` and are set by database triggers in the
transaction of every write to ``comments`` (migration 0004), so a marker and the rows it
describes always commit together. On SQLite a content's marker is its ``content_versions``
value and its newest comment id together (0011). Writers are serialised there, so each
insert commits an id above every id its content has: the pair moves with every insert
without the row, which since 0012 an insert writes only for its content's first comment or
an id under the newest. Every other change (update, delete, a move to another content)
sets a new random value. Within one history no pair comes back: the value is never
reused, and under one value the newest id only grows. A restored backup starts another
history, handing out again the ids of the comments posted after it, so the newest
comment's ``created_at`` is part of the marker too: the comment that takes a lost
comment's id is not written at the same microsecond.

Reading them must cost far less than building a page, so each worker thread keeps one
connection of its own, outside the pool, in autocommit:

- PostgreSQL: one round trip per read (a pooled connection costs BEGIN and ROLLBACK on
  top).
- SQLite: ``PRAGMA data_version`` on that connection changes whenever any other connection
  (any worker, any process) commits. It is the cheap first check: while it stands still,
  nothing was written anywhere, and the markers read earlier on this connection still hold.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, String, bindparam, func, select, union_all
from sqlalchemy.sql.elements import BindParameter

from ..processes import pid_at_fork
from .driver_sql import (
    DriverStatement,
    StatementObserver,
    TimedCursor,
    as_sqlalchemy_error,
    is_lost,
    raw_connection,
)
from .repository import comments, content_versions, lost_at_once

# A marker for a content that was never written (no row yet): a write inserts a random one.
UNWRITTEN = 0
# SQLite's marker: one int (the content_versions value above the newest id's 64 bits) and
# the newest comment's created_at as stored.
_ID_BITS = 64
# An int on PostgreSQL, a pair on SQLite; compared for equality and hashed into ETags.
Marker = int | tuple[int, str | None]

_serials = itertools.count(1)


class _ThreadConnection(threading.local):
    pid: int = 0
    serial: int = 0
    conn: Any = None  # the DBAPI connection (sqlite3 or psycopg)


class ChangeMarkers:
    """Reads content markers on a per-thread connection; safe across fork and threads."""

    def __init__(self, engine: Engine, observe_statement: StatementObserver | None = None) -> None:
        self.engine = engine
        # The marker SELECTs feed the DB latency histogram (on PostgreSQL, one round trip
        # per cached read); SQLite's PRAGMA data_version, a read of shared memory, does not.
        self.observe_statement = observe_statement
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._local = _ThreadConnection()
        # SQL compiled by SQLAlchemy for this dialect, per number of ids (at most the
        # counts route's limit): run on the raw connection, the statement is built once.
        self._statements: dict[int, DriverStatement] = {}
        self._dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        # Which process this is, read again only in a forked child: os.getpid() is a
        # syscall, and every cached read asks which connection is its own.
        self._pid = pid_at_fork()

    def generation(self) -> tuple[int, int] | None:
        """SQLite: (connection, data_version); equal values mean nothing was committed in
        between by anyone. None on PostgreSQL, which has no such check."""
        if not self.is_sqlite:
            return None
        row = self._run("PRAGMA data_version", ())
        return (self._local.serial, int(row[0][0]))

    def versions(self, content_ids: Sequence[str]) -> tuple[Marker, ...]:
        """The current marker of each content, in order (``UNWRITTEN`` for none yet)."""
        statement = self._select(len(content_ids))
        named = {f"id_{i}": cid for i, cid in enumerate(content_ids)}
        rows = self._run(statement.sql, statement.parameters(named), self.observe_statement)
        found: dict[str, Marker]
        if self.is_sqlite:  # (content_id, value, newest id, its created_at; None for none)
            found = {
                cid: (((version or UNWRITTEN) << _ID_BITS) | (newest or 0), created)
                for cid, version, newest, created in rows
                if version is not None or newest is not None
            }
        else:
            found = {cid: int(version) for cid, version in rows}
        return tuple(found.get(cid, UNWRITTEN) for cid in content_ids)

    def _select(self, count: int) -> DriverStatement:
        statement = self._statements.get(count)
        if statement is None:
            ids: list[BindParameter[Any]] = [
                bindparam(f"id_{i}", type_=String()) for i in range(count)
            ]
            statement = DriverStatement.compile(
                self._sqlite_query(ids) if self.is_sqlite else self._query(ids),
                self.engine.dialect,
            )
            self._statements[count] = statement
        return statement

    @staticmethod
    def _query(ids: list[BindParameter[Any]]) -> Any:
        column = content_versions.c.content_id
        where = column == ids[0] if len(ids) == 1 else column.in_(ids)
        return select(column, content_versions.c.version).where(where)

    @staticmethod
    def _sqlite_query(ids: list[BindParameter[Any]]) -> Any:
        # Per content three seeks: its marker row (outer join: a content may have none),
        # its newest id, the last entry of its range in the (content_id, id, status) index,
        # and that comment's row for its created_at (a restore: module docstring).
        # Each id is bound once, as a row of a CTE (a column pair per content bound each
        # id twice and cost ~1.6x as much for 50 contents).
        wanted = union_all(*(select(i.label("content_id")) for i in ids)).cte("wanted")
        ranged = comments.alias("ranged")  # the outer query reads comments too
        newest = (
            select(func.max(ranged.c.id))
            .where(ranged.c.content_id == wanted.c.content_id)
            .correlate(wanted)
            .scalar_subquery()
        )
        marker_row = content_versions.c.content_id == wanted.c.content_id
        return select(
            wanted.c.content_id, content_versions.c.version, comments.c.id, comments.c.created_at
        ).select_from(
            wanted.outerjoin(content_versions, marker_row).outerjoin(
                comments, comments.c.id == newest
            )
        )

    def close(self) -> None:
        """Close this thread's connection (tests; workers simply exit)."""
        local = self._local
        if local.conn is not None and local.pid == self._pid():
            with contextlib.suppress(self._dbapi_error):
                local.conn.close()
        local.conn = None

    def _connection(self) -> tuple[Any, bool]:
        local = self._local
        if local.conn is None or local.pid != self._pid():
            # After a fork the parent's connection is the parent's: never reuse it.
            proxied = raw_connection(self.engine)  # runs the engine's connect setup
            conn: Any = proxied.driver_connection
            proxied.detach()  # ours alone, not returned to the pool
            if not self.is_sqlite:
                conn.autocommit = True  # one statement, one snapshot, no BEGIN/ROLLBACK
            local.conn, local.pid, local.serial = conn, self._pid(), next(_serials)
            return conn, True
        return local.conn, False

    def _run(
        self,
        sql: str,
        params: tuple[Any, ...] | dict[str, Any],
        observe: StatementObserver | None = None,
    ) -> list[Any]:
        started = time.monotonic()
        for attempt in range(2):
            conn, fresh = self._connection()
            try:
                cursor = conn.cursor()
                try:
                    TimedCursor(cursor, observe).execute(sql, params)
                    return list(cursor.fetchall())
                finally:
                    cursor.close()
            except self._dbapi_error as exc:
                lost = is_lost(self.engine.dialect, exc, conn, None)
                self.close()  # a failed connection is never used again
                if self.is_sqlite:
                    # A SQLite read never waits on a lock in WAL mode: any error on a kept
                    # connection is tried once on a new one.
                    again = not fresh
                else:
                    # A kept connection can die with its server (restart, failover), and
                    # the one this thread took from the pool can be dead too before its
                    # checkout can tell (_drop_dead_connection): tried once more, as
                    # repository reads are, but not after a path went silent. A
                    # statement timeout or a refused lock is not tried again: the 503
                    # comes after one DB_STATEMENT_TIMEOUT, not two.
                    again = lost_at_once(lost, started)
                    if lost:
                        # The pool's idle connections likely died with this one, and the
                        # next try would take one of them (as _driver_cursor does).
                        self.engine.dispose()
                if attempt or not again:
                    # Raised as SQLAlchemy's error, so the app answers it like any other
                    # database failure (503 + Retry-After).
                    raise as_sqlalchemy_error(
                        self.engine.dialect, exc, sql=sql, invalidated=lost
                    ) from exc
        raise AssertionError("unreachable")
