"""SQLAlchemy Core statements compiled once for the engine's dialect, run on the DBAPI.

On the hottest paths (the read cache's change markers, a comment's insert with or without
an Idempotency-Key, an API key's lookup) SQLAlchemy's per-execution work - the
compiled-cache lookup, parameter processing, events, the result object - cost several
times the statement itself on SQLite (``bench/README.md``, "What the latest steps
bought"). The SQL is still written once, in SQLAlchemy Core, and compiled by
SQLAlchemy for the dialect in use; only its execution skips the ``Connection`` layer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy.engine import Dialect, Engine, ExceptionContext
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

# Called with each statement's SQL and its seconds, for the DB latency histogram, by the
# statements run on the driver (SQLAlchemy's own executions feed it through engine events).
StatementObserver = Callable[[str, float], None]


@dataclass(frozen=True)
class DriverStatement:
    sql: str
    # For positional paramstyles (SQLite's qmark): the bind name of each placeholder, in
    # order, repeats included. None for named ones (psycopg's pyformat): pass the mapping.
    positions: tuple[str, ...] | None
    # The dialect's bind processors (SQLite stores a DateTime as text, for example).
    processors: tuple[tuple[str, Callable[[Any], Any]], ...]
    # Its result processors, per selected column (None: the driver's value is final; on
    # SQLite a DateTime comes back as text). Empty when no column needs one.
    row_processors: tuple[Callable[[Any], Any] | None, ...] = ()
    # For positional paramstyles: each placeholder's bind name and its processor (None:
    # the value as it is), so ``parameters`` builds the tuple in one pass, without copying
    # ``values``. Derived from ``positions`` and ``processors``.
    plan: tuple[tuple[str, Callable[[Any], Any] | None], ...] | None = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_name = dict(self.processors)
        plan = (
            tuple((name, by_name.get(name)) for name in self.positions)
            if self.positions is not None
            else None
        )
        object.__setattr__(self, "plan", plan)

    @classmethod
    def compile(
        cls,
        statement: ClauseElement,
        dialect: Dialect,
        column_keys: Sequence[str] | None = None,
    ) -> DriverStatement:
        """``column_keys``: the columns an INSERT sets (the others take their defaults)."""
        compiled = cast(
            SQLCompiler,
            statement.compile(
                dialect=dialect, column_keys=list(column_keys) if column_keys else None
            ),
        )
        processors = []
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((name, process))
        positions = tuple(compiled.positiontup) if compiled.positiontup else None
        row_processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in getattr(statement, "selected_columns", ())
        )
        if not any(row_processors):
            row_processors = ()
        return cls(compiled.string, positions, tuple(processors), row_processors)

    def row(self, raw: Any) -> Any:
        """A fetched row with the dialect's result processing (None stays None)."""
        if not self.row_processors or raw is None:
            return raw
        return tuple(
            value if process is None or value is None else process(value)
            for value, process in zip(raw, self.row_processors, strict=True)
        )

    def parameters(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """``values`` by bind name, in the form the DBAPI's ``execute`` takes."""
        plan = self.plan
        if plan is not None:
            # The bind processors are pure: a name repeated in the SQL processes to the
            # same value at each of its places.
            return tuple(
                [
                    values[name] if process is None else process(values[name])
                    for name, process in plan
                ]
            )
        bound = dict(values)
        for name, process in self.processors:
            if name in bound:
                bound[name] = process(bound[name])
        return bound


# What ``TimedCursor.running`` names while a transaction's COMMIT is under way.
COMMIT = "COMMIT"


class TimedCursor:
    """A DBAPI cursor whose statements are each timed for ``observe``."""

    def __init__(self, cursor: Any, observe: StatementObserver | None) -> None:
        self.cursor = cursor
        self.observe = observe
        # The statement under way (or COMMIT), None between them: a driver error names
        # what it came from, as SQLAlchemy's errors name their statement.
        self.running: str | None = None
        # The transaction's id where a statement returned it (PostgreSQL's comment insert),
        # to ask its outcome when the answer to its COMMIT is lost.
        self.transaction: str | None = None

    def execute(self, sql: str, parameters: tuple[Any, ...] | dict[str, Any] = ()) -> None:
        self.running = sql
        started = time.perf_counter()
        self.cursor.execute(sql, parameters)
        self.running = None
        if self.observe is not None:
            self.observe(sql, time.perf_counter() - started)

    def fetchone(self, statement: DriverStatement, values: Mapping[str, Any]) -> Any:
        self.execute(statement.sql, statement.parameters(values))
        return statement.row(self.cursor.fetchone())

    def run(self, statement: DriverStatement, values: Mapping[str, Any]) -> None:
        """A statement without rows to read (INSERT, DELETE)."""
        self.execute(statement.sql, statement.parameters(values))

    def commit(self, driver: Any) -> None:
        """Commit the transaction of ``driver`` (this cursor's connection)."""
        self.running = COMMIT
        driver.commit()
        self.running = None


def raw_connection(engine: Engine) -> PoolProxiedConnection:
    """``engine.raw_connection()``, with a failure to connect raised as SQLAlchemy's error
    as ``engine.connect()`` raises it: the app answers every database failure alike (503)."""
    try:
        return engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as exc:
        raise as_sqlalchemy_error(engine.dialect, exc) from exc


# PostgreSQL's read_only_sql_transaction: a standby (after a failover to a replica) or
# default_transaction_read_only=on refuses every write. psycopg raises it as an
# InternalError, which the app answered with a 500.
READ_ONLY_SQLSTATE = "25006"


class StorageRefused(OperationalError):
    """The database is up but refuses this write for a reason of its own state, not of the
    request: a read-only transaction, or a constraint a correct request cannot break (a
    comment id the sequence hands out again). An OperationalError, so the app answers it
    as any database that cannot take the write now: a JSON 503 with Retry-After, never
    a 500; the driver's error stays in ``orig`` (its class names the cause in the log)."""


def as_sqlalchemy_error(
    dialect: Dialect, exc: Exception, *, invalidated: bool = False, sql: str | None = None
) -> StatementError:
    """A driver's exception as the SQLAlchemy one it maps to (OperationalError, ...)."""
    if getattr(exc, "sqlstate", None) == READ_ONLY_SQLSTATE:
        return StorageRefused(sql, None, exc, connection_invalidated=invalidated)
    return DBAPIError.instance(
        sql,
        None,
        exc,
        dialect.loaded_dbapi.Error,
        connection_invalidated=invalidated,
        dialect=dialect,
    )


# psycopg's words when the socket reports an error before libpq has read it: the connection
# is not marked broken yet, so SQLAlchemy's psycopg dialect does not call it a disconnect,
# and the pool kept it (its reset then failed: "another command is already in progress").
_SOCKET_CLOSED = "connection socket closed"


def _socket_closed(dialect: Dialect, exc: BaseException) -> bool:
    return isinstance(exc, dialect.loaded_dbapi.OperationalError) and str(exc) == _SOCKET_CLOSED


def is_lost(dialect: Dialect, exc: BaseException, connection: Any, cursor: Any) -> bool:
    """Whether ``exc`` (a driver error) means the connection is gone: the dialect's
    judgement, and psycopg's closed-socket error, which it misses."""
    gone = dialect.is_disconnect(exc, connection, cursor)  # type: ignore[arg-type]
    return gone or _socket_closed(dialect, exc)


def map_driver_errors(context: ExceptionContext) -> None:
    """Engine ``handle_error`` hook for statements run through SQLAlchemy's Connection
    (moderation, bans, keys): a read-only refusal mapped as ``as_sqlalchemy_error`` maps
    it on the driver, and a lost connection judged as ``is_lost`` judges it."""
    orig = context.original_exception
    if not context.is_disconnect and _socket_closed(context.dialect, orig):
        context.is_disconnect = True
    if getattr(orig, "sqlstate", None) == READ_ONLY_SQLSTATE:
        raise StorageRefused(
            context.statement,
            context.parameters,
            orig,
            connection_invalidated=context.is_disconnect,
        ) from orig
