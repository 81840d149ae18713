"""One log format everywhere: JSON lines (default) or key=value text for terminals."""

from __future__ import annotations

import contextlib
import json
import logging
import logging.config
import re
import select
import sys
import threading
from datetime import UTC, datetime
from time import monotonic, time
from types import TracebackType
from typing import TYPE_CHECKING, Any

import msgspec
from flask import g, has_request_context
from sqlalchemy.exc import StatementError

from ..processes import pid_at_fork

if TYPE_CHECKING:
    from ..settings import Settings

ACCESS_LOGGER = "comments_api.access"
_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

_second: tuple[int, str] = (-1, "")


def _iso(created: float) -> str:
    # One line per request: format the date part once per second, not per line.
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{_second[1]}.{int((created - whole) * 1000):03d}Z"


# msgspec (already the contract's encoder): 0.6 us per access line against the standard
# json encoder's 4.4 us; anything it cannot encode is logged as its str().
_encode_strict = msgspec.json.Encoder(enc_hook=str).encode


def _encode(out: dict[str, Any]) -> bytes:
    try:
        return _encode_strict(out)
    except UnicodeEncodeError:
        # A lone surrogate: bytes that were not UTF-8 (a path or variable from the
        # environment, decoded with surrogateescape). Shown escaped; else the line was
        # lost and logging printed its own multi-line error to stderr.
        return _encode_strict(_printable(out))


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return _printable(str(value)) if not isinstance(value, int | float | bool | None) else value


class Fields(dict[str, Any]):
    """A log call's structured fields passed as its single argument:
    ``log.info("request", Fields(route=...))``. The formatters read them straight from
    ``record.args`` instead of scanning the record's ~25 attributes for extras (the access
    line's hot path); the output is the same as with ``extra=``."""


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    args = record.args
    if type(args) is Fields:
        extra: dict[str, Any] = args
    else:
        extra = {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}
    if "request_id" not in extra and has_request_context():
        # Application logs inside a request carry its id, so they join the access line.
        extra["request_id"] = g.get("request_id")
    return extra


_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


# PostgreSQL's DETAIL quotes the row: "Key (email)=(reader@example.com) already exists.",
# "Failing row contains (...)". A traceback's own lines are indented: only messages match.
_PG_DETAIL = re.compile(r"^DETAIL: .*$", re.MULTILINE)


def _without_row_values(formatted: str) -> str:
    return _PG_DETAIL.sub("DETAIL:  (hidden: it may quote row values)", formatted)


def _without_statement_parameters(exc_info: _ExcInfo) -> _ExcInfo:
    """The exception chain with SQLAlchemy's ``[parameters: ...]`` hidden: an unexpected
    database error's message would otherwise carry the statement's values (readers' email
    addresses, comment text, API key hashes) into the log. The SQL itself stays."""
    seen: set[int] = set()
    exc: BaseException | None = exc_info[1]
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StatementError):
            exc.hide_parameters = True
        exc = exc.__cause__ or exc.__context__
    return exc_info


def _json_line(
    created: float, level: str, logger: str, pid: int | None, message: str, extra: dict[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": _iso(created),
        "level": level,
        "logger": logger,
        "pid": pid,
        "message": message,
    }
    out.update(extra)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, then any extras."""

    def format(self, record: logging.LogRecord) -> str:
        out = _json_line(
            record.created,
            record.levelname.lower(),
            record.name,
            record.process,
            # Fields are not %-arguments: the message is the format string itself.
            record.msg if type(record.args) is Fields else record.getMessage(),
            _extras(record),
        )
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return _encode(out).decode("utf-8")

    def formatException(self, ei: Any) -> str:
        return _without_row_values(super().formatException(_without_statement_parameters(ei)))


class RepeatedWarnings(logging.Filter):
    """Lets one WARNING through per WINDOW seconds for each distinct warning (logger,
    message, arguments and fields other than ``request_id``); the next one let through
    says in ``repeated`` how many were left out meanwhile. A warning a probe or every
    request triggers while a dependency is down ("readiness: database unreachable" every
    few seconds, a failing rate-limit storage on every request) otherwise floods the log
    with the same line. Errors are never held back: each belongs to a failed request. Nor
    is a warning that reports one request's outcome (it has a ``status``: a request the
    server refused or dropped): like an access line, each is that request's record."""

    WINDOW = 60.0
    MAX_KEYS = 1024  # distinct warnings remembered; more are forgotten oldest first

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._seen: dict[tuple[Any, ...], tuple[float, int]] = {}  # key: (first, left out)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or getattr(record, "status", None) is not None:
            return True
        key = self._key(record)
        now = monotonic()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self.WINDOW:
                self._seen[key] = (seen[0], seen[1] + 1)
                return False
            self._seen.pop(key, None)
            if len(self._seen) >= self.MAX_KEYS:
                del self._seen[next(iter(self._seen))]
            self._seen[key] = (now, 0)
        if seen is not None and seen[1]:
            record.repeated = seen[1]
        return True

    @staticmethod
    def _key(record: logging.LogRecord) -> tuple[Any, ...]:
        fields = {k: v for k, v in _extras(record).items() if k != "request_id"}
        args = record.args if type(record.args) is not Fields else ()
        return (record.name, str(record.msg), repr(args), repr(sorted(fields.items(), key=str)))


class StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The stdout handler under LOG_FORMAT=text (and JsonLinesHandler's base): a line
    stdout refuses (a full disk, closed, its reader gone) is dropped, said once on stderr.
    logging's own handleError wrote a 40-line "--- Logging error ---" traceback per line:
    `comments-api migrate > /dev/full`, whose exit 0 says the migration was made, put two
    around its one-line confirmation on stderr."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        # Said once: a stdout that refuses one line refuses the next.
        self._refusal_said = False

    def handleError(self, record: logging.LogRecord) -> None:
        refused = sys.exc_info()[1]
        if not isinstance(refused, OSError):
            super().handleError(record)
            return
        if self._refusal_said:
            return
        self._refusal_said = True
        if sys.stderr is not None:  # None: started with stderr closed too
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(
                    f"log lines that stdout refuses are dropped: {refused.strerror or refused}\n"
                )
                sys.stderr.flush()


class JsonLinesHandler(StdoutHandler):
    """The stdout handler under LOG_FORMAT=json.

    ``write_info`` writes the line its JsonFormatter would write for an INFO record of
    these fields, without building a LogRecord and walking the logger tree to reach this
    handler: the access line runs on every request, and that walk cost it 39 us of CPU
    per request served (bench/README.md, "The access line").

    After ``hold()`` (a sync worker's loop, which then promises to call ``flush()`` before
    it waits for work and every 50 ms between requests), those lines are written in
    batches of up to HOLD_LINES and at most ATOMIC_WRITE bytes: one write instead of one
    per request. Any other record, ``flush()`` and logging.shutdown() write the held lines
    first, so the order stays as logged.
    """

    HOLD_LINES = 32
    # POSIX makes a write of at most PIPE_BUF bytes to a pipe atomic. A container's stdout
    # is a pipe every worker shares: a longer write is copied in pieces as the reader (the
    # runtime, a log shipper) frees space, and another worker's line can land between
    # them, mid-line (70 broken lines in 2,400 behind a slow reader, with 32-line writes).
    ATOMIC_WRITE = select.PIPE_BUF

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._pid = pid_at_fork()
        self._held: list[str] | None = None  # None: not holding
        self._held_bytes = 0  # their size once written, line ends included

    def write_info(self, logger: str, message: str, fields: Fields) -> None:
        line = _encode(_json_line(time(), "info", logger, self._pid(), message, fields))
        with self.lock:  # type: ignore[union-attr]  # created by Handler.__init__
            try:
                held = self._held
                if held is None:
                    self.stream.write(line.decode("utf-8") + self.terminator)
                    self.stream.flush()
                    return
                size = len(line) + len(self.terminator)
                if self._held_bytes + size > self.ATOMIC_WRITE:
                    self._write_held()
                held.append(line.decode("utf-8"))
                self._held_bytes += size
                if len(held) >= self.HOLD_LINES or self._held_bytes >= self.ATOMIC_WRITE:
                    self._write_held()
            except Exception:  # as emit() does: a failed write must not fail the request
                self.handleError(logging.LogRecord(logger, logging.INFO, "", 0, message, (), None))

    def hold(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._held is None:
                self._held = []

    def holding(self) -> int:
        """How many lines are held, unwritten."""
        return len(self._held or ())

    def _write_held(self) -> None:  # with the lock held
        held = self._held
        if held:
            held_text = self.terminator.join(held) + self.terminator
            held.clear()
            self._held_bytes = 0
            self.stream.write(held_text)
            # Out now, as one write: not joined in the stream's buffer with what follows.
            self.stream.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._write_held()  # handle() holds the lock
        except Exception:
            self._drop_held()
            self.handleError(record)
        super().emit(record)

    def flush(self) -> None:
        # Also called by a worker's loop: a closed or broken stdout must not stop it. The
        # held lines are then lost, as a failing emit() loses its record.
        with self.lock:  # type: ignore[union-attr]
            try:
                self._write_held()
                super().flush()
            except Exception:
                self._drop_held()

    def _drop_held(self) -> None:
        if self._held:
            self._held.clear()
        self._held_bytes = 0


def hold_access_lines() -> JsonLinesHandler | None:
    """For a server loop that will flush: the handler of the access lines, now holding
    them (JsonLinesHandler.hold), or None if they do not go through one."""
    handler = direct_handler(logging.getLogger(ACCESS_LOGGER))
    if handler is not None:
        handler.hold()
    return handler


def direct_handler(logger: logging.Logger) -> JsonLinesHandler | None:
    """The handler an INFO line of ``logger`` would reach, if it is the only one and
    writes it unchanged (no filter, no level above INFO, its JsonFormatter): then
    ``write_info`` is the same line as ``logger.info``. None otherwise (LOG_FORMAT=text, a
    test's capture handler)."""
    handlers = logging.root.handlers
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    if (
        type(handler) is not JsonLinesHandler
        or type(handler.formatter) is not JsonFormatter
        # RepeatedWarnings lets every INFO line through unchanged.
        or any(type(f) is not RepeatedWarnings for f in handler.filters)
        or handler.level > logging.INFO
    ):
        return None
    node: logging.Logger | None = logger
    while node is not None and node is not logging.root:
        if node.handlers or node.filters or not node.propagate:
            return None
        node = node.parent
    return handler


# What a terminal or a line reader takes for more than a character: control characters
# (C0, DEL, C1: an escape sequence rewrites the line shown), the line and paragraph
# separators (str.splitlines() and JavaScript end a line there) and the bidi controls
# (they reorder what follows on screen: Unicode's Bidi_Control set, the Arabic letter mark
# U+061C included). A token's subject may hold all but the first.
_UNSHOWN = "\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
# A value that reads as one field as written: no whitespace, "=", quote or _UNSHOWN.
_BARE_VALUE = re.compile(f'[^\\s="{_UNSHOWN}]+')
_ESCAPED = re.compile(f"[{_UNSHOWN}]")


def _text_value(value: Any) -> str:
    """A field's value for a text line: as is, or quoted and escaped as a JSON string (as
    logfmt does) when it holds a space, "=", a quote or a character in ``_UNSHOWN``.
    Written bare, a value the caller chose (a token's subject "x status=200") added fields
    of its own to the line; json.dumps leaves U+2028 and the C1 and bidi controls as
    they are, written here as \\uXXXX (JSON's own escape: the value reads back the same)."""
    text = str(value)
    if _BARE_VALUE.fullmatch(text):
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    return _ESCAPED.sub(lambda m: f"\\u{ord(m[0]):04x}", quoted)


class TextFormatter(logging.Formatter):
    """LOG_FORMAT=text, for humans at a terminal: the same fields as key=value pairs."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # UTC with its zone, as the JSON lines: not the host's local time without one.
        return _iso(record.created)

    def formatException(self, ei: Any) -> str:
        return _without_row_values(super().formatException(_without_statement_parameters(ei)))

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = " ".join(f"{k}={_text_value(v)}" for k, v in _extras(record).items())
        # Lone surrogates escaped, as in the JSON lines: a UTF-8 stdout cannot write them.
        return str(_printable(f"{line} {extras}" if extras else line))


def logging_config(settings: Settings) -> dict[str, Any]:
    """dictConfig for the CLI and for gunicorn (``logconfig_dict``): one format everywhere."""
    level = settings.log_level.upper()
    json = settings.log_format == "json"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": JsonFormatter if json else TextFormatter}},
        "filters": {"repeated_warnings": {"()": RepeatedWarnings}},
        "handlers": {
            "stdout": {
                "class": f"{__name__}.{'JsonLinesHandler' if json else 'StdoutHandler'}",
                "formatter": "default",
                "filters": ["repeated_warnings"],
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        # gunicorn's loggers propagate to root, so they share its JSON handler.
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True},
            # Alembic >= 1.16 announces each of its plugins at INFO on every migrate: seven
            # lines per start saying nothing about our schema.
            "alembic.runtime.plugins": {"level": "DEBUG" if level == "DEBUG" else "WARNING"},
        },
    }


def configure_logging(settings: Settings) -> None:
    logging.config.dictConfig(logging_config(settings))
    # Python warnings would otherwise reach stderr as unstructured text.
    logging.captureWarnings(True)
