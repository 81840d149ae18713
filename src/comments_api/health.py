"""Readiness: should this process get traffic? Plain Python, no Flask (web/ops.py renders it).

Liveness (/healthz) needs no service: the process answering is the whole check.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic
from typing import Any

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError

from .store.repository import SQLITE_WAL_SIZE_LIMIT, Repository

# Below this much free space on the SQLite volume a write may fail at any moment: the WAL
# alone may grow to 1 MiB before it is folded back (store/repository.py).
MIN_FREE_BYTES = 2 * SQLITE_WAL_SIZE_LIMIT
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    reason: str = ""  # why not, for the operator (and the probe's log)
    schema_revision: str | None = None


# Checks given up at their deadline whose thread has not returned yet, per process: a
# connect that its connect_timeout (5 s) ends, or a SQLite volume that hangs. Cut off at its
# deadline, a check stuck on a PostgreSQL backend returns at once and is not counted here.
# Past it, probes answer "database not answering" without starting another check, so a
# database frozen whole holds at most two readiness connections and threads per worker,
# however many probes come.
MAX_LEFT_BEHIND = 1


@dataclass
class _Check:
    """One readiness check running in its own thread, shared by the callers meanwhile."""

    pid: int
    started: float
    finished: threading.Event = field(default_factory=threading.Event)
    result: Readiness = Readiness(False, "database not answering")
    error: BaseException | None = None
    # The check's database socket (a duplicate of its descriptor, so that the number stays
    # the check's until it lets go of it), while it uses a PostgreSQL connection.
    _socket: socket.socket | None = None
    given_up: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def watch(self, dbapi_connection: Any) -> None:
        """From now on ``give_up`` may shut ``dbapi_connection``'s socket down (in place of
        the one watched before: a connection found dead at checkout is replaced). Given up
        already, it is shut down at once: the check asks nothing more on it."""
        fileno = getattr(dbapi_connection, "fileno", None)  # PostgreSQL's; SQLite has none
        with self._lock:
            self._close_socket()
            if fileno is not None:
                with contextlib.suppress(OSError, ValueError):
                    self._socket = socket.socket(fileno=os.dup(fileno()))
                if self.given_up and self._socket is not None:
                    with contextlib.suppress(OSError):
                        self._socket.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """The check no longer uses its connection: nothing of it to shut down."""
        with self._lock:
            self._close_socket()

    def _close_socket(self) -> None:  # with self._lock held
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    @contextmanager
    def holding(self, dbapi_connection: Any) -> Iterator[bool]:
        """While the check uses ``dbapi_connection``: ``give_up`` may shut its socket down.
        Yields False if the check was given up already (nothing more to ask)."""
        self.watch(dbapi_connection)
        try:
            with self._lock:
                usable = not self.given_up
            yield usable
        finally:
            self.release()

    def give_up(self) -> None:
        """Past the deadline no caller can use the answer: shut the check's database socket
        down, so that its wait ends at once with an error, its thread returns and its
        connection is dropped (with the pool's other idle ones, which may be on the same
        stuck server). The socket, not the psycopg connection, which the thread is using."""
        with self._lock:
            self.given_up = True
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    self._socket.shutdown(socket.SHUT_RDWR)


class HealthService:
    def __init__(
        self,
        repo: Repository,
        expected_revision: str,
        drain_file: str | None,
        older_revisions: frozenset[str] = frozenset(),
        timeout: float = 5.0,
    ) -> None:
        self.repo = repo
        self.expected_revision = expected_revision
        # This code's migrations before its own: a database at one of them is behind. Any
        # other revision is a newer release's migration (expand/contract keeps this code
        # working on it), which must not take this release out of service: during a rollout
        # the previous pods serve on the new schema, and after `rollout undo` they must turn
        # ready on it again (docs/deployment.md, "Migrations: expand, then contract").
        self.older_revisions = older_revisions
        self._ahead_logged: str | None = None
        # Created by the server on SIGTERM: readiness turns off before the drain.
        self.drain_file = drain_file
        # A database that stops answering (a frozen host: its kernel still acknowledges,
        # so neither statement_timeout, TCP keepalives nor tcp_user_timeout end the wait)
        # held each probe and scrape until WORKER_TIMEOUT, then a 500: /metrics went dark
        # (CommentsApiDown, which holds back the database alerts) and every probe cost a
        # worker. The check runs in its own thread, answered "not answering" past
        # ``timeout`` (DB_STATEMENT_TIMEOUT); callers meanwhile share that one check.
        # At that deadline the check is given up: no caller can use a later answer (each
        # waits until the check's deadline), and one left running held a pooled connection
        # and, its backend frozen for good while the rest of the database answered, kept
        # the instance out of service (1eb2da9 left one behind after WORKER_TIMEOUT: with a
        # second one stuck, no check ever started again). Its socket is shut down, so the
        # next probe checks again on a fresh connection.
        self.timeout = timeout
        # The check the current thread runs, if it is one of this service's readiness
        # threads: a connection it opens is watched from the pool's "connect" event on.
        self._running = threading.local()
        event.listen(repo.engine, "connect", self._watch_new_connection, insert=True)
        self._lock = threading.Lock()
        # A check started before a fork never ends in the child: each is the pid's.
        self._pending: _Check | None = None
        self._left_behind: list[_Check] = []

    def readiness(self) -> Readiness:
        """Draining? Database reachable, its volume not full, its schema the one this code
        expects? Answered within ``timeout``."""
        if self.drain_file and os.path.exists(self.drain_file):
            return Readiness(False, "shutting down")
        pid = os.getpid()
        with self._lock:
            self._left_behind = [
                c for c in self._left_behind if c.pid == pid and not c.finished.is_set()
            ]
            check = self._pending
            if check is not None and (check.pid != pid or check.finished.is_set()):
                check = self._pending = None
            if check is not None and monotonic() >= check.started + self.timeout:
                self._give_up(check)  # its caller has not woken up to do it yet
                check = None
            if check is None:
                if len(self._left_behind) >= MAX_LEFT_BEHIND:
                    # One line a minute (a warning's repeats are left out): no number in it.
                    log.warning(
                        "readiness: a check given up at its deadline has not returned "
                        "(still connecting?); not starting another"
                    )
                    return Readiness(False, "database not answering")
                check = self._pending = _Check(pid, monotonic())
                threading.Thread(
                    target=self._run, args=(check,), name="readiness", daemon=True
                ).start()
        if not check.finished.wait(max(0.0, check.started + self.timeout - monotonic())):
            with self._lock:
                if self._pending is check:
                    self._give_up(check)
            log.warning(
                "readiness: database not answering within %gs; the check is cut off; "
                "the next probe checks again",
                self.timeout,
            )
            return Readiness(False, "database not answering")
        if check.error is not None:  # the caller's to raise, as it did in its own thread
            raise check.error
        return check.result

    def _give_up(self, check: _Check) -> None:
        """``check`` has passed its deadline (under ``self._lock``): cut it off, and count
        it as left behind until its thread returns."""
        check.give_up()
        self._pending = None
        if not check.finished.is_set():
            self._left_behind.append(check)

    def _run(self, check: _Check) -> None:
        try:
            check.result = self._check(check)
        except BaseException as exc:
            check.error = exc
        finally:
            check.finished.set()

    def _watch_new_connection(self, dbapi_connection: Any, _record: Any) -> None:
        """Pool "connect" event, first: a readiness check's new connection can be cut off
        from here on. The other connect listeners talk to the server (a session pooler's
        set_config), and SQLAlchemy makes every other connect of the worker wait for the
        first one after a fork or dispose to finish them: a backend frozen there held the
        check, and with it the worker's every connect, for good, uncut."""
        check: _Check | None = getattr(self._running, "check", None)
        if check is not None:
            check.watch(dbapi_connection)

    def _check(self, check: _Check) -> Readiness:
        self._running.check = check
        try:
            return self._ask(check)
        finally:
            self._running.check = None
            check.release()  # watched from a connect that then failed, if any

    def _ask(self, check: _Check) -> Readiness:
        try:
            with (
                self.repo.engine.connect() as conn,
                check.holding(conn.connection.driver_connection) as usable,
            ):
                if not usable:
                    return check.result
                try:
                    revision = self.repo.schema_revision(conn)
                finally:
                    # Its transaction ended here, while the socket can still be shut down:
                    # the ROLLBACK that closing the connection sent ran after ``holding``,
                    # so a backend frozen between the SELECT's answer and it left the
                    # check stuck for good, uncut, and no other check started.
                    conn.rollback()
        except SQLAlchemyError as exc:
            if check.given_up:  # cut off at its deadline: said by its caller
                return check.result
            # Not in comments_api_database_errors_total, which counts refused requests: one
            # per probe would count the probe interval, and comments_api_ready says this.
            log.warning("readiness: database unreachable: %s", exc.__class__.__name__)
            return Readiness(False, "database unreachable")
        free = self.repo.free_bytes()
        if free is not None and free < MIN_FREE_BYTES:
            log.warning("readiness: database volume full (%d bytes free)", free)
            return Readiness(
                False, "the database volume is full; writes fail until space is freed on it"
            )
        if revision != self.expected_revision:
            if revision is None or revision in self.older_revisions:
                return Readiness(
                    False,
                    f"database schema is at {revision or 'no revision'}, "
                    f"this code needs {self.expected_revision}; run `comments-api migrate`",
                )
            if self._ahead_logged != revision:  # once per revision, not every probe
                self._ahead_logged = revision
                log.info(
                    "readiness: database schema %s is ahead of this code's %s; serving "
                    "(migrations expand first)",
                    revision,
                    self.expected_revision,
                )
        return Readiness(True, schema_revision=revision)
