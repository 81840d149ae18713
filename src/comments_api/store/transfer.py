"""Export and import: every table as JSON Lines, between SQLite and PostgreSQL.

The first line describes the file; each further line is one row::

    {"format": "comments-api-export", "version": 1, "schema_revision": "0003", ...}
    {"table": "comments", "row": {"id": 1, "content_id": "1", ..., "created_at": "..."}}

Rows are streamed both ways (a server-side cursor out, batched inserts in), so memory
does not grow with the database. Ids, timestamps, threads, statuses, bans, the audit log
and API key records (with the key's hash, never the key: restored keys keep working) are
kept exactly. Idempotency keys are not: they only matter for IDEMPOTENCY_TTL.

An export is imported by the code of its own schema revision, or by a later one whose
migrations since only added nullable columns (``OLDER_EXPORTS``): its rows then lack
those columns, which are imported as null.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Integer,
    RootTransaction,
    String,
    Table,
    create_engine,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy import table as named_table
from sqlalchemy.exc import DBAPIError, OperationalError, StatementError
from sqlalchemy.pool import NullPool

from ..comments.rules import STATUSES, has_unpaired_surrogate
from .repository import (
    api_keys,
    audit_log,
    bans,
    comments,
    head_revision,
    make_engine,
    sqlite_file,
)

FORMAT = "comments-api-export"
VERSION = 1
# Import order: nothing refers forward (a reply's parent has a smaller id).
TABLES: dict[str, Table] = {
    "api_keys": api_keys,
    "bans": bans,
    "comments": comments,
    "audit_log": audit_log,
}
ORDER = {
    "api_keys": (api_keys.c.id,),
    "bans": (bans.c.target,),
    "comments": (comments.c.id,),
    "audit_log": (audit_log.c.id,),
}
# Exports of an older schema this code imports too: per table, the columns their rows
# lack (nullable columns added since; null when imported). A migration that adds a
# column adds it to every entry here, and its own revision as a new one.
OLDER_EXPORTS: dict[str, dict[str, frozenset[str]]] = {
    "0007": {"comments": frozenset({"edited_at"})},  # 0008: comments.edited_at
    "0008": {},  # 0009 added an index only
    "0009": {},  # 0010 replaced that index
    "0010": {},  # 0011 changed indexes and a trigger on SQLite only
    "0011": {},  # 0012 changed a trigger on SQLite only
    "0012": {},  # 0013 added an index
    "0013": {},  # 0014 rebuilt comments on SQLite with AUTOINCREMENT
    "0014": {},  # 0015 rewrote author keys (data only; an older export keeps its keys)
    "0015": {},  # 0016 rewrote author keys and email bans in NFC (data only, as 0015)
    "0016": {},  # 0017 added an index
}
# Tables whose ids come from a sequence on PostgreSQL: moved past the imported ids.
SEQUENCED = ("comments", "audit_log")
BATCH = 2000
# PostgreSQL: an import into a database that serving instances already use. Taken before
# the emptiness check, so a create either committed before it (and the import refuses) or
# waits until the import commits and then gets an id after the imported ones (the moved
# sequence): readers paging by id see ids appear in order. EXCLUSIVE lets plain reads
# (ACCESS SHARE) go on and holds back every write, row-locking reads (SELECT ... FOR
# UPDATE/SHARE, the first step of a write) too; SHARE ROW EXCLUSIVE would let those read
# the empty tables. A second import waits as well, then refuses. The names are our schema's
# own (TABLES), never input, and LOCK TABLE takes no bound parameters.
_HOLD_WRITERS = text(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")  # nosemgrep


class TransferError(Exception):
    """The file or the target database cannot be used; the message says why."""


@dataclass(frozen=True)
class Header:
    schema_revision: str
    counts: dict[str, int]

    def lacks(self, table: str) -> frozenset[str]:
        """The columns of ``table`` this export's rows do not have (an older schema's)."""
        return OLDER_EXPORTS.get(self.schema_revision, {}).get(table, frozenset())

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _iso(value: datetime) -> str:
    if value.tzinfo is None:  # SQLite hands back naive datetimes; all are UTC
        return value.isoformat() + "+00:00"
    return value.astimezone(UTC).isoformat()


def table_counts(engine: Engine, tables: Iterable[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(TABLES[name])).scalar_one())
            for name in tables
        }


def export(
    engine: Engine,
    out: IO[str],
    *,
    include_api_keys: bool = True,
    progress: Callable[[int], None] = lambda n: None,
) -> dict[str, int]:
    """Write the whole database to ``out``; returns the rows written per table."""
    names = [n for n in TABLES if include_api_keys or n != "api_keys"]
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            # One snapshot for every table: the file is consistent even under writes.
            conn.execution_options(isolation_level="REPEATABLE READ")
        counts = {
            name: int(conn.execute(select(func.count()).select_from(TABLES[name])).scalar_one())
            for name in names
        }
        header = {
            "format": FORMAT,
            "version": VERSION,
            "schema_revision": head_revision(),
            "exported_at": datetime.now(UTC).isoformat(),
            "source": conn.dialect.name,
            "tables": counts,
        }
        out.write(json.dumps(header) + "\n")
        written = dict.fromkeys(names, 0)
        encode = json.JSONEncoder(ensure_ascii=False).encode
        for name in names:
            table = TABLES[name]
            columns = [c.name for c in table.columns]
            dates = [i for i, c in enumerate(table.columns) if isinstance(c.type, DateTime)]
            result = conn.execution_options(stream_results=True, yield_per=BATCH).execute(
                select(table).order_by(*ORDER[name])
            )
            for partition in result.partitions():
                lines = []
                for row in partition:
                    values = list(row)
                    for i in dates:
                        if values[i] is not None:
                            values[i] = _iso(values[i])
                    lines.append(
                        encode({"table": name, "row": dict(zip(columns, values, strict=True))})
                    )
                out.write("\n".join(lines) + "\n")
                written[name] += len(lines)
                progress(len(lines))
    if written != counts:  # cannot happen inside one snapshot; never write a short file
        raise TransferError(f"rows changed during export: expected {counts}, wrote {written}")
    return written


def read_header(lines: Iterator[str]) -> Header:
    try:
        first = json.loads(next(lines))
    except (StopIteration, ValueError, RecursionError):
        raise TransferError("not a comments-api export: the first line is not its header") from None
    if not isinstance(first, dict) or first.get("format") != FORMAT:
        raise TransferError("not a comments-api export: the first line is not its header")
    version = first.get("version")
    if version != VERSION or isinstance(version, bool):  # true == 1 in Python
        raise TransferError(f"export format version {version!r:.20}; this code reads 1")
    revision = first.get("schema_revision")
    if revision != head_revision() and revision not in OLDER_EXPORTS:
        raise TransferError(
            f"the export is of schema revision {revision}; this code imports "
            f"{head_revision()}: import it with the matching version, then upgrade"
        )
    counts = first.get("tables")
    if (
        not isinstance(counts, dict)
        or not set(counts) <= set(TABLES)
        or not all(_is_integer(n) and n >= 0 for n in counts.values())
    ):
        # A count that is no row count ("x", null, 1e999) ended in a traceback.
        raise TransferError("the export header does not list its tables and their row counts")
    return Header(schema_revision=revision, counts=counts)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What SQLite and PostgreSQL store as an integer (a BIGINT, a SQLite INTEGER).
_INT_RANGE = range(-(2**63), 2**63)


def _value_error(column: Column[Any], value: object) -> str | None:
    """Why ``value`` (a JSON value, not None) does not fit ``column``, or None.

    Checked here because SQLite checks nothing: it stored true as an id, 5 as a body and
    300 characters in a VARCHAR(128), where PostgreSQL refused or converted them; and a
    number past 64 bits ended SQLite's import in a traceback."""
    if isinstance(value, list | dict):
        # An export holds scalars only; a driver would store a list as an array's text.
        return f"is a JSON {type(value).__name__}"
    if isinstance(column.type, DateTime):
        return None if isinstance(value, str) else "is not an ISO 8601 timestamp"
    if isinstance(column.type, Integer):  # BigInteger too
        if not _is_integer(value):
            return f"must be an integer, got {value!r:.40}"
        if value not in _INT_RANGE:
            return "is out of the 64-bit integer range"
        return None
    if isinstance(column.type, String):  # Text too
        if not isinstance(value, str):
            return f"must be a string, got {value!r:.40}"
        if column.type.length is not None and len(value) > column.type.length:
            return f"is longer than {column.type.length} characters"
        if "\x00" in value:
            # PostgreSQL refuses it in text; SQLite stored it, and its export would not import
            # into PostgreSQL.
            return "contains a NUL character"
        if not value.isascii() and has_unpaired_surrogate(value):
            # A "\ud800" escape: no driver can write it (a UnicodeEncodeError traceback).
            return "contains an unpaired surrogate (not UTF-8 text)"
    return None


# Text columns holding JSON (repository.py writes them with json.dumps).
_AUDIT_JSON: dict[str, type] = {"comment_ids": list, "details": dict}


def _json_of(text: str, kind: type) -> bool:
    try:
        return isinstance(json.loads(text), kind)
    except (ValueError, RecursionError):
        return False


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    # SQLite keeps the wall-clock time and drops the offset: 10:00+02:00 came back as
    # 10:00 UTC. Every timestamp is stored in UTC; one without an offset is UTC already.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _loader(
    table: Table, lacks: frozenset[str] = frozenset()
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Checks and converts one row; ``lacks``: columns an older export's rows do not have,
    imported as null."""
    names = {c.name for c in table.columns}
    dates = {c.name for c in table.columns if isinstance(c.type, DateTime)}

    def load(row: dict[str, Any]) -> dict[str, Any]:
        if lacks and set(row) == names - lacks:
            row = {**row, **dict.fromkeys(lacks)}
        if set(row) != names:
            raise TransferError(
                f"{table.name}: a row has columns {sorted(row)}, expected {sorted(names)}"
            )
        for name, value in row.items():
            if value is not None and (error := _value_error(table.c[name], value)):
                if name in dates:  # the message the timestamps' check below gives
                    error = f"{error}: {value!r:.60}"
                raise TransferError(f"{table.name}.{name} {error}")
        if table is comments and row["status"] not in STATUSES:
            # No CHECK constraint in the schema: the app's transitions know these four.
            raise TransferError(
                f"comments.status must be one of {', '.join(STATUSES)}, got {row['status']!r:.40}"
            )
        if table is audit_log:
            for name, kind in _AUDIT_JSON.items():
                if row[name] is not None and not _json_of(row[name], kind):
                    # The audit log's reader parses them: the admin listing answered 500.
                    raise TransferError(
                        f"audit_log.{name} must be the text of a JSON {kind.__name__}, "
                        f"got {row[name]!r:.40}"
                    )
        for name in dates:
            if row[name] is not None:
                try:
                    row[name] = _utc(row[name])
                except (TypeError, ValueError, OverflowError):
                    raise TransferError(
                        f"{table.name}.{name} is not an ISO 8601 timestamp: {row[name]!r:.60}"
                    ) from None
        return row

    return load


def _not_empty(name: str) -> TransferError:
    return TransferError(f"the target database already has {name}: import only into an empty one")


def checking_engine(database_url: str, timeout: float = 5.0) -> Engine:
    """An engine for what an import reads before it writes (``refuse_non_empty``).

    A SQLite file is opened as it is: make_engine's connect hook sets WAL, so a refused
    import had switched a rollback-journal file to WAL for good. Opened read-write
    (``mode=rw``: never created), not read-only: a read-only connection to a WAL file
    makes -wal and -shm files it cannot remove on closing. ``timeout``: how long a read
    waits for a writer's lock."""
    path = sqlite_file(database_url)
    if path is None:
        return make_engine(database_url, statement_timeout=timeout)
    uri = f"{Path(path).resolve().as_uri()}?mode=rw"  # as_uri escapes ?, # and %

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, timeout=timeout, check_same_thread=False)

    return create_engine("sqlite://", creator=connect, poolclass=NullPool)


def refuse_non_empty(engine: Engine) -> None:
    """TransferError if any table of an export holds rows in ``engine``'s database, read
    with whatever schema revision it is at (a table an older one lacks holds none).
    Checked before migrating: a refused import had already upgraded the target. The
    import checks again under its lock (``_begin_on_empty``)."""
    with engine.connect() as conn:
        present = set(inspect(conn).get_table_names())
        for name in TABLES:
            # Only the name, as the older schema may lack some of our columns.
            if (
                name in present
                and conn.execute(select(func.count()).select_from(named_table(name))).scalar_one()
            ):
                raise _not_empty(name)


def _begin_on_empty(conn: Connection) -> RootTransaction:
    """The import's transaction, begun with other writers held back: SQLite's BEGIN
    IMMEDIATE takes the write lock, PostgreSQL's LOCK TABLE the tables. Then the target
    must be empty; the check and the inserts are one serialised step."""
    try:
        transaction = conn.execution_options(sqlite_begin="IMMEDIATE").begin()
        if conn.dialect.name == "postgresql":
            conn.execute(_HOLD_WRITERS)
        for name, table in TABLES.items():
            if conn.execute(select(func.count()).select_from(table)).scalar_one():
                raise _not_empty(name)
    except DBAPIError as exc:  # the lock not had within the statement timeout: one line
        raise TransferError(f"cannot start the import: {_first_line(exc)}") from None
    return transaction


def import_(
    engine: Engine,
    lines: Iterable[str],
    *,
    progress: Callable[[int], None] = lambda n: None,
) -> dict[str, int]:
    """Load an export into an empty, migrated database in one transaction."""
    stream = iter(lines)
    header = read_header(stream)
    loaders = {name: _loader(table, header.lacks(name)) for name, table in TABLES.items()}
    written = dict.fromkeys(header.counts, 0)
    # A write committed between a deferred transaction's check and its first insert made
    # the import fail late ("database is locked", a duplicate id) or interleave with it.
    with engine.connect() as conn, _begin_on_empty(conn) as transaction:
        batch: list[dict[str, Any]] = []
        current: str | None = None
        lines_of_batch = [0, 0]  # the file's first and last line in the batch
        # The largest comment id the audit log names: a comment removed for good (never
        # public, no reply) may have held an id above every comment's left (0014).
        named = 0

        def flush() -> None:
            if batch and current is not None:
                try:
                    conn.execute(insert(TABLES[current]), batch)
                except DBAPIError as exc:
                    if not _refuses_a_row(exc):
                        # The database failed, not a row (a lost connection, a full disk,
                        # a timeout): blamed on the batch's lines, the file looked damaged
                        # there.
                        raise TransferError(
                            f"the database failed at line {lines_of_batch[1]}: "
                            f"{_first_line(exc)}; nothing was imported"
                        ) from None
                    raise _refused(exc, current, lines_of_batch) from None
                except StatementError as exc:
                    raise _refused(exc, current, lines_of_batch) from None
                written[current] = written.get(current, 0) + len(batch)
                progress(len(batch))
                batch.clear()

        for number, line in enumerate(stream, start=2):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                name, row = record["table"], record["row"]
                load = loaders[name]
                if not isinstance(row, dict):
                    raise TypeError(row)
            except (ValueError, KeyError, TypeError, RecursionError):
                raise TransferError(f"line {number}: not a row of a known table") from None
            if name != current:
                flush()
                current = name
            if not batch:
                lines_of_batch[0] = number
            lines_of_batch[1] = number
            try:
                batch.append(load(row))
            except TransferError as exc:
                raise TransferError(f"line {number}: {exc}") from None
            if name == "audit_log":
                named = max(named, _highest_comment_id(batch[-1]["comment_ids"]))
            if len(batch) >= BATCH:
                flush()
        flush()
        if written != header.counts:
            raise TransferError(
                f"the file is incomplete: its header announces {header.counts}, "
                f"it holds {written}; nothing was imported"
            )
        try:
            _continue_ids(conn, named)
        except DBAPIError as exc:
            raise TransferError(
                f"the database failed after the last line: {_first_line(exc)}; nothing was imported"
            ) from None
        try:
            transaction.commit()
        except DBAPIError as exc:  # a traceback before
            if exc.connection_invalidated:
                # Lost during COMMIT: the server may have committed before it went.
                raise TransferError(
                    f"the connection was lost at the commit: {_first_line(exc)}; the import "
                    "may or may not have been committed: run it again, which imports into "
                    "the target if nothing was and refuses it if it holds rows"
                ) from None
            raise TransferError(
                f"the database refused the commit: {_first_line(exc)}; nothing was imported"
            ) from None
    return written


# SQLSTATE classes of a row the database refuses (PostgreSQL's, which psycopg gives as
# ``sqlstate``): 22 a value (out of range, not valid text), 23 a constraint (NOT NULL,
# a key), 54 a limit (a value too large for an index entry, "index row size exceeds
# maximum"). psycopg raises class 54 as an OperationalError, which was taken for the
# database failing: "the database failed at line N", the row's lines never named. Every
# other class is the database's (08 a lost connection, 53 a full disk, 57 a timeout or a
# shutdown, 40 a deadlock, 42 a privilege, XX an internal error).
_ROW_CLASSES = frozenset({"22", "23", "54"})
# SQLite's primary result codes of a row it refuses (sqlite3 gives the extended code as
# ``sqlite_errorcode``, the primary one in its low byte): SQLITE_TOOBIG (18) a value too
# big, SQLITE_CONSTRAINT (19) NOT NULL, CHECK or a key, SQLITE_MISMATCH (20) a datatype.
# Every other one is the database's: SQLITE_CORRUPT (11) and SQLITE_NOTADB (26) come as a
# plain DatabaseError, not an OperationalError, and a damaged target was blamed on the
# file's lines ("the database refused a row of bans: database disk image is malformed").
_SQLITE_ROW_CODES = frozenset({18, 19, 20})


def _refuses_a_row(exc: DBAPIError) -> bool:
    """Whether ``exc`` is the database refusing a row, not the database failing: by its
    SQLSTATE class (PostgreSQL) or SQLite result code where the driver gives one, else by
    its kind (a value the driver itself refuses, before sending it)."""
    state = getattr(exc.orig, "sqlstate", None)
    if isinstance(state, str) and len(state) == 5:
        return state[:2] in _ROW_CLASSES
    code = getattr(exc.orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_ROW_CODES
    return not isinstance(exc, OperationalError)


def _refused(exc: Exception, table: str | None, lines: list[int]) -> TransferError:
    """A type, NOT NULL, CHECK, key or size the schema refuses: the batch's lines and the
    database's own first line, not a traceback."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    first, last = lines
    return TransferError(
        f"lines {first}-{last}: the database refused a row of {table}: "
        f"{reason[0] if reason else exc.__class__.__name__}"
    )


def _first_line(exc: DBAPIError) -> str:
    """The driver's own first line of a database error (never the statement or URL)."""
    reason = str(exc.orig or exc).strip().splitlines()
    return reason[0] if reason else exc.__class__.__name__


def _highest_comment_id(comment_ids: str | None) -> int:
    """The largest comment id an audit entry's ``comment_ids`` (checked JSON) names."""
    ids = json.loads(comment_ids) if comment_ids is not None else []
    return max((i for i in ids if _is_integer(i) and i in _INT_RANGE), default=0)


def _continue_ids(conn: Connection, named: int) -> None:
    """New rows must continue after the imported ids, not collide with them, and no
    comment may get an id the audit log already names (``named``): it would say a
    moderator deleted a comment posted after the import. As migration 0014 does."""
    if conn.dialect.name == "postgresql":
        for name in SEQUENCED:
            table = TABLES[name]
            top = conn.execute(select(func.max(table.c.id))).scalar()
            if table is comments:
                top = max(top or 0, named) or None
            conn.execute(
                select(
                    func.setval(func.pg_get_serial_sequence(name, "id"), top or 1, top is not None)
                )
            )
        return
    # SQLite's AUTOINCREMENT (0014) keeps its counter in sqlite_sequence, which the
    # inserts moved up to the largest id imported.
    if not named:
        return
    moved = conn.execute(
        text("UPDATE sqlite_sequence SET seq = max(seq, :seq) WHERE name = 'comments'"),
        {"seq": named},
    )
    if not moved.rowcount:  # no comment imported: no row yet
        conn.execute(
            text("INSERT INTO sqlite_sequence (name, seq) VALUES ('comments', :seq)"),
            {"seq": named},
        )


def sqlite_backup(source_path: str, target_path: str) -> None:
    """A consistent copy of a live SQLite database (the online backup API).

    Copied in one step, under one read transaction: the service's database is in WAL
    mode, where a reader holds up no writer. In steps of a few thousand pages (as it was),
    every commit another process made between two steps restarted the copy from its first
    page, and under a steady write load a large database's backup never finished.
    """
    import sqlite3

    source = sqlite3.connect(source_path)
    target = sqlite3.connect(target_path)
    try:
        with target:
            source.backup(target, pages=-1)
        check = target.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise TransferError(f"the backup failed its integrity check: {check}")
    finally:
        target.close()
        source.close()
